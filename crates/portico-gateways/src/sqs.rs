//! The `sqs` gateway: the messages of an Amazon SQS queue (standard or FIFO), each one
//! CloudEvent.
//!
//! Its configuration and every rule below, as its reference page says them: [`SqsConfig`].
//!
//! The queue is long-polled (`ReceiveMessage` with `WaitTimeSeconds`, up to `maxMessages` at
//! once). Each message becomes one event: its payload the body (`datacontenttype` from a
//! `content-type` message attribute, else `application/json` when the body is JSON, else
//! `text/plain`), its time the message's `SentTimestamp`, its extensions `messageid`, `queue`
//! (the queue's name), `messagegroupid`, `sequencenumber` and `deduplicationid` (FIFO
//! queues), `receivecount`, and one `attr<name>` per String or Number message attribute.
//!
//! A message is deleted (`DeleteMessageBatch`) only once its event is accepted for delivery,
//! or, in `ackAfterDelivery`, once every watcher took it; one whose event is not (the gateway
//! full until the configuration stops, a disk that cannot store it) is given back at once
//! when the configuration stops (its visibility set to 0), else it comes back after its
//! visibility timeout. While the events of a batch wait for room or for their delivery,
//! the batch's messages are kept invisible (`ChangeMessageVisibilityBatch` every half
//! visibility timeout), so they do not reappear and get taken twice meanwhile.
//!
//! FIFO queues: the messages of a batch are handed over one after the other in the order SQS
//! gave them, each only once the one before was accepted, and the next batch is received
//! only once this one is settled; the messages deleted are always the first ones of the batch
//! (a message is never deleted while one before it is not), so a message group's order holds
//! across redeliveries too. Standard queues are read the same way (one receive loop per
//! configuration, sequential within a batch): simple, and enough for one configuration's
//! throughput; run several configurations on one queue to read it in parallel.
//!
//! The SQS client, the queue's and credentials' fields and where the credentials are read
//! are the `artifact` gateway's (`aws.rs`). An unreachable SQS, a missing queue or refused
//! credentials are reported on the node (`Error`, with SQS's reason) and retried with capped
//! backoff; the node is `Running` again once a receive works.

use std::convert::Infallible;
use std::time::Duration;

use portico::Placement;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

pub use crate::aws::SecretKeySelector;
use crate::aws::{CredentialFields, CredentialSources, OpenQueue, Queue, SqsError, invalid};
use crate::broker::{self, Progress, Rest, SessionError, SessionResult, take_in_order};

/// SQS's most messages per `ReceiveMessage`, and the default of `maxMessages`.
const MAX_MESSAGES: u32 = 10;
/// SQS's longest visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// The visibility timeout of a queue that does not say its own (SQS's default).
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// How long the deletions and give-backs of a stopping configuration may take.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The prefix of the extensions made of message attributes.
const ATTRIBUTE_PREFIX: &str = "attr";

/// The message system attributes SQS knows (`attributeNames`).
const SYSTEM_ATTRIBUTES: &[&str] = &[
    "All",
    "AWSTraceHeader",
    "ApproximateFirstReceiveTimestamp",
    "ApproximateReceiveCount",
    "DeadLetterQueueSourceArn",
    "MessageDeduplicationId",
    "MessageGroupId",
    "SenderId",
    "SentTimestamp",
    "SequenceNumber",
];

