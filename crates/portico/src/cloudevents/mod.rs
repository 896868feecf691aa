//! CloudEvents 1.0: the event model every gateway produces, and its codecs.
//!
//! A [`CloudEvent`] is what the transformer makes from an executor's payload. This
//! module holds the model and its validation; [`json`] writes and reads the JSON event format
//! (single and batch), [`http`] the HTTP protocol binding (structured, binary and batched mode) and
//! [`legacy`] the CloudEvents 0.1 JSON that old consumers of the original project expect.
//!
//! JSON data is never turned into a `serde_json::Value` tree: it is kept as validated raw JSON text
//! ([`Data::Json`]) and spliced into the envelope, because encoding is on the hot path.

mod attributes;
pub mod http;
pub mod json;
pub mod legacy;

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use attributes::{ExtensionName, ExtensionValue, RESERVED_NAMES};
pub use json::{batch_from_json, batch_to_json};

/// The only CloudEvents specification version this module produces and accepts.
pub const SPEC_VERSION: &str = "1.0";

/// What was wrong with an event, an attribute, or the bytes it was decoded from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required attribute is absent (or JSON `null`).
    #[error("attribute `{0}` is missing")]
    MissingAttribute(&'static str),
    /// An attribute is present but its value breaks a rule of the specification.
    #[error("attribute `{name}` is invalid: {reason}")]
    InvalidAttribute {
        /// The attribute's name (a core attribute or an extension).
        name: String,
        /// Which rule was broken.
        reason: String,
    },
    /// The same attribute appears twice in one event.
    #[error("attribute `{0}` appears more than once")]
    DuplicateAttribute(String),
    /// An extension name breaks the CloudEvents 1.0 naming rules.
    #[error("extension name `{name}` is invalid: {reason}")]
    InvalidExtensionName {
        /// The rejected name, as given.
        name: String,
        /// Which rule was broken.
        reason: &'static str,
    },
    /// An integer extension value does not fit the 32-bit range CloudEvents allows.
    #[error(
        "extension `{name}` has the integer {value}, which is out of range: CloudEvents integers must fit in 32 bits"
    )]
    IntegerOutOfRange {
        /// The extension's name.
        name: String,
        /// The value, as written.
        value: String,
    },
    /// The event declares a specification version other than 1.0.
    #[error("specversion `{0}` is not supported: only `1.0` is")]
    UnsupportedSpecVersion(String),
    /// A JSON event carries both `data` and `data_base64`.
    #[error("event has both `data` and `data_base64`: at most one is allowed")]
    BothDataAndDataBase64,
    /// `data_base64` is not a valid standard base64 string.
    #[error("`data_base64` is not valid base64: {0}")]
    InvalidBase64(String),
    /// [`Data::Json`] holds bytes that are not one valid JSON value.
    #[error("`data` is not valid JSON: {0}")]
    InvalidJsonData(String),
    /// The bytes are not a JSON event (not JSON, or not an object / array where one is needed).
    #[error("event is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// One event of a batch failed to decode.
    #[error("event at index {index} of the batch: {source}")]
    BatchItem {
        /// Position of the failing event in the batch, from 0.
        index: usize,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
    /// An HTTP header of a binary-mode event cannot be used.
    #[error("header `{name}` is invalid: {reason}")]
    InvalidHeader {
        /// The header's name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// A percent-encoded header value has a bad escape or is not UTF-8 once decoded.
    #[error("percent-encoded value is invalid: {0}")]
    PercentDecoding(String),
    /// The request's content type names a CloudEvents format other than JSON.
    #[error(
        "content type `{0}` is a CloudEvents format this gateway does not support: use `application/cloudevents+json`"
    )]
    UnsupportedFormat(String),
}

/// One CloudEvent (specversion 1.0).
///
/// `specversion` is not stored: it is always `1.0`. Build one with [`CloudEvent::new`] and the
/// public fields, then [`validate`](CloudEvent::validate) it before sending; decoders validate
/// what they return.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// `id`: non-empty; unique per `source`.
    pub id: String,
    /// `source`: non-empty URI-reference.
    pub source: String,
    /// `type`: non-empty.
    pub ty: String,
    /// `datacontenttype`: media type of `data` (RFC 2046) when present.
    pub datacontenttype: Option<String>,
    /// `dataschema`: absolute URI when present.
    pub dataschema: Option<String>,
    /// `subject`: non-empty when present.
    pub subject: Option<String>,
    /// `time`: when the occurrence happened.
    pub time: Option<DateTime<Utc>>,
    /// Extension attributes, ordered by name.
    pub extensions: BTreeMap<ExtensionName, ExtensionValue>,
    /// The event payload.
    pub data: Option<Data>,
}

/// An event's payload.
///
/// How each kind is carried: in the JSON format, `Json` goes into `data` as is, `Text` into `data`
/// as a JSON string and `Binary` into `data_base64`; in HTTP binary mode all three are the body.
/// A decoder can only tell the kinds apart by `datacontenttype`, so an event round-trips unchanged
/// when `Json` has a JSON content type (or none, in the JSON format), `Text` a non-JSON one and
/// `Binary` any content type but a JSON one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// One valid JSON value, as JSON text (no surrounding whitespace once decoded).
    Json(Bytes),
    /// Text that is not JSON.
    Text(String),
    /// Opaque bytes.
    Binary(Bytes),
}

