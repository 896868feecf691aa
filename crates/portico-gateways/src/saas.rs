//! The SaaS webhook gateways: `slack`, `stripe`, `bitbucket` and `gerrit`.
//!
//! Each is a `webhook` configuration (`port`, `endpoint`, `method`, TLS, `maxBodySize`; see
//! [`crate::webhook::HookConfig`]) with a required secret, `events` to keep, and its provider's
//! way of proving a delivery is genuine, checked in constant time. A delivery that fails the
//! check gets 401, makes no event and counts in
//! `portico_events_rejected_total{reason="unauthorized"}`; one whose event type is not in
//! `events` gets 200 with the reason and makes no event. The payload is the webhook's
//! (`{"header", "body", "bodyEncoding"}`), with the headers that carry a secret left out.
//!
//! | type | proof | event type (`events`) |
//! |---|---|---|
//! | `slack` | `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">` under the signing secret, `X-Slack-Request-Timestamp` within `tolerance` | the body's `event.type` (`message`, `app_mention`, …) |
//! | `stripe` | `Stripe-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">` (any of several `v1`) under the endpoint's secret, `t` within `tolerance` | the body's `type` (`payment_intent.succeeded`, …) |
//! | `bitbucket` | `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>` under the webhook's secret (Bitbucket Cloud and Data Center alike) | `X-Event-Key` (`repo:push`, `pullrequest:created`, `pr:opened`, …) |
//! | `gerrit` | the secret as the password of HTTP basic authentication (`https://user:secret@host/…` in the webhook's URL) or as a bearer token | the body's `type` (`patchset-created`, `change-merged`, …) |
//!
//! `slack` and `stripe` sign a timestamp with the body: a delivery whose timestamp is more
//! than `tolerance` (default 5 minutes) from now, or whose signature was already taken within
//! that window, is refused as a replay. A delivery the gateway did not take (503 when it is
//! full) is not remembered, so the provider's retry of it goes through. Slack's URL
//! verification (`{"type": "url_verification", "challenge": …}`, signed like any delivery) is
//! answered with the challenge and makes no event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::http::{HeaderMap, HeaderName, StatusCode};
use portico::Placement;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Secret};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::webhook::server::{Made, Reply};
use crate::webhook::{
    Gate, Hook, HookConfig, HookRules, Servers, Verdict, filter_event, run_hook, verify_hmac_sha256,
};

/// A SaaS provider whose webhooks a gateway type takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Slack's Events API.
    Slack,
    /// Stripe's webhook endpoints.
    Stripe,
    /// Bitbucket Cloud and Bitbucket Data Center (Server) webhooks.
    Bitbucket,
    /// Gerrit's webhooks plugin.
    Gerrit,
}

impl Provider {
    /// The gateway type.
    pub fn gateway_type(self) -> &'static str {
        match self {
            Provider::Slack => "slack",
            Provider::Stripe => "stripe",
            Provider::Bitbucket => "bitbucket",
            Provider::Gerrit => "gerrit",
        }
    }

    fn rules(self) -> HookRules {
        HookRules {
            gateway_type: self.gateway_type(),
            secret_required: true,
            takes_events: true,
            takes_register: false,
            takes_tolerance: matches!(self, Provider::Slack | Provider::Stripe),
        }
    }
}

/// The executor of one provider's webhooks. Its configurations share servers by port.
#[derive(Debug, Clone)]
pub struct SaasHooks {
    provider: Provider,
    servers: Arc<Servers>,
}

impl SaasHooks {
    /// The executor of `provider`'s webhooks.
    pub fn new(provider: Provider) -> SaasHooks {
        SaasHooks {
            provider,
            servers: Arc::default(),
        }
    }
}

impl ConfigExecutor for SaasHooks {
    type Config = Hook;

    /// Callers spread deliveries over the replicas.
    fn placement(&self, _: &Hook) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Hook, ConfigError> {
        ctx.parse::<HookConfig>()?.check(self.provider.rules())
    }

