//! The `storagegrid` gateway: NetApp StorageGRID's bucket notifications, as its SNS-style
//! endpoints post them.
//!
//! Its configuration and what its events carry: [`StorageGridConfig`].
//!
//! A `webhook` route (the shared servers of [`crate::webhook::server`]: configurations naming
//! one port share its server, with the same TLS and `maxBodySize` handling) whose
//! [`Gate`] reads the body itself: StorageGRID publishes each notification as an SNS
//! `Publish` call, a URL-encoded form `Action=Publish&Message=<URL-encoded JSON>&TopicArn=…
//! &Version=…` whose `Message` is an S3 event notification (`{"Records": [...]}`), and expects
//! SNS's XML `PublishResponse`.
//!
//! Argo Events v0.6 had this type with the same fields (`port`, `endpoint`, `events`,
//! `filter`), but its listener never started; this one is the working version of it, with the
//! same payload: the form as a JSON object, its `Message` parsed.

use std::sync::Arc;

use bytes::Bytes;
use hyper::http::{HeaderMap, StatusCode};
use portico::Placement;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::s3event::{self, Filters, KeyFilter, RecordInfo};
use crate::webhook::server::{Made, Reply};
use crate::webhook::{Gate, Hook, HookConfig, HookRules, NumberOrText, Servers, Verdict, run_hook};

const RULES: HookRules = HookRules {
    gateway_type: "storagegrid",
    secret_required: false,
    takes_events: false,
    takes_register: false,
    takes_tolerance: false,
};

/// A `storagegrid` configuration: an endpoint StorageGRID's notifications are posted to.
///
/// Configurations that name the same port share one server (as `webhook` ones do); each
/// endpoint belongs to one configuration. Give StorageGRID an endpoint whose URI is
/// `http(s)://<this host>:<port><endpoint>`, and name it in the bucket's notification
/// configuration.
///
/// Each `POST` must be SNS's `Publish` form, `Action=Publish&Message=<URL-encoded JSON>&…`,
/// whose `Message` is an S3 event notification `{"Records": [{…}, …]}`; anything else gets
/// 400 with the reason. The caller gets 200 with SNS's XML `PublishResponse` (`text/plain`,
/// as Argo Events answered) once the event is accepted for delivery, and 503 with
/// `Retry-After` when the gateway is full; a notification the filters do not keep gets the
/// same 200 and makes no event. The filters (`events`, `filter`) look at the first record,
/// as Argo Events' did.
///
/// Payload: `application/json`, the form as a JSON object, each field a string but `Message`,
/// which is the notification's JSON: `{"Action": "Publish", "Message": {"Records": [{
/// "eventVersion", "eventSource", "eventTime", "eventName", "userIdentity",
/// "requestParameters", "responseElements", "s3": {"bucket", "object": {"key", …}}}]},
/// "TopicArn": …, "Version": …}`. Its time is the first record's `eventTime`; extensions
/// `bucket` and `key` (the object key, decoded) are the first record's.
///
/// StorageGRID's notifications carry no signature: like a `webhook` without a secret, anyone
/// who reaches the port can post one (a warning says so, and `spec.security.requireAuth`
/// refuses the configuration).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageGridConfig {
    /// The port to listen on, on every interface (a number or a string holding one, as Argo
    /// Events wrote it).
    pub port: NumberOrText,
    /// The path notifications are posted to, starting with `/`.
    pub endpoint: String,
    /// The event types to keep, like `ObjectCreated:Put` (StorageGRID writes them without
    /// `s3:`; `s3:ObjectCreated:Put` works too, and a `*` at the end keeps every type it
    /// starts, `ObjectCreated:*`); default all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Object key filters: only objects whose key starts with `prefix` and ends with
    /// `suffix`.
    #[serde(default)]
    pub filter: Option<KeyFilter>,
    /// A PEM certificate chain: with `serverKeyPath`, the port serves HTTPS (rustls).
    /// Configurations sharing a port must agree on TLS.
    #[serde(default)]
    pub server_cert_path: Option<String>,
    /// The PEM private key of `serverCertPath`.
    #[serde(default)]
    pub server_key_path: Option<String>,
    /// The largest body taken: bytes, or `512KiB`, `4MiB`, `1MB`… (default `4MiB`); a larger
    /// one gets 413.
    #[serde(default)]
    pub max_body_size: Option<NumberOrText>,
}

