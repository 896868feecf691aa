//! The `sns` gateway: an HTTP(S) subscription endpoint of Amazon SNS topics.
//!
//! Its configuration and what its events carry: [`SnsConfig`].
//!
//! A `webhook` route (the shared servers of [`crate::webhook::server`]: configurations naming
//! one port share its server, with the same TLS and `maxBodySize` handling) whose [`Gate`]
//! reads SNS's JSON messages itself ([`Gate::make`]: checking one may take a certificate to
//! fetch, and confirming a subscription a URL to call):
//!
//! 1. The body must be a JSON object whose `Type` is `Notification`, `SubscriptionConfirmation`
//!    or `UnsubscribeConfirmation` (and the `x-amz-sns-message-type` header, when given, the
//!    same), with the fields its type has; otherwise 400.
//! 2. With `topicArns`, its `TopicArn` must be one of them; otherwise 403.
//! 3. Its signature is checked as SNS documents it: `SigningCertURL` must be `https` (or `http`
//!    with `allowHttp`) on a host `allowedHosts` allows (otherwise 403, and nothing is
//!    fetched); the certificate there (fetched without redirects, cached by URL) must be
//!    valid now and hold an RSA key; `Signature` (base64) must be that key's PKCS#1 v1.5
//!    signature of the message's string to sign — `Key\nvalue\n` for `Message`, `MessageId`,
//!    `Subject` (when present), `Timestamp`, `TopicArn`, `Type` of a notification, and for
//!    `Message`, `MessageId`, `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type` of a
//!    confirmation — with SHA1 for `SignatureVersion` 1 and SHA256 for 2. A missing, unknown
//!    or wrong one gets 401. 403 and 401 count in
//!    `portico_events_rejected_total{reason="unauthorized"}`. A certificate that cannot be
//!    fetched gets 503, so SNS sends the message again later.
//! 4. A `SubscriptionConfirmation` is confirmed: its `SubscribeURL` (checked like the
//!    certificate's URL) is called with `GET`; 200 once SNS answered 2xx, 503 otherwise. An
//!    `UnsubscribeConfirmation` gets 200. Neither makes an event.
//! 5. A `Notification` becomes an event; SNS gets 200 once it is accepted (in
//!    `ackAfterDelivery`, once every watcher took it), and 503 otherwise, so that it sends
//!    the message again.
//!
//! Every refusal is logged (a warning with the reason, never a URL's query, which holds the
//! subscription's token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::http::{HeaderMap, HeaderName, StatusCode};
use portico::Placement;
use portico::{Ack, ConfigContext, ConfigError, ConfigExecutor, Event, RejectReason};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::webhook::server::{Made, Reply};
use crate::webhook::{Gate, Hook, HookConfig, HookRules, NumberOrText, Servers, Verdict, run_hook};

const RULES: HookRules = HookRules {
    gateway_type: "sns",
    secret_required: false,
    takes_events: false,
    takes_register: false,
    takes_tolerance: false,
};

/// Default of `allowedHosts`: SNS's regional endpoints, in AWS's partitions.
pub const DEFAULT_ALLOWED_HOSTS: &[&str] = &["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"];

/// The prefix of the extensions made of message attributes (as `sqs`'s).
const ATTRIBUTE_PREFIX: &str = "attr";
/// How many signing certificates a configuration keeps (by URL).
const CERT_CACHE: usize = 32;
/// The largest signing certificate fetched, in bytes.
const MAX_CERT: usize = 64 * 1024;
/// How long fetching a certificate or confirming a subscription may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const MESSAGE_TYPE: HeaderName = HeaderName::from_static("x-amz-sns-message-type");

