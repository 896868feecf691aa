//! The `webhook` gateway: one HTTP endpoint per configuration.
//!
//! Its configuration and what its events carry: [`HookConfig`]; the servers, shared by port,
//! and every answer a caller can get: [`server`]; the event a delivery becomes: [`payload`].
//!
//! The `github` and `gitlab` gateways are this one with their own [`Gate`]: they are written
//! on top of [`Hook`], [`run_hook`] and [`Servers`], the way a user would add another provider.

pub mod payload;
pub mod register;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use hyper::http::{HeaderMap, HeaderName, Method};
use portico::Placement;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Secret, SecretSource};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::Sha256;

pub use server::{Gate, Listen, Open, Route, RouteGuard, Servers, TlsFiles, Verdict};

/// Default of `maxBodySize`.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// A number or a string holding one (`port: 12000` and `port: "12000"` both work).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum NumberOrText {
    /// A number.
    Number(u64),
    /// Text.
    Text(String),
}

/// A `webhook` configuration; `github`, `gitlab`, `slack`, `stripe`, `bitbucket` and `gerrit`
/// configurations have the same fields.
///
/// Configurations that name the same port share one server; each endpoint and method belongs
/// to exactly one configuration, whose `src` its events carry. The caller gets 200 only once
/// the event is accepted for delivery (503 with `Retry-After` when the gateway is full, 401
/// for a bad signature or token, 413 over `maxBodySize`).
///
/// Payload: `application/json` `{"header": {…}, "body": …, "bodyEncoding": "json" | "text" |
/// "base64"}`: every request header by lower-case name (each an array of its values; headers
/// carrying a secret left out); the body as it came when it is JSON (`json`), as a string when
/// it is other UTF-8 text (`text`), in standard base64 otherwise (`base64`).
///
/// `github`: every delivery must carry `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
/// body>` under the secret; `gitlab`: `X-Gitlab-Token` equal to the secret. Both are checked
/// in constant time; a missing or wrong one gets 401, makes no event and counts in
/// `portico_events_rejected_total{reason="unauthorized"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookConfig {
    /// The port to listen on, on every interface (a number or a string holding one).
    /// Without it, the configuration shares the server of the gateway's other configurations,
    /// as Argo Events' webhooks did (they must listen on one port between them).
    #[serde(default)]
    pub port: Option<NumberOrText>,
    /// The path, starting with `/`.
    pub endpoint: String,
    /// The HTTP method (default `POST`).
    #[serde(default)]
    pub method: Option<String>,
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
    /// A file holding the secret (trailing newlines are not part of it). `webhook`: an
    /// optional HMAC secret, each delivery must then carry `X-Hub-Signature-256:
    /// sha256=<hex HMAC-SHA256 of the body>` or gets 401. `github`: the hook's secret,
    /// required. `gitlab`: the hook's secret token (`X-Gitlab-Token`), required. `slack`: the
    /// app's signing secret; `stripe`: the endpoint's signing secret (`whsec_…`);
    /// `bitbucket`: the webhook's secret; `gerrit`: the password (or bearer token) the
    /// webhook's URL carries; each required.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// An environment variable holding the secret, instead of `secretFile`.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Every type but `webhook`: the event types to keep (`X-GitHub-Event`: `push`,
    /// `pull_request`, …; `X-Gitlab-Event`: `Push Hook` or `push`, …; `X-Event-Key` for
    /// `bitbucket`: `repo:push`, …; the body's `event.type` for `slack`, its `type` for
    /// `stripe` and `gerrit`); default all. Other deliveries get 200 with the reason and make
    /// no event.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// `github` and `gitlab` only: register the hook through the forge's REST API, and keep
    /// it registered (see [`register`]).
    #[serde(default)]
    pub register: Option<register::RegisterConfig>,
    /// `slack` and `stripe` only: how far a delivery's signed timestamp may be from now, like
    /// `5m` (the default, what both providers recommend). Older (or replayed) deliveries get
    /// 401.
    #[serde(default)]
    pub tolerance: Option<String>,
}

