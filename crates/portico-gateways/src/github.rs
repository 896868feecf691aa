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
use portico::{ConfigContext, ConfigError, ConfigExecutor, Secret};

use crate::webhook::register::{self, Forge, Register};
use crate::webhook::{
    Gate, Hook, HookConfig, HookRules, Registration, Servers, Verdict, filter_event, run_hook,
    verify_hmac_sha256,
};

const RULES: HookRules = HookRules {
    gateway_type: "github",
    secret_required: true,
    takes_events: true,
    takes_register: true,
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
#[derive(Debug, Clone)]
pub struct GitHub {
    servers: Arc<Servers>,
    client: reqwest::Client,
}

impl Default for GitHub {
    fn default() -> Self {
        GitHub {
            servers: Arc::default(),
            client: register::client(),
        }
    }
}

impl ConfigExecutor for GitHub {
    type Config = (Hook, Option<Register>);

    fn validate(&self, ctx: &ConfigContext) -> Result<(Hook, Option<Register>), ConfigError> {
        let config: HookConfig = ctx.parse()?;
        let hook = config.check(RULES)?;
        let register = config
            .register
            .as_ref()
            .map(|r| r.check(Forge::GitHub, &hook.events))
            .transpose()?;
        Ok((hook, register))
    }

    async fn start_config(
        &self,
        ctx: ConfigContext,
        (hook, register): (Hook, Option<Register>),
    ) -> Result<(), ConfigError> {
        let Some(source) = &hook.secret else {
            return Err(ConfigError::invalid(
                "a github configuration needs its secret",
            ));
        };
        let secret = source.load()?;
        let gate = GitHubGate {
            secret: secret.clone(),
            events: hook.events.clone(),
        };
        let registration = register.as_ref().map(|register| Registration {
            register,
            client: &self.client,
            secret: &secret,
        });
        run_hook(&self.servers, &ctx, &hook, Arc::new(gate), registration).await
    }
}