/// An `sns` configuration: an endpoint an SNS topic's HTTP or HTTPS subscription delivers to.
///
/// Subscribe `http(s)://<this host>:<port><endpoint>` to the topic (protocol `http` or
/// `https`; not with raw message delivery, whose messages carry no signature). The
/// subscription confirms itself: the `SubscriptionConfirmation` SNS posts is checked and its
/// `SubscribeURL` called. Configurations that name the same port share one server (as
/// `webhook` ones do); each endpoint belongs to one configuration. SNS posts with `POST`.
///
/// Every message's signature is checked (SignatureVersion 1, SHA1withRSA, and 2,
/// SHA256withRSA), with the certificate at its `SigningCertURL`, which must be on a host
/// `allowedHosts` allows. Bad input gets a 4xx with the reason: 400 for a body that is not an
/// SNS message, 403 for a topic not in `topicArns` or a URL on a host not allowed, 401 for a
/// missing, unknown or wrong signature; 503 when the event (or the certificate, or the
/// confirmation) could not be had, so that SNS sends the message again. SNS gets 200 only
/// once the event is accepted (with `spec.delivery.mode: ackAfterDelivery`, once every
/// watcher took it, within 14 s).
///
/// Payload: the notification's `Message`, untouched: `application/json` when it is JSON,
/// `text/plain` otherwise (a `content-type` String message attribute says otherwise). Its
/// time is the message's `Timestamp`, its `id` the `MessageId` (the same when SNS sends the
/// message again). Extensions: `messageid` (SNS's `MessageId`),
/// `topicarn` (the topic's ARN), `snssubject` (the `Subject`, when given), and one
/// `attr<name>` per String or Number message attribute (the name lower-cased with only a–z
/// and 0–9 kept, at most 20 characters in all: `Order-Id` ⇒ `attrorderid`); a `traceparent`
/// and `tracestate` attribute carry the W3C trace context under their own names. Binary
/// attributes, and values with control characters, are left out.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnsConfig {
    /// The port to listen on, on every interface (a number or a string holding one).
    /// Without it, the configuration shares the server of the gateway's other configurations.
    #[serde(default)]
    pub port: Option<NumberOrText>,
    /// The path SNS posts to, starting with `/`.
    pub endpoint: String,
    /// The topics taken, by ARN (`arn:aws:sns:us-east-1:123456789012:orders`); default all.
    /// A message of another topic gets 403 and makes no event (a subscription of another
    /// topic is not confirmed).
    #[serde(default)]
    pub topic_arns: Option<Vec<String>>,
    /// The hosts a message's `SigningCertURL` and `SubscribeURL` may name (default
    /// `sns.*.amazonaws.com` and `sns.*.amazonaws.com.cn`): host names, compared without
    /// case, where a `*` label stands for exactly one label of letters, digits and `-`
    /// (`sns.*.amazonaws.com` takes `sns.us-east-1.amazonaws.com`, not
    /// `sns.evil.example.amazonaws.com` nor `sns.us-east-1.amazonaws.com.example`); an IPv4
    /// address matches itself. The port is not part of the match. Nothing is fetched from,
    /// nor called on, another host.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Take `http://` certificate and subscription URLs too (default false: `https` only):
    /// for an emulator or a test on this machine, never for AWS.
    #[serde(default)]
    pub allow_http: bool,
    /// Check every message's signature (default true). `false` takes messages without
    /// checking them, for an SNS emulator whose signatures cannot be checked (moto leaves
    /// `Subject` out of what it signs, and names certificates on AWS's host that only its
    /// in-process mock serves): anyone who reaches the port can then post one (a warning says
    /// so, and `spec.security.requireAuth` refuses the configuration).
    #[serde(default)]
    pub verify_signature: Option<bool>,
    /// A PEM certificate chain: with `serverKeyPath`, the port serves HTTPS (rustls), for an
    /// `https` subscription. Configurations sharing a port must agree on TLS.
    #[serde(default)]
    pub server_cert_path: Option<String>,
    /// The PEM private key of `serverCertPath`.
    #[serde(default)]
    pub server_key_path: Option<String>,
    /// The largest body taken: bytes, or `512KiB`, `4MiB`, `1MB`… (default `4MiB`; SNS
    /// messages are at most 256 KiB, and their JSON a little more); a larger one gets 413.
    #[serde(default)]
    pub max_body_size: Option<NumberOrText>,
}

/// A host pattern of `allowedHosts`: its labels, `*` for any one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(Vec<String>);

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl HostPattern {
    /// Reads `sns.*.amazonaws.com`; `None` when it is not a host name with `*` labels.
    pub fn parse(text: &str) -> Option<HostPattern> {
        let text = text.trim().to_ascii_lowercase();
        let labels: Vec<String> = text.split('.').map(str::to_string).collect();
        labels
            .iter()
            .all(|l| l == "*" || is_label(l))
            .then_some(HostPattern(labels))
    }

    /// Whether `host` (a name or an IP address, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        labels.len() == self.0.len()
            && self
                .0
                .iter()
                .zip(&labels)
                .all(|(p, l)| if p == "*" { is_label(l) } else { p == l })
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A checked `sns` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    hook: Hook,
    topics: Vec<String>,
    hosts: Vec<HostPattern>,
    allow_http: bool,
    verify: bool,
}

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

