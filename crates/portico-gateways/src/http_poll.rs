//! The `http-poll` gateway: for the systems that offer no push, it GETs a URL every
//! `interval` and emits the body as an event when it changed.
//!
//! Its configuration, what its events carry and how a change is told: [`HttpPollConfig`].
//!
//! Payload: the response's body, untouched; `datacontenttype` the response's `Content-Type`
//! (none when it sent none). Extensions: `url` (the URL polled, without its user and
//! password, credential-like query parameters shown as `****`), `status` (the HTTP status,
//! like `200`) and `etag` (the response's `ETag`, when it has one).
//!
//! Change detection (the default, `emit: changed`): the last `ETag` and `Last-Modified` are
//! remembered and sent back as `If-None-Match` and `If-Modified-Since`; a `304 Not Modified`
//! emits nothing. A `2xx` answer is compared with the last body by its SHA-256: an equal body
//! emits nothing (a server that ignores the conditional headers, or changes its `ETag` without
//! changing the body, makes no events), a different one is emitted. The first successful poll
//! of a configuration always emits: the state lives in memory, so a restart (of the gateway,
//! or of the configuration when its value changes) emits the current body again. The state
//! moves on only once the event is accepted, so a change refused by a full gateway
//! (`atMostOnce`) is emitted by a later poll. With `emit: always`, no conditional header is
//! sent and every `2xx` body is emitted.
//!
//! Polls never overlap: the next one starts `interval` after the previous one started, or when
//! the previous one ends if it took longer (its event waiting for room in a full gateway
//! included: nothing is dropped). A failed poll (no connection, no answer within `timeout`, a
//! status other than `2xx` and `304`, a body over `maxBodySize`) shows the node as `Error` with
//! `GET <url>: <reason>`, and polling goes on at the interval; the next success shows it
//! `Running` again.
//!
//! The auth header's secret (`authSecretFile`, `authSecretEnv` or the Kubernetes Secret
//! `authSecret`) is sent on every request and shown nowhere: not in events, the node's message,
//! logs or metrics.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use portico::Secret;
use portico::secret::{LiveSecret, redact_url, scrub};
use portico::{ConfigContext, ConfigError, ConfigErrorKind, ConfigExecutor, DispatchError, Event};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::broker;
use crate::kube_secret::{SecretFrom, SecretKeySelector};
use crate::webhook::{NumberOrText, max_body_size};