/// An `sqs` configuration: the messages of one Amazon SQS queue, standard or FIFO.
///
/// Give the queue (`queueUrl`, or `queue` by name), and optionally the credentials the
/// requests are signed with (the environment's `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` otherwise).
///
/// Payload: the message body, untouched. `datacontenttype`: a String message attribute
/// named `content-type` (or `Content-Type`, `content_type`) when it holds a media type, else
/// `application/json` when the body is one JSON value, else `text/plain`. The event's time is
/// the message's `SentTimestamp`, its `id` the message id (the same when the message comes
/// again, so that a watcher can tell a redelivery from a new message). Extensions: `messageid`
/// (SQS's message id), `queue` (the
/// queue's name), `messagegroupid`, `sequencenumber` and `deduplicationid` (FIFO queues),
/// `receivecount` (`ApproximateReceiveCount`: more than 1 when the message comes again),
/// and one `attr<name>` per String or Number message attribute (the name lower-cased with
/// only a–z and 0–9 kept, at most 20 characters in all: `Order-Id` ⇒ `attrorderid`); a
/// `traceparent` and `tracestate` attribute carry the W3C trace context under their own
/// names. Binary attributes, and values with control characters, are left out.
///
/// Deletion: a message is deleted only once its event is accepted for delivery (written to
/// the outbox), or, with `spec.delivery.mode: ackAfterDelivery`, once every watcher took it.
/// One that is not comes back: at once when the configuration stops (its visibility is set
/// to 0), else after its visibility timeout: at least once. While a batch's events wait for
/// room or for their delivery, its messages' visibility is extended every half
/// `visibilityTimeout`, so they do not come back meanwhile.
///
/// FIFO queues (`.fifo`): a batch's messages are handed over in order, each once the one
/// before it was accepted, and deleted in order (never one while one before it is not), so
/// the order within each message group is kept.
///
/// An unreachable SQS, a missing queue or refused credentials are reported on the node
/// (`Error`, with SQS's reason) and retried with capped backoff.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqsConfig {
    /// The queue's URL, like `https://sqs.us-east-1.amazonaws.com/123456789012/orders`. The
    /// SQS API is called at its scheme, host and port.
    #[serde(default)]
    pub queue_url: Option<String>,
    /// The queue's name, instead of `queueUrl`: its URL is asked of the SQS API
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
    /// The access key id from a key of a Kubernetes Secret in the gateway's namespace (read
    /// at every (re)connection; in a cluster, or with `KUBECONFIG`), instead of
    /// `accessKeyFile`.
    #[serde(default)]
    pub access_key: Option<SecretKeySelector>,
    /// The secret access key from a key of a Kubernetes Secret, instead of `secretKeyFile`.
    #[serde(default)]
    pub secret_key: Option<SecretKeySelector>,
    /// How long one `ReceiveMessage` waits for a message (long polling): `1s` to `20s`
    /// (default `20s`).
    #[serde(default)]
    pub wait_time: Option<String>,
    /// The most messages one `ReceiveMessage` takes: 1 to 10 (default 10).
    #[serde(default)]
    pub max_messages: Option<u32>,
    /// How long a received message stays invisible to other readers, like `1m`: `1s` to
    /// `12h` (default: the queue's own visibility timeout). It is extended by as much every
    /// half of it while the message's event waits.
    #[serde(default)]
    pub visibility_timeout: Option<String>,
    /// The message system attributes to ask for, like `SentTimestamp` or
    /// `ApproximateReceiveCount` (default `[All]`); `MessageGroupId` is always asked for.
    #[serde(default)]
    pub attribute_names: Option<Vec<String>>,
    /// The message attributes to ask for: names, `prefix.*`, or `All` (default `[All]`; `[]`
    /// for none).
    #[serde(default)]
    pub message_attribute_names: Option<Vec<String>>,
}

/// A checked `sqs` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    queue: Queue,
    region: String,
    credentials: CredentialSources,
    wait: Duration,
    max_messages: u32,
    /// `None`: the queue's own.
    visibility: Option<Duration>,
    attribute_names: Vec<String>,
    message_attribute_names: Vec<String>,
}