impl SnsConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let hook = HookConfig {
            port: self.port,
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
        let mut topics = Vec::new();
        for (i, arn) in self.topic_arns.unwrap_or_default().iter().enumerate() {
            let arn = arn.trim();
            let parts: Vec<&str> = arn.split(':').collect();
            if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5].is_empty() {
                return Err(invalid(
                    &format!("topicArns[{i}]"),
                    format!(
                        "`{arn}` is not an SNS topic ARN like arn:aws:sns:us-east-1:123456789012:orders"
                    ),
                ));
            }
            topics.push(arn.to_string());
        }
        let hosts = match self.allowed_hosts {
            None => DEFAULT_ALLOWED_HOSTS
                .iter()
                .filter_map(|h| HostPattern::parse(h))
                .collect(),
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "allowedHosts",
                    "is empty: leave it out for SNS's hosts (sns.*.amazonaws.com), or name the hosts",
                ));
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    HostPattern::parse(h).ok_or_else(|| {
                        invalid(
                            &format!("allowedHosts[{i}]"),
                            format!(
                                "`{h}` is not a host name like sns.*.amazonaws.com (labels of letters, digits and -, or *), nor an IPv4 address"
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Settings {
            hook,
            topics,
            hosts,
            allow_http: self.allow_http,
            verify: self.verify_signature.unwrap_or(true),
        })
    }
}

/// The `sns` executor. Its configurations share servers by port.
#[derive(Debug, Default, Clone)]
pub struct Sns {
    servers: Arc<Servers>,
}

impl Sns {
    /// The servers, by port.
    pub fn servers(&self) -> &Arc<Servers> {
        &self.servers
    }
}

impl ConfigExecutor for Sns {
    type Config = Settings;

    /// SNS spreads deliveries over the endpoints behind the subscription's URL.
    fn placement(&self, _: &Settings) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        let s = ctx.parse::<SnsConfig>()?.check()?;
        if !s.verify {
            let risk = format!(
                "unauthenticated: verifySignature is false, so {} takes SNS messages from anyone who reaches its port, unchecked (for emulators only)",
                s.hook.endpoint
            );
            if ctx.gateway().require_auth() {
                return Err(ConfigError::invalid(format!(
                    "{risk}; refused because spec.security.requireAuth is true"
                )));
            }
            ctx.warn(risk);
        }
        if s.allow_http {
            ctx.warn(
                "allowHttp: certificates and subscription URLs are taken over plain http (for emulators and tests only)",
            );
        }
        Ok(s)
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        // No redirects: a redirect could lead to a host `allowedHosts` does not allow.
        let client = reqwest::Client::builder()
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portico-sns/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::failed(format!("cannot make an HTTP client: {e}")))?;
        let gate = Arc::new(SnsGate {
            src: ctx.src().to_string(),
            topics: s.topics.clone(),
            hosts: s.hosts.clone(),
            allow_http: s.allow_http,
            verify: s.verify,
            client,
            certs: Mutex::new(HashMap::new()),
        });
        run_hook(&self.servers, &ctx, &s.hook, gate, None).await
    }
}

/// The gate of an `sns` route.
struct SnsGate {
    src: String,
    topics: Vec<String>,
    hosts: Vec<HostPattern>,
    allow_http: bool,
    verify: bool,
    client: reqwest::Client,
    /// Signing certificates' RSA public keys (PKCS#1 DER), by URL.
    certs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

/// The kinds of SNS messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message published to the topic.
    Notification,
    /// The first message of a subscription, to be confirmed.
    SubscriptionConfirmation,
    /// The message that says the subscription was deleted.
    UnsubscribeConfirmation,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        match text {
            "Notification" => Some(Kind::Notification),
            "SubscriptionConfirmation" => Some(Kind::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(Kind::UnsubscribeConfirmation),
            _ => None,
        }
    }

    /// The fields signed, in order; `Subject` only when present.
    fn signed_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Notification => &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ],
            _ => &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ],
        }
    }
}