    async fn start_config(&self, ctx: ConfigContext, hook: Hook) -> Result<(), ConfigError> {
        let secret = match &hook.secret {
            Some(source) => source.load()?,
            None => return Err(ConfigError::invalid("the secret is required")),
        };
        let gate = ProviderGate {
            provider: self.provider,
            secret,
            events: hook.events.clone(),
            tolerance: hook.tolerance,
            seen: Replays::default(),
            redacted: redacted(self.provider),
        };
        run_hook(&self.servers, &ctx, &hook, Arc::new(gate), None).await
    }
}

const SLACK_SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
const SLACK_TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");
const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
const HUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature");
const EVENT_KEY: HeaderName = HeaderName::from_static("x-event-key");
const AUTHORIZATION: HeaderName = HeaderName::from_static("authorization");

/// Signatures seen within the tolerance window, by the timestamp they signed: the same
/// signature twice is a replay.
#[derive(Default)]
struct Replays(Mutex<HashMap<String, i64>>);

impl Replays {
    /// Records `signature` of `timestamp`; false when it was already seen.
    fn first_time(&self, signature: &str, timestamp: i64, now: i64, window: i64) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what the window no longer admits, now and then.
        if seen.len() >= 1024 {
            seen.retain(|_, t| (now - *t).abs() <= window);
        }
        seen.insert(signature.to_string(), timestamp).is_none()
    }

    /// Forgets `signature`: its delivery was not taken, and may come again.
    fn forget(&self, signature: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(signature);
    }
}