/// A duration field of whole seconds from `min` to `max`.
fn seconds(field: &str, text: &str, min: Duration, max: Duration) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text)
        .map_err(|e| invalid(field, format!("`{text}` is not a duration like `30s`: {e}")))?;
    if d < min || d > max {
        return Err(invalid(
            field,
            format!(
                "`{text}` is not from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(Duration::from_secs(d.as_secs()))
}

/// Checks `attributeNames`: SQS's system attribute names; `MessageGroupId` added.
fn check_attribute_names(names: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let Some(names) = names else {
        return Ok(vec!["All".into()]);
    };
    let mut out = Vec::with_capacity(names.len() + 1);
    for (i, name) in names.iter().enumerate() {
        let name = name.trim();
        let Some(known) = SYSTEM_ATTRIBUTES
            .iter()
            .find(|k| k.eq_ignore_ascii_case(name))
        else {
            return Err(invalid(
                &format!("attributeNames[{i}]"),
                format!(
                    "`{name}` is not an SQS message system attribute: one of {}",
                    SYSTEM_ATTRIBUTES.join(", ")
                ),
            ));
        };
        out.push(known.to_string());
    }
    if !out.iter().any(|n| n == "All" || n == "MessageGroupId") {
        out.push("MessageGroupId".into());
    }
    Ok(out)
}

/// Checks `messageAttributeNames`: `All`, names or `prefix.*` of SQS's characters.
fn check_message_attribute_names(names: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let Some(names) = names else {
        return Ok(vec!["All".into()]);
    };
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = format!("messageAttributeNames[{i}]");
        let name = broker::non_blank(&field, name)?;
        if name.eq_ignore_ascii_case("all") || name == ".*" {
            out.push("All".to_string());
            continue;
        }
        let stem = name.strip_suffix(".*").unwrap_or(name);
        if stem.len() > 256
            || stem.starts_with('.')
            || stem.ends_with('.')
            || stem.contains("..")
            || !stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid(
                &field,
                format!(
                    "`{name}` is not a message attribute name (A–Z, a–z, 0–9, `_`, `-`, `.`; at most 256; `prefix.*` for a prefix; `All`)"
                ),
            ));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

impl SqsConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let (queue, region) = crate::aws::check_queue(
            broker::optional(self.queue_url),
            broker::optional(self.queue),
            broker::optional(self.endpoint),
            broker::optional(self.region),
            "region",
            "missing: give the SQS queue, as `queueUrl: <its URL>` or `queue: <its name>` (with `endpoint` or `region`)",
        )?;
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
        let max_messages = match self.max_messages {
            None => MAX_MESSAGES,
            Some(n @ 1..=MAX_MESSAGES) => n,
            Some(n) => {
                return Err(invalid(
                    "maxMessages",
                    format!("{n} is not from 1 to {MAX_MESSAGES} (SQS's most per ReceiveMessage)"),
                ));
            }
        };
        let visibility = broker::optional(self.visibility_timeout)
            .map(|t| {
                seconds(
                    "visibilityTimeout",
                    &t,
                    Duration::from_secs(1),
                    MAX_VISIBILITY,
                )
            })
            .transpose()?;
        Ok(Settings {
            queue,
            region,
            credentials,
            wait,
            max_messages,
            visibility,
            attribute_names: check_attribute_names(self.attribute_names)?,
            message_attribute_names: check_message_attribute_names(self.message_attribute_names)?,
        })
    }
}

/// The `sqs` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sqs;

impl ConfigExecutor for Sqs {
    type Config = Settings;

    /// SQS shares a queue's messages out among its readers.
    fn placement(&self, _: &Settings) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<SqsConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        let http = crate::aws::http_client(s.wait)?;
        broker::run_sessions_until_they_stop(&ctx, None, |progress| {
            let (ctx, s, http) = (ctx.clone(), s.clone(), http.clone());
            async move { session(&ctx, &s, http, progress).await }
        })
        .await
    }
}

/// One received message: what names it in SQS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handle {
    id: String,
    receipt: String,
}

