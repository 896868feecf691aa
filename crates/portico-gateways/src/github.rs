//! The `github` gateway: GitHub webhook deliveries, verified and filtered (SPEC §8).
//!
//! A `webhook` configuration (`port`, `endpoint`, `method`, TLS, `maxBodySize`; see
//! [`crate::webhook`]) plus:
//!
//! | field | meaning |
//! |---|---|
//! | `secretFile` / `secretEnv` | the hook's secret, from a file or an environment variable; required |
//! | `events` | event types to keep, as in `X-GitHub-Event` (`push`, `pull_request`, …); default all |
//!
//! Every delivery must carry `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
//! under the secret (checked in constant time); a missing or wrong one gets 401, produces no
//! event and counts in `portico_events_rejected_total{reason="unauthorized"}`. A delivery
//! whose `X-GitHub-Event` is not in `events` (GitHub's `ping` when the hook is created, say)
//! gets 200 with the reason and produces no event. The payload is the webhook's
//! (`{"header", "body", "bodyEncoding"}`). The secret is never logged.
//!
//! Registering the hook through GitHub's API is not done here: create it in the repository's
//! settings with content type `application/json` and the same secret.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName};
use portico::{ConfigContext, ConfigError, ConfigExecutor};

use crate::webhook::{
    Gate, Hook, HookRules, Secret, Servers, Verdict, filter_event, run_hook, verify_hmac_sha256,
};

const RULES: HookRules = HookRules {
    gateway_type: "github",
    secret_required: true,
    takes_events: true,
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

/// The github executor. Its configurations share servers by port.
#[derive(Debug, Default, Clone)]
pub struct GitHub {
    servers: Arc<Servers>,
}

impl ConfigExecutor for GitHub {
    fn validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError> {
        Hook::from_context(ctx, RULES).map(|_| ())
    }

    async fn start_config(&self, ctx: ConfigContext) -> Result<(), ConfigError> {
        let hook = Hook::from_context(&ctx, RULES)?;
        let Some(source) = &hook.secret else {
            return Err(ConfigError::invalid(
                "a github configuration needs its secret",
            ));
        };
        let gate = GitHubGate {
            secret: source.load()?,
            events: hook.events.clone(),
        };
        run_hook(&self.servers, &ctx, &hook, Arc::new(gate)).await
    }
}
