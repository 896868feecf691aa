//! The `github` gateway: GitHub webhook deliveries, verified and filtered.
//!
//! A `webhook` configuration (`port`, `endpoint`, `method`, TLS, `maxBodySize`; see
//! [`crate::webhook`]) plus `events`, a required secret and, optionally, `register`.
//!
//! Every delivery must carry `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
//! under the secret (checked in constant time); a missing or wrong one gets 401, produces no
//! event and counts in `portico_events_rejected_total{reason="unauthorized"}`. A delivery
//! whose `X-GitHub-Event` is not in `events` (GitHub's `ping` when the hook is created, say)
//! gets 200 with the reason and produces no event. The payload is the webhook's
//! (`{"header", "body", "bodyEncoding"}`). The secret is never logged.
//!
//! With `register` ([`crate::webhook::register`]), the configuration registers its hook
//! through GitHub's REST API (updating the one with the same `url`, or creating it) and keeps
//! it across restarts. Without `register`, create the hook in the repository's settings with
//! content type `application/json` and the same secret.

use std::sync::Arc;

use hyper::http::{HeaderMap, HeaderName};
use portico::Secret;

use crate::webhook::register::{Forge, ForgeHooks};
use crate::webhook::{Gate, HookRules, Verdict, filter_event, verify_hmac_sha256};

const RULES: HookRules = HookRules {
    gateway_type: "github",
    secret_required: true,
    takes_events: true,
    takes_register: true,
    takes_tolerance: false,
};

const SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
const EVENT: HeaderName = HeaderName::from_static("x-github-event");

struct GitHubGate {
    secret: Secret,
    events: Vec<String>,
}

impl Gate for GitHubGate {
    fn admit(&self, headers: &HeaderMap, body: &[u8]) -> Verdict {
        if let Err(why) = verify_hmac_sha256(&self.secret, headers, &SIGNATURE, body) {
            return Verdict::Unauthorized(why);
        }
        filter_event(headers, &EVENT, &self.events, |e| {
            e.trim().to_ascii_lowercase()
        })
    }
}

/// The github executor: [`ForgeHooks`] with GitHub's gate.
pub fn executor() -> ForgeHooks {
    ForgeHooks::new(Forge::GitHub, RULES, |secret, hook| {
        Arc::new(GitHubGate {
            secret,
            events: hook.events.clone(),
        })
    })
}