/// The queue's name: the last segment of its URL's path.
fn queue_name(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| url.to_string());
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The queue's own visibility timeout, from its `VisibilityTimeout` attribute (at least 1 s).
fn queue_visibility(attributes: &Value) -> Duration {
    attributes
        .get("VisibilityTimeout")
        .and_then(|v| match v {
            Value::String(s) => s.trim().parse::<u64>().ok(),
            other => other.as_u64(),
        })
        .map_or(DEFAULT_VISIBILITY, Duration::from_secs)
        .max(Duration::from_secs(1))
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
        &["VisibilityTimeout", "FifoQueue"],
    )
    .await?;
    let Some(open) = opened else {
        return Ok(());
    };
    let visibility = s
        .visibility
        .unwrap_or_else(|| queue_visibility(&open.attributes));
    let name = queue_name(&open.url);
    let fifo = open.attributes.get("FifoQueue").and_then(Value::as_str) == Some("true")
        || name.ends_with(".fifo");
    tracing::debug!(src = ctx.src(), queue = %name, fifo, ?visibility, "reading SQS queue");
    progress.running(ctx);
    let mut receive = json!({
        "QueueUrl": open.url,
        "MaxNumberOfMessages": s.max_messages,
        "WaitTimeSeconds": s.wait.as_secs(),
        // `AttributeNames` is the older name of `MessageSystemAttributeNames`, which some
        // SQS APIs outside AWS still expect; SQS takes both.
        "AttributeNames": s.attribute_names,
        "MessageSystemAttributeNames": s.attribute_names,
        "MessageAttributeNames": s.message_attribute_names,
    });
    if let Some(v) = s.visibility {
        receive["VisibilityTimeout"] = v.as_secs().into();
    }
    loop {
        let answer = tokio::select! {
            a = open.sqs.call("ReceiveMessage", receive.clone()) => a,
            _ = ctx.stopped() => return Ok(()),
        };
        let answer = answer.map_err(|e| SessionError::Broker(e.to_string()))?;
        let mut handles = Vec::new();
        let mut events = Vec::new();
        for m in answer
            .get("Messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some((handle, event)) = message_event(m, &name) {
                handles.push(handle);
                events.push(event);
            }
        }
        if handles.is_empty() {
            continue;
        }
        // The batch's events are handed over while its messages are kept invisible.
        let (done, rest) = tokio::select! {
            taken = take_in_order(ctx, events) => taken,
            never = keep_invisible(ctx, &open, &handles, visibility) => match never {},
        };
        if !settle(ctx, &open, &handles, done, rest).await? {
            return Ok(());
        }
    }
}

/// Extends the visibility of `handles` by `visibility` every half of it, for as long as it is
/// polled.
async fn keep_invisible(
    ctx: &ConfigContext,
    open: &OpenQueue,
    handles: &[Handle],
    visibility: Duration,
) -> Infallible {
    let every = visibility / 2;
    loop {
        tokio::time::sleep(every).await;
        let extended = batch(
            ctx,
            open,
            "ChangeMessageVisibilityBatch",
            handles,
            Some(visibility.as_secs()),
        )
        .await;
        match extended {
            Ok(()) => tracing::debug!(
                src = ctx.src(),
                messages = handles.len(),
                "kept the messages of waiting events invisible"
            ),
            Err(e) => tracing::warn!(
                src = ctx.src(),
                error = %e,
                "cannot extend the visibility of messages whose events wait: they may come back and be taken twice"
            ),
        }
    }
}

/// Deletes the first `done` messages of a batch and gives the others back (visibility 0);
/// `Ok(true)` to go on reading, `Ok(false)` when stopping.
async fn settle(
    ctx: &ConfigContext,
    open: &OpenQueue,
    handles: &[Handle],
    done: usize,
    rest: Rest,
) -> Result<bool, SessionError> {
    let stopping = !matches!(rest, Rest::None) || ctx.is_stopped();
    let (finished, left) = handles.split_at(done.min(handles.len()));
    if !finished.is_empty() {
        let deleted = within(
            stopping,
            batch(ctx, open, "DeleteMessageBatch", finished, None),
        )
        .await;
        if let Err(e) = deleted {
            if !stopping {
                return Err(SessionError::Broker(e.to_string()));
            }
            tracing::warn!(src = ctx.src(), error = %e, "messages whose events were accepted while stopping are not deleted: they come back after their visibility timeout");
        }
    }
    if !left.is_empty() {
        // Not taken: back in the queue at once, for this configuration's next session or
        // another reader.
        let released = within(
            true,
            batch(ctx, open, "ChangeMessageVisibilityBatch", left, Some(0)),
        )
        .await;
        if let Err(e) = released {
            tracing::warn!(src = ctx.src(), error = %e, "messages not taken are not given back: they come back after their visibility timeout");
        }
    }
    match rest {
        Rest::None => Ok(!ctx.is_stopped()),
        Rest::Stopping => Ok(false),
        Rest::Failed(e) => Err(e),
    }
}

/// `call`, bounded by [`STOP_GRACE`] when `stopping`.
async fn within(
    stopping: bool,
    call: impl Future<Output = Result<(), SqsError>>,
) -> Result<(), String> {
    if !stopping {
        return call.await.map_err(|e| e.to_string());
    }
    match tokio::time::timeout(STOP_GRACE, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {STOP_GRACE:?}")),
    }
}