/// The shortest `interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default of `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// An `http-poll` configuration: a URL fetched with `GET` every `interval`, its body emitted
/// when it changed.
///
/// Payload: the response's body, untouched, with the response's `Content-Type` as
/// `datacontenttype`. Extensions: `url` (the URL polled, without its user and password;
/// credential-like query parameters such as `token` shown as `****`), `status` (like `200`),
/// and `etag` when the response has an `ETag`.
///
/// Change detection (`emit: changed`, the default): the last `ETag` and `Last-Modified` are
/// sent back as `If-None-Match` and `If-Modified-Since`, and a `304 Not Modified` emits
/// nothing; a `2xx` body is emitted when its SHA-256 differs from the last one's (so a server
/// without validators, or one that ignores them, makes an event only when the body changes).
/// The first successful poll of a configuration always emits: the state lives in memory, and a
/// restart or a changed configuration starts it over. A change the gateway could not accept
/// (full, in `atMostOnce`) is emitted again by the next poll. `emit: always` sends no
/// conditional header and emits every `2xx` body.
///
/// The first poll is made at start, the next ones every `interval`; a poll that takes longer
/// (a slow server, its event waiting for room in a full gateway) delays the next one, never
/// overlaps it. A failed poll (connection refused, no answer within `timeout`, a status other
/// than `2xx` or `304`, a body over `maxBodySize`) shows the node as `Error` with `GET <url>:
/// <reason>`, and polling goes on at the interval; the next successful poll shows it `Running`
/// again. Redirects are followed (at most 10); with an auth header, only to the same scheme,
/// host and port.
///
/// Credentials: a user and password in `url` are sent as basic authentication; or an auth
/// header (`authHeader`, default `Authorization`) whose value is `authScheme` and the secret
/// read from `authSecretFile` (read again when the file changes), `authSecretEnv`, or the
/// Kubernetes Secret key `authSecret` (read at start and again after a `401` or `403`). The
/// secret is never shown: not in events, the node's message, logs or metrics.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPollConfig {
    /// The URL to poll, `http://` or `https://` (certificates are checked against the
    /// Mozilla roots).
    pub url: String,
    /// How often to poll: a duration like `30s`, `5m` or `1h`; at least `1s`.
    pub interval: String,
    /// How long one request may take, body included, before it counts as failed: a duration
    /// like `10s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Extra request headers, name → value, like `Accept: application/json`. Not
    /// `If-None-Match` or `If-Modified-Since` (the gateway sets them), nor the auth header.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The header that carries the secret (default `Authorization`, when a secret is given).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// A word put before the secret in the auth header, like `Bearer` (sends `Authorization:
    /// Bearer <secret>`); default none: the header's value is the secret as it is.
    #[serde(default)]
    pub auth_scheme: Option<String>,
    /// A file holding the auth header's secret (trailing newlines are not part of it); read
    /// again when it changes, as a mounted Kubernetes Secret does.
    #[serde(default)]
    pub auth_secret_file: Option<String>,
    /// An environment variable holding the auth header's secret, instead of `authSecretFile`.
    #[serde(default)]
    pub auth_secret_env: Option<String>,
    /// The auth header's secret from a key of a Kubernetes Secret in the gateway's namespace,
    /// instead of `authSecretFile` (read at start and again after a `401` or `403`; needs
    /// the gateway in a cluster, or `KUBECONFIG`).
    #[serde(default)]
    pub auth_secret: Option<SecretKeySelector>,
    /// When to emit the body.
    #[serde(default)]
    pub emit: Emit,
    /// The largest body taken: bytes, or `512KiB`, `4MiB`, `1MB`… (default `4MiB`); a larger
    /// one fails the poll.
    #[serde(default)]
    pub max_body_size: Option<NumberOrText>,
}

fn default_timeout() -> String {
    "10s".to_string()
}

/// When an `http-poll` configuration emits the body it fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Emit {
    /// Only a changed body, the default: a `304 Not Modified`, or a body equal to the last
    /// one, emits nothing.
    #[default]
    Changed,
    /// Every `2xx` body, changed or not; no conditional header is sent.
    Always,
}

/// A checked auth header.
#[derive(Debug, Clone)]
struct Auth {
    header: HeaderName,
    scheme: Option<String>,
    source: SecretFrom,
}

/// A checked `http-poll` configuration.
#[derive(Clone)]
pub struct Settings {
    url: url::Url,
    /// The URL as it may be shown and put in events.
    shown: String,
    interval: Duration,
    timeout: Duration,
    headers: HeaderMap,
    auth: Option<Auth>,
    emit: Emit,
    max_body: usize,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.shown)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("auth", &self.auth)
            .field("emit", &self.emit)
            .field("max_body", &self.max_body)
            .finish()
    }
}

fn invalid(field: &str, what: impl fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

fn duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            field,
            format!("`{text}` is not a duration like `30s` or `5m`: {e}"),
        )
    })
}

/// `url` as it may be shown and put in events: without user and password, credential-like
/// query parameters as `****`.
fn shown_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    redact_url(u.as_str())
}

/// Headers the gateway sets itself.
fn set_by_the_gateway(name: &HeaderName) -> bool {
    name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE
}