/// What a hook type requires of its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookRules {
    /// The gateway type, for messages.
    pub gateway_type: &'static str,
    /// A secret must be given.
    pub secret_required: bool,
    /// `events` may be given.
    pub takes_events: bool,
    /// `register` may be given.
    pub takes_register: bool,
    /// `tolerance` may be given (signatures with a timestamp).
    pub takes_tolerance: bool,
}

/// A checked hook configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Port and TLS; `None` for a configuration that names no port and shares the server of
    /// the gateway's other configurations (as Argo Events' webhooks did).
    pub listen: Option<Listen>,
    /// Path.
    pub endpoint: String,
    /// Method.
    pub method: Method,
    /// Largest body, bytes.
    pub max_body: usize,
    /// Where the secret comes from, if any.
    pub secret: Option<SecretSource>,
    /// Event types kept (empty: all).
    pub events: Vec<String>,
    /// How far a signed timestamp may be from now.
    pub tolerance: std::time::Duration,
}

/// Default of `tolerance`.
pub const DEFAULT_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

impl HookConfig {
    /// Checks what the fields' types do not, under the rules of a hook type; errors name the
    /// field.
    pub fn check(&self, rules: HookRules) -> Result<Hook, ConfigError> {
        let config = self;
        let port = match &config.port {
            None => None,
            Some(p) => {
                let (port, written) = match p {
                    NumberOrText::Number(n) => (u16::try_from(*n).ok(), n.to_string()),
                    NumberOrText::Text(t) => (t.trim().parse::<u16>().ok(), t.clone()),
                };
                Some(port.filter(|p| *p != 0).ok_or_else(|| {
                    invalid(
                        "port",
                        format!("`{written}` is not a port number from 1 to 65535 (a webhook names its port: 0 cannot be used)"),
                    )
                })?)
            }
        };
        let endpoint = match config.endpoint.trim() {
            "" => {
                return Err(invalid("endpoint", "empty (required): a path like /push"));
            }
            e if !e.starts_with('/') => {
                return Err(invalid("endpoint", format!("`{e}` must start with /")));
            }
            e if e.contains(['?', '#', ' ']) => {
                return Err(invalid(
                    "endpoint",
                    format!("`{e}` must be a path only (no query, fragment or spaces)"),
                ));
            }
            e => e.to_string(),
        };
        let method = match config.method.as_deref().map(str::trim) {
            None | Some("") => Method::POST,
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| invalid("method", format!("`{m}` is not an HTTP method")))?,
        };
        let tls = match (&config.server_cert_path, &config.server_key_path) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (Some(_), None) => {
                return Err(invalid(
                    "serverKeyPath",
                    "required with serverCertPath (TLS needs both)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "serverCertPath",
                    "required with serverKeyPath (TLS needs both)",
                ));
            }
        };
        let max_body = max_body_size(config.max_body_size.as_ref())?;
        let secret = SecretSource::from_fields(
            "secret",
            config.secret_file.as_deref(),
            config.secret_env.as_deref(),
        )?;
        if secret.is_none() && rules.secret_required {
            return Err(ConfigError::invalid(format!(
                "a {} configuration needs its secret: set secretFile (a file holding it) or secretEnv (an environment variable holding it)",
                rules.gateway_type
            )));
        }
        let events = match &config.events {
            Some(_) if !rules.takes_events => {
                return Err(invalid(
                    "events",
                    format!(
                        "a {} configuration has no event types (github and gitlab have)",
                        rules.gateway_type
                    ),
                ));
            }
            Some(list) => {
                let mut events = Vec::new();
                for (i, e) in list.iter().enumerate() {
                    if e.trim().is_empty() {
                        return Err(invalid(&format!("events[{i}]"), "is empty"));
                    }
                    events.push(e.trim().to_string());
                }
                events
            }
            None => Vec::new(),
        };
        if config.register.is_some() && !rules.takes_register {
            return Err(invalid(
                "register",
                format!(
                    "a {} configuration cannot register its hook (github and gitlab can)",
                    rules.gateway_type
                ),
            ));
        }
        let tolerance = match config.tolerance.as_deref() {
            Some(_) if !rules.takes_tolerance => {
                return Err(invalid(
                    "tolerance",
                    format!(
                        "a {} configuration has no signed timestamps (slack and stripe have)",
                        rules.gateway_type
                    ),
                ));
            }
            None => DEFAULT_TOLERANCE,
            Some(t) => humantime::parse_duration(t.trim())
                .ok()
                .filter(|d| !d.is_zero() && *d <= std::time::Duration::from_secs(86_400))
                .ok_or_else(|| {
                    invalid(
                        "tolerance",
                        format!("`{t}` is not a duration from 1s to 24h, like 5m"),
                    )
                })?,
        };
        let listen = match (port, tls) {
            (Some(port), tls) => Some(Listen { port, tls }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(
                    "serverCertPath",
                    "a configuration without `port` shares another configuration's server, and its TLS: give the TLS files where the port is",
                ));
            }
        };
        Ok(Hook {
            listen,
            endpoint,
            method,
            max_body,
            secret,
            events,
            tolerance,
        })
    }
}

