//! Decoding what a framework-independent gateway POSTs to the transformer.
//!
//! One request body is either the original's JSON `{"src", "payload": "<base64>"}` (a raw event
//! of configuration `src`, to be transformed), or CloudEvents in the HTTP binding's structured,
//! binary or batched mode (already made: validated, then relayed with their own attributes).
//! [`decode`] tells which, and says what was wrong with a bad body; `server.rs` turns that into
//! 200/400/503. The fuzz targets (`fuzz/`) call these functions directly.

use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;

use crate::cloudevents::CloudEvent;
use crate::cloudevents::http::Decoded;
use crate::cloudevents::json::Str;
use crate::event::Event;

/// What one ingest request carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// A raw event of configuration `src` (the original format), to be transformed.
    Raw {
        /// The configuration key.
        src: String,
        /// The event.
        event: Event,
    },
    /// Valid CloudEvents (one, or a batch in order), to be relayed as they are.
    CloudEvents(Vec<CloudEvent>),
}

/// Why a body was refused; the text is the reason the caller gets with its 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IngestError(pub String);

/// The original's ingest body. Its strings are borrowed from the body where they hold no
/// escapes (a base64 payload never does), so decoding copies only what the event keeps.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OriginalEvent<'a> {
    #[serde(borrow)]
    src: Option<Str<'a>>,
    #[serde(default, borrow)]
    payload: Option<Str<'a>>,
    /// Not in the original: what the payload is, when the caller knows.
    #[serde(default, borrow)]
    content_type: Option<Str<'a>>,
}

/// Decodes a request to `POST /`: CloudEvents in any HTTP mode when the headers say so,
/// else the original JSON. The decoder checks CloudEvents as it reads them (every attribute,
/// and `data` as JSON where it is JSON), so they are not checked again here.
pub fn decode(headers: &HeaderMap, body: Bytes) -> Result<Ingested, IngestError> {
    match crate::cloudevents::http::decode(headers, body.clone()) {
        Ok(Some(Decoded::Single(ev))) => Ok(Ingested::CloudEvents(vec![ev])),
        Ok(Some(Decoded::Batch(evs))) => Ok(Ingested::CloudEvents(evs)),
        Ok(None) => decode_original(&body),
        Err(e) => Err(IngestError(format!("not a valid CloudEvent: {e}"))),
    }
}

/// Decodes the original's `{"src", "payload": "<base64>"}` (with an optional `contentType`).
pub fn decode_original(body: &[u8]) -> Result<Ingested, IngestError> {
    let original: OriginalEvent = serde_json::from_slice(body).map_err(|e| {
        IngestError(format!(
            "body is not the expected JSON {{\"src\", \"payload\": \"<base64>\"}}: {e}"
        ))
    })?;
    let Some(Str(src)) = original.src.filter(|s| !s.0.trim().is_empty()) else {
        return Err(IngestError(
            "`src` is missing or empty: it names the configuration the event comes from".into(),
        ));
    };
    let payload = match original.payload.as_ref().map(|p| p.0.as_ref()) {
        None => Vec::new(),
        Some(p) => crate::cloudevents::decode_base64(p.as_bytes())
            .map_err(|e| IngestError(format!("`payload` is not valid base64: {e}")))?,
    };
    let mut event = Event::new(payload);
    event.content_type = original.content_type.map(|Str(ct)| ct.into_owned());
    Ok(Ingested::Raw {
        src: src.into_owned(),
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_original_json_is_a_raw_event() {
        let got = decode(
            &HeaderMap::new(),
            Bytes::from_static(br#"{"src":"a","payload":"aGk="}"#),
        )
        .unwrap();
        let Ingested::Raw { src, event } = got else {
            panic!("raw expected")
        };
        assert_eq!(src, "a");
        assert_eq!(&event.payload[..], b"hi");
    }

    #[test]
    fn escaped_strings_of_the_original_json_are_decoded() {
        let got = decode_original(
            br#"{"src":"a\u0062","payload":"aGk\u003d","contentType":"text\/plain"}"#,
        )
        .unwrap();
        let Ingested::Raw { src, event } = got else {
            panic!("raw expected")
        };
        assert_eq!(src, "ab");
        assert_eq!(&event.payload[..], b"hi");
        assert_eq!(event.content_type.as_deref(), Some("text/plain"));
        let e = decode_original(br#"{"src":7}"#).unwrap_err();
        assert!(e.0.contains("expected a string"), "{e}");
    }

    #[test]
    fn bad_bodies_say_what_was_wrong() {
        type Headers<'a> = &'a [(&'static str, &'a str)];
        let cases: [(Headers, &str, &str); 6] = [
            (&[], "{", "not the expected JSON"),
            (&[], r#"{"payload":"aGk="}"#, "`src` is missing"),
            (&[], r#"{"src":"a","payload":"!!"}"#, "not valid base64"),
            (
                &[("content-type", "application/cloudevents+json")],
                r#"{"specversion":"1.0","id":"1","type":"t"}"#,
                "not a valid CloudEvent",
            ),
            (
                &[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")],
                "",
                "not a valid CloudEvent",
            ),
            (
                &[("content-type", "application/cloudevents-batch+json")],
                r#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},{"specversion":"0.3"}]"#,
                "not a valid CloudEvent",
            ),
        ];
        for (h, body, want) in cases {
            let e = decode(&headers(h), Bytes::from(body)).unwrap_err();
            assert!(e.0.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn cloudevents_in_every_mode_keep_their_attributes() {
        let structured = decode(
            &headers(&[("content-type", "application/cloudevents+json")]),
            Bytes::from_static(br#"{"specversion":"1.0","id":"x1","source":"/s","type":"t"}"#),
        )
        .unwrap();
        let Ingested::CloudEvents(evs) = structured else {
            panic!()
        };
        assert_eq!((evs[0].id.as_str(), evs[0].source.as_str()), ("x1", "/s"));
        let binary = decode(
            &headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "b1"),
                ("ce-source", "/b"),
                ("ce-type", "t"),
                ("content-type", "text/plain"),
            ]),
            Bytes::from_static(b"hello"),
        )
        .unwrap();
        let Ingested::CloudEvents(evs) = binary else {
            panic!()
        };
        assert_eq!(evs[0].id, "b1");
        let batch = decode(
            &headers(&[("content-type", "application/cloudevents-batch+json")]),
            Bytes::from_static(
                br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},{"specversion":"1.0","id":"2","source":"s","type":"t"}]"#,
            ),
        )
        .unwrap();
        let Ingested::CloudEvents(evs) = batch else {
            panic!()
        };
        assert_eq!(evs.len(), 2);
    }
}