/// Why a message is refused: the status and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 401, 403 or 503.
    pub status: StatusCode,
    /// Why (never a secret, never a URL's query).
    pub why: String,
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// An SNS message read from a body: its kind and its fields.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its `Type`.
    pub kind: Kind,
    fields: Map<String, Value>,
}

impl Message {
    /// Reads `body` (with the request's `headers`); a 400 refusal when it is not an SNS
    /// message.
    pub fn read(headers: &HeaderMap, body: &[u8]) -> Result<Message, Refusal> {
        let bad = |why: String| refuse(StatusCode::BAD_REQUEST, why);
        let fields = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                return Err(bad(
                    "the body is not an SNS message: not a JSON object".into()
                ));
            }
            Err(e) => {
                return Err(bad(format!(
                    "the body is not an SNS message: not JSON ({e})"
                )));
            }
        };
        let ty = match fields.get("Type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(bad("Type is not a string".into())),
            None => return Err(bad("the body has no Type: not an SNS message (raw message delivery is not taken: it carries no signature)".into())),
        };
        let kind = Kind::parse(&ty).ok_or_else(|| {
            bad(format!(
                "Type `{ty}` is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation"
            ))
        })?;
        if let Some(header) = headers.get(&MESSAGE_TYPE)
            && header.as_bytes() != ty.as_bytes()
        {
            return Err(bad(format!(
                "the {MESSAGE_TYPE} header says {:?}, the body's Type `{ty}`",
                String::from_utf8_lossy(header.as_bytes())
            )));
        }
        let message = Message { kind, fields };
        let mut required = vec!["MessageId", "TopicArn", "Message", "Timestamp"];
        if kind != Kind::Notification {
            required.extend(["SubscribeURL", "Token"]);
        }
        for field in required {
            if message.text(field).is_none() {
                return Err(bad(format!(
                    "{ty} without {field} (a string): not an SNS message"
                )));
            }
        }
        if message
            .fields
            .get("Subject")
            .is_some_and(|s| !s.is_string() && !s.is_null())
        {
            return Err(bad("Subject is not a string".into()));
        }
        Ok(message)
    }

    /// A field that is a string.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    /// What SNS signed: `Key\nvalue\n` for each signed field present, in order.
    pub fn string_to_sign(&self) -> String {
        let mut out = String::new();
        for field in self.kind.signed_fields() {
            if let Some(value) = self.text(field) {
                out.push_str(field);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
        }
        out
    }
}

/// The signature algorithm of a `SignatureVersion`.
fn algorithm(version: &str) -> Option<&'static dyn ring::signature::VerificationAlgorithm> {
    match version {
        "1" => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
        "2" => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA256),
        _ => None,
    }
}

