//! The `artifact` gateway: S3 bucket notifications as S3 delivers them, through an SQS queue.
//!
//! Its configuration, what its events carry and how it deletes what it read:
//! [`ArtifactConfig`].
//!
//! S3 sends a bucket's event notifications to an SQS queue (the bucket's notification
//! configuration names the queue); this gateway long-polls that queue (`ReceiveMessage` with
//! `WaitTimeSeconds`), makes one CloudEvent of each record that passes the filters, and deletes
//! the message only once every event of it was accepted by Portico.
//!
//! Argo Events v0.6's `artifact` gateway read MinIO's own `ListenBucketNotification` API
//! instead; its configuration shape (`s3EventConfig`, `insecure`, `accessKey`, `secretKey`) is
//! taken as it is and mapped onto this one, plus the queue it lacks (see
//! docs/migrating-from-argo.md).
//!
//! SQS is called through its JSON protocol with the gateway's HTTP client, each request signed
//! with Signature Version 4: the client, the queue's and credentials' fields and where the
//! credentials are read are shared with the `sqs` gateway (`aws.rs`).

use std::time::Duration;

use portico::{ConfigContext, ConfigError, ConfigExecutor, Event, RejectReason, Submit};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

pub use crate::aws::SecretKeySelector;
use crate::aws::{CredentialFields, CredentialSources, Queue, invalid, region_of_host};
use crate::broker::{self, Progress, SessionError, SessionResult, accepted_ackable};
use crate::s3event::{self, Filters, KeyFilter, RecordInfo};
// The unit tests' names, from where they now live.
#[cfg(test)]
use {crate::aws::KeySource, portico::SecretSource};

/// Messages taken per `ReceiveMessage` (SQS's most).
const BATCH: u32 = 10;

/// An `artifact` configuration: the S3 event notifications a bucket sends to an SQS queue.
///
/// Give the queue (`queueUrl`, or `queue` by name), and optionally which notifications to
/// keep (`bucket`, `events`, `filter`) and the credentials the requests are signed with.
///
/// Payload: one event per S3 event record kept, its data the record's JSON as S3 wrote it
/// (`{"eventVersion", "eventSource", "awsRegion", "eventTime", "eventName", "userIdentity",
/// "requestParameters", "responseElements", "s3": {"bucket", "object": {"key", "size",
/// "eTag", …}}}`, `application/json`), its time the record's `eventTime`; extensions `bucket`
/// and `key` (the object key, decoded). A message holding several records makes several
/// events.
///
/// A message is deleted from the queue only once every event made of it is accepted for
/// delivery (written to the outbox), or, with `spec.delivery.mode: ackAfterDelivery`, once
/// every watcher took them; one that is not comes back after the queue's visibility timeout:
/// at least once. A message no record of which passes the filters is deleted without an
/// event; so is S3's `s3:TestEvent` (sent when a notification configuration is saved), and a
/// message that is not an S3 event notification (with a warning, counted in
/// `portico_events_rejected_total{reason="invalid"}`). An S3 notification sent through SNS
/// (the SNS envelope, `"Type": "Notification"`) is unwrapped.
///
/// An unreachable queue or refused call is reported on the node (`Error`, with SQS's reason)
/// and retried with capped backoff.
///
/// Argo Events v0.6's shape is taken too: `s3EventConfig` (`endpoint`, `bucket`, `region`,
/// `event`, `filter`), `insecure`, and `accessKey` / `secretKey` naming a key of a Kubernetes
/// Secret in the gateway's namespace. v0.6 listened to MinIO's own notification API, which
/// Portico does not: such a configuration also names the SQS queue its bucket's
/// notifications go to (`queue`, asked of the SQS API at `s3EventConfig.endpoint`, or
/// `queueUrl`), and says so in its error until it does.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactConfig {
    /// The SQS queue's URL, like `https://sqs.us-east-1.amazonaws.com/123456789012/uploads`.
    /// The SQS API is called at its scheme, host and port.
    #[serde(default)]
    pub queue_url: Option<String>,
    /// The SQS queue's name, instead of `queueUrl`: its URL is asked of the SQS API
    /// (`GetQueueUrl`) at `endpoint`.
    #[serde(default)]
    pub queue: Option<String>,
    /// With `queue`: the SQS API's URL (default `https://sqs.<region>.amazonaws.com`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The AWS region requests are signed for (default: the one an AWS SQS host names,
    /// `sqs.<region>.amazonaws.com`; `us-east-1` for an SQS API outside AWS, which takes any;
    /// required for other AWS hosts).
    #[serde(default)]
    pub region: Option<String>,
    /// Only notifications of this bucket (default: every bucket that sends to the queue).
    #[serde(default)]
    pub bucket: Option<String>,
    /// The S3 event types to keep, like `s3:ObjectCreated:Put` or `s3:ObjectCreated:*` (with
    /// or without `s3:`; a `*` at the end keeps every type it starts); default all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Object key filters: only objects whose key starts with `prefix` and ends with
    /// `suffix`.
    #[serde(default)]
    pub filter: Option<KeyFilter>,
    /// A file holding the AWS access key id. Without any credential field, the environment
    /// variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (if set)
    /// `AWS_SESSION_TOKEN` are used.
    #[serde(default)]
    pub access_key_file: Option<String>,
    /// An environment variable holding the access key id, instead of `accessKeyFile`.
    #[serde(default)]
    pub access_key_env: Option<String>,
    /// A file holding the AWS secret access key.
    #[serde(default)]
    pub secret_key_file: Option<String>,
    /// An environment variable holding the secret access key, instead of `secretKeyFile`.
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// A file holding a session token (temporary credentials), if any.
    #[serde(default)]
    pub session_token_file: Option<String>,
    /// An environment variable holding the session token, instead of `sessionTokenFile`.
    #[serde(default)]
    pub session_token_env: Option<String>,
    /// Argo Events' form: the access key id from a key of a Kubernetes Secret in the
    /// gateway's namespace (read at every (re)connection; in a cluster only).
    #[serde(default)]
    pub access_key: Option<SecretKeySelector>,
    /// Argo Events' form: the secret access key from a key of a Kubernetes Secret.
    #[serde(default)]
    pub secret_key: Option<SecretKeySelector>,
    /// How long one `ReceiveMessage` waits for a message: `1s` to `20s` (default `20s`).
    #[serde(default)]
    pub wait_time: Option<String>,
    /// Argo Events v0.6's bucket notification settings, instead of `bucket`, `events`,
    /// `filter`, `region` and `endpoint`.
    #[serde(default)]
    pub s3_event_config: Option<S3EventConfig>,
    /// Argo Events' form, with `s3EventConfig`: `true` calls `s3EventConfig.endpoint` over
    /// plain HTTP (default `false`: HTTPS).
    #[serde(default)]
    pub insecure: Option<bool>,
}