struct ProviderGate {
    provider: Provider,
    secret: Secret,
    events: Vec<String>,
    tolerance: Duration,
    seen: Replays,
    /// Headers never copied into an event: Gerrit's credentials are the secret.
    redacted: Vec<HeaderName>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn hmac_sha256(secret: &Secret, parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose()).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac.finalize().into_bytes().to_vec())
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl ProviderGate {
    /// Checks a signed timestamp against the window, then the signature against replays.
    fn fresh(&self, timestamp: &str, signature: &str) -> Result<(), String> {
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| format!("the signed timestamp `{timestamp}` is not a Unix time"))?;
        let now = now_secs();
        let window = self.tolerance.as_secs() as i64;
        if (now - ts).abs() > window {
            return Err(format!(
                "the signed timestamp is {}s from now, more than the tolerance of {window}s: refused as a replay",
                (now - ts).abs()
            ));
        }
        if !self.seen.first_time(signature, ts, now, window) {
            return Err(
                "a delivery with this signature was already taken: refused as a replay".to_string(),
            );
        }
        Ok(())
    }

    fn slack(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let ts = header(headers, &SLACK_TIMESTAMP)
            .ok_or_else(|| format!("missing {SLACK_TIMESTAMP} header"))?;
        let given = header(headers, &SLACK_SIGNATURE)
            .ok_or_else(|| format!("missing {SLACK_SIGNATURE} header"))?;
        let digest = given
            .strip_prefix("v0=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| format!("{SLACK_SIGNATURE} must be v0=<hex digest>"))?;
        let want = hmac_sha256(&self.secret, &[b"v0:", ts.as_bytes(), b":", body])
            .ok_or("the configured secret cannot key an HMAC")?;
        if !bool::from(want.ct_eq(&digest)) {
            return Err(format!(
                "{SLACK_SIGNATURE} does not match the request signed with the configured signing secret"
            ));
        }
        self.fresh(ts, given)
    }

    fn stripe(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let given = header(headers, &STRIPE_SIGNATURE)
            .ok_or_else(|| format!("missing {STRIPE_SIGNATURE} header"))?;
        let mut ts = None;
        let mut v1 = Vec::new();
        for item in given.split(',') {
            match item.trim().split_once('=') {
                Some(("t", t)) => ts = Some(t),
                Some(("v1", sig)) => v1.extend(hex::decode(sig).ok()),
                _ => {}
            }
        }
        let ts = ts.ok_or_else(|| format!("{STRIPE_SIGNATURE} has no t=<timestamp>"))?;
        if v1.is_empty() {
            return Err(format!("{STRIPE_SIGNATURE} has no v1=<hex signature>"));
        }
        let want = hmac_sha256(&self.secret, &[ts.as_bytes(), b".", body])
            .ok_or("the configured secret cannot key an HMAC")?;
        // Every candidate is compared, so the time taken does not say which one matched.
        let matched = v1
            .iter()
            .fold(subtle::Choice::from(0), |any, sig| any | want.ct_eq(sig));
        if !bool::from(matched) {
            return Err(format!(
                "no v1 signature of {STRIPE_SIGNATURE} matches the payload signed with the configured secret"
            ));
        }
        self.fresh(ts, given)
    }

    fn gerrit(&self, headers: &HeaderMap) -> Result<(), String> {
        let auth = header(headers, &AUTHORIZATION).ok_or_else(|| {
            "missing Authorization header: give the secret as the password in the webhook's URL (https://user:secret@host/…)".to_string()
        })?;
        let given: Vec<u8> = if let Some(b) = auth.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| "Authorization: Basic credentials are not base64".to_string())?;
            match decoded.iter().position(|c| *c == b':') {
                Some(i) => decoded[i + 1..].to_vec(),
                None => return Err("Authorization: Basic credentials have no password".into()),
            }
        } else if let Some(token) = auth.strip_prefix("Bearer ") {
            token.trim().as_bytes().to_vec()
        } else {
            return Err("Authorization must be Basic or Bearer".into());
        };
        if bool::from(given.ct_eq(self.secret.expose())) {
            Ok(())
        } else {
            Err("the Authorization credentials do not match the configured secret".into())
        }
    }

    /// Keeps deliveries whose JSON body has an event type (at `path`) in `events`.
    fn filter_body(&self, body: &[u8], path: &[&str]) -> Verdict {
        if self.events.is_empty() {
            return Verdict::Accept;
        }
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let got = value.as_ref().and_then(|v| {
            path.iter()
                .try_fold(v, |v, key| v.get(key))
                .and_then(|t| t.as_str())
        });
        match got {
            Some(t) if self.events.iter().any(|e| e == t) => Verdict::Accept,
            Some(t) => Verdict::Ignore(format!(
                "event `{t}` is not one of this configuration's events {:?}",
                self.events
            )),
            None => Verdict::Ignore(format!(
                "the body has no `{}`, and this configuration keeps only events {:?}",
                path.join("."),
                self.events
            )),
        }
    }
}

/// The headers of `provider`'s deliveries that carry the secret.
fn redacted(provider: Provider) -> Vec<HeaderName> {
    match provider {
        Provider::Gerrit => vec![AUTHORIZATION],
        _ => Vec::new(),
    }
}

/// Slack's URL verification challenge, when the body is one.
fn slack_challenge(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    (v.get("type")?.as_str()? == "url_verification")
        .then(|| v.get("challenge")?.as_str().map(str::to_string))
        .flatten()
}

impl Gate for ProviderGate {
    fn admit(&self, headers: &HeaderMap, body: &[u8]) -> Verdict {
        let proof = match self.provider {
            Provider::Slack => self.slack(headers, body),
            Provider::Stripe => self.stripe(headers, body),
            Provider::Bitbucket => verify_hmac_sha256(&self.secret, headers, &HUB_SIGNATURE, body),
            Provider::Gerrit => self.gerrit(headers),
        };
        if let Err(why) = proof {
            return Verdict::Unauthorized(why);
        }
        match self.provider {
            // The challenge is answered whatever the configuration keeps.
            Provider::Slack if slack_challenge(body).is_some() => Verdict::Accept,
            Provider::Slack => self.filter_body(body, &["event", "type"]),
            Provider::Stripe | Provider::Gerrit => self.filter_body(body, &["type"]),
            Provider::Bitbucket => {
                filter_event(headers, &EVENT_KEY, &self.events, |e| e.trim().to_string())
            }
        }
    }