/// The RSA public key (PKCS#1 DER) of a PEM or DER certificate valid now.
pub fn certificate_key(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = if bytes.starts_with(b"-----") {
        CertificateDer::from_pem_slice(bytes)
            .map_err(|e| format!("not a PEM certificate: {e}"))?
            .to_vec()
    } else {
        bytes.to_vec()
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !cert.validity().is_valid() {
        return Err(format!(
            "the certificate is not valid now (valid from {} to {})",
            cert.validity().not_before,
            cert.validity().not_after
        ));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err("the certificate's key is not an RSA key".to_string());
    }
    Ok(spki.subject_public_key.data.to_vec())
}

impl SnsGate {
    /// Checks that `url` (of `field`) may be fetched: its scheme and host.
    fn allowed_url(&self, field: &str, url: &str) -> Result<url::Url, Refusal> {
        let forbidden = |why: String| refuse(StatusCode::FORBIDDEN, why);
        let parsed =
            url::Url::parse(url).map_err(|e| forbidden(format!("{field} is not a URL: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return Err(forbidden(format!(
                    "{field} is {other}://, not https:// (allowHttp takes http:// for emulators)"
                )));
            }
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(forbidden(format!("{field} has no host"))),
        };
        if !self.hosts.iter().any(|p| p.matches(&host)) {
            let allowed: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
            return Err(forbidden(format!(
                "{field} is on host `{host}`, which allowedHosts ({}) does not allow",
                allowed.join(", ")
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(forbidden(format!("{field} carries credentials")));
        }
        Ok(parsed)
    }

    /// The RSA key of the certificate at `url`, from the cache or fetched.
    async fn key(&self, url: url::Url) -> Result<Arc<Vec<u8>>, Refusal> {
        let cached = {
            let certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
            certs.get(url.as_str()).cloned()
        };
        if let Some(key) = cached {
            return Ok(key);
        }
        let shown = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path()
        );
        let unavailable = |why: String| refuse(StatusCode::SERVICE_UNAVAILABLE, why);
        let response = self.client.get(url.clone()).send().await.map_err(|e| {
            unavailable(format!(
                "cannot fetch the signing certificate {shown}: {}",
                e.without_url()
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!(
                "cannot fetch the signing certificate {shown}: {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_CERT as u64)
        {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("the signing certificate {shown} is over {MAX_CERT} bytes"),
            ));
        }
        let bytes = response.bytes().await.map_err(|e| {
            unavailable(format!(
                "cannot fetch the signing certificate {shown}: {}",
                e.without_url()
            ))
        })?;
        if bytes.len() > MAX_CERT {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("the signing certificate {shown} is over {MAX_CERT} bytes"),
            ));
        }
        let key = Arc::new(certificate_key(&bytes).map_err(|e| {
            refuse(
                StatusCode::UNAUTHORIZED,
                format!("the signing certificate {shown}: {e}"),
            )
        })?);
        let mut certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
        if certs.len() >= CERT_CACHE {
            certs.clear();
        }
        certs.insert(url.to_string(), key.clone());
        Ok(key)
    }

    /// Checks the message's signature.
    async fn verify(&self, m: &Message) -> Result<(), Refusal> {
        let unauthorized = |why: String| refuse(StatusCode::UNAUTHORIZED, why);
        let version = m
            .text("SignatureVersion")
            .ok_or_else(|| unauthorized("no SignatureVersion: the message is not signed".into()))?;
        let algorithm = algorithm(version).ok_or_else(|| {
            unauthorized(format!(
                "SignatureVersion `{version}` is not 1 (SHA1withRSA) or 2 (SHA256withRSA)"
            ))
        })?;
        let signature = m
            .text("Signature")
            .ok_or_else(|| unauthorized("no Signature: the message is not signed".into()))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| unauthorized("Signature is not base64".into()))?;
        let cert_url = m
            .text("SigningCertURL")
            .ok_or_else(|| unauthorized("no SigningCertURL: the message is not signed".into()))?;
        let url = self.allowed_url("SigningCertURL", cert_url)?;
        let key = self.key(url).await?;
        ring::signature::UnparsedPublicKey::new(algorithm, key.as_slice())
            .verify(m.string_to_sign().as_bytes(), &signature)
            .map_err(|_| {
                unauthorized(
                    "Signature does not match the message signed with the key of SigningCertURL's certificate".into(),
                )
            })
    }

    /// Calls the confirmation's `SubscribeURL`.
    async fn confirm(&self, m: &Message) -> Result<(), Refusal> {
        let url = self.allowed_url("SubscribeURL", m.text("SubscribeURL").unwrap_or(""))?;
        let unavailable = |why: String| refuse(StatusCode::SERVICE_UNAVAILABLE, why);
        let host = url.host_str().unwrap_or("").to_string();
        let response = self.client.get(url).send().await.map_err(|e| {
            unavailable(format!(
                "cannot confirm the subscription at {host}: {}",
                e.without_url()
            ))
        })?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "cannot confirm the subscription at {host}: {}",
                response.status()
            )));
        }
        Ok(())
    }

    /// Reads, checks and answers one message.
    async fn take(&self, headers: &HeaderMap, body: &[u8]) -> Result<Made, Refusal> {
        let m = Message::read(headers, body)?;
        let topic = m.text("TopicArn").unwrap_or("");
        if !self.topics.is_empty() && !self.topics.iter().any(|t| t == topic) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("topic {topic} is not one of this configuration's topicArns"),
            ));
        }
        if self.verify {
            self.verify(&m).await?;
        }
        match m.kind {
            Kind::SubscriptionConfirmation => {
                self.confirm(&m).await?;
                tracing::info!(src = %self.src, topic, "SNS subscription confirmed");
                Ok(Made::Answer(Reply::text(
                    StatusCode::OK,
                    format!("subscription to {topic} confirmed\n"),
                )))
            }
            Kind::UnsubscribeConfirmation => {
                tracing::info!(src = %self.src, topic, "SNS subscription deleted");
                Ok(Made::Answer(Reply::text(
                    StatusCode::OK,
                    "unsubscribed: no event\n",
                )))
            }
            Kind::Notification => Ok(Made::Event(notification_event(&m), None)),
        }
    }
}