/// A checked `storagegrid` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    hook: Hook,
    filters: Filters,
}

impl StorageGridConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let hook = HookConfig {
            port: Some(self.port),
            endpoint: self.endpoint,
            method: None,
            server_cert_path: self.server_cert_path,
            server_key_path: self.server_key_path,
            max_body_size: self.max_body_size,
            secret_file: None,
            secret_env: None,
            events: None,
            register: None,
            tolerance: None,
        }
        .check(RULES)?;
        let filters = Filters {
            events: s3event::check_events("events", &self.events)?,
            bucket: None,
            key: self.filter.unwrap_or_default(),
        };
        Ok(Settings { hook, filters })
    }
}

/// The `storagegrid` executor. Its configurations share servers by port.
#[derive(Debug, Default, Clone)]
pub struct StorageGrid {
    servers: Arc<Servers>,
}

impl StorageGrid {
    /// The servers, by port.
    pub fn servers(&self) -> &Arc<Servers> {
        &self.servers
    }
}

impl ConfigExecutor for StorageGrid {
    /// `filter` is its object-name filter (`filter: {prefix, suffix}`), as in Argo Events v0.6.
    fn own_keys(&self) -> &'static [&'static str] {
        &["filter"]
    }

    type Config = Settings;

    /// StorageGRID spreads notifications over the replicas behind the URL.
    fn placement(&self, _: &Settings) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        let s = ctx.parse::<StorageGridConfig>()?.check()?;
        let port = s.hook.listen.as_ref().map_or(0, |l| l.port);
        let risk = format!(
            "unauthenticated: port {port} takes StorageGRID notifications on {} from anyone who reaches it (StorageGRID signs none)",
            s.hook.endpoint
        );
        if ctx.gateway().require_auth() {
            return Err(ConfigError::invalid(format!(
                "{risk}; refused because spec.security.requireAuth is true"
            )));
        }
        ctx.warn(risk);
        Ok(s)
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        let gate = Arc::new(Notifications {
            filters: s.filters.clone(),
        });
        run_hook(&self.servers, &ctx, &s.hook, gate, None).await
    }
}

/// The gate of a `storagegrid` route: reads the SNS form, filters, makes the event.
struct Notifications {
    filters: Filters,
}

/// SNS's answer to `Publish`, with new ids.
fn publish_response() -> Reply {
    let body = format!(
        "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult><MessageId>{}</MessageId></PublishResult><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></PublishResponse>\n",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    );
    Reply {
        status: StatusCode::OK,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from(body),
    }
}

/// The form as a JSON object (`Message` parsed), and its first record; or why it is not an
/// SNS `Publish` of an S3 event notification.
pub fn read_publish(body: &[u8]) -> Result<(Map<String, Value>, Value), String> {
    let mut form = Map::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if form.contains_key(name.as_ref()) {
            return Err(format!("the form gives `{name}` twice"));
        }
        let value = if name == "Message" {
            serde_json::from_str::<Value>(&value)
                .map_err(|e| format!("Message is not JSON: {e}"))?
        } else {
            Value::String(value.into_owned())
        };
        form.insert(name.into_owned(), value);
    }
    let Some(message) = form.get("Message") else {
        return Err(
            "no Message: the body must be SNS's Publish form, Action=Publish&Message=<URL-encoded JSON>&TopicArn=…"
                .to_string(),
        );
    };
    let first = match message.get("Records").and_then(Value::as_array) {
        None => {
            return Err(
                "Message has no Records: it must be an S3 event notification, {\"Records\": [...]}"
                    .to_string(),
            );
        }
        Some(records) => match records.first() {
            None => return Err("Message's Records is empty".to_string()),
            Some(r) if !r.is_object() => {
                return Err("Message's Records[0] is not a JSON object".to_string());
            }
            Some(r) => r.clone(),
        },
    };
    Ok((form, first))
}