    fn redacted_headers(&self) -> &[HeaderName] {
        &self.redacted
    }

    fn not_taken(&self, headers: &HeaderMap) {
        let signature = match self.provider {
            Provider::Slack => header(headers, &SLACK_SIGNATURE),
            Provider::Stripe => header(headers, &STRIPE_SIGNATURE),
            Provider::Bitbucket | Provider::Gerrit => None,
        };
        if let Some(signature) = signature {
            self.seen.forget(signature);
        }
    }

    fn event(&self, headers: &HeaderMap, body: &Bytes) -> Made {
        if self.provider == Provider::Slack
            && let Some(challenge) = slack_challenge(body)
        {
            return Made::Answer(Reply::text(StatusCode::OK, challenge));
        }
        match crate::webhook::payload::event(headers, body, self.redacted_headers()) {
            Ok(e) => Made::Event(e, None),
            Err(e) => Made::Answer(Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the event: {e}\n"),
            )),
        }
    }
}

/// Signs a Slack request as Slack does: `(X-Slack-Request-Timestamp, X-Slack-Signature)`.
pub fn sign_slack(secret: &[u8], timestamp: i64, body: &[u8]) -> (String, String) {
    let ts = timestamp.to_string();
    let sig = Hmac::<Sha256>::new_from_slice(secret)
        .map(|mut mac| {
            mac.update(b"v0:");
            mac.update(ts.as_bytes());
            mac.update(b":");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default();
    (ts, format!("v0={sig}"))
}

/// Signs a Stripe payload as Stripe does: the `Stripe-Signature` header's value.
pub fn sign_stripe(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let sig = Hmac::<Sha256>::new_from_slice(secret)
        .map(|mut mac| {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default();
    format!("t={timestamp},v1={sig}")
}

/// The current Unix time in seconds, as the signers above take it.
pub fn unix_now() -> i64 {
    now_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(provider: Provider, events: &[&str]) -> ProviderGate {
        ProviderGate {
            provider,
            secret: Secret::new(b"s3cret"),
            events: events.iter().map(|e| e.to_string()).collect(),
            tolerance: Duration::from_secs(300),
            seen: Replays::default(),
            redacted: redacted(provider),
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn unauthorized(v: Verdict) -> String {
        match v {
            Verdict::Unauthorized(why) => why,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn slack_signatures_are_checked_with_their_timestamp_once() {
        let g = gate(Provider::Slack, &["app_mention"]);
        let body = br#"{"type":"event_callback","event":{"type":"app_mention"}}"#;
        let (ts, sig) = sign_slack(b"s3cret", unix_now(), body);
        let h = headers(&[
            ("x-slack-request-timestamp", ts.clone()),
            ("x-slack-signature", sig.clone()),
        ]);
        assert!(matches!(g.admit(&h, body), Verdict::Accept));
        // The same request again: a replay, unless the first was not taken.
        assert!(unauthorized(g.admit(&h, body)).contains("replay"));
        g.not_taken(&h);
        assert!(matches!(g.admit(&h, body), Verdict::Accept));
        assert!(unauthorized(g.admit(&h, body)).contains("replay"));
        // Tampered, unsigned, old.
        assert!(unauthorized(g.admit(&h, b"{}")).contains("does not match"));
        assert!(unauthorized(g.admit(&HeaderMap::new(), body)).contains("missing"));
        let (old_ts, old_sig) = sign_slack(b"s3cret", unix_now() - 600, body);
        let old = headers(&[
            ("x-slack-request-timestamp", old_ts),
            ("x-slack-signature", old_sig),
        ]);
        assert!(unauthorized(g.admit(&old, body)).contains("tolerance"));
        // Another event type: 200, no event.
        let other = br#"{"type":"event_callback","event":{"type":"message"}}"#;
        let (ts, sig) = sign_slack(b"s3cret", unix_now(), other);
        let h = headers(&[
            ("x-slack-request-timestamp", ts),
            ("x-slack-signature", sig),
        ]);
        assert!(matches!(g.admit(&h, other), Verdict::Ignore(_)));
    }

    #[test]
    fn slacks_url_verification_is_answered_with_its_challenge() {
        let g = gate(Provider::Slack, &["app_mention"]);
        let body = Bytes::from_static(br#"{"type":"url_verification","challenge":"c-123"}"#);
        let (ts, sig) = sign_slack(b"s3cret", unix_now(), &body);
        let h = headers(&[
            ("x-slack-request-timestamp", ts),
            ("x-slack-signature", sig),
        ]);
        assert!(matches!(g.admit(&h, &body), Verdict::Accept));
        match g.event(&h, &body) {
            Made::Answer(r) => assert_eq!(&r.body[..], b"c-123"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stripe_takes_any_of_its_v1_signatures_within_the_tolerance() {
        let g = gate(Provider::Stripe, &["payment_intent.succeeded"]);
        let body = br#"{"type":"payment_intent.succeeded"}"#;
        let now = unix_now();
        let good = sign_stripe(b"s3cret", now, body);
        let rolled = format!(
            "t={now},v1={},{}",
            "00".repeat(32),
            good.split_once(',').unwrap().1
        );
        let h = headers(&[("stripe-signature", rolled)]);
        assert!(matches!(g.admit(&h, body), Verdict::Accept));
        assert!(unauthorized(g.admit(&h, body)).contains("replay"));
        let wrong = sign_stripe(b"other", now, body);
        let e = unauthorized(g.admit(&headers(&[("stripe-signature", wrong)]), body));
        assert!(e.contains("no v1 signature"), "{e}");
        let old = sign_stripe(b"s3cret", now - 301, body);
        let e = unauthorized(g.admit(&headers(&[("stripe-signature", old)]), body));
        assert!(e.contains("tolerance"), "{e}");
        let e = unauthorized(g.admit(&headers(&[("stripe-signature", "v1=ab".into())]), body));
        assert!(e.contains("t=<timestamp>"), "{e}");
    }

    #[test]
    fn bitbucket_and_gerrit() {
        let g = gate(Provider::Bitbucket, &["repo:push"]);
        let body = br#"{"push": {}}"#;
        let sig = crate::webhook::sign_hmac_sha256(b"s3cret", body);
        let h = headers(&[
            ("x-hub-signature", sig.clone()),
            ("x-event-key", "repo:push".into()),
        ]);
        assert!(matches!(g.admit(&h, body), Verdict::Accept));
        let h = headers(&[
            ("x-hub-signature", sig),
            ("x-event-key", "pr:opened".into()),
        ]);
        assert!(matches!(g.admit(&h, body), Verdict::Ignore(_)));
        assert!(matches!(
            g.admit(&headers(&[("x-event-key", "repo:push".into())]), body),
            Verdict::Unauthorized(_)
        ));

        let g = gate(Provider::Gerrit, &["change-merged"]);
        let body = br#"{"type":"change-merged"}"#;
        let basic = base64::engine::general_purpose::STANDARD.encode("gerrit:s3cret");
        let h = headers(&[("authorization", format!("Basic {basic}"))]);
        assert!(matches!(g.admit(&h, body), Verdict::Accept));
        let h = headers(&[("authorization", "Bearer s3cret".into())]);
        assert!(matches!(g.admit(&h, body), Verdict::Accept));
        let h = headers(&[("authorization", "Bearer nope".into())]);
        assert!(matches!(g.admit(&h, body), Verdict::Unauthorized(_)));
        assert_eq!(g.redacted_headers(), &[AUTHORIZATION]);
    }
}
