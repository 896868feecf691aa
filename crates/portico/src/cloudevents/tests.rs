//! Unit tests: one or more per rule of the model, the JSON format, the HTTP binding and 0.1 JSON.

use ::http::HeaderMap;
use ::http::header::{CONTENT_TYPE, HeaderValue};
use bytes::Bytes;
use chrono::{TimeZone, Utc};

use super::http::{
    Decoded, decode, encode_batch, encode_batch_json, encode_binary, encode_structured,
    percent_decode_header_value, percent_encode_header_value,
};
use super::*;

fn sample() -> CloudEvent {
    let mut ev = CloudEvent::new("e-1", "webhook/example", "com.example.push");
    ev.subject = Some("example".into());
    ev.time = Some(Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap());
    ev.datacontenttype = Some("application/json".into());
    ev.extensions.insert(
        ExtensionName::new("eventtypeversion").unwrap(),
        ExtensionValue::from("v1"),
    );
    ev.data = Some(Data::Json(Bytes::from_static(br#"{"a":[1,2]}"#)));
    ev
}

fn err_text(r: Result<CloudEvent, Error>) -> String {
    r.unwrap_err().to_string()
}

// ---- extension names ----

#[test]
fn extension_name_accepts_lowercase_letters_and_digits_up_to_20() {
    for ok in ["a", "traceparent", "x1", "abcdefghij0123456789"] {
        assert_eq!(ExtensionName::new(ok).unwrap().as_str(), ok);
    }
}

#[test]
fn extension_name_rejects_bad_characters() {
    let e = ExtensionName::new("Foo_Bar").unwrap_err();
    assert_eq!(
        e.to_string(),
        "extension name `Foo_Bar` is invalid: only a-z and 0-9 are allowed"
    );
    for bad in ["routing-key", "Upper", "with space", "é", "a.b"] {
        assert!(
            matches!(
                ExtensionName::new(bad),
                Err(Error::InvalidExtensionName { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn extension_name_rejects_empty_and_too_long() {
    assert!(ExtensionName::new("").is_err());
    let e = ExtensionName::new("abcdefghij0123456789x").unwrap_err();
    assert!(e.to_string().contains("longer than 20"), "{e}");
}

#[test]
fn extension_name_rejects_reserved_names() {
    for name in [
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
    ] {
        let e = ExtensionName::new(name).unwrap_err();
        assert!(e.to_string().contains("core attribute"), "{e}");
    }
    assert!(ExtensionName::new("data_base64").is_err());
}

#[test]
fn extension_name_sanitize() {
    let s = |raw: &str| ExtensionName::sanitize(raw).map(|n| n.as_str().to_owned());
    assert_eq!(s("routing-key").as_deref(), Some("routingkey"));
    assert_eq!(s("X-Trace_ID").as_deref(), Some("xtraceid"));
    assert_eq!(
        s("a-very-long-broker-header-name-indeed").as_deref(),
        Some("averylongbrokerheade")
    );
    assert_eq!(s("Data"), None, "reserved once lowercased");
    assert_eq!(s("--"), None, "nothing left");
    assert_eq!(s("日本"), None);
}

// ---- content types and data ----

#[test]
fn json_content_types() {
    for ct in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "text/json",
        "application/vnd.api+json",
        "application/cloudevents+JSON ;x=y",
    ] {
        assert!(is_json_content_type(ct), "{ct}");
    }
    for ct in [
        "text/plain",
        "application/jsonx",
        "+json",
        "application/xml",
        "",
    ] {
        assert!(!is_json_content_type(ct), "{ct}");
    }
}

#[test]
fn data_from_payload_never_guesses() {
    let json = Bytes::from_static(b" {\"a\":1}\n");
    assert_eq!(
        Data::from_payload(json.clone(), Some("application/json")),
        Data::Json(Bytes::from_static(b"{\"a\":1}"))
    );
    assert_eq!(
        Data::from_payload(json.clone(), None),
        Data::Binary(json.clone())
    );
    assert_eq!(
        Data::from_payload(json.clone(), Some("text/plain")),
        Data::Binary(json)
    );
    let broken = Bytes::from_static(b"{not json");
    assert_eq!(
        Data::from_payload(broken.clone(), Some("application/json")),
        Data::Binary(broken)
    );
}

// ---- validation ----

#[test]
fn validate_accepts_sample() {
    sample().validate().unwrap();
}

#[test]
fn validate_rejects_empty_required_attributes() {
    let mut ev = sample();
    ev.id.clear();
    assert_eq!(
        ev.validate().unwrap_err().to_string(),
        "attribute `id` is invalid: it is empty"
    );
    let mut ev = sample();
    ev.source.clear();
    assert!(ev.validate().unwrap_err().to_string().contains("`source`"));
    let mut ev = sample();
    ev.ty.clear();
    assert!(ev.validate().unwrap_err().to_string().contains("`type`"));
    let mut ev = sample();
    ev.subject = Some(String::new());
    assert!(ev.validate().unwrap_err().to_string().contains("`subject`"));
}

#[test]
fn validate_rejects_control_characters_and_noncharacters() {
    let mut ev = sample();
    ev.subject = Some("line\nbreak".into());
    assert_eq!(
        ev.validate().unwrap_err().to_string(),
        "attribute `subject` is invalid: it contains U+000A: control characters and noncharacters are not allowed"
    );
    let mut ev = sample();
    ev.ty = "t\u{85}".into();
    assert!(ev.validate().unwrap_err().to_string().contains("`type`"));
    let mut ev = sample();
    ev.extensions.insert(
        ExtensionName::new("x").unwrap(),
        ExtensionValue::from("\u{FFFF}"),
    );
    assert!(
        ev.validate()
            .unwrap_err()
            .to_string()
            .contains("attribute `x`")
    );
    let e = err_text(CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"a\u0000b","source":"s","type":"t"}"#,
    ));
    assert!(
        e.contains("attribute `id` is invalid: it contains U+0000"),
        "{e}"
    );
}

#[test]
fn validate_checks_uris_and_media_type() {
    let mut ev = sample();
    ev.source = "has space".into();
    assert!(
        ev.validate()
            .unwrap_err()
            .to_string()
            .contains("URI-reference")
    );
    let mut ev = sample();
    ev.dataschema = Some("/relative/path".into());
    assert!(
        ev.validate()
            .unwrap_err()
            .to_string()
            .contains("absolute URI")
    );
    ev.dataschema = Some("https://example.com/schema.json".into());
    ev.validate().unwrap();
    ev.datacontenttype = Some("json".into());
    assert!(
        ev.validate()
            .unwrap_err()
            .to_string()
            .contains("media type")
    );
    ev.datacontenttype = Some("text/plain; charset=ü".into());
    assert!(ev.validate().is_err());
}

#[test]
fn validate_rejects_integer_outside_i32() {
    let mut ev = sample();
    ev.extensions.insert(
        ExtensionName::new("big").unwrap(),
        ExtensionValue::Integer(i64::from(i32::MAX) + 1),
    );
    let e = ev.validate().unwrap_err();
    assert!(
        matches!(e, Error::IntegerOutOfRange { ref name, .. } if name == "big"),
        "{e}"
    );
}

#[test]
fn validate_rejects_invalid_json_data() {
    let mut ev = sample();
    ev.data = Some(Data::Json(Bytes::from_static(b"{\"a\":")));
    assert!(matches!(ev.validate(), Err(Error::InvalidJsonData(_))));
}

// ---- JSON format: encoding ----

#[test]
fn to_json_exact() {
    let json = String::from_utf8(sample().to_json()).unwrap();
    assert_eq!(
        json,
        r#"{"specversion":"1.0","id":"e-1","source":"webhook/example","type":"com.example.push","datacontenttype":"application/json","subject":"example","time":"2024-05-06T07:08:09Z","eventtypeversion":"v1","data":{"a":[1,2]}}"#
    );
}

#[test]
fn to_json_text_binary_and_escapes() {
    let mut ev = CloudEvent::new("a\"b\\c\n", "s", "t");
    ev.datacontenttype = Some("text/plain".into());
    ev.data = Some(Data::Text("hé \"x\"".into()));
    let json = String::from_utf8(ev.to_json()).unwrap();
    assert!(json.contains(r#""id":"a\"b\\c\n""#), "{json}");
    assert!(json.ends_with(r#""data":"hé \"x\""}"#), "{json}");
    ev.data = Some(Data::Binary(Bytes::from_static(&[0, 1, 2, 255])));
    let json = String::from_utf8(ev.to_json()).unwrap();
    assert!(json.ends_with(r#""data_base64":"AAEC/w=="}"#), "{json}");
}

#[test]
fn time_is_utc_z_with_fraction_only_when_needed() {
    let mut ev = CloudEvent::new("1", "s", "t");
    ev.time = Some(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap());
    assert!(
        String::from_utf8(ev.to_json())
            .unwrap()
            .contains(r#""time":"2024-01-02T03:04:05Z""#)
    );
    ev.time = Some(
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(250),
    );
    assert!(
        String::from_utf8(ev.to_json())
            .unwrap()
            .contains(r#""time":"2024-01-02T03:04:05.250Z""#)
    );
    // An offset on input is converted to UTC.
    let parsed = CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"2024-01-02T05:04:05+02:00"}"#,
    )
    .unwrap();
    assert_eq!(
        parsed.time,
        Some(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap())
    );
}

#[test]
fn write_json_appends() {
    let mut out = b"prefix".to_vec();
    sample().write_json(&mut out);
    assert!(out.starts_with(b"prefix{"));
    assert_eq!(&out[6..], &sample().to_json()[..]);
}

// ---- JSON format: decoding ----

#[test]
fn from_json_round_trips_sample() {
    let ev = sample();
    assert_eq!(CloudEvent::from_json(&ev.to_json()).unwrap(), ev);
}

#[test]
fn from_json_rejects_other_specversions() {
    let e = err_text(CloudEvent::from_json(
        br#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#,
    ));
    assert_eq!(e, "specversion `0.3` is not supported: only `1.0` is");
    let e = err_text(CloudEvent::from_json(
        br#"{"id":"1","source":"s","type":"t"}"#,
    ));
    assert_eq!(e, "attribute `specversion` is missing");
}

#[test]
fn from_json_reports_missing_required_attributes() {
    let cases: [(&[u8], &str); 4] = [
        (br#"{"specversion":"1.0","source":"s","type":"t"}"#, "id"),
        (br#"{"specversion":"1.0","id":"1","type":"t"}"#, "source"),
        (br#"{"specversion":"1.0","id":"1","source":"s"}"#, "type"),
        (
            br#"{"specversion":"1.0","id":"1","source":null,"type":"t"}"#,
            "source",
        ),
    ];
    for (json, name) in cases {
        assert_eq!(
            err_text(CloudEvent::from_json(json)),
            format!("attribute `{name}` is missing")
        );
    }
}

#[test]
fn from_json_rejects_both_data_and_data_base64() {
    let e = CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}"#,
    );
    assert!(matches!(e, Err(Error::BothDataAndDataBase64)));
}

#[test]
fn from_json_rejects_bad_base64() {
    let e = CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"not base64!"}"#,
    );
    assert!(matches!(e, Err(Error::InvalidBase64(_))), "{e:?}");
}

#[test]
fn base64_decodes_every_length_exactly_as_the_crate_does() {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    for len in 0..70 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let text = engine.encode(&bytes);
        let decoded = decode_base64(text.as_bytes()).expect("valid base64");
        assert_eq!(decoded, bytes, "length {len}");
        // No room left over: the payload becomes the event's data as it is.
        assert!(
            decoded.capacity() <= len + 3,
            "length {len}: {}",
            decoded.capacity()
        );
    }
    for bad in ["AA=", "A", "not base64!", "AA==AA==", "YQ"] {
        assert_eq!(
            decode_base64(bad.as_bytes()).is_err(),
            engine.decode(bad).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn from_json_rejects_bad_time_naming_the_attribute() {
    let e = err_text(CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday"}"#,
    ));
    assert!(
        e.starts_with("attribute `time` is invalid: `yesterday` is not an RFC 3339 timestamp"),
        "{e}"
    );
}

#[test]
fn from_json_checks_extension_values() {
    let base = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","#;
    let parse = |tail: &str| CloudEvent::from_json(format!("{base}{tail}}}").as_bytes());
    let ev = parse(r#""s1":"x","b":true,"n":-2147483648,"m":2147483647,"z":null"#).unwrap();
    assert_eq!(ev.extensions["s1"], ExtensionValue::from("x"));
    assert_eq!(ev.extensions["b"], ExtensionValue::Boolean(true));
    assert_eq!(
        ev.extensions["n"],
        ExtensionValue::Integer(i64::from(i32::MIN))
    );
    assert_eq!(
        ev.extensions["m"],
        ExtensionValue::Integer(i64::from(i32::MAX))
    );
    assert!(!ev.extensions.contains_key("z"), "null is absent");
    let e = parse(r#""n":2147483648"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "extension `n` has the integer 2147483648, which is out of range: CloudEvents integers must fit in 32 bits"
    );
    assert!(matches!(
        parse(r#""n":-99999999999999999999999"#),
        Err(Error::IntegerOutOfRange { .. })
    ));
    assert!(
        parse(r#""n":1.5"#)
            .unwrap_err()
            .to_string()
            .contains("non-integer")
    );
    assert!(
        parse(r#""n":{"a":1}"#)
            .unwrap_err()
            .to_string()
            .contains("object")
    );
    assert!(
        parse(r#""n":[1]"#)
            .unwrap_err()
            .to_string()
            .contains("array")
    );
    assert_eq!(
        parse(r#""Foo_Bar":"x""#).unwrap_err().to_string(),
        "extension name `Foo_Bar` is invalid: only a-z and 0-9 are allowed"
    );
}

#[test]
fn from_json_rejects_non_string_attributes_and_duplicates() {
    let e = err_text(CloudEvent::from_json(
        br#"{"specversion":"1.0","id":7,"source":"s","type":"t"}"#,
    ));
    assert!(
        e.contains("attribute `id` is invalid: it must be a JSON string"),
        "{e}"
    );
    let e = err_text(CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"1","id":"2","source":"s","type":"t"}"#,
    ));
    assert_eq!(e, "attribute `id` appears more than once");
    let e = err_text(CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"1","source":"s","type":"t","x":1,"x":2}"#,
    ));
    assert_eq!(e, "attribute `x` appears more than once");
    assert!(matches!(CloudEvent::from_json(b"[1]"), Err(Error::Json(_))));
    assert!(matches!(CloudEvent::from_json(b"{"), Err(Error::Json(_))));
}

#[test]
fn from_json_data_kinds_follow_datacontenttype() {
    let ev = |ct: &str, data: &str| {
        CloudEvent::from_json(
            format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t"{ct},"data":{data}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
        .data
        .unwrap()
    };
    // No content type: JSON, kept exactly as written.
    assert_eq!(
        ev("", r#"{ "a" : 1 }"#),
        Data::Json(Bytes::from_static(br#"{ "a" : 1 }"#))
    );
    assert_eq!(
        ev("", r#""str""#),
        Data::Json(Bytes::from_static(br#""str""#))
    );
    assert_eq!(
        ev(r#","datacontenttype":"application/json""#, r#""str""#),
        Data::Json(Bytes::from_static(br#""str""#))
    );
    assert_eq!(
        ev(r#","datacontenttype":"text/plain""#, r#""a\nb""#),
        Data::Text("a\nb".into())
    );
    // A non-string value with a non-JSON content type is still JSON.
    assert_eq!(
        ev(r#","datacontenttype":"text/plain""#, "[1]"),
        Data::Json(Bytes::from_static(b"[1]"))
    );
    assert_eq!(ev("", "null"), Data::Json(Bytes::from_static(b"null")));
    let bin = CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"application/json","data_base64":"e30="}"#,
    )
    .unwrap();
    assert_eq!(bin.data, Some(Data::Binary(Bytes::from_static(b"{}"))));
}

#[test]
fn from_json_bytes_shares_the_input() {
    let input = Bytes::from(sample().to_json());
    let ev = CloudEvent::from_json_bytes(&input).unwrap();
    let Some(Data::Json(data)) = &ev.data else {
        panic!("json data expected")
    };
    let start = data.as_ptr() as usize - input.as_ptr() as usize;
    assert!(start < input.len());
    assert_eq!(&input[start..start + data.len()], br#"{"a":[1,2]}"#);
}

#[test]
fn empty_text_and_binary_round_trip_in_json() {
    let mut ev = CloudEvent::new("1", "s", "t");
    ev.datacontenttype = Some("text/plain".into());
    ev.data = Some(Data::Text(String::new()));
    assert_eq!(CloudEvent::from_json(&ev.to_json()).unwrap(), ev);
    ev.data = Some(Data::Binary(Bytes::new()));
    assert_eq!(CloudEvent::from_json(&ev.to_json()).unwrap(), ev);
}

// ---- batches ----

#[test]
fn batch_round_trip_and_error_index() {
    let mut second = sample();
    second.id = "e-2".into();
    second.data = None;
    let evs = vec![sample(), second];
    let json = batch_to_json(&evs);
    assert_eq!(batch_from_json(&json).unwrap(), evs);
    assert_eq!(batch_to_json::<CloudEvent>(&[]), b"[]");
    assert!(batch_from_json(b"[]").unwrap().is_empty());
    let bad = br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},{"specversion":"1.0","id":"2","type":"t"}]"#;
    assert_eq!(
        batch_from_json(bad).unwrap_err().to_string(),
        "event at index 1 of the batch: attribute `source` is missing"
    );
    assert!(matches!(batch_from_json(b"{}"), Err(Error::Json(_))));
    // An item that is no object, or JSON that breaks off, is named as before the one-pass read.
    let not_object = br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},7]"#;
    let e = batch_from_json(not_object).unwrap_err();
    assert!(
        matches!(&e, Error::BatchItem { index: 1, source } if matches!(**source, Error::Json(_))),
        "{e}"
    );
    assert!(matches!(
        batch_from_json(br#"[{"specversion":"1.0""#),
        Err(Error::Json(_))
    ));
}

#[test]
fn a_batch_is_read_in_one_pass_and_its_data_shares_the_body() {
    let evs = vec![sample(), sample()];
    let body = Bytes::from(batch_to_json(&evs));
    let got = crate::cloudevents::json::batch_from_json_bytes(&body).unwrap();
    assert_eq!(got, evs);
    for ev in &got {
        let Some(Data::Json(data)) = &ev.data else {
            panic!("json data expected")
        };
        let start = data.as_ptr() as usize - body.as_ptr() as usize;
        assert!(
            start + data.len() <= body.len(),
            "data is a slice of the body"
        );
        // What the decoder gives is valid as a whole, data included.
        ev.validate().unwrap();
    }
}

#[test]
fn string_attributes_are_read_with_and_without_escapes() {
    let ev = CloudEvent::from_json(
        br#"{"specversion":"1.0","id":"a\"b","source":"s\u00e9","type":"t","subject":"plain"}"#,
    )
    .unwrap();
    assert_eq!((ev.id.as_str(), ev.source.as_str()), ("a\"b", "s\u{e9}"));
    assert_eq!(ev.subject.as_deref(), Some("plain"));
    // A raw control character is no JSON string, escaped or not.
    let raw = b"{\"specversion\":\"1.0\",\"id\":\"a\x01\",\"source\":\"s\",\"type\":\"t\"}";
    assert!(matches!(CloudEvent::from_json(raw), Err(Error::Json(_))));
}

#[test]
fn json_strings_are_borrowed_unless_they_hold_escapes() {
    use crate::cloudevents::json::Str;
    use std::borrow::Cow;
    let Str(plain) = serde_json::from_str::<Str>(r#""abc""#).unwrap();
    assert!(matches!(plain, Cow::Borrowed("abc")));
    let Str(escaped) = serde_json::from_str::<Str>(r#""a\u0062c\n""#).unwrap();
    assert!(matches!(escaped, Cow::Owned(ref s) if s == "abc\n"));
    let inside: Option<Str> = serde_json::from_str(r#""x""#).unwrap();
    assert!(matches!(inside, Some(Str(Cow::Borrowed("x")))));
    assert!(serde_json::from_str::<Str>("1").is_err());
}

// ---- HTTP binding ----

#[test]
fn percent_encoding_of_header_values() {
    assert_eq!(percent_encode_header_value("a b"), "a%20b");
    assert_eq!(percent_encode_header_value("say \"hi\""), "say%20%22hi%22");
    assert_eq!(percent_encode_header_value("100%"), "100%25");
    assert_eq!(percent_encode_header_value("é"), "%C3%A9");
    assert_eq!(percent_encode_header_value("日本"), "%E6%97%A5%E6%9C%AC");
    assert_eq!(percent_encode_header_value("tab\there"), "tab%09here");
    assert_eq!(
        percent_encode_header_value("plain-ascii/+:=?&"),
        "plain-ascii/+:=?&"
    );
    for s in ["a b", "say \"hi\"", "100%", "é", "日本", "x\u{7f}y"] {
        assert_eq!(
            percent_decode_header_value(&percent_encode_header_value(s)).unwrap(),
            s
        );
    }
}

#[test]
fn percent_decoding_rejects_bad_escapes_and_non_utf8() {
    for bad in ["%", "%4", "%zz", "a%g1"] {
        assert!(
            matches!(
                percent_decode_header_value(bad),
                Err(Error::PercentDecoding(_))
            ),
            "{bad}"
        );
    }
    let e = percent_decode_header_value("%FF").unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");
}

#[test]
fn binary_mode_headers_and_body() {
    let mut ev = sample();
    ev.subject = Some("日本 \"x\"".into());
    ev.extensions.insert(
        ExtensionName::new("count").unwrap(),
        ExtensionValue::Integer(3),
    );
    ev.extensions.insert(
        ExtensionName::new("flag").unwrap(),
        ExtensionValue::Boolean(true),
    );
    let (headers, body) = encode_binary(&ev);
    assert_eq!(headers["ce-specversion"], "1.0");
    assert_eq!(headers["ce-id"], "e-1");
    assert_eq!(headers["ce-subject"], "%E6%97%A5%E6%9C%AC%20%22x%22");
    assert_eq!(headers["ce-time"], "2024-05-06T07:08:09Z");
    assert_eq!(headers["ce-count"], "3");
    assert_eq!(headers["ce-flag"], "true");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert!(!headers.contains_key("ce-datacontenttype"));
    assert_eq!(&body[..], br#"{"a":[1,2]}"#);

    let Some(Decoded::Single(back)) = decode(&headers, body).unwrap() else {
        panic!("single event expected")
    };
    assert_eq!(back.subject, ev.subject);
    assert_eq!(back.extensions["count"], ExtensionValue::from("3"));
    assert_eq!(back.extensions["flag"], ExtensionValue::from("true"));
    assert_eq!(back.data, ev.data);
}

#[test]
fn binary_mode_body_kinds() {
    let mut ev = CloudEvent::new("1", "s", "t");
    ev.datacontenttype = Some("text/plain; charset=utf-8".into());
    ev.data = Some(Data::Text("héllo".into()));
    let (h, b) = encode_binary(&ev);
    assert_eq!(decode(&h, b).unwrap(), Some(Decoded::Single(ev.clone())));
    ev.datacontenttype = None;
    ev.data = Some(Data::Binary(Bytes::from_static(b"{\"looks\":\"json\"}")));
    let (h, b) = encode_binary(&ev);
    assert_eq!(decode(&h, b).unwrap(), Some(Decoded::Single(ev.clone())));
    ev.data = None;
    let (h, b) = encode_binary(&ev);
    assert!(b.is_empty());
    assert_eq!(decode(&h, b).unwrap(), Some(Decoded::Single(ev)));
}

#[test]
fn decode_errors_in_binary_mode() {
    let mut h = HeaderMap::new();
    h.insert("ce-specversion", HeaderValue::from_static("0.3"));
    h.insert("ce-id", HeaderValue::from_static("1"));
    h.insert("ce-source", HeaderValue::from_static("s"));
    h.insert("ce-type", HeaderValue::from_static("t"));
    assert_eq!(
        decode(&h, Bytes::new()).unwrap_err().to_string(),
        "specversion `0.3` is not supported: only `1.0` is"
    );
    h.insert("ce-specversion", HeaderValue::from_static("1.0"));
    h.insert("ce-time", HeaderValue::from_static("noon"));
    assert!(
        decode(&h, Bytes::new())
            .unwrap_err()
            .to_string()
            .contains("`time`")
    );
    h.remove("ce-time");
    h.insert("ce-bad_name", HeaderValue::from_static("x"));
    assert!(matches!(
        decode(&h, Bytes::new()),
        Err(Error::InvalidExtensionName { .. })
    ));
    h.remove("ce-bad_name");
    h.insert("ce-x", HeaderValue::from_static("50%"));
    assert!(matches!(
        decode(&h, Bytes::new()),
        Err(Error::InvalidHeader { .. })
    ));
    h.remove("ce-x");
    h.remove("ce-source");
    assert_eq!(
        decode(&h, Bytes::new()).unwrap_err().to_string(),
        "attribute `source` is missing"
    );
}

#[test]
fn decode_recognises_modes() {
    assert_eq!(
        decode(&HeaderMap::new(), Bytes::from_static(b"{}")).unwrap(),
        None
    );
    let mut plain = HeaderMap::new();
    plain.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    assert_eq!(decode(&plain, Bytes::from_static(b"{}")).unwrap(), None);

    let (mut h, b) = encode_structured(&sample());
    assert_eq!(h[CONTENT_TYPE], "application/cloudevents+json");
    assert_eq!(
        decode(&h, b.clone()).unwrap(),
        Some(Decoded::Single(sample()))
    );
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("Application/CloudEvents+JSON; charset=UTF-8"),
    );
    assert_eq!(decode(&h, b).unwrap(), Some(Decoded::Single(sample())));

    let (h, b) = encode_batch(&[sample(), sample()]);
    assert_eq!(h[CONTENT_TYPE], "application/cloudevents-batch+json");
    assert_eq!(
        decode(&h, b).unwrap(),
        Some(Decoded::Batch(vec![sample(), sample()]))
    );
    // Joined from the events' JSON (the outbox's records), the batch is the same bytes.
    let mut other = sample();
    other.id = "2".into();
    other.data = Some(Data::Binary(Bytes::from_static(b"\x00\xff")));
    let jsons = [sample().to_json(), other.to_json()];
    assert_eq!(
        encode_batch_json(&jsons),
        encode_batch(&[sample(), other.clone()])
    );
    assert_eq!(encode_batch_json::<Vec<u8>>(&[]).1, &b"[]"[..]);

    let mut odd = HeaderMap::new();
    odd.insert(CONTENT_TYPE, HeaderValue::from_bytes(b"text/\xE9").unwrap());
    assert_eq!(decode(&odd, Bytes::new()).unwrap(), None);
    odd.insert("ce-specversion", HeaderValue::from_static("1.0"));
    assert!(matches!(
        decode(&odd, Bytes::new()),
        Err(Error::InvalidHeader { .. })
    ));

    let mut other = HeaderMap::new();
    other.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+avro"),
    );
    assert!(matches!(
        decode(&other, Bytes::new()),
        Err(Error::UnsupportedFormat(_))
    ));
}

// ---- CloudEvents 0.1 ----

#[test]
fn legacy_v01_fields() {
    let json = legacy::to_json_v01(&sample(), None);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["cloudEventsVersion"], "0.1");
    assert_eq!(v["eventType"], "com.example.push");
    assert_eq!(
        v["eventTypeVersion"], "v1",
        "from the eventtypeversion extension"
    );
    assert_eq!(v["source"]["host"], "webhook/example");
    assert_eq!(v["eventID"], "e-1");
    assert_eq!(v["eventTime"], "2024-05-06T07:08:09Z");
    assert_eq!(v["contentType"], "application/json");
    assert_eq!(v["payload"], "eyJhIjpbMSwyXX0=");
    assert_eq!(v["extensions"]["subject"], "example");
    assert_eq!(v["extensions"]["eventtypeversion"], "v1");
    let json = legacy::to_json_v01(&CloudEvent::new("1", "s", "t"), Some("v2"));
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["eventTypeVersion"], "v2");
    assert!(v.get("payload").is_none() && v.get("extensions").is_none());
}

/// The base64-decoded `payload` of `ev` in CloudEvents 0.1 JSON.
fn v01_payload(ev: &CloudEvent) -> Vec<u8> {
    use base64::Engine;
    let v: serde_json::Value = serde_json::from_slice(&legacy::to_json_v01(ev, None)).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["payload"].as_str().expect("a payload"))
        .unwrap()
}

fn typed(ty: &str, data: &str) -> CloudEvent {
    let mut ev = CloudEvent::new("1", "g/c", ty);
    ev.data = Some(Data::Json(Bytes::from(data.to_string())));
    ev
}

#[test]
fn legacy_calendar_payload_is_the_scheduled_time_as_a_kubernetes_timestamp() {
    let mut ev = typed(
        "calendar",
        r#"{"eventTime":"2018-11-25T10:00:00Z","userPayload":null}"#,
    );
    ev.time = Some(Utc.with_ymd_and_hms(2018, 11, 25, 10, 0, 0).unwrap());
    // seconds = 1543140000 (field 1, varint), nanos = 0 (field 2, written even when zero).
    assert_eq!(
        v01_payload(&ev),
        [0x08, 0xa0, 0xe5, 0xe9, 0xdf, 0x05, 0x10, 0x00]
    );
    // Another shape under the same type (a user server's payload) is left as it is.
    let mut other = typed("calendar", r#"{"tick":1}"#);
    other.time = ev.time;
    assert_eq!(v01_payload(&other), br#"{"tick":1}"#);
}

#[test]
fn legacy_webhook_resource_and_file_payloads_are_what_v06_sent() {
    let json = typed(
        "webhook",
        r#"{"header":{"x-a":["1"]},"body":{"a": [1, 2]},"bodyEncoding":"json"}"#,
    );
    assert_eq!(v01_payload(&json), br#"{"a": [1, 2]}"#);
    let text = typed(
        "webhook",
        r#"{"header":{},"body":"plain \"text\"","bodyEncoding":"text"}"#,
    );
    assert_eq!(v01_payload(&text), br#"plain "text""#);
    let bytes = typed(
        "webhook",
        r#"{"header":{},"body":"/w==","bodyEncoding":"base64"}"#,
    );
    assert_eq!(v01_payload(&bytes), [0xff]);
    let resource = typed(
        "resource",
        r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p"}}}"#,
    );
    assert_eq!(
        v01_payload(&resource),
        br#"{"kind":"Pod","metadata":{"name":"p"}}"#
    );
    let file = typed(
        "file",
        r#"{"name":"a.txt","op":"CREATE","path":"/watched/a.txt"}"#,
    );
    assert_eq!(v01_payload(&file), br#""/watched/a.txt": CREATE"#);
    // Stream gateways' message bytes and any other type: unchanged.
    let nats = typed("nats", r#"{"header":{},"body":1,"bodyEncoding":"json"}"#);
    assert_eq!(
        v01_payload(&nats),
        br#"{"header":{},"body":1,"bodyEncoding":"json"}"#
    );
}
