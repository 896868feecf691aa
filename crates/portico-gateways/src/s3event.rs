//! What the `artifact` and `storagegrid` gateways share: S3 event notification records
//! (`{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name"}, "object": {"key"}}, …}`)
//! and the filters on them (event names, bucket, object key prefix and suffix).
//!
//! Event names compare without their `s3:` prefix (S3 writes `ObjectCreated:Put` in a record,
//! and its configuration names `s3:ObjectCreated:Put`; StorageGRID writes neither), so a
//! configuration may give either form; a name ending in `*` keeps every name it starts
//! (`s3:ObjectCreated:*`). Object keys come URL-encoded in a record (`red+flower.jpg`); the
//! filters and the `key` extension use the decoded key.

use percent_encoding::percent_decode_str;
use portico::{ConfigError, Event};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// Object key filters: a notification is kept when its object's key starts with `prefix`
/// and ends with `suffix` (an empty or missing one keeps every key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyFilter {
    /// The keys' beginning, like `uploads/`.
    #[serde(default)]
    pub prefix: String,
    /// The keys' end, like `.csv`.
    #[serde(default)]
    pub suffix: String,
}

/// Checked event-name and key filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filters {
    /// Event names kept, normalized (no `s3:`; a trailing `*` matches any end); empty: all.
    pub events: Vec<String>,
    /// Only records of this bucket, if set.
    pub bucket: Option<String>,
    /// The key filters.
    pub key: KeyFilter,
}

/// `s3:ObjectCreated:Put` and `ObjectCreated:Put` → `ObjectCreated:Put`.
pub(crate) fn normalize_event(name: &str) -> &str {
    let name = name.trim();
    name.strip_prefix("s3:").unwrap_or(name)
}

/// Checks a list of event names; `field` names it in errors (`events`).
pub(crate) fn check_events(field: &str, names: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let n = normalize_event(name);
        if n.is_empty() {
            return Err(ConfigError::invalid(format!("{field}[{i}]: is empty")));
        }
        if n.contains(char::is_whitespace) || n.find('*').is_some_and(|at| at + 1 != n.len()) {
            return Err(ConfigError::invalid(format!(
                "{field}[{i}]: `{name}` is not an S3 event name like `s3:ObjectCreated:Put` or `s3:ObjectCreated:*` (a `*` only at the end)"
            )));
        }
        out.push(n.to_string());
    }
    Ok(out)
}

/// Decodes an object key as a notification carries it (`+` is a space, `%XX` a byte).
pub(crate) fn decode_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// What a filter needs of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordInfo {
    /// `eventName`, as written.
    pub event_name: String,
    /// `s3.bucket.name`.
    pub bucket: String,
    /// `s3.object.key`, decoded.
    pub key: String,
    /// `eventTime`, when it is an RFC 3339 time.
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

impl RecordInfo {
    /// Reads a record; `None` when it is not an object (the fields it lacks are empty).
    pub(crate) fn of(record: &Value) -> Option<RecordInfo> {
        let record = record.as_object()?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let s3 = record.get("s3");
        Some(RecordInfo {
            event_name: text(record.get("eventName")),
            bucket: text(s3.and_then(|s| s.pointer("/bucket/name"))),
            key: decode_key(&text(s3.and_then(|s| s.pointer("/object/key")))),
            time: record
                .get("eventTime")
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        })
    }

    /// Adds what the record tells to an event: extensions `bucket` and `key`, the time.
    pub(crate) fn annotate(&self, mut event: Event) -> Event {
        if !self.bucket.is_empty() {
            event = event.with_extension("bucket", self.bucket.as_str());
        }
        if !self.key.is_empty() {
            event = event.with_extension("key", self.key.as_str());
        }
        if let Some(t) = self.time {
            event = event.with_time(t);
        }
        event
    }
}

impl Filters {
    /// Why the record is not kept, or `None` when it is.
    pub(crate) fn reject(&self, r: &RecordInfo) -> Option<String> {
        if let Some(b) = &self.bucket
            && *b != r.bucket
        {
            return Some(format!(
                "bucket `{}` is not this configuration's bucket `{b}`",
                r.bucket
            ));
        }
        if !self.events.is_empty() {
            let got = normalize_event(&r.event_name);
            let kept = self.events.iter().any(|want| match want.strip_suffix('*') {
                Some(start) => got.starts_with(start),
                None => got == want,
            });
            if !kept {
                return Some(format!(
                    "event `{}` is not one of this configuration's events {:?}",
                    r.event_name, self.events
                ));
            }
        }
        if !r.key.starts_with(&self.key.prefix) || !r.key.ends_with(&self.key.suffix) {
            return Some(format!(
                "key `{}` does not match this configuration's filter (prefix `{}`, suffix `{}`)",
                r.key, self.key.prefix, self.key.suffix
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, bucket: &str, key: &str) -> RecordInfo {
        RecordInfo::of(&json!({
            "eventName": name, "eventTime": "2019-01-02T03:04:05.678Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key}}
        }))
        .unwrap()
    }

    #[test]
    fn keys_are_decoded() {
        let r = record("ObjectCreated:Put", "b", "dir%2Fred+flower%21.jpg");
        assert_eq!(r.key, "dir/red flower!.jpg");
        assert!(r.time.is_some());
        assert!(RecordInfo::of(&json!("x")).is_none());
    }

    #[test]
    fn events_compare_without_s3_prefix_and_with_wildcards() {
        let f = Filters {
            events: check_events("events", &["s3:ObjectCreated:*".into()]).unwrap(),
            ..Filters::default()
        };
        assert_eq!(f.reject(&record("ObjectCreated:Put", "b", "k")), None);
        assert_eq!(f.reject(&record("s3:ObjectCreated:Copy", "b", "k")), None);
        assert!(
            f.reject(&record("ObjectRemoved:Delete", "b", "k"))
                .is_some()
        );
        let f = Filters {
            events: check_events("events", &["ObjectRemoved:Delete".into()]).unwrap(),
            bucket: Some("b".into()),
            key: KeyFilter {
                prefix: "in/".into(),
                suffix: ".csv".into(),
            },
        };
        assert_eq!(
            f.reject(&record("ObjectRemoved:Delete", "b", "in/x.csv")),
            None
        );
        assert!(
            f.reject(&record("ObjectRemoved:Delete", "c", "in/x.csv"))
                .is_some()
        );
        assert!(
            f.reject(&record("ObjectRemoved:Delete", "b", "out/x.csv"))
                .is_some()
        );
        assert!(
            f.reject(&record("ObjectRemoved:Delete", "b", "in/x.txt"))
                .is_some()
        );
        let e = check_events("events", &["s3:*:Put".into()]).unwrap_err();
        assert!(e.message().starts_with("events[0]:"), "{e}");
        let e = check_events("events", &[" ".into()]).unwrap_err();
        assert!(e.message().starts_with("events[0]:"), "{e}");
    }
}
