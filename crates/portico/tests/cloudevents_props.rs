//! Property tests for the CloudEvents codecs: every valid event survives the JSON format, the HTTP
//! binding's three modes and batching unchanged, and header percent-encoding is lossless.

mod cloudevents_common;

use bytes::Bytes;
use cloudevents_common::{Mode, arb_event};
use http::HeaderValue;
use portico::cloudevents::http::{
    Decoded, decode, encode_batch, encode_binary, encode_structured, percent_decode_header_value,
    percent_encode_header_value,
};
use portico::cloudevents::{CloudEvent, batch_from_json, batch_to_json};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_events_are_valid(ev in arb_event(Mode::Json)) {
        ev.validate().unwrap();
    }

    #[test]
    fn json_round_trip(ev in arb_event(Mode::Json)) {
        let json = ev.to_json();
        let back = CloudEvent::from_json(&json).unwrap();
        prop_assert_eq!(&back, &ev);
        let shared = CloudEvent::from_json_bytes(&Bytes::from(json)).unwrap();
        prop_assert_eq!(shared, ev);
    }

    #[test]
    fn binary_mode_round_trip(ev in arb_event(Mode::Binary)) {
        let (headers, body) = encode_binary(&ev);
        prop_assert_eq!(decode(&headers, body).unwrap(), Some(Decoded::Single(ev)));
    }

    #[test]
    fn structured_mode_round_trip(ev in arb_event(Mode::Json)) {
        let (headers, body) = encode_structured(&ev);
        prop_assert_eq!(decode(&headers, body).unwrap(), Some(Decoded::Single(ev)));
    }

    #[test]
    fn batch_round_trip(evs in prop::collection::vec(arb_event(Mode::Json), 0..5)) {
        prop_assert_eq!(&batch_from_json(&batch_to_json(&evs)).unwrap(), &evs);
        let (headers, body) = encode_batch(&evs);
        prop_assert_eq!(decode(&headers, body).unwrap(), Some(Decoded::Batch(evs)));
    }

    #[test]
    fn percent_encoding_round_trip(s in any::<String>()) {
        let encoded = percent_encode_header_value(&s);
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{}", encoded);
        prop_assert!(!encoded.contains('"'));
        prop_assert!(HeaderValue::from_str(&encoded).is_ok());
        prop_assert_eq!(percent_decode_header_value(&encoded).unwrap(), s);
    }

    #[test]
    fn from_json_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = CloudEvent::from_json(&bytes);
        let _ = batch_from_json(&bytes);
    }

    #[test]
    fn from_json_never_panics_on_damaged_events(
        ev in arb_event(Mode::Json),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut json = ev.to_json();
        let i = cut.index(json.len());
        json[i] = byte;
        if let Ok(back) = CloudEvent::from_json(&json) {
            back.validate().unwrap();
        }
        json.truncate(i);
        prop_assert!(CloudEvent::from_json(&json).is_err());
    }
}
