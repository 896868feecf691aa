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

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use portico::Event;
use serde::Serialize;
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
    header: BTreeMap<&'a str, Vec<String>>,
    body: Body<'a>,
    body_encoding: &'static str,
}

/// The event of a delivery with these headers and body, leaving out `redacted` headers.
pub fn event(
    headers: &HeaderMap,
    body: &[u8],
    redacted: &[HeaderName],
) -> Result<Event, serde_json::Error> {
    let mut header: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if redacted.contains(name) {
            continue;
        }
        header
            .entry(name.as_str())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let (body, body_encoding) = match serde_json::from_slice::<&RawValue>(body) {
        Ok(raw) => (Body::Json(raw), "json"),
        Err(_) => match std::str::from_utf8(body) {
            Ok(text) => (Body::Text(text.to_string()), "text"),
            Err(_) => (
                Body::Text(base64::engine::general_purpose::STANDARD.encode(body)),
                "base64",
            ),
        },
    };
    Event::json(&Payload {
        header,
        body,
        body_encoding,
    })
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
}
