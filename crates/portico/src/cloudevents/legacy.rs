//! CloudEvents 0.1 JSON, for consumers written against the original project.
//!
//! Field names follow the 0.1 specification as the original emitted it: `eventType`,
//! `eventTypeVersion`, `cloudEventsVersion`, `source` as `{"host": ...}`, `eventID`, `eventTime`,
//! `schemaURL`, `contentType`, `extensions` and the data's bytes base64-encoded in `payload`.

use super::json::{write_base64, write_extension_value, write_str, write_time};
use super::{CloudEvent, ExtensionValue};

/// The event as CloudEvents 0.1 JSON.
///
/// `eventTypeVersion` is `event_type_version` when given, else the `eventtypeversion` extension
/// when it is a string (the framework sets it from `spec.eventVersion`). `subject`, which 0.1 does
/// not have, goes into `extensions` alongside the event's extensions.
pub fn to_json_v01(ev: &CloudEvent, event_type_version: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(super::json::size_hint(ev) + 96);
    out.extend_from_slice(b"{\"eventType\":");
    write_str(&mut out, &ev.ty);
    let version = event_type_version.or(match ev.extensions.get("eventtypeversion") {
        Some(ExtensionValue::String(s)) => Some(s.as_str()),
        _ => None,
    });
    if let Some(version) = version {
        out.extend_from_slice(b",\"eventTypeVersion\":");
        write_str(&mut out, version);
    }
    out.extend_from_slice(b",\"cloudEventsVersion\":\"0.1\",\"source\":{\"host\":");
    write_str(&mut out, &ev.source);
    out.extend_from_slice(b"},\"eventID\":");
    write_str(&mut out, &ev.id);
    if let Some(time) = &ev.time {
        out.extend_from_slice(b",\"eventTime\":\"");
        write_time(&mut out, time);
        out.push(b'"');
    }
    if let Some(schema) = &ev.dataschema {
        out.extend_from_slice(b",\"schemaURL\":");
        write_str(&mut out, schema);
    }
    if let Some(ct) = &ev.datacontenttype {
        out.extend_from_slice(b",\"contentType\":");
        write_str(&mut out, ct);
    }
    if !ev.extensions.is_empty() || ev.subject.is_some() {
        out.extend_from_slice(b",\"extensions\":{");
        let mut first = true;
        if let Some(subject) = &ev.subject {
            out.extend_from_slice(b"\"subject\":");
            write_str(&mut out, subject);
            first = false;
        }
        for (name, value) in &ev.extensions {
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(&mut out, name.as_str());
            out.push(b':');
            write_extension_value(&mut out, value);
        }
        out.push(b'}');
    }
    if let Some(data) = &ev.data {
        out.extend_from_slice(b",\"payload\":\"");
        write_base64(&mut out, data.as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
    out
}
