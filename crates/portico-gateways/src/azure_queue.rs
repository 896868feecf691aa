//! The `azure-queue` gateway: the messages of an Azure Storage queue, each one CloudEvent.
//!
//! Its configuration and every rule below, as its reference page says them:
//! [`AzureQueueConfig`].
//!
//! The queue is read with Get Messages (up to `maxMessages` at once, each made invisible for
//! `visibilityTimeout`); Azure Storage queues have no long polling, so an empty answer is
//! followed by a pause of `pollInterval`. Each message becomes one event; a message is deleted
//! (Delete Message, with the pop receipt of its last Get or Update) only once its event is
//! accepted for delivery, or, in `ackAfterDelivery`, once every watcher took it. While a
//! batch's events wait, its messages' visibility is extended (Update Message, every half
//! `visibilityTimeout`; each update gives a new pop receipt, kept for the deletion). Messages
//! whose events were not accepted are made visible again at once when the configuration
//! stops (Update Message with a visibility timeout of 0), else they come back after their
//! visibility timeout: at least once.
//!
//! The account, its endpoint, the credentials and the client are shared with `azure-blob`
//! (`azure.rs`). An unreachable service, a missing queue or refused credentials are reported
//! on the node (`Error`, with Azure's reason, never a credential) and retried with capped
//! backoff; the node is `Running` again once the queue is read.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico::Placement;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
use reqwest::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::azure::{AccountFields, AccountSettings, AzureError, Client, Service, invalid};
use crate::broker::{self, Progress, Rest, SessionError, SessionResult, take_in_order};
pub use crate::kube_secret::SecretKeySelector;

/// Azure's most messages per Get Messages, and the default of `maxMessages`.
const MAX_MESSAGES: u32 = 32;
/// Default of `visibilityTimeout`.
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// Azure's longest visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Default of `pollInterval`.
const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// How long the deletions and give-backs of a stopping configuration may take.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a message's text is made the event's payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MessageEncoding {
    /// Base64-decoded when the whole text is padded base64 (the standard alphabet) of UTF-8
    /// text, else the text as it is (the default): reads what Azure Functions and the older
    /// SDKs write (base64) and what today's SDKs write by default (the text itself).
    #[default]
    Auto,
    /// The text as it is (the Azure SDKs' default today).
    Text,
    /// Always base64-decoded (Azure Functions' and the older SDKs' encoding); a text that is
    /// not base64 is taken as it is, and logged.
    Base64,
}

