//! The `gitlab` gateway: GitLab webhook deliveries, verified and filtered.
//!
//! A `webhook` configuration (`port`, `endpoint`, `method`, TLS, `maxBodySize`; see
//! [`crate::webhook`]) plus `events`, a required secret token and, optionally, `register`.
//!
//! Every delivery must carry `X-Gitlab-Token` equal to the secret (compared in constant
//! time); a missing or wrong one gets 401, produces no event and counts in
//! `portico_events_rejected_total{reason="unauthorized"}`. A delivery whose event type is not
//! in `events` gets 200 with the reason and produces no event. The payload is the webhook's
//! (`{"header", "body", "bodyEncoding"}`) without the `x-gitlab-token` header. The secret is
//! never logged.
//!
//! With `register` ([`crate::webhook::register`]), the configuration registers its project
//! hook through GitLab's REST API (the secret as the hook's token; updating the hook with the
//! same `url`, or creating it) and keeps it across restarts. Without `register`, add the hook
//! in the project's settings with the same secret token.

use std::sync::Arc;

use hyper::http::{HeaderMap, HeaderName};
use portico::Secret;
use subtle::ConstantTimeEq;

use crate::webhook::register::{Forge, ForgeHooks};
use crate::webhook::{Gate, HookRules, Verdict, filter_event};

const RULES: HookRules = HookRules {
    gateway_type: "gitlab",
    secret_required: true,
    takes_events: true,
    takes_register: true,
};

const TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");
const EVENT: HeaderName = HeaderName::from_static("x-gitlab-event");

/// `Merge Request Hook`, `merge request`, `merge_request` → `merge_request`.
pub fn normalize_event(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let base = lower.strip_suffix(" hook").unwrap_or(&lower).trim();
    base.split([' ', '_', '-'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

struct GitLabGate {
    secret: Secret,
    events: Vec<String>,
    redacted: [HeaderName; 1],
}

impl Gate for GitLabGate {
    fn admit(&self, headers: &HeaderMap, body: &[u8]) -> Verdict {
        let _ = body;
        let Some(token) = headers.get(&TOKEN) else {
            return Verdict::Unauthorized(format!("missing {TOKEN} header"));
        };
        if !bool::from(token.as_bytes().ct_eq(self.secret.expose())) {
            return Verdict::Unauthorized(format!("{TOKEN} does not match the configured secret"));
        }
        filter_event(headers, &EVENT, &self.events, normalize_event)
    }

    fn redacted_headers(&self) -> &[HeaderName] {
        &self.redacted
    }
}

/// The gitlab executor: [`ForgeHooks`] with GitLab's gate.
pub fn executor() -> ForgeHooks {
    ForgeHooks::new(Forge::GitLab, RULES, |secret, hook| {
        Arc::new(GitLabGate {
            secret,
            events: hook.events.clone(),
            redacted: [TOKEN],
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_normalize() {
        assert_eq!(normalize_event("Merge Request Hook"), "merge_request");
        assert_eq!(normalize_event("merge_request"), "merge_request");
        assert_eq!(normalize_event("Push Hook"), "push");
        assert_eq!(normalize_event(" push "), "push");
    }
}
