//! Attribute rules of CloudEvents 1.0: extension names and values, and the checks on core
//! attribute values (non-empty strings, URI-references, absolute URIs, media types).

use std::borrow::{Borrow, Cow};
use std::fmt;

use super::Error;

/// Names an extension may not take: the core attributes of CloudEvents 1.0 and the JSON format's
/// `data` / `data_base64` members.
pub const RESERVED_NAMES: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

/// Longest extension name CloudEvents 1.0 allows.
const MAX_NAME_LEN: usize = 20;

/// The name of an extension attribute: 1 to 20 characters of `a-z` and `0-9`, and not a core
/// attribute name. Holding one proves the name is valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtensionName(Cow<'static, str>);

impl ExtensionName {
    /// A name the gateway itself sets on events (`traceparent`, `eventtypeversion`): made
    /// without a check or a copy, so `name` must be valid (tests check each one).
    pub(crate) const fn known(name: &'static str) -> ExtensionName {
        ExtensionName(Cow::Borrowed(name))
    }

    /// Checks `name` against the CloudEvents 1.0 rules.
    pub fn new(name: &str) -> Result<ExtensionName, Error> {
        let invalid = |reason| Error::InvalidExtensionName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(invalid("only a-z and 0-9 are allowed"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("it is longer than 20 characters"));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(invalid("it is the name of a core attribute"));
        }
        Ok(ExtensionName(Cow::Owned(name.to_owned())))
    }

    /// Makes an extension name out of foreign metadata (for example a broker header
    /// `routing-key` becomes `routingkey`): lowercases, drops every character that is not
    /// `a-z` or `0-9`, and keeps the first 20. `None` when nothing is left or the result is a
    /// core attribute name.
    pub fn sanitize(raw: &str) -> Option<ExtensionName> {
        let name: String = raw
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .take(MAX_NAME_LEN)
            .collect();
        ExtensionName::new(&name).ok()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExtensionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ExtensionName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ExtensionName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ExtensionName {
    type Error = Error;

    fn try_from(name: &str) -> Result<Self, Error> {
        ExtensionName::new(name)
    }
}

impl std::str::FromStr for ExtensionName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        ExtensionName::new(name)
    }
}

/// The value of an extension attribute.
///
/// CloudEvents integers are 32-bit; `Integer` holds an `i64` so that an out-of-range value can be
/// represented and rejected by [`CloudEvent::validate`](super::CloudEvent::validate) rather than
/// wrapped. In HTTP binary mode every value travels as a string, and decodes as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionValue {
    /// A string.
    String(String),
    /// A boolean.
    Boolean(bool),
    /// An integer; must fit in `i32`.
    Integer(i64),
}

impl ExtensionValue {
    /// Checks the value against the rules for extension `name`.
    pub(crate) fn check(&self, name: &ExtensionName) -> Result<(), Error> {
        match self {
            ExtensionValue::String(s) => check_string(name.as_str(), s),
            ExtensionValue::Integer(i) if i32::try_from(*i).is_err() => {
                Err(Error::IntegerOutOfRange {
                    name: name.to_string(),
                    value: i.to_string(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for ExtensionValue {
    /// The value's canonical string form, as carried in HTTP headers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionValue::String(s) => f.write_str(s),
            ExtensionValue::Boolean(b) => write!(f, "{b}"),
            ExtensionValue::Integer(i) => write!(f, "{i}"),
        }
    }
}

impl From<&str> for ExtensionValue {
    fn from(s: &str) -> Self {
        ExtensionValue::String(s.to_owned())
    }
}

impl From<String> for ExtensionValue {
    fn from(s: String) -> Self {
        ExtensionValue::String(s)
    }
}

impl From<bool> for ExtensionValue {
    fn from(b: bool) -> Self {
        ExtensionValue::Boolean(b)
    }
}

impl From<i32> for ExtensionValue {
    fn from(i: i32) -> Self {
        ExtensionValue::Integer(i64::from(i))
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> Error {
    Error::InvalidAttribute {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// `value` must not be empty, and must be a CloudEvents String (see [`check_string`]).
pub(crate) fn check_non_empty(name: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(name, "it is empty"));
    }
    check_string(name, value)
}

/// `value` must hold only characters the CloudEvents type system allows in a String: no control
/// characters (U+0000–U+001F, U+007F–U+009F) and no Unicode noncharacters.
fn check_string(name: &str, value: &str) -> Result<(), Error> {
    // Fast path: printable ASCII, the usual case, needs no per-character decoding. A fold
    // without early exit, which the compiler turns into vector instructions.
    if value
        .bytes()
        .fold(true, |ok, b| ok & (b' '..b'\x7f').contains(&b))
    {
        return Ok(());
    }
    let forbidden = |c: char| {
        let cp = u32::from(c);
        c.is_control() || (0xFDD0..=0xFDEF).contains(&cp) || cp & 0xFFFE == 0xFFFE
    };
    match value.chars().find(|c| forbidden(*c)) {
        Some(c) => Err(invalid(
            name,
            format!(
                "it contains U+{:04X}: control characters and noncharacters are not allowed",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// Characters that can never appear in an RFC 3986 URI-reference (non-ASCII is let through, as
/// in an IRI, so that sources built from configuration keys in other scripts stay usable).
fn forbidden_in_uri(c: char) -> bool {
    c.is_ascii_control()
        || matches!(
            c,
            ' ' | '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}'
        )
}

/// Printable ASCII that may appear in a URI-reference as it is.
const URI_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b'!';
    while b < 0x7f {
        t[b as usize] = !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        );
        b += 1;
    }
    t
};

/// `value` must be a non-empty URI-reference.
pub(crate) fn check_uri_reference(name: &str, value: &str) -> Result<(), Error> {
    // Fast path: a source is nearly always plain ASCII with nothing to complain about.
    if !value.is_empty() && value.bytes().all(|b| URI_PLAIN[usize::from(b)]) {
        return Ok(());
    }
    check_non_empty(name, value)?;
    if let Some(c) = value.chars().find(|c| forbidden_in_uri(*c)) {
        return Err(invalid(
            name,
            format!("`{value}` is not a URI-reference: it contains {c:?}"),
        ));
    }
    Ok(())
}

/// `value` must be an absolute URI: a scheme (`[A-Za-z][A-Za-z0-9+.-]*`) followed by `:`.
pub(crate) fn check_absolute_uri(name: &str, value: &str) -> Result<(), Error> {
    check_uri_reference(name, value)?;
    let scheme_ok = match value.split_once(':') {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    };
    if !scheme_ok {
        return Err(invalid(
            name,
            format!("`{value}` is not an absolute URI: it has no scheme such as `https:`"),
        ));
    }
    Ok(())
}

/// `value` must look like an RFC 2046 media type: `type/subtype`, printable ASCII.
pub(crate) fn check_media_type(name: &str, value: &str) -> Result<(), Error> {
    // The content types executors set on nearly every event need no parsing.
    if matches!(
        value,
        "application/json" | "text/plain" | "application/octet-stream"
    ) {
        return Ok(());
    }
    check_non_empty(name, value)?;
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(invalid(
            name,
            format!("`{value}` is not a media type: only printable ASCII is allowed"),
        ));
    }
    let (ty, subtype) = super::media_type(value).split_once('/').unwrap_or(("", ""));
    if ty.trim().is_empty() || subtype.trim().is_empty() {
        return Err(invalid(
            name,
            format!("`{value}` is not a media type such as `application/json`"),
        ));
    }
    Ok(())
}
