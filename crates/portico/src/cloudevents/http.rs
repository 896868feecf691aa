//! The CloudEvents HTTP protocol binding 1.0: structured, binary and batched content modes.
//!
//! Delivery uses [`encode_structured`] by default, [`encode_binary`] or [`encode_batch`] when a
//! watcher asks for them; [`decode`] recognises all three on requests that carry CloudEvents and
//! returns `None` for requests that do not, so a webhook can accept both.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::json::{batch_from_json_bytes, batch_to_json, format_time, parse_time};
use super::{
    CloudEvent, Data, Error, ExtensionName, ExtensionValue, SPEC_VERSION, is_json_content_type,
    is_text_content_type, media_type,
};

/// Content type of an event in structured mode with the JSON format.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Content type of a batch of events in the JSON format.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Prefix of every binary-mode attribute header.
const PREFIX: &str = "ce-";

/// What the binding percent-encodes in header values: controls, space, `"`, `%`; everything
/// outside ASCII is always encoded (as its UTF-8 bytes).
const HEADER_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// One decoded request: an event (structured or binary mode) or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// One event.
    Single(CloudEvent),
    /// A batch of events, in order.
    Batch(Vec<CloudEvent>),
}

/// Room in an encoded request's header map for what the HTTP client adds (`Host`,
/// `Content-Length`), so that adding them does not grow the map.
const CLIENT_HEADERS: usize = 2;

/// Structured mode: the event in the JSON format as the body, `Content-Type:
/// application/cloudevents+json`.
pub fn encode_structured(ev: &CloudEvent) -> (HeaderMap, Bytes) {
    (structured_headers(), Bytes::from(ev.to_json()))
}

/// The headers of an event in structured mode (the body is its JSON event format).
pub fn structured_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(1 + CLIENT_HEADERS);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
    );
    headers
}

/// Batched mode: the events as a JSON array, `Content-Type: application/cloudevents-batch+json`.
pub fn encode_batch<E: std::borrow::Borrow<CloudEvent>>(evs: &[E]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(1 + CLIENT_HEADERS);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BATCH_CONTENT_TYPE));
    (headers, Bytes::from(batch_to_json(evs)))
}

/// [`encode_batch`] of events already in the JSON event format, one value each: the array is
/// these bytes joined, not the events encoded again.
pub fn encode_batch_json<J: AsRef<[u8]>>(jsons: &[J]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(1 + CLIENT_HEADERS);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BATCH_CONTENT_TYPE));
    let mut body =
        Vec::with_capacity(1 + jsons.iter().map(|j| j.as_ref().len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, json) in jsons.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json.as_ref());
    }
    body.push(b']');
    (headers, Bytes::from(body))
}

/// A header value from text that may need percent-encoding.
fn encoded_value(s: &str) -> HeaderValue {
    let encoded = percent_encode_header_value(s);
    // After percent-encoding only printable ASCII is left, which is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Binary mode: every attribute as a `ce-` header (values percent-encoded, extension values in
/// their string form), `datacontenttype` as `Content-Type`, and the data's bytes as the body.
///
/// A `datacontenttype` that is not a valid header value (which [`CloudEvent::validate`] rejects)
/// is sent percent-encoded rather than dropped.
pub fn encode_binary(ev: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(8 + ev.extensions.len() + CLIENT_HEADERS);
    headers.insert(
        HeaderName::from_static("ce-specversion"),
        HeaderValue::from_static(SPEC_VERSION),
    );
    headers.insert(HeaderName::from_static("ce-id"), encoded_value(&ev.id));
    headers.insert(
        HeaderName::from_static("ce-source"),
        encoded_value(&ev.source),
    );
    headers.insert(HeaderName::from_static("ce-type"), encoded_value(&ev.ty));
    if let Some(schema) = &ev.dataschema {
        headers.insert(
            HeaderName::from_static("ce-dataschema"),
            encoded_value(schema),
        );
    }
    if let Some(subject) = &ev.subject {
        headers.insert(
            HeaderName::from_static("ce-subject"),
            encoded_value(subject),
        );
    }
    if let Some(time) = &ev.time {
        headers.insert(
            HeaderName::from_static("ce-time"),
            encoded_value(&format_time(time)),
        );
    }
    for (name, value) in &ev.extensions {
        // `ce-` plus a-z0-9 is always a valid header name.
        if let Ok(header) = HeaderName::from_bytes(format!("{PREFIX}{name}").as_bytes()) {
            let value = match value {
                ExtensionValue::String(s) => encoded_value(s),
                other => encoded_value(&other.to_string()),
            };
            headers.insert(header, value);
        }
    }
    if let Some(ct) = &ev.datacontenttype {
        let value = HeaderValue::from_str(ct).unwrap_or_else(|_| encoded_value(ct));
        headers.insert(CONTENT_TYPE, value);
    }
    let body = match &ev.data {
        Some(Data::Json(b)) | Some(Data::Binary(b)) => b.clone(),
        Some(Data::Text(s)) => Bytes::copy_from_slice(s.as_bytes()),
        None => Bytes::new(),
    };
    (headers, body)
}

/// Decodes a request in whichever mode it uses: structured or batched by its `Content-Type`,
/// binary by a `ce-specversion` header. `None` when the request is not a CloudEvent at all.
///
/// In binary mode the body's kind follows `Content-Type`: JSON that parses for a JSON type, text
/// for a `text/*` type when it is UTF-8, bytes otherwise (and when there is no `Content-Type`); an
/// empty body is no data. Extension values arrive as strings. The events it gives pass
/// [`CloudEvent::validate`]: it checks each as it reads it.
pub fn decode(headers: &HeaderMap, body: Bytes) -> Result<Option<Decoded>, Error> {
    // A Content-Type that is not printable ASCII is no CloudEvents format; it only matters below
    // if the request turns out to be in binary mode.
    let content_type = headers.get(CONTENT_TYPE).map(HeaderValue::to_str);
    if let Some(Ok(ct)) = content_type {
        let mt = media_type(ct);
        if mt.eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE) {
            return CloudEvent::from_json_bytes(&body).map(|ev| Some(Decoded::Single(ev)));
        }
        if mt.eq_ignore_ascii_case(BATCH_CONTENT_TYPE) {
            return batch_from_json_bytes(&body).map(|evs| Some(Decoded::Batch(evs)));
        }
        let prefix = b"application/cloudevents";
        if mt
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        {
            return Err(Error::UnsupportedFormat(ct.to_owned()));
        }
    }
    static SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
    if !headers.contains_key(&SPECVERSION) {
        return Ok(None);
    }
    let content_type = content_type.transpose().map_err(|_| Error::InvalidHeader {
        name: CONTENT_TYPE.to_string(),
        reason: "it is not printable ASCII".to_owned(),
    })?;
    decode_binary(headers, content_type, body).map(|ev| Some(Decoded::Single(ev)))
}