/// Argo Events v0.6's `s3EventConfig`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3EventConfig {
    /// The storage server, `host:port`. v0.6 listened to MinIO's notification API there;
    /// Portico asks the SQS API there for the URL of `queue` (an AWS S3 host,
    /// `s3.amazonaws.com` or `s3.<region>.amazonaws.com`, means SQS at
    /// `sqs.<region>.amazonaws.com`).
    #[serde(default)]
    pub endpoint: String,
    /// Only notifications of this bucket.
    #[serde(default)]
    pub bucket: String,
    /// The AWS region requests are signed for (unused by v0.6).
    #[serde(default)]
    pub region: Option<String>,
    /// The one S3 event type to keep, like `s3:ObjectCreated:Put` (default all).
    #[serde(default)]
    pub event: Option<String>,
    /// Object key filters.
    #[serde(default)]
    pub filter: Option<KeyFilter>,
}

/// A checked `artifact` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    queue: Queue,
    region: String,
    filters: Filters,
    credentials: CredentialSources,
    wait: Duration,
    /// Said once at start.
    warnings: Vec<String>,
}

/// Whether `host` is AWS S3's (`s3.amazonaws.com`, `s3.<region>.amazonaws.com`, …).
fn is_aws_s3(host: &str) -> bool {
    host == "s3.amazonaws.com" || region_of_host(host).is_some() && host.starts_with("s3")
}

/// The SQS API's URL for v0.6's `s3EventConfig.endpoint` (`host:port`, `insecure` for HTTP).
fn sqs_endpoint_of_v06(
    endpoint: &str,
    insecure: bool,
    region: Option<&str>,
) -> Result<url::Url, ConfigError> {
    let field = "s3EventConfig.endpoint";
    let endpoint = broker::non_blank(field, endpoint)?;
    let text = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("{}://{endpoint}", if insecure { "http" } else { "https" })
    };
    let u = broker::check_url(field, &text, &["http", "https"])?;
    let host = u.host_str().unwrap_or_default();
    if is_aws_s3(host) {
        let region = region_of_host(host)
            .or_else(|| region.map(str::to_string))
            .ok_or_else(|| {
                invalid(
                    "s3EventConfig.region",
                    format!("required: `{host}` is AWS S3, whose notifications are read through SQS in the bucket's region"),
                )
            })?;
        return url::Url::parse(&format!("https://sqs.{region}.amazonaws.com"))
            .map_err(|e| invalid("s3EventConfig.region", format!("`{region}`: {e}")));
    }
    Ok(u)
}

