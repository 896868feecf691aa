//! The CloudEvents JSON event format 1.0, single events and batches.
//!
//! Encoding writes straight into a `Vec<u8>`: attribute strings are escaped by `serde_json`, and
//! JSON data is spliced in as the raw text it already is. Decoding reads the object once into
//! borrowed `(name, raw JSON)` pairs, so `data` is validated but never built into a tree.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    CloudEvent, Data, Error, ExtensionName, ExtensionValue, SPEC_VERSION, is_json_content_type,
};

/// A capacity for the encoded event that is usually enough, so the buffer grows at most once.
pub(crate) fn size_hint(ev: &CloudEvent) -> usize {
    let data = match &ev.data {
        Some(Data::Json(b)) => b.len(),
        Some(Data::Text(s)) => s.len() + s.len() / 8 + 2,
        Some(Data::Binary(b)) => b.len().div_ceil(3) * 4,
        None => 0,
    };
    let optional = [&ev.datacontenttype, &ev.dataschema, &ev.subject]
        .iter()
        .map(|o| o.as_ref().map_or(0, |s| s.len() + 24))
        .sum::<usize>();
    let extensions = ev
        .extensions
        .iter()
        .map(|(k, v)| {
            k.as_str().len()
                + 6
                + match v {
                    ExtensionValue::String(s) => s.len() + 2,
                    _ => 12,
                }
        })
        .sum::<usize>();
    96 + ev.id.len() + ev.source.len() + ev.ty.len() + optional + extensions + data
}

/// Appends `s` as a JSON string (quoted and escaped).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Attributes (ids, sources, types) rarely hold anything to escape: copy those as they are.
    // A fold without early exit, which the compiler turns into vector instructions.
    if s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    }) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Serializing a `str` into a `Vec` cannot fail: there is no I/O and no unsupported type.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `t` in RFC 3339, UTC with `Z`, fractional seconds only when they are not zero.
pub(crate) fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Appends `t` as [`format_time`] writes it, digit by digit: chrono's formatting goes through
/// `fmt` and a `String` (about 650 instructions of an event's 43,000, callgrind).
pub(crate) fn write_time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let nanos = t.nanosecond();
    // Years outside 0000–9999 and leap seconds (nanoseconds past 10^9) take chrono's way.
    let Ok(year @ 0..=9999) = u32::try_from(year) else {
        out.extend_from_slice(format_time(t).as_bytes());
        return;
    };
    if nanos >= 1_000_000_000 {
        out.extend_from_slice(format_time(t).as_bytes());
        return;
    }
    let digit = |v: u32| b'0' + (v % 10) as u8;
    let (month, day) = (t.month(), t.day());
    let (hour, minute, second) = (t.hour(), t.minute(), t.second());
    out.extend_from_slice(&[
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(month / 10),
        digit(month),
        b'-',
        digit(day / 10),
        digit(day),
        b'T',
        digit(hour / 10),
        digit(hour),
        b':',
        digit(minute / 10),
        digit(minute),
        b':',
        digit(second / 10),
        digit(second),
    ]);
    if nanos != 0 {
        // As chrono's `SecondsFormat::AutoSi`: 3, 6 or 9 digits, the fewest that hold them all.
        let (len, mut value) = if nanos.is_multiple_of(1_000_000) {
            (3, nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            (6, nanos / 1_000)
        } else {
            (9, nanos)
        };
        let mut fraction = [b'.'; 10];
        for place in (1..=len).rev() {
            fraction[place] = digit(value);
            value /= 10;
        }
        out.extend_from_slice(&fraction[..=len]);
    }
    out.push(b'Z');
}

/// Appends `bytes` as standard, padded base64 (no quotes).
pub(crate) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    let Some(len) = base64::encoded_len(bytes.len(), true) else {
        return;
    };
    out.resize(start + len, 0);
    let written = BASE64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

pub(crate) fn write_extension_value(out: &mut Vec<u8>, value: &ExtensionValue) {
    match value {
        ExtensionValue::String(s) => write_str(out, s),
        ExtensionValue::Boolean(true) => out.extend_from_slice(b"true"),
        ExtensionValue::Boolean(false) => out.extend_from_slice(b"false"),
        ExtensionValue::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
    }
}

/// Writes `{"name":value,...}` for the event's extensions as members (each preceded by `,`).
fn write_extension_members(out: &mut Vec<u8>, ev: &CloudEvent) {
    for (name, value) in &ev.extensions {
        // Extension names are a-z0-9 only: nothing to escape.
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b"\":");
        write_extension_value(out, value);
    }
}