impl HttpPollConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let url = broker::check_url(
            "url",
            broker::non_blank("url", &self.url)?,
            &["http", "https"],
        )?;
        let shown = shown_url(&url);
        let interval = duration("interval", &self.interval)?;
        if interval < MIN_INTERVAL {
            return Err(invalid(
                "interval",
                format!("`{}` is shorter than 1s", self.interval.trim()),
            ));
        }
        let timeout = duration("timeout", &self.timeout)?;
        if timeout.is_zero() {
            return Err(invalid("timeout", "must be more than 0"));
        }
        let max_body = max_body_size(self.max_body_size.as_ref())?;
        let source = SecretFrom::from_fields(
            "authSecret",
            self.auth_secret_file.as_deref(),
            self.auth_secret_env.as_deref(),
            self.auth_secret,
        )?;
        let auth_header = broker::optional(self.auth_header);
        let auth_scheme = broker::optional(self.auth_scheme);
        let auth = match source {
            None => {
                for (given, field) in [
                    (auth_header.is_some(), "authHeader"),
                    (auth_scheme.is_some(), "authScheme"),
                ] {
                    if given {
                        return Err(invalid(
                            field,
                            "given without a secret: add authSecretFile, authSecretEnv or authSecret",
                        ));
                    }
                }
                None
            }
            Some(source) => {
                let name = auth_header.as_deref().unwrap_or("Authorization");
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid("authHeader", format!("`{name}` is not a header name")))?;
                if set_by_the_gateway(&header) {
                    return Err(invalid(
                        "authHeader",
                        format!("`{name}` is set by the gateway for change detection"),
                    ));
                }
                if let Some(s) = &auth_scheme
                    && s.contains(|c: char| c.is_whitespace() || c.is_control())
                {
                    return Err(invalid(
                        "authScheme",
                        format!("`{s}` is not one word like `Bearer`"),
                    ));
                }
                if header == header::AUTHORIZATION && !url.username().is_empty() {
                    return Err(invalid(
                        "url",
                        "has a user (sent as basic authentication in the Authorization header) and an auth secret for the same header: give one",
                    ));
                }
                Some(Auth {
                    header,
                    scheme: auth_scheme,
                    source,
                })
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| invalid(&field, format!("`{name}` is not a header name")))?;
            if set_by_the_gateway(&n) {
                return Err(invalid(
                    &field,
                    "is set by the gateway for change detection",
                ));
            }
            if auth.as_ref().is_some_and(|a| a.header == n) {
                return Err(invalid(
                    &field,
                    "is the auth header, whose value comes from the secret",
                ));
            }
            let v = HeaderValue::from_str(value).map_err(|_| {
                invalid(
                    &field,
                    "the value is not a header value (control characters or a line break)",
                )
            })?;
            headers.append(n, v);
        }
        Ok(Settings {
            url,
            shown,
            interval,
            timeout,
            headers,
            auth,
            emit: self.emit,
            max_body,
        })
    }
}

impl Settings {
    /// What `validate` warns about: it works, but should not be left so.
    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.url.scheme() == "http" && (self.auth.is_some() || self.url.password().is_some()) {
            out.push(format!(
                "url: `{}` is plain http: the credentials travel unencrypted",
                self.shown
            ));
        }
        for name in [
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ] {
            if self.headers.contains_key(&name) {
                out.push(format!(
                    "headers.{name}: a credential written in the configuration is readable by whoever reads it; give it with authHeader and authSecretFile, authSecretEnv or authSecret"
                ));
            }
        }
        out
    }
}

/// The `http-poll` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpPoll;

impl ConfigExecutor for HttpPoll {
    type Config = Settings;

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        let settings = ctx.parse::<HttpPollConfig>()?.check()?;
        for w in settings.warnings() {
            ctx.warn(w);
        }
        Ok(settings)
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        let client = client(&s)?;
        let mut auth = match &s.auth {
            None => None,
            Some(a) => {
                let secret = tokio::select! {
                    r = AuthSecret::load(&ctx, &a.source) => r?,
                    _ = ctx.stopped() => return Ok(()),
                };
                Some((a, secret))
            }
        };
        let mut poller = Poller::default();
        let mut ticks = tokio::time::interval(s.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = ctx.stopped() => return Ok(()),
            }
            if let Some((a, secret)) = &mut auth
                && let Err(e) = secret.refresh(&ctx, &a.source).await
            {
                poller.failed(&ctx, &s, e.message().to_string());
                continue;
            }
            let auth_value = match &auth {
                None => None,
                Some((a, secret)) => Some((&a.header, header_value(a, &secret.current())?)),
            };
            let answer = tokio::select! {
                r = get(&client, &s, auth_value, &poller) => r,
                _ = ctx.stopped() => return Ok(()),
            };
            let answer = match answer {
                Ok(a) => a,
                Err(Failure { reason, status }) => {
                    if let (
                        Some((_, secret)),
                        Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                    ) = (&mut auth, status)
                    {
                        secret.refused();
                    }
                    let reason = match &auth {
                        Some((_, secret)) => scrub(&reason, &[&secret.current()]),
                        None => reason,
                    };
                    poller.failed(&ctx, &s, reason);
                    continue;
                }
            };
            poller.health.succeeded(&ctx);
            if let Some(pending) = poller.keep(&s, answer)
                && !poller.emit(&ctx, pending).await?
            {
                return Ok(());
            }
        }
    }
}