impl ArtifactConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let mut warnings = Vec::new();
        let queue_url = broker::optional(self.queue_url);
        let queue_name = broker::optional(self.queue);
        let mut endpoint = broker::optional(self.endpoint);
        let mut region = broker::optional(self.region);
        let v06 = self.s3_event_config.is_some();
        let (bucket, events, filter) = match self.s3_event_config {
            Some(s3) => {
                for (set, field) in [
                    (self.bucket.is_some(), "bucket"),
                    (!self.events.is_empty(), "events"),
                    (self.filter.is_some(), "filter"),
                    (region.is_some(), "region"),
                    (endpoint.is_some(), "endpoint"),
                ] {
                    if set {
                        return Err(invalid(
                            field,
                            format!(
                                "both {field} and s3EventConfig are set: give {field} in s3EventConfig (Argo Events' shape) or leave s3EventConfig out"
                            ),
                        ));
                    }
                }
                let bucket = broker::non_blank("s3EventConfig.bucket", &s3.bucket)?.to_string();
                region = broker::optional(s3.region);
                let events: Vec<String> = broker::optional(s3.event).into_iter().collect();
                if queue_url.is_none() && queue_name.is_none() {
                    return Err(invalid(
                        "queue",
                        "missing: Argo Events v0.6 listened to MinIO's own notification API at s3EventConfig.endpoint, which Portico does not; \
                         Portico reads the S3 event notifications the bucket sends to an SQS queue. Point the bucket's notifications at a queue \
                         and add `queue: <its name>` (its URL is asked of the SQS API at s3EventConfig.endpoint) or `queueUrl: <its URL>`",
                    ));
                }
                let insecure = self.insecure.unwrap_or(false);
                if queue_name.is_some() {
                    endpoint = Some(
                        sqs_endpoint_of_v06(&s3.endpoint, insecure, region.as_deref())?.to_string(),
                    );
                } else if !s3.endpoint.trim().is_empty() {
                    warnings.push(format!(
                        "s3EventConfig.endpoint (`{}`) and insecure have no effect: notifications are read from the queue at queueUrl",
                        s3.endpoint.trim()
                    ));
                }
                (Some(bucket), events, s3.filter)
            }
            None => {
                if self.insecure.is_some() {
                    return Err(invalid(
                        "insecure",
                        "only with s3EventConfig (Argo Events' shape); otherwise the scheme of queueUrl or endpoint says http or https",
                    ));
                }
                (broker::optional(self.bucket), self.events, self.filter)
            }
        };
        let region_field = if v06 {
            "s3EventConfig.region"
        } else {
            "region"
        };
        let (queue, region) = crate::aws::check_queue(
            queue_url,
            queue_name,
            endpoint,
            region,
            region_field,
            "missing: give the SQS queue the bucket's notifications go to, as `queueUrl: <its URL>` or `queue: <its name>`",
        )?;
        let filters = Filters {
            events: s3event::check_events("events", &events).map_err(|e| {
                if v06 {
                    ConfigError::invalid(e.message().replacen(
                        "events[0]",
                        "s3EventConfig.event",
                        1,
                    ))
                } else {
                    e
                }
            })?,
            bucket,
            key: filter.unwrap_or_default(),
        };
        let credentials = CredentialFields {
            access_key_file: self.access_key_file,
            access_key_env: self.access_key_env,
            access_key: self.access_key,
            secret_key_file: self.secret_key_file,
            secret_key_env: self.secret_key_env,
            secret_key: self.secret_key,
            session_token_file: self.session_token_file,
            session_token_env: self.session_token_env,
        }
        .check()?;
        let wait = crate::aws::check_wait_time(self.wait_time)?;
        Ok(Settings {
            queue,
            region,
            filters,
            credentials,
            wait,
            warnings,
        })
    }
}

/// The `artifact` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Artifact;