/// An `azure-queue` configuration: the messages of one Azure Storage queue (or Azurite's).
///
/// Give the queue's name, and the account: a connection string (`connectionStringFile`,
/// `connectionStringEnv` or `connectionString`; without any credential field, the
/// environment variable `AZURE_STORAGE_CONNECTION_STRING`), or `account` and/or `endpoint`
/// with the account key (`accountKey…`, Shared Key authorization) or a SAS token
/// (`sasToken…`). Credentials are read at every (re)connection and shown nowhere: not in
/// events, the node's message, logs or metrics.
///
/// Payload: the message's text, base64-decoded per `messageEncoding`. `datacontenttype`:
/// `application/json` when the payload is one JSON value, else `text/plain` when it is UTF-8
/// text, else `application/octet-stream`. The event's time is the message's `InsertionTime`.
/// Extensions: `messageid` (Azure's message id), `account`, `queue`, `dequeuecount` (more
/// than 1 when the message comes again) and `expirationtime` (RFC 3339). The CloudEvent's
/// `id` is the message id, the same when the message comes again, so that a watcher can tell a
/// redelivery from a new message.
///
/// Deletion: a message is deleted only once its event is accepted for delivery (written to
/// the outbox), or, with `spec.delivery.mode: ackAfterDelivery`, once every watcher took it.
/// One that is not comes back: at once when the configuration stops (its visibility is set to
/// 0), else after its visibility timeout (the gateway killed): at least once. While a
/// batch's events wait for room or for their delivery, its messages' visibility is extended
/// every half `visibilityTimeout`, so they do not come back meanwhile. A batch's events are
/// handed over in the order Get Messages gave them (Azure Storage queues promise no order).
///
/// An unreachable service, a missing queue or refused credentials are reported on the node
/// (`Error`, with Azure's reason) and retried with capped backoff.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureQueueConfig {
    /// The queue's name (3 to 63 lower-case letters, digits and single hyphens).
    pub queue: String,
    /// A file holding the account's connection string, like
    /// `AccountName=…;AccountKey=…;QueueEndpoint=…` (`UseDevelopmentStorage=true` for Azurite
    /// on its default ports). Its `QueueEndpoint`, else `https://<AccountName>.queue.<EndpointSuffix>`,
    /// is the endpoint; its `AccountKey` or `SharedAccessSignature` the credential.
    #[serde(default)]
    pub connection_string_file: Option<String>,
    /// An environment variable holding the connection string, instead of
    /// `connectionStringFile`.
    #[serde(default)]
    pub connection_string_env: Option<String>,
    /// The connection string from a key of a Kubernetes Secret in the gateway's namespace
    /// (read at every (re)connection; in a cluster, or with `KUBECONFIG`).
    #[serde(default)]
    pub connection_string: Option<SecretKeySelector>,
    /// The storage account's name, with `accountKey…` or `sasToken…` (default: the one
    /// `endpoint` names).
    #[serde(default)]
    pub account: Option<String>,
    /// The queue service's URL: `https://<account>.queue.core.windows.net` (the default with
    /// `account`), or path-style as Azurite serves it,
    /// `http://127.0.0.1:10001/devstoreaccount1`. With a connection string, it replaces the
    /// string's endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A file holding the account key (base64, as the portal shows it): requests are signed
    /// with Shared Key.
    #[serde(default)]
    pub account_key_file: Option<String>,
    /// An environment variable holding the account key, instead of `accountKeyFile`.
    #[serde(default)]
    pub account_key_env: Option<String>,
    /// The account key from a key of a Kubernetes Secret, instead of `accountKeyFile`.
    #[serde(default)]
    pub account_key: Option<SecretKeySelector>,
    /// A file holding a SAS token (`sv=…&sig=…`, with or without its `?`) that allows
    /// reading, updating and processing the queue's messages (permissions `rup`), instead of
    /// the account key.
    #[serde(default)]
    pub sas_token_file: Option<String>,
    /// An environment variable holding the SAS token, instead of `sasTokenFile`.
    #[serde(default)]
    pub sas_token_env: Option<String>,
    /// The SAS token from a key of a Kubernetes Secret, instead of `sasTokenFile`.
    #[serde(default)]
    pub sas_token: Option<SecretKeySelector>,
    /// The most messages one Get Messages takes: 1 to 32 (default 32).
    #[serde(default)]
    pub max_messages: Option<u32>,
    /// How long a received message stays invisible to other readers, like `1m`: `1s` to `7d`
    /// in whole seconds (default `30s`). It is extended by as much every half of it while the
    /// message's event waits.
    #[serde(default)]
    pub visibility_timeout: Option<String>,
    /// How long to wait after a Get Messages that found the queue empty: `100ms` to `1h`
    /// (default `1s`). Every Get Messages is a billed transaction.
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// How a message's text becomes the payload: `auto` (the default), `text` or `base64`.
    #[serde(default)]
    pub message_encoding: MessageEncoding,
}

/// A checked `azure-queue` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    queue: String,
    account: AccountSettings,
    max_messages: u32,
    visibility: Duration,
    poll: Duration,
    encoding: MessageEncoding,
}

/// Whether `name` is a queue's name: 3 to 63 lower-case letters, digits and hyphens, starting
/// and ending with a letter or digit, no two hyphens in a row.
fn is_queue_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