/// The event of a notification.
pub fn notification_event(m: &Message) -> Event {
    let body = m.text("Message").unwrap_or("");
    let mut content_type = None;
    let (mut traceparent, mut tracestate) = (None, None);
    let mut extensions = Vec::new();
    if let Some(attributes) = m.fields.get("MessageAttributes").and_then(Value::as_object) {
        for (name, attribute) in attributes {
            let kind = attribute.get("Type").and_then(Value::as_str).unwrap_or("");
            let Some(value) = attribute.get("Value").and_then(Value::as_str) else {
                continue;
            };
            if !(kind.starts_with("String") || kind.starts_with("Number"))
                || !crate::sqs::printable(value)
            {
                continue;
            }
            if crate::broker::is_content_type(name) {
                content_type = crate::sqs::is_media_type(value).then(|| value.to_string());
            } else if name.eq_ignore_ascii_case("traceparent") {
                traceparent = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("tracestate") {
                tracestate = Some(value.to_string());
            } else {
                extensions.push((
                    crate::broker::header_extension(ATTRIBUTE_PREFIX, name),
                    value.to_string(),
                ));
            }
        }
    }
    let content_type = content_type.unwrap_or_else(|| {
        if serde_json::from_str::<&RawValue>(body).is_ok() {
            "application/json".to_string()
        } else {
            "text/plain".to_string()
        }
    });
    let mut event = Event::new(body.to_string()).with_content_type(content_type);
    event.extensions = extensions;
    event = event.with_trace_context(traceparent.as_deref(), tracestate.as_deref());
    if let Some(time) = m
        .text("Timestamp")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        event = event.with_time(time.with_timezone(&chrono::Utc));
    }
    if let Some(id) = m.text("MessageId").filter(|v| !v.is_empty()) {
        event = event.with_id(id);
    }
    // Last: an attribute's extension never takes the place of these.
    for (field, extension) in [
        ("MessageId", "messageid"),
        ("TopicArn", "topicarn"),
        ("Subject", "snssubject"),
    ] {
        if let Some(value) = m.text(field).filter(|v| crate::sqs::printable(v)) {
            event = event.with_extension(extension, value);
        }
    }
    event
}

impl Gate for SnsGate {
    /// Everything is checked in [`Gate::make`].
    fn admit(&self, _: &HeaderMap, _: &[u8]) -> Verdict {
        Verdict::Accept
    }