impl ConfigExecutor for Artifact {
    /// `filter` is its S3 event filter (`filter: {prefix, suffix}`), as in Argo Events v0.6.
    fn own_keys(&self) -> &'static [&'static str] {
        &["filter"]
    }

    type Config = Settings;

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<ArtifactConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        for w in &s.warnings {
            ctx.warn(w.clone());
        }
        let http = crate::aws::http_client(s.wait)?;
        broker::run_sessions_until_they_stop(&ctx, None, |progress| {
            let (ctx, s, http) = (ctx.clone(), s.clone(), http.clone());
            async move { session(&ctx, &s, http, progress).await }
        })
        .await
    }
}

async fn session(
    ctx: &ConfigContext,
    s: &Settings,
    http: reqwest::Client,
    progress: Progress,
) -> SessionResult {
    let opened = crate::aws::open_queue(
        ctx,
        &s.queue,
        &s.region,
        &s.credentials,
        http,
        &["QueueArn"],
    )
    .await?;
    let Some(crate::aws::OpenQueue {
        sqs,
        url: queue_url,
        ..
    }) = opened
    else {
        return Ok(());
    };
    progress.running(ctx);
    let receive = json!({
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": BATCH,
        "WaitTimeSeconds": s.wait.as_secs(),
    });
    loop {
        let answer = tokio::select! {
            a = sqs.call("ReceiveMessage", receive.clone()) => a,
            _ = ctx.stopped() => return Ok(()),
        };
        let answer = answer.map_err(|e| SessionError::Broker(e.to_string()))?;
        let messages = answer
            .get("Messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // The messages whose events were all accepted: deleted once they are delivered as
        // the delivery mode says.
        let mut done = Vec::with_capacity(messages.len());
        let mut stopping = false;
        'messages: for m in &messages {
            let Some(receipt) = m.get("ReceiptHandle").and_then(Value::as_str) else {
                continue;
            };
            let id = m.get("MessageId").and_then(Value::as_str).unwrap_or("?");
            let body = m.get("Body").and_then(Value::as_str).unwrap_or("");
            let mut delivered = Vec::new();
            match read_message(body) {
                Message::Test => {
                    tracing::debug!(src = ctx.src(), message = id, "s3:TestEvent deleted");
                }
                Message::Invalid(why) => {
                    tracing::warn!(src = ctx.src(), message = id, %why, "an SQS message that is not an S3 event notification is deleted");
                    ctx.count_rejected(RejectReason::Invalid, 1);
                }
                Message::Records(records) => {
                    for record in records {
                        let Some(event) = record_event(ctx, &s.filters, &record, id) else {
                            continue;
                        };
                        match accepted_ackable(ctx.submit(event, Submit::ACK_AFTER_DELIVERY).await)?
                        {
                            Some(d) => delivered.push(d),
                            None => {
                                stopping = true;
                                break 'messages;
                            }
                        }
                    }
                }
            }
            done.push((delivered, receipt.to_string()));
        }
        for (delivered, receipt) in done {
            for d in delivered {
                if !d.wait().await {
                    return Ok(());
                }
            }
            let deleted = sqs
                .call(
                    "DeleteMessage",
                    json!({"QueueUrl": queue_url, "ReceiptHandle": receipt}),
                )
                .await;
            if let Err(e) = deleted {
                if stopping || ctx.is_stopped() {
                    tracing::warn!(src = ctx.src(), error = %e, "a message accepted while stopping is not deleted: it comes back after its visibility timeout");
                    return Ok(());
                }
                return Err(SessionError::Broker(e.to_string()));
            }
        }
        if stopping || ctx.is_stopped() {
            return Ok(());
        }
    }
}