impl AzureQueueConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let queue = broker::non_blank("queue", &self.queue)?.to_string();
        if !is_queue_name(&queue) {
            return Err(invalid(
                "queue",
                format!(
                    "`{queue}` is not a queue name (3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit)"
                ),
            ));
        }
        let account = AccountFields {
            connection_string_file: self.connection_string_file,
            connection_string_env: self.connection_string_env,
            connection_string: self.connection_string,
            account: self.account,
            endpoint: self.endpoint,
            account_key_file: self.account_key_file,
            account_key_env: self.account_key_env,
            account_key: self.account_key,
            sas_token_file: self.sas_token_file,
            sas_token_env: self.sas_token_env,
            sas_token: self.sas_token,
        }
        .check(Service::Queue)?;
        let max_messages = match self.max_messages {
            None => MAX_MESSAGES,
            Some(n @ 1..=MAX_MESSAGES) => n,
            Some(n) => {
                return Err(invalid(
                    "maxMessages",
                    format!("{n} is not from 1 to {MAX_MESSAGES} (Azure's most per Get Messages)"),
                ));
            }
        };
        let visibility = crate::azure::duration_field(
            "visibilityTimeout",
            self.visibility_timeout,
            DEFAULT_VISIBILITY,
            Duration::from_secs(1),
            MAX_VISIBILITY,
        )?;
        let poll = crate::azure::duration_field(
            "pollInterval",
            self.poll_interval,
            DEFAULT_POLL,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        Ok(Settings {
            queue,
            account,
            max_messages,
            visibility: Duration::from_secs(visibility.as_secs()),
            poll,
            encoding: self.message_encoding,
        })
    }
}

/// The `azure-queue` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct AzureQueue;

impl ConfigExecutor for AzureQueue {
    type Config = Settings;

    /// Azure Storage shares a queue's messages out among its readers.
    fn placement(&self, _: &Settings) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<AzureQueueConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        let http = crate::azure::http_client()?;
        broker::run_sessions_until_they_stop(&ctx, None, |progress| {
            let (ctx, s, http) = (ctx.clone(), s.clone(), http.clone());
            async move { session(&ctx, &s, http, progress).await }
        })
        .await
    }
}

/// Get Messages' answer.
#[derive(Debug, Default, Deserialize)]
struct MessageList {
    #[serde(rename = "QueueMessage", default)]
    messages: Vec<QueueMessage>,
}

/// One message of Get Messages' answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueMessage {
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    insertion_time: Option<String>,
    #[serde(default)]
    expiration_time: Option<String>,
    #[serde(default)]
    pop_receipt: String,
    #[serde(default)]
    dequeue_count: Option<String>,
    #[serde(default)]
    message_text: Option<String>,
}

/// One received message: what names it in Azure, its receipt the latest one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handle {
    id: String,
    receipt: String,
}

fn broken(e: AzureError) -> SessionError {
    SessionError::Broker(e.to_string())
}

async fn session(
    ctx: &ConfigContext,
    s: &Settings,
    http: reqwest::Client,
    progress: Progress,
) -> SessionResult {
    let Some(client) = Client::connect(ctx, &s.account, http).await? else {
        return Ok(());
    };
    // The queue exists and the credentials are taken.
    let queue_path = [s.queue.as_str()];
    let checked = tokio::select! {
        r = client.call(Method::GET, &queue_path, &[("comp", "metadata")], None) => r,
        _ = ctx.stopped() => return Ok(()),
    };
    checked.map_err(broken)?;
    tracing::debug!(src = ctx.src(), queue = %s.queue, endpoint = %client.shown(), "reading Azure Storage queue");
    progress.running(ctx);
    let count = s.max_messages.to_string();
    let visibility = s.visibility.as_secs().to_string();
    let query = [
        ("numofmessages", count.as_str()),
        ("visibilitytimeout", visibility.as_str()),
    ];
    let messages_path = [s.queue.as_str(), "messages"];
    loop {
        let answer = tokio::select! {
            a = client.call(Method::GET, &messages_path, &query, None) => a,
            _ = ctx.stopped() => return Ok(()),
        };
        let (_, body) = answer.map_err(broken)?;
        let list: MessageList = quick_xml::de::from_str(body.trim_start_matches('\u{feff}'))
            .map_err(|e| {
                SessionError::Broker(format!(
                    "Azure Storage at {} answered Get Messages with what is not a message list: {e}",
                    client.shown()
                ))
            })?;
        let mut handles = Vec::new();
        let mut events = Vec::new();
        for m in &list.messages {
            if m.message_id.is_empty() || m.pop_receipt.is_empty() {
                continue;
            }
            handles.push(Handle {
                id: m.message_id.clone(),
                receipt: m.pop_receipt.clone(),
            });
            events.push(message_event(
                ctx,
                m,
                client.account(),
                &s.queue,
                s.encoding,
            ));
        }
        if handles.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(s.poll) => continue,
                _ = ctx.stopped() => return Ok(()),
            }
        }
        let handles = Mutex::new(handles);
        let (done, rest) = hand_over(ctx, &client, s, events, &handles).await;
        let handles = handles.into_inner().unwrap_or_else(|e| e.into_inner());
        if !settle(ctx, &client, s, &handles, done, rest).await? {
            return Ok(());
        }
    }
}

