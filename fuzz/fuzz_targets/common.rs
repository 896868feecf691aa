//! What every ingest fuzz target checks besides "no panic": whatever the decoder accepts is
//! valid, and CloudEvents it accepts survive a round trip through structured mode unchanged.

use bytes::Bytes;
use http::HeaderMap;
use portico::cloudevents::http::{Decoded, decode, encode_structured};
use portico::ingest::Ingested;

/// Decodes one ingest request and checks the invariants of the result.
pub fn check(headers: &HeaderMap, body: Bytes) {
    match portico::ingest::decode(headers, body) {
        Err(e) => assert!(!e.0.is_empty(), "a refusal always has a reason"),
        Ok(Ingested::Raw { src, .. }) => assert!(!src.trim().is_empty()),
        Ok(Ingested::CloudEvents(events)) => {
            for ev in events {
                ev.validate().expect("accepted events are valid");
                let (h, b) = encode_structured(&ev);
                match decode(&h, b) {
                    Ok(Some(Decoded::Single(again))) => assert_eq!(again, ev, "round trip"),
                    other => panic!("a valid event does not decode again: {other:?}"),
                }
            }
        }
    }
}
