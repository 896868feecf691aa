//! The `cloudevents-sdk` crate as an oracle for our JSON event format: what we write, the SDK
//! reads as the same event; what the SDK writes, we read as the same event.
//!
//! Where the SDK departs from the CloudEvents 1.0 specification we follow the specification; the
//! places are marked `SDK differs:` below.

mod cloudevents_common;

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use cloudevents::event::{
    AttributesReader, AttributesWriter, ExtensionValue as SdkValue, TryIntoUrl,
};
use cloudevents::{Data as SdkData, Event as SdkEvent};
use cloudevents_common::{Mode, arb_event};
use portico::cloudevents::{CloudEvent, Data, ExtensionValue};
use proptest::prelude::*;

fn sdk_extensions(ev: &SdkEvent) -> BTreeMap<String, SdkValue> {
    ev.iter_extensions()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}

fn our_extensions_as_sdk(ev: &CloudEvent) -> BTreeMap<String, SdkValue> {
    ev.extensions
        .iter()
        .map(|(k, v)| {
            let v = match v {
                ExtensionValue::String(s) => SdkValue::String(s.clone()),
                ExtensionValue::Boolean(b) => SdkValue::Boolean(*b),
                ExtensionValue::Integer(i) => SdkValue::Integer(*i),
            };
            (k.to_string(), v)
        })
        .collect()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Asserts that the SDK's event has our event's attributes, extensions and data.
fn assert_same(ours: &CloudEvent, sdk: &SdkEvent) {
    assert_eq!(sdk.specversion().as_str(), "1.0");
    assert_eq!(sdk.id(), ours.id);
    assert_eq!(sdk.source(), &ours.source);
    assert_eq!(sdk.ty(), ours.ty);
    assert_eq!(sdk.datacontenttype(), ours.datacontenttype.as_deref());
    assert_eq!(
        sdk.dataschema().map(|u| u.as_str()),
        ours.dataschema.as_deref()
    );
    assert_eq!(sdk.subject(), ours.subject.as_deref());
    assert_eq!(sdk.time(), ours.time.as_ref());
    assert_eq!(sdk_extensions(sdk), our_extensions_as_sdk(ours));
    match (&ours.data, sdk.data()) {
        (None, None) => {}
        (Some(Data::Json(raw)), Some(SdkData::Json(v))) => assert_eq!(&json(raw), v),
        (Some(Data::Text(t)), Some(SdkData::String(s))) => assert_eq!(t, s),
        (Some(Data::Binary(b)), Some(SdkData::Binary(v))) => assert_eq!(&b[..], &v[..]),
        // SDK differs: when `datacontenttype` is JSON or absent, the SDK decodes `data_base64`
        // and, if the bytes happen to parse as JSON, returns JSON data. The JSON format says
        // `data_base64` always carries binary data, so we keep `Data::Binary`; the bytes agree.
        (Some(Data::Binary(b)), Some(SdkData::Json(v)))
            if ours
                .datacontenttype
                .as_deref()
                .is_none_or(portico::cloudevents::is_json_content_type) =>
        {
            assert_eq!(&serde_json::from_slice::<serde_json::Value>(b).unwrap(), v)
        }
        (ours, sdk) => panic!("data differs: ours {ours:?}, SDK {sdk:?}"),
    }
}

/// The same event built with the SDK's own API.
fn to_sdk(ev: &CloudEvent) -> SdkEvent {
    let mut sdk = SdkEvent::default();
    sdk.set_id(ev.id.clone());
    sdk.set_source(ev.source.clone());
    sdk.set_type(ev.ty.clone());
    sdk.set_subject(ev.subject.clone());
    sdk.set_time(ev.time);
    sdk.set_datacontenttype(ev.datacontenttype.clone());
    sdk.set_dataschema(ev.dataschema.as_deref().map(|s| s.into_url().unwrap()));
    for (name, value) in our_extensions_as_sdk(ev) {
        sdk.set_extension(&name, value);
    }
    if let Some(data) = &ev.data {
        sdk.set_data_unchecked(match data {
            Data::Json(raw) => SdkData::Json(json(raw)),
            Data::Text(t) => SdkData::String(t.clone()),
            Data::Binary(b) => SdkData::Binary(b.to_vec()),
        });
    }
    sdk
}

/// Asserts that what we decoded from the SDK's JSON is the event the SDK encoded.
fn assert_decoded_same(expected: &CloudEvent, decoded: &CloudEvent) {
    let mut decoded = decoded.clone();
    let mut expected = expected.clone();
    // The SDK re-serializes JSON data from its `Value`, so compare JSON data as values.
    if let (Some(Data::Json(a)), Some(Data::Json(b))) = (&expected.data, &decoded.data) {
        assert_eq!(json(a), json(b));
        expected.data = None;
        decoded.data = None;
    }
    assert_eq!(decoded, expected);
}

#[test]
fn fixed_event_both_ways() {
    let mut ev = CloudEvent::new("e-1", "webhook/example", "com.example.push");
    ev.subject = Some("key".into());
    ev.time = Some(Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap());
    ev.datacontenttype = Some("application/json".into());
    ev.dataschema = Some("https://example.com/schema".into());
    ev.extensions.insert(
        "eventtypeversion".parse().unwrap(),
        ExtensionValue::from("v1"),
    );
    ev.extensions
        .insert("count".parse().unwrap(), ExtensionValue::from(-7));
    ev.extensions
        .insert("flag".parse().unwrap(), ExtensionValue::from(false));
    ev.data = Some(Data::Json(Bytes::from_static(br#"{"a":[1,2,{"b":null}]}"#)));

    let sdk: SdkEvent = serde_json::from_slice(&ev.to_json()).unwrap();
    assert_same(&ev, &sdk);

    let from_sdk = CloudEvent::from_json(&serde_json::to_vec(&to_sdk(&ev)).unwrap()).unwrap();
    assert_decoded_same(&ev, &from_sdk);
}

#[test]
fn sdk_and_spec_on_binary_data_with_json_content_type() {
    // SDK differs: it turns `data_base64` that decodes to JSON into JSON data when the content
    // type is JSON; the JSON format spec says `data_base64` is binary, and we keep it so.
    let input = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"application/json","data_base64":"e30="}"#;
    let sdk: SdkEvent = serde_json::from_slice(input).unwrap();
    assert_eq!(sdk.data(), Some(&SdkData::Json(serde_json::json!({}))));
    let ours = CloudEvent::from_json(input).unwrap();
    assert_eq!(ours.data, Some(Data::Binary(Bytes::from_static(b"{}"))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sdk_reads_what_we_write(ev in arb_event(Mode::Json)) {
        let sdk: SdkEvent = serde_json::from_slice(&ev.to_json()).unwrap();
        assert_same(&ev, &sdk);
    }

    #[test]
    fn we_read_what_the_sdk_writes(ev in arb_event(Mode::Json)) {
        let sdk_json = serde_json::to_vec(&to_sdk(&ev)).unwrap();
        let decoded = CloudEvent::from_json(&sdk_json).unwrap();
        assert_decoded_same(&ev, &decoded);
    }
}