impl Gate for Notifications {
    fn admit(&self, _: &HeaderMap, _: &[u8]) -> Verdict {
        Verdict::Accept
    }

    fn event(&self, _: &HeaderMap, body: &Bytes) -> Made {
        let (form, first) = match read_publish(body) {
            Ok(read) => read,
            Err(why) => {
                return Made::Answer(Reply::text(StatusCode::BAD_REQUEST, format!("{why}\n")));
            }
        };
        let Some(info) = RecordInfo::of(&first) else {
            return Made::Answer(Reply::text(
                StatusCode::BAD_REQUEST,
                "Message's Records[0] is not a JSON object\n",
            ));
        };
        if let Some(why) = self.filters.reject(&info) {
            tracing::debug!(reason = %why, "StorageGRID notification filtered out");
            return Made::Answer(publish_response());
        }
        match Event::json_sized(&form, body.len() + 64) {
            Ok(event) => Made::Event(info.annotate(event), Some(publish_response())),
            Err(e) => Made::Answer(Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the event: {e}\n"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<StorageGridConfig>(yaml)?.check()
    }

    #[test]
    fn validation_names_the_field() {
        let s = check("port: '8080'\nendpoint: /sg\nevents: [ObjectCreated:Put, 's3:ObjectRemoved:*']\nfilter: {prefix: a/, suffix: .txt}").unwrap();
        assert_eq!(s.filters.events, ["ObjectCreated:Put", "ObjectRemoved:*"]);
        assert_eq!(s.hook.listen.as_ref().map(|l| l.port), Some(8080));
        let e = check("endpoint: /sg").unwrap_err();
        assert!(e.message().contains("missing field `port`"), "{e}");
        let e = check("port: 8080").unwrap_err();
        assert!(e.message().contains("missing field `endpoint`"), "{e}");
        let e = check("port: 8080\nendpoint: sg").unwrap_err();
        assert!(e.message().starts_with("endpoint:"), "{e}");
        let e = check("port: nope\nendpoint: /sg").unwrap_err();
        assert!(e.message().starts_with("port:"), "{e}");
        let e = check("port: 1\nendpoint: /sg\nevents: ['']").unwrap_err();
        assert!(e.message().starts_with("events[0]:"), "{e}");
        let e = check("port: 1\nendpoint: /sg\nfilter: {prefix: a, other: b}").unwrap_err();
        assert!(e.message().contains("other"), "{e}");
    }

    fn form(message: &str) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "Publish")
            .append_pair("Message", message)
            .append_pair("TopicArn", "urn:sgws:sns::123:topic")
            .append_pair("Version", "2010-03-31")
            .finish()
            .into_bytes()
    }

    #[test]
    fn the_form_becomes_json_with_the_message_parsed() {
        let msg = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a+b&c=d.txt"}}}]}"#;
        let (json, first) = read_publish(&form(msg)).unwrap();
        assert_eq!(json["Action"], "Publish");
        assert_eq!(json["Version"], "2010-03-31");
        assert_eq!(
            json["Message"]["Records"][0]["eventName"],
            "ObjectCreated:Put"
        );
        assert_eq!(RecordInfo::of(&first).unwrap().key, "a b&c=d.txt");
        for (body, why) in [
            (b"Action=Publish".to_vec(), "no Message"),
            (form("{not json"), "Message is not JSON"),
            (form("{}"), "no Records"),
            (form(r#"{"Records":[]}"#), "empty"),
            (form(r#"{"Records":[1]}"#), "Records[0]"),
            (b"Message=%7B%7D&Message=%7B%7D".to_vec(), "twice"),
        ] {
            let e = read_publish(&body).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