/// The HTTP client of one configuration: its timeout, no redirect off the origin when it sends
/// a secret.
fn client(s: &Settings) -> Result<reqwest::Client, ConfigError> {
    let guarded = s.auth.is_some();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if guarded
            && attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() != attempt.url().origin())
        {
            // The auth header would go to another server: the 3xx is the answer (an error).
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .timeout(s.timeout)
        .connect_timeout(s.timeout)
        .redirect(redirects)
        .user_agent(concat!("portico-http-poll/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::failed(format!("cannot make an HTTP client: {e}")))
}

/// The auth header's value: the scheme, if any, and the secret; marked sensitive.
fn header_value(auth: &Auth, secret: &Secret) -> Result<HeaderValue, ConfigError> {
    let field = auth.source.field("authSecret");
    let text = secret.expose_text(&field)?;
    let full = match &auth.scheme {
        Some(s) => format!("{s} {text}"),
        None => text.to_string(),
    };
    let mut v = HeaderValue::from_str(&full).map_err(|_| {
        invalid(
            &field,
            "the secret cannot be a header value (it holds control characters or a line break)",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The auth header's secret as it is now.
enum AuthSecret {
    /// A file (followed as it changes) or an environment variable.
    Live(LiveSecret),
    /// A Kubernetes Secret's key: read again before the next poll once `stale`.
    Kube { value: Secret, stale: bool },
}

/// `e` with its message prefixed by `field`, of the same kind.
fn in_field(field: &str, e: &ConfigError) -> ConfigError {
    let message = format!("{field}: {}", e.message());
    match e.kind() {
        ConfigErrorKind::Invalid => ConfigError::invalid(message),
        _ => ConfigError::failed(message),
    }
}

impl AuthSecret {
    async fn load(ctx: &ConfigContext, source: &SecretFrom) -> Result<AuthSecret, ConfigError> {
        match source {
            SecretFrom::Local(s) => LiveSecret::load(s.clone())
                .map(AuthSecret::Live)
                .map_err(|e| in_field(&source.field("authSecret"), &e)),
            SecretFrom::Kube(selector) => Ok(AuthSecret::Kube {
                value: read_kube(ctx, selector).await?,
                stale: false,
            }),
        }
    }

    fn current(&self) -> Secret {
        match self {
            AuthSecret::Live(s) => s.current(),
            AuthSecret::Kube { value, .. } => value.clone(),
        }
    }

    /// The server refused the secret: a Kubernetes Secret is read again before the next poll
    /// (a file is followed anyway).
    fn refused(&mut self) {
        if let AuthSecret::Kube { stale, .. } = self {
            *stale = true;
        }
    }

    /// Reads a stale Kubernetes Secret again; on failure it stays stale (and its last value).
    async fn refresh(
        &mut self,
        ctx: &ConfigContext,
        source: &SecretFrom,
    ) -> Result<(), ConfigError> {
        if let (AuthSecret::Kube { value, stale }, SecretFrom::Kube(selector)) = (self, source)
            && *stale
        {
            *value = read_kube(ctx, selector).await?;
            *stale = false;
        }
        Ok(())
    }
}

async fn read_kube(ctx: &ConfigContext, sel: &SecretKeySelector) -> Result<Secret, ConfigError> {
    crate::kube_secret::read_selected(ctx, "authSecret", sel).await
}

/// A poll that did not succeed: why, and the status when the server answered.
struct Failure {
    reason: String,
    status: Option<StatusCode>,
}

impl Failure {
    fn new(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            status: None,
        }
    }
}

/// A successful poll's answer.
enum Answer {
    /// `304 Not Modified`.
    NotModified,
    /// A `2xx` and its body.
    Body {
        status: StatusCode,
        body: Bytes,
        content_type: Option<String>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// One `GET`, conditional when change detection has validators.
async fn get(
    client: &reqwest::Client,
    s: &Settings,
    auth: Option<(&HeaderName, HeaderValue)>,
    poller: &Poller,
) -> Result<Answer, Failure> {
    let mut req = client.get(s.url.clone()).headers(s.headers.clone());
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    if s.emit == Emit::Changed {
        if let Some(etag) = &poller.etag {
            req = req.header(header::IF_NONE_MATCH, etag.as_str());
        }
        if let Some(lm) = &poller.last_modified {
            req = req.header(header::IF_MODIFIED_SINCE, lm.as_str());
        }
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| Failure::new(describe(&e, s)))?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Answer::NotModified);
    }
    if !status.is_success() {
        let mut reason = format!("the server answered {status}");
        if status.is_redirection() {
            match resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
            {
                Some(to) if s.auth.is_some() => reason.push_str(&format!(
                    " to {}, another server: not followed, the auth header would go there",
                    redact_url(to)
                )),
                _ => {}
            }
        }
        return Err(Failure {
            reason,
            status: Some(status),
        });
    }
    let text = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = text(header::CONTENT_TYPE).filter(|ct| is_media_type(ct));
    let etag = text(header::ETAG);
    let last_modified = text(header::LAST_MODIFIED);
    let too_big = || {
        Failure::new(format!(
            "the body is larger than maxBodySize ({} bytes)",
            s.max_body
        ))
    };
    if resp.content_length().is_some_and(|n| n > s.max_body as u64) {
        return Err(too_big());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Failure::new(describe(&e, s)))?
    {
        if body.len() + chunk.len() > s.max_body {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer::Body {
        status,
        body: body.freeze(),
        content_type,
        etag,
        last_modified,
    })
}

/// Whether `ct` can be a CloudEvent's `datacontenttype`: `type/subtype`, printable ASCII.
fn is_media_type(ct: &str) -> bool {
    let printable = ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let media = ct.split(';').next().unwrap_or("").trim();
    printable
        && media
            .split_once('/')
            .is_some_and(|(t, s)| !t.trim().is_empty() && !s.trim().is_empty())
}

/// What went wrong with a request, without its URL (the caller names it).
fn describe(e: &reqwest::Error, s: &Settings) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {} (timeout)",
            humantime::format_duration(s.timeout)
        );
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "cannot read the body"
    } else {
        "request failed"
    };
    let mut out = what.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// What one configuration remembers between polls.
#[derive(Default)]
struct Poller {
    etag: Option<String>,
    last_modified: Option<String>,
    /// The SHA-256 of the last body emitted.
    hash: Option<[u8; 32]>,
    /// Error or Running.
    health: broker::PollHealth,
}

/// What a poll remembers of the body it emits.
struct Seen {
    hash: [u8; 32],
    etag: Option<String>,
    last_modified: Option<String>,
}

/// An event to emit, and what to remember once it is accepted.
struct Pending {
    event: Event,
    seen: Seen,
}

impl Poller {
    fn failed(&mut self, ctx: &ConfigContext, s: &Settings, reason: String) {
        self.health
            .failed(ctx, format!("GET {}: {reason}", s.shown), s.interval);
    }

    /// The event `answer` makes, if any; when none, the state moves on now.
    fn keep(&mut self, s: &Settings, answer: Answer) -> Option<Pending> {
        let Answer::Body {
            status,
            body,
            content_type,
            etag,
            last_modified,
        } = answer
        else {
            return None;
        };
        let hash: [u8; 32] = Sha256::digest(&body).into();
        if s.emit == Emit::Changed && self.hash == Some(hash) {
            // The same body (the server ignored the conditional headers or has none): only
            // its validators are kept.
            self.etag = etag;
            self.last_modified = last_modified;
            return None;
        }
        let mut event = Event::new(body)
            .with_extension("url", s.shown.as_str())
            .with_extension("status", status.as_u16().to_string());
        if let Some(etag) = etag.as_deref().filter(|e| !e.is_empty()) {
            event = event.with_extension("etag", etag);
        }
        event.content_type = content_type;
        Some(Pending {
            event,
            seen: Seen {
                hash,
                etag,
                last_modified,
            },
        })
    }

    /// Remembers `seen` as the last body emitted.
    fn remember(&mut self, seen: Seen) {
        self.hash = Some(seen.hash);
        self.etag = seen.etag;
        self.last_modified = seen.last_modified;
    }

    /// Dispatches the event (waiting for room) and remembers its body once it is accepted.
    /// `Ok(false)`: the configuration is stopping.
    async fn emit(&mut self, ctx: &ConfigContext, pending: Pending) -> Result<bool, ConfigError> {
        match ctx.dispatch(pending.event).await {
            Ok(()) => {
                self.remember(pending.seen);
                Ok(true)
            }
            Err(DispatchError::Stopped) => Ok(false),
            // atMostOnce: a full gateway refuses at once (counted); the state stays, so the
            // next poll sees the change again and emits it then.
            Err(e @ (DispatchError::Full { .. } | DispatchError::Limited { .. })) => {
                tracing::warn!(
                    src = ctx.src(),
                    "a changed body is not emitted now ({e}); the next poll tries again"
                );
                Ok(true)
            }
            Err(DispatchError::Disk(why)) => {
                ctx.report_error(format!(
                    "the gateway cannot store events ({why}); the next poll tries again"
                ));
                self.health.errored();
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<HttpPollConfig>(yaml)?.check()
    }

    fn error(yaml: &str) -> String {
        check(yaml).unwrap_err().message().to_string()
    }

    const OK: &str = "url: http://127.0.0.1:8080/status\ninterval: 30s";

    #[test]
    fn a_minimal_configuration_has_the_defaults() {
        let s = check(OK).unwrap();
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.emit, Emit::Changed);
        assert_eq!(s.max_body, crate::webhook::DEFAULT_MAX_BODY);
        assert!(s.auth.is_none() && s.headers.is_empty());
        let s = check(&format!(
            "{OK}\ntimeout: 2s\nemit: always\nheaders: {{Accept: application/json}}\nmaxBodySize: 1MiB\nauthScheme: Bearer\nauthSecretEnv: TOKEN"
        ))
        .unwrap();
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.emit, Emit::Always);
        assert_eq!(s.headers["accept"], "application/json");
        assert_eq!(s.max_body, 1 << 20);
        let auth = s.auth.unwrap();
        assert_eq!(auth.header, header::AUTHORIZATION);
        assert_eq!(auth.scheme.as_deref(), Some("Bearer"));
        assert_eq!(
            auth.source,
            SecretFrom::Local(portico::SecretSource::Env("TOKEN".into()))
        );
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            ("interval: 30s", "missing field `url`"),
            ("url: http://x", "missing field `interval`"),
            ("url: ''\ninterval: 30s", "url:"),
            ("url: ftp://x/f\ninterval: 30s", "url:"),
            ("url: not a url\ninterval: 30s", "url:"),
            ("url: http://x\ninterval: soon", "interval:"),
            ("url: http://x\ninterval: 500ms", "interval:"),
            ("url: http://x\ninterval: 1s\ntimeout: never", "timeout:"),
            ("url: http://x\ninterval: 1s\ntimeout: 0s", "timeout:"),
            ("url: http://x\ninterval: 1s\nemit: sometimes", "emit"),
            (
                "url: http://x\ninterval: 1s\nmaxBodySize: huge",
                "maxBodySize:",
            ),
            (
                "url: http://x\ninterval: 1s\nheaders: {'a b': c}",
                "headers.a b:",
            ),
            (
                "url: http://x\ninterval: 1s\nheaders: {If-None-Match: x}",
                "headers.If-None-Match:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthHeader: X-Key",
                "authHeader:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthScheme: Bearer",
                "authScheme:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthSecretFile: /f\nauthSecretEnv: E",
                "authSecretFile and authSecretEnv",
            ),
            (
                "url: http://x\ninterval: 1s\nauthSecretEnv: ''",
                "authSecretEnv:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthSecretEnv: E\nauthSecret: {name: s, key: k}",
                "authSecret:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthSecret: {name: '', key: k}",
                "authSecret.name:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthSecretEnv: E\nauthHeader: 'bad header'",
                "authHeader:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthSecretEnv: E\nauthScheme: 'a b'",
                "authScheme:",
            ),
            (
                "url: http://x\ninterval: 1s\nauthSecretEnv: E\nheaders: {authorization: x}",
                "headers.authorization:",
            ),
            ("url: http://u:p@x\ninterval: 1s\nauthSecretEnv: E", "url:"),
            ("url: http://x\ninterval: 1s\nbogus: 1", "bogus"),
        ];
        for (yaml, word) in cases {
            let e = error(yaml);
            assert!(e.contains(word), "{yaml:?}: {e:?} should name {word:?}");
        }
    }

    #[test]
    fn the_url_is_shown_without_credentials() {
        let s = check("url: https://bob:hunter2@example.com/feed?token=abc&page=2\ninterval: 1m")
            .unwrap();
        assert_eq!(s.shown, "https://example.com/feed?token=****&page=2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = error("url: ftp://bob:hunter2@example.com/\ninterval: 1m");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn plain_http_with_a_secret_is_warned_about() {
        let s = check(&format!("{OK}\nauthSecretEnv: T")).unwrap();
        assert!(s.warnings()[0].contains("plain http"), "{:?}", s.warnings());
        assert!(check(OK).unwrap().warnings().is_empty());
        let s = check(&format!("{OK}\nheaders: {{Authorization: 'Bearer x'}}")).unwrap();
        assert!(
            s.warnings()[0].starts_with("headers.authorization:"),
            "{:?}",
            s.warnings()
        );
    }

    #[test]
    fn content_types_that_cannot_be_a_datacontenttype_are_left_out() {
        assert!(is_media_type("application/json; charset=utf-8"));
        assert!(is_media_type("text/plain"));
        assert!(!is_media_type("garbage"));
        assert!(!is_media_type("text/"));
        assert!(!is_media_type("text/plain\u{e9}"));
    }

    #[test]
    fn the_auth_header_is_sensitive_and_has_its_scheme() {
        let auth = Auth {
            header: header::AUTHORIZATION,
            scheme: Some("Bearer".into()),
            source: SecretFrom::Local(portico::SecretSource::Env("T".into())),
        };
        let v = header_value(&auth, &Secret::new("tok")).unwrap();
        assert_eq!(v, "Bearer tok");
        assert!(v.is_sensitive());
        let e = header_value(&auth, &Secret::new("a\nb")).unwrap_err();
        assert!(
            e.message().starts_with("authSecretEnv:") && !e.message().contains("a\nb"),
            "{e}"
        );
    }

    fn body(b: &'static str, etag: Option<&str>) -> Answer {
        Answer::Body {
            status: StatusCode::OK,
            body: Bytes::from_static(b.as_bytes()),
            content_type: Some("text/plain".into()),
            etag: etag.map(str::to_string),
            last_modified: None,
        }
    }

    #[test]
    fn a_body_is_emitted_when_it_changed_and_always_with_always() {
        let s = check(OK).unwrap();
        let mut p = Poller::default();
        let commit = |p: &mut Poller, a: Answer| -> bool {
            match p.keep(&s, a) {
                Some(pending) => {
                    p.remember(pending.seen);
                    true
                }
                None => false,
            }
        };
        assert!(commit(&mut p, body("a", None)), "the first body");
        assert!(!commit(&mut p, body("a", None)), "the same body");
        assert!(!commit(&mut p, Answer::NotModified));
        assert!(
            !commit(&mut p, body("a", Some("\"new\""))),
            "a new ETag, the same body"
        );
        assert_eq!(p.etag.as_deref(), Some("\"new\""), "its validator is kept");
        assert!(commit(&mut p, body("b", Some("\"b\""))), "a changed body");
        let always = check(&format!("{OK}\nemit: always")).unwrap();
        let event = p
            .keep(&always, body("b", None))
            .expect("always emits")
            .event;
        assert_eq!(event.payload, "b");
        assert_eq!(event.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            event.extensions,
            [
                (
                    "url".to_string(),
                    "http://127.0.0.1:8080/status".to_string()
                ),
                ("status".to_string(), "200".to_string())
            ]
        );
    }
}
