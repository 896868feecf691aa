//! The event a webhook delivery becomes: `application/json`
//! `{"header": {…}, "body": …, "bodyEncoding": "json" | "text" | "base64"}`.
//!
//! - `header`: every request header, by lower-case name, each an array of its values (a header
//!   can repeat), as the original gateway sent Go's `http.Header`. Headers that carry a secret
//!   (`X-Gitlab-Token`) are left out.
//! - `body` and `bodyEncoding` say how to read it:
//!   - `"json"`: the request body was JSON; `body` is that JSON, unchanged (spliced, not
//!     re-encoded);
//!   - `"text"`: the body was UTF-8 but not JSON; `body` is a JSON string holding it;
//!   - `"base64"`: the body was not UTF-8; `body` is a string holding it in standard base64.

use base64::Engine;
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use portico::Event;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Json(&'a RawValue),
    Text(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    header: Headers<'a>,
    body: Body<'a>,
    body_encoding: &'static str,
}

/// The request headers as `{"name": ["value", …]}`, names sorted, written straight from the
/// header map (no copy of the names or values).
struct Headers<'a> {
    map: &'a HeaderMap,
    redacted: &'a [HeaderName],
}

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // One pass over the map: it yields the values of a name one after the other, and a
        // stable sort by name keeps them in that order.
        let mut pairs: Vec<(&HeaderName, &HeaderValue)> = self
            .map
            .iter()
            .filter(|(n, _)| !self.redacted.contains(n))
            .collect();
        pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let names = pairs.chunk_by(|a, b| a.0 == b.0);
        let mut m = s.serialize_map(Some(names.clone().count()))?;
        for values in names {
            m.serialize_entry(values[0].0.as_str(), &Values(values))?;
        }
        m.end()
    }
}

/// Every value of one header, in order, as text (invalid UTF-8 replaced).
struct Values<'a>(&'a [(&'a HeaderName, &'a HeaderValue)]);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (_, v) in self.0 {
            // Visible ASCII (nearly every value) needs no decoding.
            match v.to_str() {
                Ok(text) => seq.serialize_element(text)?,
                Err(_) => seq.serialize_element(&String::from_utf8_lossy(v.as_bytes()))?,
            }
        }
        seq.end()
    }
}

/// The event of a delivery with these headers and body, leaving out `redacted` headers.
pub fn event(
    headers: &HeaderMap,
    body: &[u8],
    redacted: &[HeaderName],
) -> Result<Event, serde_json::Error> {
    let (body_value, body_encoding) = match serde_json::from_slice::<&RawValue>(body) {
        Ok(raw) => (Body::Json(raw), "json"),
        Err(_) => match std::str::from_utf8(body) {
            Ok(text) => (Body::Text(text.to_string()), "text"),
            Err(_) => (
                Body::Text(base64::engine::general_purpose::STANDARD.encode(body)),
                "base64",
            ),
        },
    };
    // Room for the body (a text or base64 body grows a little when written as a string) and
    // the headers, so that the payload is written without growing the buffer.
    let headers_len: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 8)
        .sum();
    Event::json_sized(
        &Payload {
            header: Headers {
                map: headers,
                redacted,
            },
            body: body_value,
            body_encoding,
        },
        body.len() + body.len() / 3 + headers_len + 48,
    )
    .map(|event| event.with_trace_headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(body: &[u8]) -> serde_json::Value {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append("x-gitlab-token", "secret".parse().unwrap());
        let e = event(&h, body, &[HeaderName::from_static("x-gitlab-token")]).unwrap();
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        serde_json::from_slice(&e.payload).unwrap()
    }

    #[test]
    fn json_text_and_binary_bodies() {
        let p = payload(br#" {"a": [1, 2]} "#);
        assert_eq!(p["body"], serde_json::json!({"a": [1, 2]}));
        assert_eq!(p["bodyEncoding"], "json");
        assert_eq!(p["header"]["x-a"], serde_json::json!(["1", "2"]));
        assert!(p["header"].get("x-gitlab-token").is_none());

        let p = payload(b"hello");
        assert_eq!(p["body"], "hello");
        assert_eq!(p["bodyEncoding"], "text");

        let p = payload(b"\"hello\"");
        assert_eq!(p["body"], "hello");
        assert_eq!(p["bodyEncoding"], "json");

        let p = payload(&[0xff, 0x00, 0x80]);
        assert_eq!(p["body"], "/wCA");
        assert_eq!(p["bodyEncoding"], "base64");

        let p = payload(b"");
        assert_eq!(p["body"], "");
        assert_eq!(p["bodyEncoding"], "text");
    }

    #[test]
    fn headers_are_sorted_by_name_with_each_value_in_order() {
        let mut h = HeaderMap::new();
        h.append("x-b", "3".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("content-type", "application/json".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append("x-c", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let e = event(&h, b"{}", &[]).unwrap();
        let text = std::str::from_utf8(&e.payload).unwrap();
        assert_eq!(
            text,
            r#"{"header":{"content-type":["application/json"],"x-a":["1","2"],"x-b":["3"],"x-c":["caf�"]},"body":{},"bodyEncoding":"json"}"#
        );
    }
}