/// Calls a batch action (`DeleteMessageBatch`, `ChangeMessageVisibilityBatch` with
/// `visibility` seconds) on `handles`, ten at a time. The entries SQS refuses are logged.
async fn batch(
    ctx: &ConfigContext,
    open: &OpenQueue,
    action: &str,
    handles: &[Handle],
    visibility: Option<u64>,
) -> Result<(), SqsError> {
    for chunk in handles.chunks(MAX_MESSAGES as usize) {
        let entries: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut entry = json!({"Id": i.to_string(), "ReceiptHandle": h.receipt});
                if let Some(v) = visibility {
                    entry["VisibilityTimeout"] = v.into();
                }
                entry
            })
            .collect();
        let answer = open
            .sqs
            .call(action, json!({"QueueUrl": open.url, "Entries": entries}))
            .await?;
        for failed in answer
            .get("Failed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |k: &str| failed.get(k).and_then(Value::as_str).unwrap_or("");
            let message = text("Id")
                .parse::<usize>()
                .ok()
                .and_then(|i| chunk.get(i))
                .map_or("?", |h| h.id.as_str());
            tracing::warn!(
                src = ctx.src(),
                message,
                code = text("Code"),
                reason = text("Message"),
                "SQS refused {action} for a message"
            );
        }
    }
    Ok(())
}

/// Whether `value` can be a CloudEvents string: no control characters or noncharacters.
pub(crate) fn printable(value: &str) -> bool {
    !value.chars().any(|c| {
        let cp = u32::from(c);
        c.is_control() || (0xFDD0..=0xFDEF).contains(&cp) || cp & 0xFFFE == 0xFFFE
    })
}

/// Whether `value` is a media type like `application/json; charset=utf-8`.
pub(crate) fn is_media_type(value: &str) -> bool {
    let printable_ascii = value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let media = value.split(';').next().unwrap_or("").trim();
    let (ty, subtype) = media.split_once('/').unwrap_or(("", ""));
    printable_ascii && !ty.trim().is_empty() && !subtype.trim().is_empty()
}

/// The system attributes carried as extensions: (SQS's name, the extension's).
const SYSTEM_EXTENSIONS: &[(&str, &str)] = &[
    ("MessageGroupId", "messagegroupid"),
    ("SequenceNumber", "sequencenumber"),
    ("MessageDeduplicationId", "deduplicationid"),
    ("ApproximateReceiveCount", "receivecount"),
];