impl Data {
    /// Classifies a payload by its content type: JSON when the content type is JSON (see
    /// [`is_json_content_type`]) and the payload parses as JSON, otherwise binary. A payload
    /// without a content type is binary even if it looks like JSON: never a guess.
    pub fn from_payload(payload: Bytes, content_type: Option<&str>) -> Data {
        match content_type {
            Some(ct) if is_json_content_type(ct) => match Data::json(payload.clone()) {
                Ok(data) => data,
                Err(_) => Data::Binary(payload),
            },
            _ => Data::Binary(payload),
        }
    }

    /// JSON data from JSON text: checks that `text` is exactly one JSON value and trims the
    /// whitespace around it.
    pub fn json(text: Bytes) -> Result<Data, Error> {
        check_json(&text)?;
        let start = text
            .iter()
            .position(|b| !is_json_whitespace(*b))
            .unwrap_or(text.len());
        let end = text
            .iter()
            .rposition(|b| !is_json_whitespace(*b))
            .map_or(start, |i| i + 1);
        Ok(Data::Json(text.slice(start..end.max(start))))
    }

    /// The payload's bytes as they travel in HTTP binary mode: JSON text, UTF-8 text, or the bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Data::Json(b) | Data::Binary(b) => b,
            Data::Text(s) => s.as_bytes(),
        }
    }
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Checks that `text` is one JSON value without building a tree (serde_json's raw-value path
/// only skips over the value, which is faster than visiting it).
fn check_json(text: &[u8]) -> Result<(), Error> {
    serde_json::from_slice::<&serde_json::value::RawValue>(text)
        .map(|_| ())
        .map_err(|e| Error::InvalidJsonData(e.to_string()))
}

/// The media type of a content type: what comes before any `;` parameters, trimmed.
pub(crate) fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// True when the content type declares JSON: `application/json`, `text/json` or any `*/*+json`,
/// ignoring case and parameters such as `; charset=utf-8`.
pub fn is_json_content_type(ct: &str) -> bool {
    let mt = media_type(ct);
    if mt.eq_ignore_ascii_case("application/json") || mt.eq_ignore_ascii_case("text/json") {
        return true;
    }
    let bytes = mt.as_bytes();
    bytes.len() > 5 && bytes[bytes.len() - 5..].eq_ignore_ascii_case(b"+json") && mt.contains('/')
}

/// Decodes standard base64 (padded), as `data_base64` and the original ingest `payload` are.
///
/// The buffer is taken with `Vec::with_capacity`, where the base64 crate's `decode` takes a
/// zeroed one from `calloc`, which glibc serves outside its per-thread cache, the slow way
/// through its shared bins (BENCHMARKS.md has what it costs an event).
pub(crate) fn decode_base64(text: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    let mut out = Vec::with_capacity(base64::decoded_len_estimate(text.len()));
    base64::engine::general_purpose::STANDARD.decode_vec(text, &mut out)?;
    Ok(out)
}

/// True when the content type is `text/*` (ignoring case and parameters).
pub(crate) fn is_text_content_type(ct: &str) -> bool {
    let mt = media_type(ct).as_bytes();
    mt.len() > 5 && mt[..5].eq_ignore_ascii_case(b"text/")
}

impl CloudEvent {
    /// An event with the three required attributes and nothing else.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        CloudEvent {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            extensions: BTreeMap::new(),
            data: None,
        }
    }

    /// Checks every rule of CloudEvents 1.0 this model can break: required attributes non-empty,
    /// string attributes free of control characters and noncharacters, `source` a URI-reference, `dataschema` an absolute URI, `datacontenttype` a media type,
    /// integer extensions within 32 bits, and [`Data::Json`] holding valid JSON.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_attributes()?;
        if let Some(Data::Json(text)) = &self.data {
            check_json(text)?;
        }
        Ok(())
    }

    /// [`validate`](Self::validate) without re-parsing [`Data::Json`]: for the hot path, when the
    /// data came from [`Data::from_payload`], [`Data::json`] or a decoder, which already checked it.
    pub fn validate_attributes(&self) -> Result<(), Error> {
        attributes::check_non_empty("id", &self.id)?;
        attributes::check_non_empty("type", &self.ty)?;
        self.validate_source_subject_content_type()?;
        if let Some(schema) = &self.dataschema {
            attributes::check_absolute_uri("dataschema", schema)?;
        }
        for (name, value) in &self.extensions {
            value.check(name)?;
        }
        Ok(())
    }

    /// The part of [`validate_attributes`](Self::validate_attributes) the transformer checks
    /// for every event: `source`, `subject` and `datacontenttype`.
    pub(crate) fn validate_source_subject_content_type(&self) -> Result<(), Error> {
        attributes::check_uri_reference("source", &self.source)?;
        if let Some(ct) = &self.datacontenttype {
            attributes::check_media_type("datacontenttype", ct)?;
        }
        if let Some(subject) = &self.subject {
            attributes::check_non_empty("subject", subject)?;
        }
        Ok(())
    }

    /// The event in the JSON event format (`application/cloudevents+json`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(json::size_hint(self));
        self.write_json(&mut out);
        out
    }

    /// Appends the event in the JSON event format to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json::write_event(self, out);
    }

    /// Decodes and validates one event in the JSON event format.
    pub fn from_json(bytes: &[u8]) -> Result<CloudEvent, Error> {
        json::read_event(bytes, None)
    }

    /// Like [`from_json`](Self::from_json), but JSON data shares `bytes` instead of being copied.
    pub fn from_json_bytes(bytes: &Bytes) -> Result<CloudEvent, Error> {
        json::read_event(bytes, Some(bytes))
    }
}

#[cfg(test)]
mod tests;
