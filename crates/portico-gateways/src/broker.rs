//! What the stream gateways (`nats`, `mqtt`, `amqp`, `redis`, `kafka`) share: the
//! connect–consume–reconnect loop with capped backoff, URL checks that name the field, and
//! clean CloudEvent extension names for transport metadata.
//!
//! A gateway writes one *session*: connect, subscribe, call [`ConfigContext::running`], then
//! consume until the configuration stops (`Ok`) or the broker goes away
//! ([`SessionError::Broker`]). [`run_sessions`] reports the loss on the node
//! ([`ConfigContext::report_error`], phase `Error` with the reason), waits with capped
//! exponential backoff and starts a new session, which calls `running()` again once it is
//! back. The backoff starts over after a session that got as far as running. When the
//! configuration has a `tls` block, a session is also ended and a new one made at once when
//! one of its files changes, so that renewed certificates are taken while connected.

use portico::secret::redact_url;
use portico::security::FileWatch;
pub use portico::security::{Tls, TlsConfig};
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use portico::{ConfigContext, ConfigError, Delivered, DispatchError, Event, SecretSource, Submit};

/// The first wait before reconnecting.
pub(crate) const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// The longest wait between reconnection attempts.
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Why a session ended other than by the configuration stopping.
#[derive(Debug)]
pub enum SessionError {
    /// The broker is unreachable or dropped the connection: reconnect with backoff.
    Broker(String),
    /// Not recoverable by reconnecting (an event that cannot be made, …): end the
    /// configuration with this error.
    Fatal(ConfigError),
}

impl SessionError {
    /// A broker problem described as `what: error`.
    pub(crate) fn broker(what: impl std::fmt::Display, e: impl std::fmt::Display) -> SessionError {
        SessionError::Broker(format!("{what}: {e}"))
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Broker(text) => f.write_str(text),
            SessionError::Fatal(e) => write!(f, "{e}"),
        }
    }
}

/// What a session returns: `Ok(())` once the configuration is stopped.
pub(crate) type SessionResult = Result<(), SessionError>;

/// Maps a dispatch result: `Ok(true)` means the message is done with, ack it (accepted, or in
/// `atMostOnce` dropped because the gateway is full: `dispatch` never waits there, and the
/// drop is counted); `Ok(false)` means the configuration is stopping (leave the message
/// unacknowledged and end the session). A disk that cannot store the event ends the session
/// with the message unacknowledged, to be sent again.
pub(crate) fn accepted(r: Result<(), DispatchError>) -> Result<bool, SessionError> {
    accepted_ackable(r.map(|()| Delivered::now())).map(|d| d.is_some())
}

/// [`accepted`] for a submission with [`portico::Ack::AfterDelivery`]: `Some` holds what to
/// wait for before the ack (done at once unless the gateway is in `ackAfterDelivery`).
pub(crate) fn accepted_ackable(
    r: Result<Delivered, DispatchError>,
) -> Result<Option<Delivered>, SessionError> {
    match r {
        Ok(d) => Ok(Some(d)),
        Err(DispatchError::Full { .. }) => Ok(Some(Delivered::now())),
        Err(DispatchError::Stopped) => Ok(None),
        // Not stored: leave the message unacknowledged and start over, so the broker sends
        // it again once the disk can take it.
        Err(DispatchError::Disk(why)) => Err(SessionError::Broker(format!(
            "the gateway cannot store events ({why}); the message stays with the broker"
        ))),
        Err(e) => Err(SessionError::Fatal(e.into())),
    }
}

/// Why the messages of a batch after the first `done` are not done with.
pub(crate) enum Rest {
    /// They all are.
    None,
    /// The configuration or the gateway is stopping.
    Stopping,
    /// An event could not be accepted: the session ends with this.
    Failed(SessionError),
}