/// Checks a `maxBodySize` field (bytes, or a size like `4MiB`): the largest body taken,
/// [`DEFAULT_MAX_BODY`] when it is not given.
pub fn max_body_size(field: Option<&NumberOrText>) -> Result<usize, ConfigError> {
    let max_body = match field {
        None => DEFAULT_MAX_BODY,
        Some(NumberOrText::Number(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
        Some(NumberOrText::Text(t)) => parse_size(t).ok_or_else(|| {
            invalid(
                "maxBodySize",
                format!("`{t}` is not a size like 1048576, 512KiB, 4MiB or 1MB"),
            )
        })?,
    };
    if max_body == 0 {
        return Err(invalid("maxBodySize", "must be more than 0"));
    }
    Ok(max_body)
}

/// Parses `1048576`, `512KiB`, `4MiB`, `1GiB`, `10kB`, `1MB`, `1GB` (case-insensitive).
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000 * 1000,
        "gb" | "g" => 1000 * 1000 * 1000,
        "kib" | "ki" => 1 << 10,
        "mib" | "mi" => 1 << 20,
        "gib" | "gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Checks `sha256=<hex>` in `header` against the HMAC-SHA256 of `body` under `secret`, in
/// constant time.
pub fn verify_hmac_sha256(
    secret: &Secret,
    headers: &HeaderMap,
    header: &HeaderName,
    body: &[u8],
) -> Result<(), String> {
    let Some(value) = headers.get(header) else {
        return Err(format!("missing {header} header"));
    };
    let hex_digest = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("sha256="))
        .ok_or_else(|| format!("{header} must be sha256=<hex digest>"))?;
    let digest =
        hex::decode(hex_digest).map_err(|_| format!("{header} must be sha256=<hex digest>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose())
        .map_err(|_| "the configured secret cannot key an HMAC".to_string())?;
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| format!("{header} does not match the body signed with the configured secret"))
}

/// The hex `sha256=` signature of `body` under `secret`, as senders compute it.
pub fn sign_hmac_sha256(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// Keeps deliveries whose event type (from `header`) is in `wanted`, comparing with
/// `normalize` on both sides; an empty `wanted` keeps everything.
pub fn filter_event(
    headers: &HeaderMap,
    header: &HeaderName,
    wanted: &[String],
    normalize: fn(&str) -> String,
) -> Verdict {
    if wanted.is_empty() {
        return Verdict::Accept;
    }
    let Some(got) = headers.get(header).and_then(|v| v.to_str().ok()) else {
        return Verdict::Ignore(format!(
            "no {header} header, and this configuration keeps only events {wanted:?}"
        ));
    };
    let norm = normalize(got);
    if wanted.iter().any(|w| normalize(w) == norm) {
        Verdict::Accept
    } else {
        Verdict::Ignore(format!(
            "event `{got}` is not one of this configuration's events {wanted:?}"
        ))
    }
}

/// Attaches a hook configuration's route to the server of its port (starting the server if
/// needed). `None` when the configuration was stopped meanwhile.
pub async fn attach_hook(
    servers: &Arc<Servers>,
    ctx: &ConfigContext,
    hook: &Hook,
    gate: Arc<dyn Gate>,
) -> Result<Option<RouteGuard>, ConfigError> {
    let route = Route {
        endpoint: hook.endpoint.clone(),
        method: hook.method.clone(),
        max_body: hook.max_body,
        gate,
        ctx: ctx.clone(),
    };
    let guard = tokio::select! {
        _ = ctx.stopped() => return Ok(None),
        g = async {
            match &hook.listen {
                Some(listen) => servers.attach(listen, route).await,
                None => servers.attach_shared(route).await,
            }
        } => g?,
    };
    tracing::info!(
        port = guard.port(),
        endpoint = %hook.endpoint,
        method = %hook.method,
        "webhook route ready"
    );
    Ok(Some(guard))
}

/// A hook's registration at its forge: what [`run_hook`] keeps registered.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The checked `register:`.
    pub register: &'a register::Register,
    /// The client the API is called with ([`register::client`]).
    pub client: &'a reqwest::Client,
    /// The hook's secret, sent to the forge.
    pub secret: &'a Secret,
}

/// Runs one hook configuration: attaches its route, keeps its hook registered when
/// `registration` is given ([`register`]: the node is `Running` once registered) or reports
/// `Running` at once, and releases the route (and the port, if it was the last route there)
/// once the configuration is stopped.
pub async fn run_hook(
    servers: &Arc<Servers>,
    ctx: &ConfigContext,
    hook: &Hook,
    gate: Arc<dyn Gate>,
    registration: Option<Registration<'_>>,
) -> Result<(), ConfigError> {
    let Some(guard) = attach_hook(servers, ctx, hook, gate).await? else {
        return Ok(());
    };
    // The route is up first, so that the forge's test delivery on creation finds it.
    match registration {
        Some(r) => {
            r.register
                .keep(ctx, r.client, Some(r.secret), &hook.events)
                .await
        }
        None => {
            ctx.running();
            ctx.stopped().await;
        }
    }
    guard.release().await;
    Ok(())
}

const WEBHOOK: HookRules = HookRules {
    gateway_type: "webhook",
    secret_required: false,
    takes_events: false,
    takes_register: false,
    takes_tolerance: false,
};

/// The plain webhook's gate: everything, or only deliveries signed with its secret.
struct Signed {
    secret: Secret,
}

const SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");

impl Gate for Signed {
    fn admit(&self, headers: &HeaderMap, body: &[u8]) -> Verdict {
        match verify_hmac_sha256(&self.secret, headers, &SIGNATURE, body) {
            Ok(()) => Verdict::Accept,
            Err(why) => Verdict::Unauthorized(why),
        }
    }
}

/// The webhook executor. Its configurations share servers by port.
#[derive(Debug, Default, Clone)]
pub struct Webhook {
    servers: Arc<Servers>,
}

impl Webhook {
    /// The servers, by port.
    pub fn servers(&self) -> &Arc<Servers> {
        &self.servers
    }
}

impl ConfigExecutor for Webhook {
    type Config = Hook;

    /// Callers (or the load balancer in front) spread deliveries over the replicas.
    fn placement(&self, _: &Hook) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Hook, ConfigError> {
        let hook = ctx.parse::<HookConfig>()?.check(WEBHOOK)?;
        if hook.secret.is_none() {
            // It listens on every interface: anyone who reaches the port is believed.
            let risk = format!(
                "unauthenticated: port {} takes events on {} from anyone who reaches it (set secretFile or secretEnv to require signed deliveries)",
                hook.listen
                    .as_ref()
                    .map_or("shared".to_string(), |l| l.port.to_string()),
                hook.endpoint
            );
            if ctx.gateway().require_auth() {
                return Err(ConfigError::invalid(format!(
                    "{risk}; refused because spec.security.requireAuth is true"
                )));
            }
            ctx.warn(risk);
        }
        Ok(hook)
    }

    async fn start_config(&self, ctx: ConfigContext, hook: Hook) -> Result<(), ConfigError> {
        let gate: Arc<dyn Gate> = match &hook.secret {
            Some(source) => Arc::new(Signed {
                secret: source.load()?,
            }),
            None => Arc::new(Open),
        };
        run_hook(&self.servers, &ctx, &hook, gate, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Hook, String> {
        portico::testing::parse_config::<HookConfig>(yaml)
            .and_then(|c| c.check(WEBHOOK))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fields_are_checked_by_name() {
        let h = check("port: '12000'\nendpoint: /a\nmethod: put\nmaxBodySize: 1KiB").unwrap();
        assert_eq!(h.listen.as_ref().map(|l| l.port), Some(12000));
        assert_eq!(h.method, Method::PUT);
        assert_eq!(h.max_body, 1024);
        assert_eq!(check("port: 1\nendpoint: /a").unwrap().method, Method::POST);
        // No port: it shares the gateway's server; TLS then belongs where the port is.
        assert_eq!(check("endpoint: /a").unwrap().listen, None);
        assert!(
            check("endpoint: /a\nserverCertPath: c\nserverKeyPath: k")
                .unwrap_err()
                .starts_with("serverCertPath:")
        );
        assert!(
            check("port: 0\nendpoint: /a")
                .unwrap_err()
                .starts_with("port:")
        );
        assert!(
            check("port: 70000\nendpoint: /a")
                .unwrap_err()
                .starts_with("port:")
        );
        assert!(
            check("port: 1")
                .unwrap_err()
                .contains("missing field `endpoint`")
        );
        assert!(
            check("port: 1\nendpoint: a")
                .unwrap_err()
                .starts_with("endpoint:")
        );
        assert!(
            check("port: 1\nendpoint: /a\nmethod: 'G T'")
                .unwrap_err()
                .starts_with("method:")
        );
        assert!(
            check("port: 1\nendpoint: /a\nserverCertPath: c")
                .unwrap_err()
                .starts_with("serverKeyPath:")
        );
        assert!(
            check("port: 1\nendpoint: /a\nmaxBodySize: lots")
                .unwrap_err()
                .starts_with("maxBodySize:")
        );
        assert!(
            check("port: 1\nendpoint: /a\nevents: [push]")
                .unwrap_err()
                .starts_with("events:")
        );
        assert!(
            check("port: 1\nendpoint: /a\nsecretFile: f\nsecretEnv: E")
                .unwrap_err()
                .contains("both set")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("1 MB"), Some(1_000_000));
        assert_eq!(parse_size("1TB"), None);
    }

    #[test]
    fn hmac_round_trip() {
        let secret = Secret::new(b"It's a Secret to Everybody");
        // GitHub's documented example.
        let sig = sign_hmac_sha256(secret.expose(), b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let mut h = HeaderMap::new();
        h.insert(&SIGNATURE, sig.parse().unwrap());
        assert!(verify_hmac_sha256(&secret, &h, &SIGNATURE, b"Hello, World!").is_ok());
        assert!(verify_hmac_sha256(&secret, &h, &SIGNATURE, b"Hello, World?").is_err());
        assert!(verify_hmac_sha256(&secret, &HeaderMap::new(), &SIGNATURE, b"x").is_err());
    }
}