/// Hands the events over ([`take_in_order`]) while the messages' visibility is extended every
/// half visibility timeout. An extension under way is finished before this returns, so that
/// the pop receipts are the latest ones.
async fn hand_over(
    ctx: &ConfigContext,
    client: &Client,
    s: &Settings,
    events: Vec<Event>,
    handles: &Mutex<Vec<Handle>>,
) -> (usize, Rest) {
    let taking = take_in_order(ctx, events);
    tokio::pin!(taking);
    let every = s.visibility / 2;
    loop {
        tokio::select! {
            r = &mut taking => return r,
            _ = tokio::time::sleep(every) => {}
        }
        let extending = set_visibility(ctx, client, s, handles, s.visibility.as_secs());
        tokio::pin!(extending);
        tokio::select! {
            r = &mut taking => {
                extending.await;
                return r;
            }
            () = &mut extending => {}
        }
    }
}

/// Sets the visibility timeout of `handles` to `seconds` (Update Message), keeping the new
/// pop receipts. Failures are logged: a message may then come back and be taken twice.
async fn set_visibility(
    ctx: &ConfigContext,
    client: &Client,
    s: &Settings,
    handles: &Mutex<Vec<Handle>>,
    seconds: u64,
) {
    let seconds = seconds.to_string();
    let n = handles.lock().unwrap_or_else(|e| e.into_inner()).len();
    for i in 0..n {
        let Some(h) = handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .cloned()
        else {
            break;
        };
        let query = [
            ("popreceipt", h.receipt.as_str()),
            ("visibilitytimeout", seconds.as_str()),
        ];
        match client
            .call(Method::PUT, &[&s.queue, "messages", &h.id], &query, None)
            .await
        {
            Ok((headers, _)) => {
                if let Some(receipt) = headers.get("x-ms-popreceipt").and_then(|v| v.to_str().ok())
                    && let Some(slot) = handles.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i)
                {
                    slot.receipt = receipt.to_string();
                }
            }
            Err(e) => tracing::warn!(
                src = ctx.src(),
                message = %h.id,
                error = %e,
                "cannot set the visibility of a message whose event waits: it may come back and be taken twice"
            ),
        }
    }
}

/// Deletes the first `done` messages of a batch and makes the others visible again;
/// `Ok(true)` to go on reading, `Ok(false)` when stopping.
async fn settle(
    ctx: &ConfigContext,
    client: &Client,
    s: &Settings,
    handles: &[Handle],
    done: usize,
    rest: Rest,
) -> Result<bool, SessionError> {
    let stopping = !matches!(rest, Rest::None) || ctx.is_stopped();
    let (finished, left) = handles.split_at(done.min(handles.len()));
    for h in finished {
        let deleted = within(
            stopping,
            client.call(
                Method::DELETE,
                &[&s.queue, "messages", &h.id],
                &[("popreceipt", h.receipt.as_str())],
                None,
            ),
        )
        .await;
        match deleted {
            Some(Ok(_)) => {}
            // Its receipt is no longer valid (its visibility ran out and someone took it):
            // it comes again.
            Some(Err(e)) if e.code.as_deref() == Some("MessageNotFound") => tracing::warn!(
                src = ctx.src(),
                message = %h.id,
                error = %e,
                "a message whose event was accepted cannot be deleted: it comes again"
            ),
            Some(Err(e)) if !stopping => return Err(broken(e)),
            Some(Err(e)) => {
                tracing::warn!(src = ctx.src(), error = %e, "a message whose event was accepted while stopping is not deleted: it comes back after its visibility timeout")
            }
            None => tracing::warn!(
                src = ctx.src(),
                "a message whose event was accepted while stopping is not deleted in time: it comes back after its visibility timeout"
            ),
        }
    }
    if !left.is_empty() {
        // Not taken: back in the queue at once, for this configuration's next session or
        // another reader.
        let left = Mutex::new(left.to_vec());
        if within(stopping, set_visibility(ctx, client, s, &left, 0))
            .await
            .is_none()
        {
            tracing::warn!(
                src = ctx.src(),
                "messages not taken are not given back in time: they come back after their visibility timeout"
            );
        }
    }
    match rest {
        Rest::None => Ok(!ctx.is_stopped()),
        Rest::Stopping => Ok(false),
        Rest::Failed(e) => Err(e),
    }
}

