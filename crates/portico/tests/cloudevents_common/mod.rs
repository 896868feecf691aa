//! Proptest strategies shared by the CloudEvents property and oracle tests: arbitrary valid
//! events whose data kind agrees with their `datacontenttype`, so that a decoder can recover it.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use portico::cloudevents::{CloudEvent, Data, ExtensionName, ExtensionValue, RESERVED_NAMES};
use proptest::prelude::*;

/// Which encoding the generated events must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The JSON event format (also HTTP structured and batched mode).
    Json,
    /// HTTP binary mode: extension values are strings, the kind of data follows `Content-Type`
    /// alone (JSON needs a JSON type, text a `text/*` type), and an empty body is no data.
    Binary,
}

/// Characters a CloudEvents String may hold: anything but control characters and unassigned
/// code points (which include the noncharacters).
const STRING: &str = "[^\\p{Cc}\\p{Cn}]";

/// A CloudEvents String attribute value of `min..=max` characters.
pub fn attr_string(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("{STRING}{{{min},{max}}}")).unwrap()
}

/// Any JSON value, as compact JSON text.
pub fn arb_json() -> impl Strategy<Value = Bytes> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1.0e12f64..1.0e12).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z\"\\\\é]{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|v| Bytes::from(serde_json::to_vec(&v).unwrap()))
}

fn arb_data(mode: Mode) -> BoxedStrategy<(Option<String>, Option<Data>)> {
    let opt =
        |cts: &'static [&'static str]| prop::sample::select(cts).prop_map(|ct| Some(ct.to_owned()));
    let json_cts: &'static [&'static str] = &[
        "application/json",
        "text/json; charset=utf-8",
        "application/vnd.example+json",
    ];
    let json = match mode {
        Mode::Json => prop_oneof![Just(None), opt(json_cts)].boxed(),
        Mode::Binary => opt(json_cts).boxed(),
    };
    let (text_cts, binary_cts): (&'static [&'static str], &'static [&'static str]) = match mode {
        Mode::Json => (
            &["text/plain", "text/csv; charset=utf-8", "application/xml"],
            &["application/octet-stream", "image/png", "text/plain"],
        ),
        Mode::Binary => (
            &["text/plain", "text/csv; charset=utf-8"],
            &["application/octet-stream", "image/png"],
        ),
    };
    let min = usize::from(mode == Mode::Binary);
    let any_ct = prop_oneof![
        Just(None),
        opt(&["application/json", "text/plain", "application/octet-stream"])
    ];
    prop_oneof![
        any_ct.prop_map(|ct| (ct, None)),
        (json, arb_json()).prop_map(|(ct, j)| (ct, Some(Data::Json(j)))),
        (
            opt(text_cts),
            prop::string::string_regex(&format!("(?s).{{{min},40}}")).unwrap()
        )
            .prop_map(|(ct, t)| (ct, Some(Data::Text(t)))),
        (
            prop_oneof![Just(None), opt(binary_cts)],
            prop::collection::vec(any::<u8>(), min..64)
        )
            .prop_map(|(ct, b)| (ct, Some(Data::Binary(Bytes::from(b))))),
    ]
    .boxed()
}

fn arb_extension_value(mode: Mode) -> BoxedStrategy<ExtensionValue> {
    let string = attr_string(0, 20).prop_map(ExtensionValue::String);
    match mode {
        Mode::Binary => string.boxed(),
        Mode::Json => prop_oneof![
            string,
            any::<bool>().prop_map(ExtensionValue::Boolean),
            any::<i32>().prop_map(ExtensionValue::from),
        ]
        .boxed(),
    }
}

/// A timestamp between 1970 and 9999, with no, millisecond, or nanosecond precision.
pub fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (
        0i64..253_402_300_799,
        prop_oneof![
            Just(0u32),
            (0u32..1000).prop_map(|ms| ms * 1_000_000),
            0u32..1_000_000_000
        ],
    )
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

/// Any valid event that survives encoding in `mode` unchanged.
pub fn arb_event(mode: Mode) -> impl Strategy<Value = CloudEvent> {
    let extensions = prop::collection::btree_map(
        "[a-z0-9]{1,20}".prop_filter("reserved", |n| !RESERVED_NAMES.contains(&n.as_str())),
        arb_extension_value(mode),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (ExtensionName::new(&k).unwrap(), v))
            .collect::<BTreeMap<_, _>>()
    });
    (
        (
            attr_string(1, 24),
            "[a-zA-Z0-9/._~:@!$&'()*+,;=?#é日-]{1,32}",
            attr_string(1, 24),
            prop::option::of("https://example\\.com/[a-z0-9]{0,12}"),
            prop::option::of(attr_string(1, 24)),
            prop::option::of(arb_time()),
        ),
        extensions,
        arb_data(mode),
    )
        .prop_map(
            |((id, source, ty, dataschema, subject, time), extensions, (datacontenttype, data))| {
                CloudEvent {
                    id,
                    source,
                    ty,
                    datacontenttype,
                    dataschema,
                    subject,
                    time,
                    extensions,
                    data,
                }
            },
        )
}