/// What an SQS message holds.
#[derive(Debug)]
enum Message {
    /// S3's `s3:TestEvent`.
    Test,
    /// An S3 event notification's records.
    Records(Vec<Box<RawValue>>),
    /// Not an S3 event notification: why.
    Invalid(String),
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Option<Vec<Box<RawValue>>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    /// SNS's envelope.
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Reads a message body: an S3 event notification, S3's test event, or either in SNS's
/// envelope (whose `Message` holds it as text).
fn read_message(body: &str) -> Message {
    let n: Notification = match serde_json::from_str(body) {
        Ok(n) => n,
        Err(e) => return Message::Invalid(format!("not a JSON object: {e}")),
    };
    if n.event.as_deref() == Some("s3:TestEvent") {
        return Message::Test;
    }
    if let Some(records) = n.records {
        return Message::Records(records);
    }
    if n.kind.as_deref() == Some("Notification")
        && let Some(inner) = n.message
    {
        return read_message(&inner);
    }
    Message::Invalid("no Records (an S3 event notification is {\"Records\": [...]})".into())
}

/// The event of one record, or `None` when the filters do not keep it.
fn record_event(
    ctx: &ConfigContext,
    filters: &Filters,
    record: &RawValue,
    message: &str,
) -> Option<Event> {
    let value: Value = serde_json::from_str(record.get()).ok()?;
    let Some(info) = RecordInfo::of(&value) else {
        tracing::warn!(
            src = ctx.src(),
            message,
            "a record that is not a JSON object is skipped"
        );
        ctx.count_rejected(RejectReason::Invalid, 1);
        return None;
    };
    if let Some(why) = filters.reject(&info) {
        tracing::debug!(src = ctx.src(), message, reason = %why, "record filtered out");
        return None;
    }
    let event = Event::json(record).ok()?;
    Some(info.annotate(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<ArtifactConfig>(yaml)?.check()
    }

    fn err(yaml: &str) -> String {
        check(yaml).unwrap_err().message().to_string()
    }

    const Q: &str = "queueUrl: http://127.0.0.1:5000/123456789012/uploads";

    #[test]
    fn portico_shape() {
        let s = check(&format!(
            "{Q}\nregion: eu-west-1\nbucket: b\nevents: ['s3:ObjectCreated:*']\nfilter: {{prefix: in/}}\naccessKeyEnv: A\nsecretKeyFile: /s\nwaitTime: 5s"
        ))
        .unwrap();
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.filters.events, ["ObjectCreated:*"]);
        assert_eq!(s.filters.bucket.as_deref(), Some("b"));
        assert_eq!(s.wait, Duration::from_secs(5));
        assert_eq!(
            s.credentials.access,
            KeySource::Local(SecretSource::Env("A".into()))
        );
        // The region from an AWS host; AWS's endpoint from the region.
        let s = check("queueUrl: https://sqs.us-west-2.amazonaws.com/1/q").unwrap();
        assert_eq!(s.region, "us-west-2");
        let s = check("queue: q\nregion: eu-north-1").unwrap();
        assert_eq!(
            s.queue,
            Queue::Name {
                name: "q".into(),
                endpoint: url::Url::parse("https://sqs.eu-north-1.amazonaws.com").unwrap()
            }
        );
        assert!(err("{}").starts_with("queueUrl: missing"));
        // An SQS API outside AWS takes any region: us-east-1 unless one is given; an AWS host
        // that names none needs one.
        assert_eq!(check(Q).unwrap().region, "us-east-1");
        assert!(err("queueUrl: https://queue.amazonaws.com/1/q").starts_with("region: required"));
        assert!(err("queueUrl: ftp://x/q\nregion: r").starts_with("queueUrl:"));
        assert!(err("queueUrl: http://x/\nregion: r").starts_with("queueUrl:"));
        assert!(err(&format!("{Q}\nqueue: q\nregion: r")).starts_with("queue:"));
        assert!(err(&format!("{Q}\nregion: r\nendpoint: http://x")).starts_with("endpoint:"));
        assert!(err("queue: q").starts_with("region:"));
        assert!(err(&format!("{Q}\nregion: r\ninsecure: true")).starts_with("insecure:"));
        assert!(err(&format!("{Q}\nregion: r\nevents: ['s3:*:Put']")).starts_with("events[0]:"));
        assert!(err(&format!("{Q}\nregion: r\nwaitTime: 21s")).starts_with("waitTime:"));
        assert!(err(&format!("{Q}\nregion: r\nwaitTime: 0s")).starts_with("waitTime:"));
        assert!(err(&format!("{Q}\nregion: r\naccessKeyEnv: A")).starts_with("secretKey:"));
        assert!(err(&format!("{Q}\nregion: r\nsecretKeyEnv: A")).starts_with("accessKey:"));
        assert!(
            err(&format!(
                "{Q}\nregion: r\naccessKeyEnv: A\naccessKeyFile: f\nsecretKeyEnv: S"
            ))
            .contains("both set")
        );
        assert!(err(&format!("{Q}\nregion: r\nsessionTokenEnv: T")).starts_with("sessionToken:"));
        assert!(err(&format!("{Q}\nregion: r\nfilter: {{prefix: a, x: 1}}")).contains("x"));
    }

    #[test]
    fn argo_shape() {
        let v06 = "s3EventConfig:\n  endpoint: minio:9000\n  bucket: input\n  region: us-east-1\n  event: s3:ObjectCreated:Put\n  filter: {prefix: a, suffix: .txt}\ninsecure: true\naccessKey: {name: artifacts-minio, key: accesskey}\nsecretKey: {name: artifacts-minio, key: secretkey}";
        // Without the queue it cannot work: the error says what to add.
        let e = err(v06);
        assert!(
            e.starts_with("queue: missing") && e.contains("MinIO"),
            "{e}"
        );
        // With a queue's name, it is asked of the SQS API at the endpoint (HTTP: insecure).
        let s = check(&format!("{v06}\nqueue: uploads")).unwrap();
        assert_eq!(
            s.queue,
            Queue::Name {
                name: "uploads".into(),
                endpoint: url::Url::parse("http://minio:9000").unwrap()
            }
        );
        assert_eq!(s.filters.bucket.as_deref(), Some("input"));
        assert_eq!(s.filters.events, ["ObjectCreated:Put"]);
        assert_eq!(s.filters.key.suffix, ".txt");
        assert_eq!(
            s.credentials.access,
            KeySource::Kube {
                field: "accessKey",
                selector: SecretKeySelector {
                    name: "artifacts-minio".into(),
                    key: "accesskey".into(),
                    optional: None
                }
            }
        );
        // With a queue URL, the endpoint has no effect (a warning says so).
        let s = check(&format!("{v06}\n{Q}")).unwrap();
        assert!(
            s.warnings[0].starts_with("s3EventConfig.endpoint"),
            "{:?}",
            s.warnings
        );
        // AWS S3's endpoint means SQS in the region, over HTTPS.
        let s = check(
            "s3EventConfig: {endpoint: s3.amazonaws.com, bucket: b, region: eu-west-1}\nqueue: q",
        )
        .unwrap();
        assert_eq!(
            s.queue,
            Queue::Name {
                name: "q".into(),
                endpoint: url::Url::parse("https://sqs.eu-west-1.amazonaws.com").unwrap()
            }
        );
        assert_eq!(
            check("s3EventConfig: {endpoint: 'minio:9000', bucket: b}\nqueue: q")
                .unwrap()
                .region,
            "us-east-1"
        );
        assert!(
            err("s3EventConfig: {endpoint: 'minio:9000', region: r}\nqueue: q")
                .starts_with("s3EventConfig.bucket:")
        );
        assert!(
            err("s3EventConfig: {endpoint: '', bucket: b, region: r}\nqueue: q")
                .starts_with("s3EventConfig.endpoint:")
        );
        assert!(
            err("s3EventConfig: {endpoint: 'm:9', bucket: b, region: r, event: 'x y'}\nqueue: q")
                .starts_with("s3EventConfig.event:")
        );
        assert!(
            err("s3EventConfig: {endpoint: 'm:9', bucket: b}\nbucket: c\nqueue: q")
                .starts_with("bucket:")
        );
        assert!(err(&format!("{v06}\nqueue: q\naccessKeyEnv: A")).starts_with("accessKey:"));
        assert!(
            err("s3EventConfig: {endpoint: 'm:9', bucket: b, region: r}\nqueue: q\naccessKey: {name: '', key: k}\nsecretKeyEnv: S")
                .starts_with("accessKey.name:")
        );
    }

    #[test]
    fn messages() {
        assert!(matches!(
            read_message(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#),
            Message::Test
        ));
        let Message::Records(r) = read_message(r#"{"Records":[{"a":1},{"b":2}]}"#) else {
            panic!()
        };
        assert_eq!(r.len(), 2);
        let sns = serde_json::to_string(&json!({
            "Type": "Notification",
            "Message": r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#
        }))
        .unwrap();
        assert!(matches!(read_message(&sns), Message::Records(r) if r.len() == 1));
        assert!(matches!(read_message("hello"), Message::Invalid(_)));
        assert!(matches!(read_message("{}"), Message::Invalid(_)));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            region_of_host("sqs.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of_host("s3-us-west-2.amazonaws.com").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(region_of_host("s3.amazonaws.com"), None);
        assert_eq!(region_of_host("127.0.0.1"), None);
        assert!(is_aws_s3("s3.amazonaws.com") && is_aws_s3("s3.eu-west-1.amazonaws.com"));
        assert!(!is_aws_s3("sqs.eu-west-1.amazonaws.com") && !is_aws_s3("minio"));
    }
}