/// The event of one message of queue `queue` (from `ReceiveMessage`'s answer), or `None` for
/// one without a receipt handle (it cannot be deleted).
fn message_event(m: &Value, queue: &str) -> Option<(Handle, Event)> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let receipt = text(m, "ReceiptHandle")?;
    let id = text(m, "MessageId").unwrap_or_default();
    let body = text(m, "Body").unwrap_or_default();
    let mut content_type = None;
    let (mut traceparent, mut tracestate) = (None, None);
    let mut extensions = Vec::new();
    if let Some(attributes) = m.get("MessageAttributes").and_then(Value::as_object) {
        for (name, attribute) in attributes {
            let kind = attribute
                .get("DataType")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(value) = attribute.get("StringValue").and_then(Value::as_str) else {
                continue;
            };
            if !(kind.starts_with("String") || kind.starts_with("Number")) || !printable(value) {
                continue;
            }
            if broker::is_content_type(name) {
                content_type = is_media_type(value).then(|| value.to_string());
            } else if name.eq_ignore_ascii_case("traceparent") {
                traceparent = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("tracestate") {
                tracestate = Some(value.to_string());
            } else {
                extensions.push((
                    broker::header_extension(ATTRIBUTE_PREFIX, name),
                    value.to_string(),
                ));
            }
        }
    }
    let content_type = content_type.unwrap_or_else(|| {
        if serde_json::from_str::<&RawValue>(&body).is_ok() {
            "application/json".to_string()
        } else {
            "text/plain".to_string()
        }
    });
    let mut event = Event::new(body).with_content_type(content_type);
    event.extensions = extensions;
    event = event.with_trace_context(traceparent.as_deref(), tracestate.as_deref());
    let system = m.get("Attributes");
    if let Some(time) = system
        .and_then(|a| text(a, "SentTimestamp"))
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
    {
        event = event.with_time(time);
    }
    // Last: an attribute's extension never takes the place of these.
    if !id.is_empty() {
        event = event.with_id(id.as_str());
    }
    event = event
        .with_extension("messageid", id.as_str())
        .with_extension("queue", queue);
    for (attribute, extension) in SYSTEM_EXTENSIONS {
        if let Some(value) = system
            .and_then(|a| text(a, attribute))
            .filter(|v| printable(v))
        {
            event = event.with_extension(*extension, value);
        }
    }
    Some((Handle { id, receipt }, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<SqsConfig>(yaml)?.check()
    }

    fn err(yaml: &str) -> String {
        check(yaml).unwrap_err().message().to_string()
    }

    const Q: &str = "queueUrl: http://127.0.0.1:5000/123456789012/orders";

    #[test]
    fn configuration() {
        let s = check(Q).unwrap();
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.wait, Duration::from_secs(20));
        assert_eq!(s.max_messages, 10);
        assert_eq!(s.visibility, None);
        assert_eq!(s.attribute_names, ["All"]);
        assert_eq!(s.message_attribute_names, ["All"]);
        let s = check(&format!(
            "{Q}\nregion: eu-west-1\nwaitTime: 5s\nmaxMessages: 3\nvisibilityTimeout: 2m\nattributeNames: [sentTimestamp]\nmessageAttributeNames: [Author, 'trace.*']\naccessKeyEnv: A\nsecretKeyFile: /s"
        ))
        .unwrap();
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.wait, Duration::from_secs(5));
        assert_eq!(s.max_messages, 3);
        assert_eq!(s.visibility, Some(Duration::from_secs(120)));
        assert_eq!(s.attribute_names, ["SentTimestamp", "MessageGroupId"]);
        assert_eq!(s.message_attribute_names, ["Author", "trace.*"]);
        assert!(
            check(&format!("{Q}\nmessageAttributeNames: []"))
                .unwrap()
                .message_attribute_names
                .is_empty()
        );
        let s = check("queue: orders.fifo\nendpoint: http://127.0.0.1:4566").unwrap();
        assert_eq!(
            s.queue,
            Queue::Name {
                name: "orders.fifo".into(),
                endpoint: url::Url::parse("http://127.0.0.1:4566").unwrap()
            }
        );
        let s = check("queue: q\nregion: eu-north-1").unwrap();
        assert!(
            matches!(s.queue, Queue::Name { endpoint, .. } if endpoint.as_str() == "https://sqs.eu-north-1.amazonaws.com/")
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, field) in [
            ("{}".to_string(), "queueUrl:"),
            ("queueUrl: ftp://x/q".into(), "queueUrl:"),
            ("queueUrl: http://x/".into(), "queueUrl:"),
            (
                "queueUrl: https://queue.amazonaws.com/1/q".into(),
                "region:",
            ),
            ("queue: q".into(), "region:"),
            (format!("{Q}\nqueue: q"), "queue:"),
            (format!("{Q}\nendpoint: http://x"), "endpoint:"),
            (format!("{Q}\nwaitTime: 21s"), "waitTime:"),
            (format!("{Q}\nwaitTime: 0s"), "waitTime:"),
            (format!("{Q}\nmaxMessages: 0"), "maxMessages:"),
            (format!("{Q}\nmaxMessages: 11"), "maxMessages:"),
            (format!("{Q}\nvisibilityTimeout: 0s"), "visibilityTimeout:"),
            (format!("{Q}\nvisibilityTimeout: 13h"), "visibilityTimeout:"),
            (
                format!("{Q}\nvisibilityTimeout: soon"),
                "visibilityTimeout:",
            ),
            (
                format!("{Q}\nattributeNames: [All, Colour]"),
                "attributeNames[1]:",
            ),
            (
                format!("{Q}\nmessageAttributeNames: ['a b']"),
                "messageAttributeNames[0]:",
            ),
            (
                format!("{Q}\nmessageAttributeNames: ['']"),
                "messageAttributeNames[0]:",
            ),
            (format!("{Q}\naccessKeyEnv: A"), "secretKey:"),
            (format!("{Q}\nsecretKeyEnv: A"), "accessKey:"),
            (format!("{Q}\nsessionTokenEnv: T"), "sessionToken:"),
            (
                format!("{Q}\naccessKey: {{name: '', key: k}}\nsecretKeyEnv: S"),
                "accessKey.name:",
            ),
        ] {
            let e = err(&yaml);
            assert!(e.starts_with(field), "{yaml:?}: {e}");
        }
        assert!(err(&format!("{Q}\nbogus: 1")).contains("bogus"));
        let e = err(&format!("{Q}\nmaxMessages: -1"));
        assert!(e.contains("maxMessages"), "{e}");
    }

    fn attribute(kind: &str, value: &str) -> Value {
        json!({"DataType": kind, "StringValue": value})
    }

    #[test]
    fn messages_become_events() {
        let m = json!({
            "MessageId": "m-1",
            "ReceiptHandle": "r-1",
            "Body": "{\"order\": 7}",
            "Attributes": {
                "SentTimestamp": "1700000000123",
                "MessageGroupId": "g1",
                "SequenceNumber": "18",
                "ApproximateReceiveCount": "2",
                "SenderId": "AIDA",
            },
            "MessageAttributes": {
                "Author": attribute("String", "ana"),
                "Order-Id": attribute("Number", "7"),
                "price": attribute("Number.float", "1.5"),
                "blob": {"DataType": "Binary", "BinaryValue": "AAE="},
                "bad": attribute("String", "two\nlines"),
                "traceparent": attribute("String", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                "queue": attribute("String", "not the queue"),
            },
        });
        let (handle, event) = message_event(&m, "orders.fifo").unwrap();
        assert_eq!(
            handle,
            Handle {
                id: "m-1".into(),
                receipt: "r-1".into()
            }
        );
        assert_eq!(&event.payload[..], b"{\"order\": 7}");
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        assert_eq!(event.time.unwrap().timestamp_millis(), 1_700_000_000_123);
        let ext: std::collections::BTreeMap<&str, &str> = event
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let want: std::collections::BTreeMap<&str, &str> = [
            ("attrauthor", "ana"),
            ("attrorderid", "7"),
            ("attrprice", "1.5"),
            ("attrqueue", "not the queue"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("messageid", "m-1"),
            ("queue", "orders.fifo"),
            ("messagegroupid", "g1"),
            ("sequencenumber", "18"),
            ("receivecount", "2"),
        ]
        .into_iter()
        .collect();
        assert_eq!(ext, want);

        // Text, and a content type from an attribute.
        let m = json!({"MessageId": "m", "ReceiptHandle": "r", "Body": "hello"});
        let (_, event) = message_event(&m, "q").unwrap();
        assert_eq!(event.content_type.as_deref(), Some("text/plain"));
        assert_eq!(event.time, None);
        let m = json!({"MessageId": "m", "ReceiptHandle": "r", "Body": "<a/>",
            "MessageAttributes": {"Content-Type": attribute("String", "application/xml")}});
        let (_, event) = message_event(&m, "q").unwrap();
        assert_eq!(event.content_type.as_deref(), Some("application/xml"));
        let m = json!({"MessageId": "m", "ReceiptHandle": "r", "Body": "1",
            "MessageAttributes": {"content_type": attribute("String", "nonsense")}});
        let (_, event) = message_event(&m, "q").unwrap();
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        // No receipt handle: nothing to delete it with.
        assert!(message_event(&json!({"MessageId": "m", "Body": "x"}), "q").is_none());
    }

    #[test]
    fn queue_names_and_visibility() {
        assert_eq!(
            queue_name("https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo"),
            "orders.fifo"
        );
        assert_eq!(queue_name("http://127.0.0.1:5000/1/q/"), "q");
        assert_eq!(
            queue_visibility(&json!({"VisibilityTimeout": "45"})),
            Duration::from_secs(45)
        );
        assert_eq!(
            queue_visibility(&json!({"VisibilityTimeout": "0"})),
            Duration::from_secs(1)
        );
        assert_eq!(queue_visibility(&Value::Null), DEFAULT_VISIBILITY);
    }
}