fn decode_binary(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<CloudEvent, Error> {
    let mut ev = CloudEvent::new(String::new(), String::new(), String::new());
    let (mut specversion, mut id, mut source, mut ty) = (None, None, None, None);
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        // Header names are lowercase in a `HeaderMap`.
        let Some(attr) = name.as_str().strip_prefix(PREFIX) else {
            continue;
        };
        if !seen.insert(attr) {
            return Err(Error::DuplicateAttribute(attr.to_owned()));
        }
        let value = percent_decode_bytes(value.as_bytes()).map_err(|e| Error::InvalidHeader {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        match attr {
            "specversion" => specversion = Some(value),
            "id" => id = Some(value),
            "source" => source = Some(value),
            "type" => ty = Some(value),
            "dataschema" => ev.dataschema = Some(value),
            "subject" => ev.subject = Some(value),
            "time" => ev.time = Some(parse_time("time", &value)?),
            "datacontenttype" | "data" | "data_base64" => {
                return Err(Error::InvalidHeader {
                    name: name.to_string(),
                    reason: format!(
                        "`{attr}` is not carried in a `ce-` header in binary mode (datacontenttype is `Content-Type`, data is the body)"
                    ),
                });
            }
            other => {
                ev.extensions
                    .insert(ExtensionName::new(other)?, ExtensionValue::String(value));
            }
        }
    }
    match specversion.as_deref() {
        Some(SPEC_VERSION) => {}
        Some(other) => return Err(Error::UnsupportedSpecVersion(other.to_owned())),
        None => return Err(Error::MissingAttribute("specversion")),
    }
    ev.id = id.ok_or(Error::MissingAttribute("id"))?;
    ev.source = source.ok_or(Error::MissingAttribute("source"))?;
    ev.ty = ty.ok_or(Error::MissingAttribute("type"))?;
    ev.datacontenttype = content_type.map(str::to_owned);
    ev.data = if body.is_empty() {
        None
    } else {
        match content_type {
            Some(ct) if is_json_content_type(ct) => Some(Data::from_payload(body, Some(ct))),
            Some(ct) if is_text_content_type(ct) => match std::str::from_utf8(&body) {
                Ok(text) => Some(Data::Text(text.to_owned())),
                Err(_) => Some(Data::Binary(body)),
            },
            _ => Some(Data::Binary(body)),
        }
    };
    ev.validate_attributes()?;
    Ok(ev)
}

/// Percent-encodes a header value as the HTTP binding asks: space, `"`, `%`, controls and every
/// byte of a non-ASCII character's UTF-8 become `%XX`.
pub fn percent_encode_header_value(s: &str) -> String {
    utf8_percent_encode(s, HEADER_ENCODE).to_string()
}

/// Reverses [`percent_encode_header_value`]; a `%` not followed by two hex digits, or bytes that
/// are not UTF-8 once decoded, are errors.
pub fn percent_decode_header_value(s: &str) -> Result<String, Error> {
    percent_decode_bytes(s.as_bytes())
}

fn percent_decode_bytes(raw: &[u8]) -> Result<String, Error> {
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|b| *b == b'%') {
        let escape = rest.get(i + 1..i + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            let end = (i + 3).min(rest.len());
            return Err(Error::PercentDecoding(format!(
                "`{}` is not a %XX escape",
                String::from_utf8_lossy(&rest[i..end])
            )));
        }
        rest = &rest[i + 3..];
    }
    percent_encoding::percent_decode(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| Error::PercentDecoding(format!("it is not UTF-8 once decoded: {e}")))
}