/// Appends `ev` in the JSON event format.
pub(crate) fn write_event(ev: &CloudEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
    write_str(out, &ev.id);
    out.extend_from_slice(b",\"source\":");
    write_str(out, &ev.source);
    out.extend_from_slice(b",\"type\":");
    write_str(out, &ev.ty);
    if let Some(ct) = &ev.datacontenttype {
        out.extend_from_slice(b",\"datacontenttype\":");
        write_str(out, ct);
    }
    if let Some(schema) = &ev.dataschema {
        out.extend_from_slice(b",\"dataschema\":");
        write_str(out, schema);
    }
    if let Some(subject) = &ev.subject {
        out.extend_from_slice(b",\"subject\":");
        write_str(out, subject);
    }
    if let Some(time) = &ev.time {
        out.extend_from_slice(b",\"time\":\"");
        write_time(out, time);
        out.push(b'"');
    }
    write_extension_members(out, ev);
    match &ev.data {
        Some(Data::Json(raw)) => {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(raw);
        }
        Some(Data::Text(text)) => {
            out.extend_from_slice(b",\"data\":");
            write_str(out, text);
        }
        Some(Data::Binary(bytes)) => {
            out.extend_from_slice(b",\"data_base64\":\"");
            write_base64(out, bytes);
            out.push(b'"');
        }
        None => {}
    }
    out.push(b'}');
}

/// Encodes events as a JSON batch (`application/cloudevents-batch+json`): an array of events.
pub fn batch_to_json<E: std::borrow::Borrow<CloudEvent>>(events: &[E]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        2 + events
            .iter()
            .map(|e| size_hint(e.borrow()) + 1)
            .sum::<usize>(),
    );
    out.push(b'[');
    for (i, ev) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(ev.borrow(), &mut out);
    }
    out.push(b']');
    out
}

/// Decodes and validates a JSON batch; the error names the index of the first bad event.
pub fn batch_from_json(bytes: &[u8]) -> Result<Vec<CloudEvent>, Error> {
    read_batch(bytes, None)
}

/// Like [`batch_from_json`], but JSON data shares `bytes` instead of being copied.
pub fn batch_from_json_bytes(bytes: &Bytes) -> Result<Vec<CloudEvent>, Error> {
    read_batch(bytes, Some(bytes))
}

fn read_batch(bytes: &[u8], owner: Option<&Bytes>) -> Result<Vec<CloudEvent>, Error> {
    // One pass over the text: every item's members are read straight out of the array.
    let items = match serde_json::from_slice::<Vec<Members>>(bytes) {
        Ok(items) => items,
        Err(e) => return Err(batch_error(bytes, owner, e)),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, members)| {
            event_of(members, owner).map_err(|e| Error::BatchItem {
                index,
                source: Box::new(e),
            })
        })
        .collect()
}

/// Why a batch that did not parse as an array of objects (`parsed`) is wrong: found by reading
/// it again item by item, which names the item at fault (a second pass, only for a bad batch).
fn batch_error(bytes: &[u8], owner: Option<&Bytes>, parsed: serde_json::Error) -> Error {
    let items = match serde_json::from_slice::<Vec<&RawValue>>(bytes) {
        Ok(items) => items,
        Err(e) => return Error::Json(e),
    };
    for (index, raw) in items.into_iter().enumerate() {
        if let Err(e) = read_event(raw.get().as_bytes(), owner) {
            return Error::BatchItem {
                index,
                source: Box::new(e),
            };
        }
    }
    Error::Json(parsed)
}

/// A JSON string, borrowed from the input when it has no escapes (serde's own `Cow<str>`
/// always copies, and `#[serde(borrow)]` does not reach one inside an `Option`).
pub(crate) struct Str<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> de::Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<Str<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