/// Hands a batch's events over (`sqs`, `azure-queue`), in order, each once the one before was accepted; then, in
/// `ackAfterDelivery`, waits for their delivery in order. How many from the first are done
/// with, and why the others are not.
pub(crate) async fn take_in_order(ctx: &ConfigContext, events: Vec<Event>) -> (usize, Rest) {
    let mut pending = Vec::with_capacity(events.len());
    let mut rest = Rest::None;
    for event in events {
        match accepted_ackable(ctx.submit(event, Submit::ACK_AFTER_DELIVERY).await) {
            Ok(Some(delivered)) => pending.push(delivered),
            Ok(None) => {
                rest = Rest::Stopping;
                break;
            }
            Err(e) => {
                rest = Rest::Failed(e);
                break;
            }
        }
    }
    let mut done = 0;
    for delivered in pending {
        let ok = delivered.is_done()
            || matches!(rest, Rest::None)
                && tokio::select! {
                    ok = delivered.wait() => ok,
                    _ = ctx.stopped() => false,
                };
        if !ok {
            if matches!(rest, Rest::None) {
                rest = Rest::Stopping;
            }
            break;
        }
        done += 1;
    }
    (done, rest)
}

/// Runs `session` again and again until the configuration stops: each broker loss is
/// reported on the node and followed by a capped backoff. A session is dropped as soon as
/// the configuration stops, and when a file of `tls` changes (then a new one starts at once).
pub(crate) async fn run_sessions<F, Fut>(
    ctx: &ConfigContext,
    tls: Option<&Tls>,
    session: F,
) -> Result<(), ConfigError>
where
    F: FnMut(Progress) -> Fut,
    Fut: Future<Output = SessionResult>,
{
    sessions(ctx, tls, false, session).await
}

/// [`run_sessions`] for sessions that watch [`ConfigContext::stopped`] themselves, to give
/// back what they hold before returning `Ok(())` (AMQP requeues its unacknowledged messages).
pub(crate) async fn run_sessions_until_they_stop<F, Fut>(
    ctx: &ConfigContext,
    tls: Option<&Tls>,
    session: F,
) -> Result<(), ConfigError>
where
    F: FnMut(Progress) -> Fut,
    Fut: Future<Output = SessionResult>,
{
    sessions(ctx, tls, true, session).await
}

async fn sessions<F, Fut>(
    ctx: &ConfigContext,
    tls: Option<&Tls>,
    own_stop: bool,
    mut session: F,
) -> Result<(), ConfigError>
where
    F: FnMut(Progress) -> Fut,
    Fut: Future<Output = SessionResult>,
{
    let builder = ExponentialBuilder::default()
        .with_min_delay(RECONNECT_MIN)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times();
    let mut backoff = builder.build();
    loop {
        if ctx.is_stopped() {
            return Ok(());
        }
        let progress = Progress::default();
        // The TLS files as this session reads them.
        let files = tls.map_or_else(|| FileWatch::new(Vec::new()), Tls::watch);
        let run = async {
            if own_stop {
                session(progress.clone()).await
            } else {
                tokio::select! {
                    r = session(progress.clone()) => r,
                    _ = ctx.stopped() => Ok(()),
                }
            }
        };
        let outcome = tokio::select! {
            r = run => r,
            changed = files.wait() => {
                tracing::info!(
                    src = ctx.src(),
                    file = %changed.display(),
                    "a TLS file changed; connecting again to use it"
                );
                backoff = builder.build();
                continue;
            }
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(SessionError::Fatal(e)) => return Err(e),
            Err(SessionError::Broker(reason)) => {
                if ctx.is_stopped() {
                    return Ok(());
                }
                if progress.was_running() {
                    backoff = builder.build();
                }
                let wait = backoff.next().unwrap_or(RECONNECT_MAX);
                tracing::warn!(src = ctx.src(), %reason, retry_in = ?wait, "broker connection lost");
                ctx.report_error(reason);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.stopped() => return Ok(()),
                }
            }
        }
    }
}

