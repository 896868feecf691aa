//! CloudEvents 0.1 JSON, for consumers written against the original project.
//!
//! Field names follow the 0.1 specification as the original emitted it: `eventType`,
//! `eventTypeVersion`, `cloudEventsVersion`, `source` as `{"host": ...}`, `eventID`, `eventTime`,
//! `schemaURL`, `contentType`, `extensions` and the data's bytes base64-encoded in `payload`.
//!
//! `payload` holds the bytes Argo Events v0.6's gateway of the event's type sent, so that
//! sensors written for it read them unchanged. Portico's built-in gateways emit JSON that says
//! more; an event of type `calendar`, `webhook`, `resource` or `file` whose data has exactly
//! the shape the built-in gateway of that type emits has its payload made as v0.6 made it:
//!
//! | type | Portico's data | v0.6's payload |
//! | --- | --- | --- |
//! | `calendar` | `{"eventTime", "userPayload"}` | the scheduled time (the event's `time`) as a protobuf-encoded Kubernetes `Timestamp` (`seconds` = 1, `nanos` = 2, both always written) |
//! | `webhook` | `{"header", "body", "bodyEncoding"}` | the request body's bytes |
//! | `resource` | `{"type", "object"}` | the object's JSON |
//! | `file` | `{"name", "op", "path"}` | `"<path>": <OP>`, the text form of the file system event (v0.6's first release sent a Go-specific `gob` encoding of it; its successor sent this text) |
//!
//! Every other event's data (the stream gateways' message bytes, a user server's payload, data
//! of any other shape) is the payload as it is.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

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
    if let Some(payload) = v06_payload(ev) {
        out.extend_from_slice(b",\"payload\":\"");
        write_base64(&mut out, &payload);
        out.push(b'"');
    }
    out.push(b'}');
    out
}

/// The payload Argo Events v0.6 sent for `ev` (see the module's table).
fn v06_payload(ev: &CloudEvent) -> Option<Cow<'_, [u8]>> {
    let data = ev.data.as_ref()?.as_bytes();
    let converted = match ev.ty.as_str() {
        "calendar" => calendar(ev, data),
        "webhook" => webhook(data),
        "resource" => resource(data),
        "file" => file(data),
        _ => None,
    };
    Some(converted.map_or(Cow::Borrowed(data), Cow::Owned))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // The fields are there to check the shape.
struct CalendarData<'a> {
    #[serde(rename = "eventTime", borrow)]
    event_time: &'a RawValue,
    #[serde(rename = "userPayload", borrow)]
    user_payload: &'a RawValue,
}

/// The scheduled time as Kubernetes' `Timestamp` message, as `metav1.Time.Marshal` writes it.
fn calendar(ev: &CloudEvent, data: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<CalendarData>(data).ok()?;
    let time = ev.time?;
    let mut out = Vec::with_capacity(16);
    prost::encoding::int64::encode(1, &time.timestamp(), &mut out);
    prost::encoding::int32::encode(2, &(time.timestamp_subsec_nanos() as i32), &mut out);
    Some(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct WebhookData<'a> {
    #[serde(borrow)]
    header: &'a RawValue,
    #[serde(borrow)]
    body: &'a RawValue,
    body_encoding: &'a str,
}

/// The request body: the JSON as it came, or the text, or the bytes.
fn webhook(data: &[u8]) -> Option<Vec<u8>> {
    let d: WebhookData = serde_json::from_slice(data).ok()?;
    match d.body_encoding {
        "json" => Some(d.body.get().as_bytes().to_vec()),
        "text" => serde_json::from_str::<String>(d.body.get())
            .ok()
            .map(String::into_bytes),
        "base64" => {
            let text: String = serde_json::from_str(d.body.get()).ok()?;
            super::decode_base64(text.as_bytes()).ok()
        }
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ResourceData<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a RawValue,
    #[serde(borrow)]
    object: &'a RawValue,
}

fn resource(data: &[u8]) -> Option<Vec<u8>> {
    let d: ResourceData = serde_json::from_slice(data).ok()?;
    Some(d.object.get().as_bytes().to_vec())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FileData {
    name: String,
    op: String,
    path: String,
}

/// `"<path>": OP`, as Go prints an fsnotify event.
fn file(data: &[u8]) -> Option<Vec<u8>> {
    let d: FileData = serde_json::from_slice(data).ok()?;
    Some(format!("{:?}: {}", d.path, d.op).into_bytes())
}
