//! The transformer: a raw event of a configuration becomes a CloudEvent (SPEC §6).
//!
//! | attribute | value |
//! |---|---|
//! | `id` | a fresh UUID v4, kept on every retry |
//! | `source` | `<gateway name>/<configuration key>` |
//! | `type` | `spec.type` |
//! | `subject` | the configuration key |
//! | `time` | when the event happened (now, when the executor does not say) |
//! | `datacontenttype` | what the executor says the payload is; never a guess |
//! | `eventtypeversion` | `spec.eventVersion` |
//!
//! Knative's `K_CE_OVERRIDES` extensions are set on every event last, so they win.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::cloudevents::{CloudEvent, Data, ExtensionName, ExtensionValue, is_json_content_type};
use crate::event::Event;

/// Turns raw events into CloudEvents for one gateway.
#[derive(Debug, Clone)]
pub struct Transformer {
    gateway: String,
    event_type: String,
    event_version: ExtensionValue,
    overrides: Vec<(ExtensionName, ExtensionValue)>,
    /// Why the attributes every event gets from the gateway (type, version, overrides) do not
    /// make a valid event, if they do not: checked once, not for every event.
    fixed_invalid: Option<String>,
}

/// The name of the extension that carries `spec.eventVersion`.
pub const EVENT_TYPE_VERSION: &str = "eventtypeversion";

impl Transformer {
    /// A transformer for gateway `gateway` of type `event_type` and version `event_version`.
    pub fn new(gateway: &str, event_type: &str, event_version: &str) -> Transformer {
        Transformer {
            gateway: gateway.to_string(),
            event_type: event_type.to_string(),
            event_version: ExtensionValue::String(event_version.to_string()),
            overrides: Vec::new(),
            fixed_invalid: None,
        }
        .checked()
    }

    /// Sets extensions on every event, after all others (`K_CE_OVERRIDES`).
    pub fn with_overrides(mut self, overrides: Vec<(ExtensionName, ExtensionValue)>) -> Self {
        self.overrides = overrides;
        self.checked()
    }

    /// Checks the attributes that are the same for every event: an event with them alone
    /// (and a valid id, source and subject) must be valid.
    fn checked(mut self) -> Self {
        let mut probe = CloudEvent::new("probe", "probe/probe", self.event_type.clone());
        if let Ok(name) = ExtensionName::new(EVENT_TYPE_VERSION) {
            probe.extensions.insert(name, self.event_version.clone());
        }
        for (name, value) in &self.overrides {
            probe.extensions.insert(name.clone(), value.clone());
        }
        self.fixed_invalid = probe.validate_attributes().err().map(|e| e.to_string());
        self
    }

    /// The CloudEvent of `event`, produced by configuration `src`.
    pub fn transform(&self, src: &str, event: Event) -> Result<CloudEvent, String> {
        if let Some(why) = &self.fixed_invalid {
            return Err(why.clone());
        }
        let written_json = event.is_written_json();
        let mut extensions = BTreeMap::new();
        if let Ok(name) = ExtensionName::new(EVENT_TYPE_VERSION) {
            extensions.insert(name, self.event_version.clone());
        }
        for (name, value) in event.extensions {
            let Some(valid) = ExtensionName::new(&name)
                .ok()
                .or_else(|| ExtensionName::sanitize(&name))
            else {
                return Err(format!(
                    "extension name `{name}` cannot be made valid (a–z and 0–9 only)"
                ));
            };
            let value = ExtensionValue::String(value);
            value.check(&valid).map_err(|e| e.to_string())?;
            extensions.insert(valid, value);
        }
        for (name, value) in &self.overrides {
            extensions.insert(name.clone(), value.clone());
        }
        let data = match event.content_type.as_deref() {
            // JSON that serde_json wrote is one JSON value without surrounding whitespace.
            Some(ct) if written_json && is_json_content_type(ct) => Data::Json(event.payload),
            ct => Data::from_payload(event.payload, ct),
        };
        // Written straight into their strings: `to_string` and `format!` go through the
        // formatting machinery (about 600 instructions of an event's 55,000, callgrind).
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut source = String::with_capacity(self.gateway.len() + 1 + src.len());
        source.push_str(&self.gateway);
        source.push('/');
        source.push_str(src);
        let ce = CloudEvent {
            id: uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut id)
                .to_owned(),
            source,
            ty: self.event_type.clone(),
            datacontenttype: event.content_type,
            dataschema: None,
            subject: Some(src.to_string()),
            time: Some(event.time.unwrap_or_else(Utc::now)),
            extensions,
            data: Some(data),
        };
        // A key or content type from outside (the ingest API) may not make a valid event. The
        // id is a UUID, and the rest was checked in `checked` (the event's own extensions above).
        ce.validate_source_subject_content_type()
            .map_err(|e| e.to_string())?;
        Ok(ce)
    }
}