/// Lets [`run_sessions`] know a session got as far as running (to start the backoff over).
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Progress {
    /// Marks the node running and remembers it.
    pub(crate) fn running(&self, ctx: &ConfigContext) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        ctx.running();
    }

    /// Whether this session got as far as running.
    pub(crate) fn was_running(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Checks that `value` of `field` is a URL with one of `schemes` and a host.
pub(crate) fn check_url(
    field: &str,
    value: &str,
    schemes: &[&str],
) -> Result<url::Url, ConfigError> {
    // Shown without its password or token.
    let shown = redact_url(value.trim());
    let u = url::Url::parse(value.trim()).map_err(|e| {
        ConfigError::invalid(format!(
            "{field}: `{shown}` is not a URL ({e}); expected like `{}://127.0.0.1`",
            schemes[0]
        ))
    })?;
    if !schemes.contains(&u.scheme()) {
        return Err(ConfigError::invalid(format!(
            "{field}: `{shown}` has scheme `{}`; expected one of {}",
            u.scheme(),
            schemes.join(", ")
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(format!(
            "{field}: `{shown}` names no host"
        )));
    }
    Ok(u)
}

/// A required field's value, trimmed, which must not be blank.
pub(crate) fn non_blank<'a>(field: &str, value: &'a str) -> Result<&'a str, ConfigError> {
    match value.trim() {
        "" => Err(ConfigError::invalid(format!("{field}: empty (required)"))),
        v => Ok(v),
    }
}

/// An optional field's value, trimmed; blank counts as absent.
pub(crate) fn optional(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A broker credential (`field`: a password, a token), read at every connection so that a
/// rotated one is taken: a file that cannot be read yet is retried with the session; an unset
/// variable or text that is not UTF-8 ends the configuration.
pub(crate) fn credential(source: &SecretSource, field: &str) -> Result<String, SessionError> {
    let secret = source.load().map_err(|e| match e.kind() {
        portico::ConfigErrorKind::Invalid => SessionError::Fatal(e),
        _ => SessionError::Broker(e.message().to_string()),
    })?;
    secret
        .expose_text(field)
        .map(str::to_string)
        .map_err(SessionError::Fatal)
}

/// What a polling gateway (`http-poll`, `sftp`) shows of itself: a failed poll makes the node
/// `Error` with its reason (logged once per new reason, not at every poll), the next
/// successful one `Running` again.
#[derive(Debug, Default)]
pub(crate) struct PollHealth {
    /// Whether the node shows `Running` (since the last success).
    running: bool,
    /// The last failure logged.
    last_failure: Option<String>,
}

impl PollHealth {
    /// A poll failed with `text`; polling goes on every `interval`.
    pub(crate) fn failed(&mut self, ctx: &ConfigContext, text: String, interval: Duration) {
        if self.last_failure.as_deref() != Some(text.as_str()) {
            tracing::warn!(
                src = ctx.src(),
                "{text}; polling goes on every {}",
                humantime::format_duration(interval)
            );
            self.last_failure = Some(text.clone());
        }
        ctx.report_error(text);
        self.running = false;
    }

    /// The node was set to `Error` by other means: the next success shows `Running` again.
    pub(crate) fn errored(&mut self) {
        self.running = false;
    }

    /// A poll succeeded.
    pub(crate) fn succeeded(&mut self, ctx: &ConfigContext) {
        if !self.running {
            if self.last_failure.take().is_some() {
                tracing::info!(src = ctx.src(), "polling works again");
            }
            ctx.running();
            self.running = true;
        }
    }
}

/// A valid CloudEvent extension name made of `prefix` and a header name: lower-case,
/// only a–z and 0–9, at most 20 characters (`X-Trace-Id` with prefix `h` ⇒ `hxtraceid`).
pub(crate) fn header_extension(prefix: &str, name: &str) -> String {
    // The W3C trace context keeps its own names: the CloudEvents distributed tracing
    // extension.
    for kept in ["traceparent", "tracestate"] {
        if name.eq_ignore_ascii_case(kept) {
            return kept.to_string();
        }
    }
    let mut out = String::with_capacity(20);
    out.push_str(prefix);
    out.extend(
        name.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase()),
    );
    out.truncate(20);
    out
}

/// Whether a header is the message's content type.
pub(crate) fn is_content_type(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content_type")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_extensions_are_valid_names() {
        assert_eq!(header_extension("h", "X-Trace-Id"), "hxtraceid");
        assert_eq!(header_extension("h", "traceparent"), "traceparent");
        assert_eq!(header_extension("h", "TraceState"), "tracestate");
        assert_eq!(
            header_extension("h", "A-Very-Long-Header-Name-Indeed"),
            "haverylongheadername"
        );
    }

    #[test]
    fn urls_are_checked_by_field() {
        assert!(check_url("url", "nats://127.0.0.1:4222", &["nats"]).is_ok());
        let e = check_url("url", "http://x", &["nats"]).unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        let e = check_url("url", "not a url", &["nats"]).unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
    }
}