/// The members of one JSON object, in order, with their values as raw JSON.
struct Members<'a>(Vec<(Str<'a>, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CloudEvent as a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some(entry) = map.next_entry::<Str<'de>, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Members<'de>, A::Error> {
                Err(de::Error::custom(
                    "expected one CloudEvent as a JSON object, found an array (a batch?)",
                ))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

/// A string attribute: `None` for JSON `null` (the format treats it as absent).
fn string_attr(name: &str, raw: &RawValue) -> Result<Option<String>, Error> {
    str_attr(name, raw).map(|s| s.map(Cow::into_owned))
}

/// [`string_attr`], borrowed from the input when it holds no escapes: for what is only
/// compared or parsed (`specversion`, `time`, `data_base64`).
fn str_attr<'a>(name: &str, raw: &'a RawValue) -> Result<Option<Cow<'a, str>>, Error> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if !text.starts_with('"') {
        return Err(Error::InvalidAttribute {
            name: name.to_owned(),
            reason: format!("it must be a JSON string, found `{}`", abbreviate(text)),
        });
    }
    // The parser checked the raw string already: without escapes, its text is the value.
    if !text.contains('\\') {
        return Ok(Some(Cow::Borrowed(&text[1..text.len() - 1])));
    }
    serde_json::from_str::<String>(text)
        .map(|s| Some(Cow::Owned(s)))
        .map_err(|e| Error::InvalidAttribute {
            name: name.to_owned(),
            reason: e.to_string(),
        })
}

/// The first characters of `text`, for error messages.
fn abbreviate(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(40) {
        Some((i, _)) => Cow::Owned(format!("{}…", &text[..i])),
        None => Cow::Borrowed(text),
    }
}

/// Parses an RFC 3339 timestamp of attribute `name` into UTC.
pub(crate) fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::InvalidAttribute {
            name: name.to_owned(),
            reason: format!("`{value}` is not an RFC 3339 timestamp: {e}"),
        })
}

/// An extension value in the JSON format: string, boolean or 32-bit integer; `None` for `null`.
fn extension_value(name: &ExtensionName, raw: &RawValue) -> Result<Option<ExtensionValue>, Error> {
    let text = raw.get();
    let unsupported = |what: &str| Error::InvalidAttribute {
        name: name.to_string(),
        reason: format!(
            "extension values must be strings, booleans or integers, found {what} `{}`",
            abbreviate(text)
        ),
    };
    match text.as_bytes().first() {
        Some(b'"') => string_attr(name.as_str(), raw).map(|s| s.map(ExtensionValue::String)),
        Some(b't') | Some(b'f') => Ok(Some(ExtensionValue::Boolean(text == "true"))),
        Some(b'n') => Ok(None),
        Some(b'-' | b'0'..=b'9') => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unsupported("the non-integer number"));
            }
            match text.parse::<i32>() {
                Ok(i) => Ok(Some(ExtensionValue::Integer(i64::from(i)))),
                Err(_) => Err(Error::IntegerOutOfRange {
                    name: name.to_string(),
                    value: text.to_owned(),
                }),
            }
        }
        Some(b'[') => Err(unsupported("the array")),
        _ => Err(unsupported("the object")),
    }
}

/// Core attributes seen so far, to reject duplicates.
#[derive(Default)]
struct Seen(u16);

impl Seen {
    fn mark(&mut self, bit: u16, name: &str) -> Result<(), Error> {
        if self.0 & (1 << bit) != 0 {
            return Err(Error::DuplicateAttribute(name.to_owned()));
        }
        self.0 |= 1 << bit;
        Ok(())
    }
}

/// JSON data as `Bytes`: a slice of `owner` when the raw text lies inside it, else a copy.
fn raw_bytes(raw: &RawValue, owner: Option<&Bytes>) -> Bytes {
    let text = raw.get().as_bytes();
    if let Some(owner) = owner {
        let start = (text.as_ptr() as usize).wrapping_sub(owner.as_ptr() as usize);
        if start <= owner.len() && text.len() <= owner.len() - start {
            return owner.slice(start..start + text.len());
        }
    }
    Bytes::copy_from_slice(text)
}

/// Decodes one event in the JSON format from `input`; `owner`, when given, is a `Bytes` that
/// `input` lies in, so that JSON data can share it instead of being copied.
pub(crate) fn read_event(input: &[u8], owner: Option<&Bytes>) -> Result<CloudEvent, Error> {
    event_of(serde_json::from_slice(input).map_err(Error::Json)?, owner)
}