/// Parses `K_CE_OVERRIDES` (`{"extensions": {"name": value, …}}`).
pub fn parse_overrides(text: &str) -> Result<Vec<(ExtensionName, ExtensionValue)>, String> {
    #[derive(serde::Deserialize)]
    struct Overrides {
        #[serde(default)]
        extensions: BTreeMap<String, serde_json::Value>,
    }
    let o: Overrides = serde_json::from_str(text)
        .map_err(|e| format!("K_CE_OVERRIDES is not `{{\"extensions\": {{…}}}}` JSON: {e}"))?;
    o.extensions
        .into_iter()
        .map(|(name, value)| {
            let n = ExtensionName::new(&name)
                .map_err(|e| format!("K_CE_OVERRIDES: extension `{name}`: {e}"))?;
            let v = match value {
                serde_json::Value::String(s) => ExtensionValue::String(s),
                serde_json::Value::Bool(b) => ExtensionValue::Boolean(b),
                serde_json::Value::Number(n) if n.as_i64().is_some() => {
                    ExtensionValue::Integer(n.as_i64().unwrap_or_default())
                }
                other => ExtensionValue::String(other.to_string()),
            };
            Ok((n, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn builds_the_attributes_of_spec_6() {
        let t = Transformer::new("cal", "calendar", "1.0");
        let ev = Event::json(&serde_json::json!({"a": 1}))
            .unwrap()
            .with_extension("Routing-Key", "x.y");
        let a = t.transform("every2s", ev.clone()).unwrap();
        let b = t.transform("every2s", ev).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.source, "cal/every2s");
        assert_eq!(a.ty, "calendar");
        assert_eq!(a.subject.as_deref(), Some("every2s"));
        assert_eq!(a.datacontenttype.as_deref(), Some("application/json"));
        assert!(a.time.is_some());
        assert!(matches!(a.data, Some(Data::Json(_))));
        let ext: BTreeMap<String, ExtensionValue> = a
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
            .collect();
        assert_eq!(
            ext.get("eventtypeversion"),
            Some(&ExtensionValue::String("1.0".into()))
        );
        assert_eq!(
            ext.get("routingkey"),
            Some(&ExtensionValue::String("x.y".into()))
        );
        a.validate().unwrap();
    }

    #[test]
    fn a_payload_without_content_type_is_not_guessed() {
        let t = Transformer::new("g", "t", "1.0");
        let a = t.transform("s", Event::new(&b"{}"[..])).unwrap();
        assert_eq!(a.datacontenttype, None);
        assert!(matches!(a.data, Some(Data::Binary(_))));
    }

    #[test]
    fn an_event_that_cannot_be_valid_is_refused() {
        let t = Transformer::new("g", "t", "1.0");
        let e = t.transform("has space", Event::new(&b"x"[..])).unwrap_err();
        assert!(e.contains("source"), "{e}");
        let e = t
            .transform("s", Event::new(&b"x"[..]).with_content_type("not a type"))
            .unwrap_err();
        assert!(e.contains("datacontenttype"), "{e}");
    }

    #[test]
    fn what_the_gateway_sets_is_checked_once_and_refuses_every_event() {
        // Checked when the transformer is made, not per event, with the same errors.
        let e = Transformer::new("g", "", "1.0")
            .transform("s", Event::new(&b"x"[..]))
            .unwrap_err();
        assert!(e.contains("type"), "{e}");
        let e = Transformer::new("g", "t", "bad\u{1}version")
            .transform("s", Event::new(&b"x"[..]))
            .unwrap_err();
        assert!(e.contains("eventtypeversion"), "{e}");
        let big = vec![(
            ExtensionName::new("n").unwrap(),
            ExtensionValue::Integer(i64::from(i32::MAX) + 1),
        )];
        let t = Transformer::new("g", "t", "1.0").with_overrides(big);
        assert!(t.transform("s", Event::new(&b"x"[..])).is_err());
        // What comes with the event is checked on every event.
        let t = Transformer::new("g", "t", "1.0");
        let e = t
            .transform(
                "s",
                Event::new(&b"x"[..]).with_extension("routing-key", "a\u{0}b"),
            )
            .unwrap_err();
        assert!(e.contains("routingkey"), "{e}");
        assert!(t.transform("s", Event::new(&b"x"[..])).is_ok());
    }

    #[test]
    fn overrides_win() {
        let o =
            parse_overrides(r#"{"extensions":{"eventtypeversion":"9","team":"a","n":3}}"#).unwrap();
        let t = Transformer::new("g", "t", "1.0").with_overrides(o);
        let a = t.transform("s", Event::new(&b"x"[..])).unwrap();
        let get = |n: &str| {
            a.extensions
                .iter()
                .find(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("eventtypeversion"),
            Some(ExtensionValue::String("9".into()))
        );
        assert_eq!(get("team"), Some(ExtensionValue::String("a".into())));
        assert_eq!(get("n"), Some(ExtensionValue::Integer(3)));
        assert!(parse_overrides("{").is_err());
        assert!(parse_overrides(r#"{"extensions":{"Bad_Name":"x"}}"#).is_err());
    }

    #[test]
    fn json_the_event_wrote_is_taken_as_is_a_replaced_payload_is_checked() {
        let t = Transformer::new("g", "t", "1.0");
        let written = Event::json_sized(&serde_json::json!({"a": [1, 2]}), 8).unwrap();
        let ce = t.transform("s", written.clone()).unwrap();
        assert_eq!(
            ce.data,
            Some(Data::Json(Bytes::from_static(br#"{"a":[1,2]}"#)))
        );
        // The public field replaced after the event was written: checked like any payload.
        let mut replaced = written.clone();
        replaced.payload = Bytes::from_static(b"{not json");
        assert_eq!(
            replaced,
            Event::new(&b"{not json"[..]).with_content_type("application/json")
        );
        let ce = t.transform("s", replaced).unwrap();
        assert_eq!(
            ce.data,
            Some(Data::Binary(Bytes::from_static(b"{not json")))
        );
        let mut spaced = written;
        spaced.payload = Bytes::from_static(b" [1] ");
        let ce = t.transform("s", spaced).unwrap();
        assert_eq!(ce.data, Some(Data::Json(Bytes::from_static(b"[1]"))));
    }
}