/// `f`'s output; `None` when `stopping` and it takes longer than [`STOP_GRACE`].
async fn within<T>(stopping: bool, f: impl Future<Output = T>) -> Option<T> {
    if stopping {
        tokio::time::timeout(STOP_GRACE, f).await.ok()
    } else {
        Some(f.await)
    }
}

/// The bytes `text` encodes when it is padded standard base64 of UTF-8 text.
fn base64_text(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let bytes = STANDARD.decode(text).ok()?;
    std::str::from_utf8(&bytes).is_ok().then_some(bytes)
}

/// The event of one message of queue `queue` of `account`.
fn message_event(
    ctx: &ConfigContext,
    m: &QueueMessage,
    account: &str,
    queue: &str,
    encoding: MessageEncoding,
) -> Event {
    let text = m.message_text.as_deref().unwrap_or_default();
    let payload: Vec<u8> = match encoding {
        MessageEncoding::Text => text.as_bytes().to_vec(),
        MessageEncoding::Auto => base64_text(text).unwrap_or_else(|| text.as_bytes().to_vec()),
        MessageEncoding::Base64 => match STANDARD.decode(text.trim()) {
            Ok(b) => b,
            Err(_) => {
                tracing::warn!(
                    src = ctx.src(),
                    message = %m.message_id,
                    "messageEncoding is base64, but the message's text is not base64: taken as it is"
                );
                text.as_bytes().to_vec()
            }
        },
    };
    let content_type = match std::str::from_utf8(&payload) {
        Ok(t) if serde_json::from_str::<&RawValue>(t).is_ok() => "application/json",
        Ok(_) => "text/plain",
        Err(_) => "application/octet-stream",
    };
    let mut event = Event::new(payload).with_content_type(content_type);
    if let Some(time) = m
        .insertion_time
        .as_deref()
        .and_then(crate::azure::parse_date)
    {
        event = event.with_time(time);
    }
    if !m.message_id.is_empty() {
        event = event.with_id(m.message_id.as_str());
    }
    event = event
        .with_extension("messageid", m.message_id.as_str())
        .with_extension("account", account)
        .with_extension("queue", queue);
    if let Some(n) = m
        .dequeue_count
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        event = event.with_extension("dequeuecount", n);
    }
    if let Some(t) = m
        .expiration_time
        .as_deref()
        .and_then(crate::azure::parse_date)
    {
        event = event.with_extension("expirationtime", t.to_rfc3339());
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<AzureQueueConfig>(yaml)?.check()
    }

    fn err(yaml: &str) -> String {
        check(yaml).unwrap_err().message().to_string()
    }

    const Q: &str = "queue: orders\nconnectionStringEnv: CS";

    #[test]
    fn configuration() {
        let s = check(Q).unwrap();
        assert_eq!(s.queue, "orders");
        assert_eq!(s.max_messages, 32);
        assert_eq!(s.visibility, DEFAULT_VISIBILITY);
        assert_eq!(s.poll, DEFAULT_POLL);
        assert_eq!(s.encoding, MessageEncoding::Auto);
        let s = check(
            "queue: q-1\naccount: acct1\naccountKeyFile: /k\nmaxMessages: 5\nvisibilityTimeout: 2m\npollInterval: 250ms\nmessageEncoding: base64",
        )
        .unwrap();
        assert_eq!(s.max_messages, 5);
        assert_eq!(s.visibility, Duration::from_secs(120));
        assert_eq!(s.poll, Duration::from_millis(250));
        assert_eq!(s.encoding, MessageEncoding::Base64);
        assert!(
            check("queue: abc").is_ok(),
            "the environment's connection string"
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, field) in [
            (
                "connectionStringEnv: CS".to_string(),
                "missing field `queue`",
            ),
            ("queue: ''\nconnectionStringEnv: CS".into(), "queue:"),
            ("queue: Orders\nconnectionStringEnv: CS".into(), "queue:"),
            ("queue: a--b\nconnectionStringEnv: CS".into(), "queue:"),
            ("queue: ab\nconnectionStringEnv: CS".into(), "queue:"),
            (format!("{Q}\nmaxMessages: 0"), "maxMessages:"),
            (format!("{Q}\nmaxMessages: 33"), "maxMessages:"),
            (format!("{Q}\nvisibilityTimeout: 0s"), "visibilityTimeout:"),
            (format!("{Q}\nvisibilityTimeout: 8d"), "visibilityTimeout:"),
            (format!("{Q}\npollInterval: 1ms"), "pollInterval:"),
            (format!("{Q}\npollInterval: soon"), "pollInterval:"),
            (format!("{Q}\nmessageEncoding: rot13"), "messageEncoding"),
            (
                format!("{Q}\nconnectionStringFile: /f"),
                "connectionStringFile and connectionStringEnv",
            ),
            (format!("{Q}\naccountKeyEnv: K"), "accountKey:"),
            ("queue: qq1\naccountKeyEnv: K".into(), "account:"),
            (
                "queue: qq1\naccount: aa1\nendpoint: ftp://x".into(),
                "endpoint:",
            ),
            (
                "queue: qq1\naccountKey: {name: '', key: k}\naccount: abc".into(),
                "accountKey.name:",
            ),
            (format!("{Q}\nbogus: 1"), "bogus"),
        ] {
            let e = err(&yaml);
            assert!(e.contains(field), "{yaml:?}: {e}");
        }
    }

    #[tokio::test]
    async fn messages_become_events() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><QueueMessagesList><QueueMessage><MessageId>m-1</MessageId><InsertionTime>Fri, 04 Dec 2026 04:17:31 GMT</InsertionTime><ExpirationTime>Fri, 11 Dec 2026 04:17:31 GMT</ExpirationTime><PopReceipt>AgAAAA+/=</PopReceipt><TimeNextVisible>Fri, 04 Dec 2026 04:18:01 GMT</TimeNextVisible><DequeueCount>2</DequeueCount><MessageText>{"order": 1} &amp; &lt;more&gt;</MessageText></QueueMessage><QueueMessage><MessageId>m-2</MessageId><PopReceipt>r</PopReceipt><MessageText>aGVsbG8=</MessageText></QueueMessage><QueueMessage><MessageId>m-3</MessageId><PopReceipt>r</PopReceipt><MessageText></MessageText></QueueMessage></QueueMessagesList>"#;
        let list: MessageList = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(list.messages.len(), 3);
        assert_eq!(list.messages[0].pop_receipt, "AgAAAA+/=");
        let h = portico::testing::Harness::new("t", "azure-queue");
        let ctx = h.context("c", "");
        let e = message_event(&ctx, &list.messages[0], "acct", "q", MessageEncoding::Auto);
        assert_eq!(&e.payload[..], br#"{"order": 1} & <more>"#);
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
        assert_eq!(e.time.unwrap().timestamp(), 1_796_357_851);
        let ext: std::collections::BTreeMap<&str, &str> = e
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(ext["messageid"], "m-1");
        assert_eq!(ext["account"], "acct");
        assert_eq!(ext["queue"], "q");
        assert_eq!(ext["dequeuecount"], "2");
        assert_eq!(ext["expirationtime"], "2026-12-11T04:17:31+00:00");
        // Base64 of text, decoded unless `text`.
        let e = message_event(&ctx, &list.messages[1], "a", "q", MessageEncoding::Auto);
        assert_eq!(&e.payload[..], b"hello");
        let e = message_event(&ctx, &list.messages[1], "a", "q", MessageEncoding::Text);
        assert_eq!(&e.payload[..], b"aGVsbG8=");
        let e = message_event(&ctx, &list.messages[2], "a", "q", MessageEncoding::Base64);
        assert!(e.payload.is_empty());
        assert_eq!(e.time, None);
        // Not base64 of text: as it is.
        assert_eq!(base64_text("test"), None, "b5 eb 2d is not UTF-8");
        assert_eq!(base64_text("{\"a\":1}"), None);
        assert_eq!(base64_text("eyJhIjoxfQ=="), Some(b"{\"a\":1}".to_vec()));
        let empty: MessageList = quick_xml::de::from_str(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList />",
        )
        .unwrap();
        assert!(empty.messages.is_empty());
    }
}