    fn make<'a>(&'a self, headers: &'a HeaderMap, body: &'a Bytes) -> BoxFuture<'a, Made> {
        Box::pin(async move {
            match self.take(headers, body).await {
                Ok(made) => made,
                Err(r) => {
                    tracing::warn!(src = %self.src, status = r.status.as_u16(), reason = %r.why, "SNS message refused");
                    let reply = Reply::text(r.status, format!("{}\n", r.why));
                    match r.status {
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            Made::Refused(RejectReason::Unauthorized, reply)
                        }
                        _ => Made::Answer(reply),
                    }
                }
            }
        })
    }

    /// SNS sends a message again until it gets a 2xx: in `ackAfterDelivery`, it gets one once
    /// every watcher took the event.
    fn ack(&self) -> Ack {
        Ack::AfterDelivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<SnsConfig>(yaml)?.check()
    }

    fn err(yaml: &str) -> String {
        check(yaml).unwrap_err().message().to_string()
    }

    #[test]
    fn configuration() {
        let s = check("port: 8080\nendpoint: /sns").unwrap();
        assert!(s.verify && !s.allow_http && s.topics.is_empty());
        assert_eq!(
            s.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            DEFAULT_ALLOWED_HOSTS
        );
        let s = check(
            "port: 8080\nendpoint: /sns\ntopicArns: ['arn:aws:sns:us-east-1:123456789012:orders']\nallowedHosts: [127.0.0.1, 'SNS.*.example.com']\nallowHttp: true\nverifySignature: false",
        )
        .unwrap();
        assert!(!s.verify && s.allow_http);
        assert_eq!(s.topics, ["arn:aws:sns:us-east-1:123456789012:orders"]);
        assert!(err("port: 8080\nendpoint: x").contains("endpoint"));
        assert!(err("port: 8080\nendpoint: /x\ntopicArns: [orders]").starts_with("topicArns[0]:"));
        assert!(
            err("port: 8080\nendpoint: /x\nallowedHosts: ['a/b']").starts_with("allowedHosts[0]:")
        );
        assert!(err("port: 8080\nendpoint: /x\nallowedHosts: []").starts_with("allowedHosts:"));
        assert!(err("port: 8080\nendpoint: /x\nsecretFile: /s").contains("secretFile"));
    }

    #[test]
    fn host_patterns_match_whole_labels() {
        let p = HostPattern::parse("sns.*.amazonaws.com").unwrap();
        assert!(p.matches("sns.us-east-1.amazonaws.com"));
        assert!(p.matches("SNS.eu-west-1.AMAZONAWS.com"));
        for host in [
            "sns.amazonaws.com",
            "sns.a.b.amazonaws.com",
            "sns.us-east-1.amazonaws.com.evil.example",
            "evil.example",
            "sns..amazonaws.com",
            "sns.a_b.amazonaws.com",
        ] {
            assert!(!p.matches(host), "{host}");
        }
        assert!(
            HostPattern::parse("127.0.0.1")
                .unwrap()
                .matches("127.0.0.1")
        );
        assert!(HostPattern::parse("a b").is_none());
        assert!(HostPattern::parse("").is_none());
    }

    fn gate(verify: bool) -> SnsGate {
        SnsGate {
            src: "t".into(),
            topics: Vec::new(),
            hosts: vec![HostPattern::parse("sns.*.amazonaws.com").unwrap()],
            allow_http: false,
            verify,
            client: reqwest::Client::new(),
            certs: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn urls_are_https_on_allowed_hosts_only() {
        let g = gate(true);
        assert!(
            g.allowed_url(
                "SigningCertURL",
                "https://sns.us-east-1.amazonaws.com/c.pem"
            )
            .is_ok()
        );
        for (url, why) in [
            ("http://sns.us-east-1.amazonaws.com/c.pem", "not https"),
            ("https://evil.example/c.pem", "does not allow"),
            (
                "https://sns.us-east-1.amazonaws.com.evil.example/c.pem",
                "does not allow",
            ),
            (
                "https://u:p@sns.us-east-1.amazonaws.com/c.pem",
                "credentials",
            ),
            ("file:///etc/passwd", "not https"),
            ("nope", "not a URL"),
        ] {
            let r = g.allowed_url("SigningCertURL", url).unwrap_err();
            assert_eq!(r.status, StatusCode::FORBIDDEN);
            assert!(r.why.contains(why), "{url}: {}", r.why);
        }
    }

    #[test]
    fn messages_are_read_and_their_string_to_sign_made() {
        let body = br#"{"Type":"Notification","MessageId":"m","TopicArn":"arn:aws:sns:us-east-1:1:t","Subject":"s","Message":"hi","Timestamp":"2024-01-01T00:00:00.000Z","SignatureVersion":"1","Signature":"x","SigningCertURL":"u"}"#;
        let m = Message::read(&HeaderMap::new(), body).unwrap();
        assert_eq!(
            m.string_to_sign(),
            "Message\nhi\nMessageId\nm\nSubject\ns\nTimestamp\n2024-01-01T00:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
        );
        let mut h = HeaderMap::new();
        h.insert(MESSAGE_TYPE, "SubscriptionConfirmation".parse().unwrap());
        let e = Message::read(&h, body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.why.contains("x-amz-sns-message-type"), "{}", e.why);
        for (body, why) in [
            (&b"{nope"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{\"Message\":\"raw\"}", "no Type"),
            (b"{\"Type\":\"Other\"}", "`Other`"),
            (
                b"{\"Type\":\"Notification\",\"MessageId\":\"m\"}",
                "without TopicArn",
            ),
        ] {
            let e = Message::read(&HeaderMap::new(), body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.why.contains(why), "{}", e.why);
        }
        let event = notification_event(&m);
        assert_eq!(event.content_type.as_deref(), Some("text/plain"));
        assert!(
            event
                .extensions
                .contains(&("snssubject".to_string(), "s".to_string()))
        );
    }
}