/// The event the members of one JSON object make, checked as [`CloudEvent::validate`] checks
/// it (`data` was parsed as JSON with the object).
fn event_of(Members(members): Members<'_>, owner: Option<&Bytes>) -> Result<CloudEvent, Error> {
    let mut seen = Seen::default();
    let mut specversion = None;
    let mut ev = CloudEvent::new(String::new(), String::new(), String::new());
    let (mut id, mut source, mut ty) = (None, None, None);
    let mut time = None;
    let mut data = None;
    let mut data_base64 = None;
    for (Str(key), raw) in members {
        match key.as_ref() {
            "specversion" => {
                seen.mark(0, &key)?;
                specversion = str_attr(&key, raw)?;
            }
            "id" => {
                seen.mark(1, &key)?;
                id = string_attr(&key, raw)?;
            }
            "source" => {
                seen.mark(2, &key)?;
                source = string_attr(&key, raw)?;
            }
            "type" => {
                seen.mark(3, &key)?;
                ty = string_attr(&key, raw)?;
            }
            "datacontenttype" => {
                seen.mark(4, &key)?;
                ev.datacontenttype = string_attr(&key, raw)?;
            }
            "dataschema" => {
                seen.mark(5, &key)?;
                ev.dataschema = string_attr(&key, raw)?;
            }
            "subject" => {
                seen.mark(6, &key)?;
                ev.subject = string_attr(&key, raw)?;
            }
            "time" => {
                seen.mark(7, &key)?;
                time = str_attr(&key, raw)?;
            }
            "data" => {
                seen.mark(8, &key)?;
                data = Some(raw);
            }
            "data_base64" => {
                seen.mark(9, &key)?;
                data_base64 = str_attr(&key, raw)?;
            }
            other => {
                let name = ExtensionName::new(other)?;
                let value = extension_value(&name, raw)?;
                if ev.extensions.contains_key(other) {
                    return Err(Error::DuplicateAttribute(key.into_owned()));
                }
                if let Some(value) = value {
                    ev.extensions.insert(name, value);
                }
            }
        }
    }
    match specversion.as_deref() {
        None => return Err(Error::MissingAttribute("specversion")),
        Some(SPEC_VERSION) => {}
        Some(other) => return Err(Error::UnsupportedSpecVersion(other.to_owned())),
    }
    ev.id = id.ok_or(Error::MissingAttribute("id"))?;
    ev.source = source.ok_or(Error::MissingAttribute("source"))?;
    ev.ty = ty.ok_or(Error::MissingAttribute("type"))?;
    if let Some(t) = time {
        ev.time = Some(parse_time("time", &t)?);
    }
    ev.data = match (data, data_base64) {
        (Some(_), Some(_)) => return Err(Error::BothDataAndDataBase64),
        (None, Some(b64)) => Some(Data::Binary(
            super::decode_base64(b64.as_bytes())
                .map_err(|e| Error::InvalidBase64(e.to_string()))?
                .into(),
        )),
        (Some(raw), None) => {
            let json_type = ev
                .datacontenttype
                .as_deref()
                .is_none_or(is_json_content_type);
            if !json_type && raw.get().starts_with('"') {
                let text = serde_json::from_str::<String>(raw.get())
                    .map_err(|e| Error::InvalidJsonData(e.to_string()))?;
                Some(Data::Text(text))
            } else {
                // A JSON content type, or a non-string value whatever the content type says:
                // the value is JSON and is kept as it was written.
                Some(Data::Json(raw_bytes(raw, owner)))
            }
        }
        (None, None) => None,
    };
    ev.validate_attributes()?;
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        use rand::Rng;
        let mut rng = rand::rng();
        let mut times: Vec<DateTime<Utc>> = Vec::new();
        for nanos in [
            0,
            1,
            7_000,
            120_000_000,
            999_999_999,
            1_000_000,
            1_500_000_000,
        ] {
            for secs in [0, 59, 946_684_799, 1_700_000_000, 253_402_300_799] {
                times.extend(Utc.timestamp_opt(secs, nanos).single());
            }
        }
        // Before year 0 and after 9999: chrono's way.
        times.extend(Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).single());
        times.extend(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single());
        for _ in 0..10_000 {
            let secs = rng.random_range(-62_167_219_200..253_402_300_800_i64);
            let nanos = match rng.random_range(0..4) {
                0 => 0,
                1 => rng.random_range(0..1_000) * 1_000_000,
                2 => rng.random_range(0..1_000_000) * 1_000,
                _ => rng.random_range(0..1_000_000_000),
            };
            times.extend(Utc.timestamp_opt(secs, nanos).single());
        }
        assert!(times.len() > 10_000);
        for t in times {
            let mut out = Vec::new();
            write_time(&mut out, &t);
            assert_eq!(String::from_utf8(out).unwrap(), format_time(&t), "{t:?}");
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let cases = [
            "",
            "plain/source-1",
            "quote \" and backslash \\",
            "tab\tnew line\ncarriage\r",
            "\u{0}\u{1f} control",
            "\u{7f} delete, é, 漢字, 🎉",
        ];
        for s in cases {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }
}
