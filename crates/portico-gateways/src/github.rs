//! The `github` gateway: GitHub webhook deliveries, verified and filtered.
//!
//! A `webhook` configuration (`port`, `endpoint`, `method`, TLS, `maxBodySize`; see
//! [`crate::webhook`]) plus:
//!
//! plus `events`, a required secret and, optionally, `register` ([`RegisterConfig`]).
//!
//! Every delivery must carry `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
//! under the secret (checked in constant time); a missing or wrong one gets 401, produces no
//! event and counts in `portico_events_rejected_total{reason="unauthorized"}`. A delivery
//! whose `X-GitHub-Event` is not in `events` (GitHub's `ping` when the hook is created, say)
//! gets 200 with the reason and produces no event. The payload is the webhook's
//! (`{"header", "body", "bodyEncoding"}`). The secret is never logged.
//!
//! Optionally, the configuration registers its hook through GitHub's REST API when it starts
//! (creating it, or updating the one with the same `url`) and deletes it when it stops:
//!
//! Without `register`, create the hook in the repository's settings with content type
//! `application/json` and the same secret.

use std::sync::Arc;

use hyper::http::{HeaderMap, HeaderName};
use portico::{ConfigContext, ConfigError, ConfigExecutor};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::webhook::{
    Gate, Hook, HookConfig, HookRules, Secret, SecretSource, Servers, Verdict, attach_hook,
    filter_event, verify_hmac_sha256,
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

/// `register:` of a github configuration: the hook is registered through GitHub's REST API
/// when the configuration starts (created, or the one with the same `url` updated) and
/// deleted when it stops.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterConfig {
    /// The repository, `owner/name`.
    pub repository: String,
    /// The payload URL GitHub calls: where this gateway is reachable from GitHub.
    pub url: String,
    /// A file holding a token allowed to manage the repository's hooks.
    #[serde(default)]
    pub token_file: Option<String>,
    /// An environment variable holding the token, instead of `tokenFile`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The API's base URL (default `https://api.github.com`; GitHub Enterprise:
    /// `https://HOST/api/v3`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Let GitHub skip verifying this gateway's certificate (default `false`).
    #[serde(default)]
    pub insecure_ssl: bool,
}

/// A checked `register:`.
#[derive(Debug, Clone)]
pub struct Register {
    repository: String,
    url: String,
    token: SecretSource,
    api: String,
    insecure_ssl: bool,
}

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("register.{field}: {what}"))
}

impl RegisterConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(&self) -> Result<Register, ConfigError> {
        let c = self;
        let repository = c.repository.trim().to_string();
        let parts: Vec<&str> = repository.split('/').collect();
        if parts.len() != 2
            || parts
                .iter()
                .any(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return Err(invalid(
                "repository",
                format!("`{repository}` is not owner/name"),
            ));
        }
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            return Err(invalid(
                "url",
                format!("`{}` is not an http(s) URL GitHub can call", c.url),
            ));
        }
        let token = match (&c.token_file, &c.token_env) {
            (Some(f), None) => SecretSource::File(f.trim().into()),
            (None, Some(e)) => SecretSource::Env(e.trim().to_string()),
            _ => {
                return Err(invalid(
                    "tokenFile",
                    "give one of tokenFile or tokenEnv: a token allowed to manage the repository's hooks",
                ));
            }
        };
        let api = c
            .api_url
            .as_deref()
            .map(str::trim)
            .unwrap_or("https://api.github.com")
            .trim_end_matches('/')
            .to_string();
        if !(api.starts_with("http://") || api.starts_with("https://")) {
            return Err(invalid("apiUrl", format!("`{api}` is not an http(s) URL")));
        }
        Ok(Register {
            repository,
            url: c.url.clone(),
            token,
            api,
            insecure_ssl: c.insecure_ssl,
        })
    }
}

impl Register {
    fn hooks_url(&self) -> String {
        format!("{}/repos/{}/hooks", self.api, self.repository)
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: String,
        token: &Secret,
    ) -> Result<reqwest::RequestBuilder, ConfigError> {
        let token = std::str::from_utf8(token.expose())
            .map_err(|_| invalid("token", "the token is not UTF-8 text"))?;
        Ok(client
            .request(method, url)
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28"))
    }

    /// Creates the hook, or updates the one with the same URL; returns its id.
    pub async fn create(
        &self,
        client: &reqwest::Client,
        secret: &Secret,
        events: &[String],
    ) -> Result<u64, ConfigError> {
        let token = self.token.load()?;
        let secret = std::str::from_utf8(secret.expose()).map_err(|_| {
            ConfigError::invalid("the secret must be UTF-8 text to register the hook")
        })?;
        let events: Vec<&str> = if events.is_empty() {
            vec!["*"]
        } else {
            events.iter().map(String::as_str).collect()
        };
        let config = serde_json::json!({
            "url": self.url,
            "content_type": "json",
            "secret": secret,
            "insecure_ssl": if self.insecure_ssl { "1" } else { "0" },
        });
        let create = serde_json::json!({
            "name": "web", "active": true, "events": events, "config": config,
        });
        let r = self
            .request(client, reqwest::Method::POST, self.hooks_url(), &token)?
            .json(&create)
            .send()
            .await
            .map_err(|e| self.failed("create", e))?;
        match r.status().as_u16() {
            200 | 201 => return hook_id(r, self, "create").await,
            422 => {} // it exists: update it below
            _ => return Err(self.refused("create", r).await),
        }
        let r = self
            .request(
                client,
                reqwest::Method::GET,
                format!("{}?per_page=100", self.hooks_url()),
                &token,
            )?
            .send()
            .await
            .map_err(|e| self.failed("list", e))?;
        if !r.status().is_success() {
            return Err(self.refused("list", r).await);
        }
        let hooks: Vec<serde_json::Value> = r.json().await.map_err(|e| self.failed("list", e))?;
        let Some(id) = hooks
            .iter()
            .find(|h| h["config"]["url"] == self.url.as_str())
            .and_then(|h| h["id"].as_u64())
        else {
            return Err(ConfigError::failed(format!(
                "GitHub refused to create the hook of {} (422) and lists none with url {}",
                self.repository, self.url
            )));
        };
        let update = serde_json::json!({ "active": true, "events": events, "config": config });
        let r = self
            .request(
                client,
                reqwest::Method::PATCH,
                format!("{}/{id}", self.hooks_url()),
                &token,
            )?
            .json(&update)
            .send()
            .await
            .map_err(|e| self.failed("update", e))?;
        if !r.status().is_success() {
            return Err(self.refused("update", r).await);
        }
        Ok(id)
    }

    /// Deletes hook `id`; failures are logged (the configuration is stopping anyway).
    pub async fn delete(&self, client: &reqwest::Client, id: u64) {
        let token = match self.token.load() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(repository = %self.repository, id, error = %e, "cannot delete the GitHub hook");
                return;
            }
        };
        let sent = match self.request(
            client,
            reqwest::Method::DELETE,
            format!("{}/{id}", self.hooks_url()),
            &token,
        ) {
            Ok(r) => r.send().await,
            Err(e) => {
                tracing::warn!(repository = %self.repository, id, error = %e, "cannot delete the GitHub hook");
                return;
            }
        };
        match sent {
            Ok(r) if r.status().is_success() || r.status() == 404 => {
                tracing::info!(repository = %self.repository, id, "GitHub hook deleted")
            }
            Ok(r) => {
                let e = self.refused("delete", r).await;
                tracing::warn!(error = %e, "cannot delete the GitHub hook");
            }
            Err(e) => {
                tracing::warn!(repository = %self.repository, id, error = %e, "cannot delete the GitHub hook")
            }
        }
    }

    fn failed(&self, what: &str, e: reqwest::Error) -> ConfigError {
        ConfigError::failed(format!(
            "cannot {what} the GitHub hook of {} at {}: {e}",
            self.repository, self.api
        ))
    }

    async fn refused(&self, what: &str, r: reqwest::Response) -> ConfigError {
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        let message = body["message"].as_str().unwrap_or("no message");
        ConfigError::failed(format!(
            "GitHub answered {status} to {what} the hook of {}: {message}",
            self.repository
        ))
    }
}

async fn hook_id(r: reqwest::Response, reg: &Register, what: &str) -> Result<u64, ConfigError> {
    let body: serde_json::Value = r.json().await.map_err(|e| reg.failed(what, e))?;
    body["id"].as_u64().ok_or_else(|| {
        ConfigError::failed(format!(
            "GitHub's answer to {what} the hook of {} has no id",
            reg.repository
        ))
    })
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
            client: reqwest::Client::builder()
                .user_agent(concat!("portico/", env!("CARGO_PKG_VERSION")))
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
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
            .map(RegisterConfig::check)
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
        let Some(route) = attach_hook(&self.servers, &ctx, &hook, Arc::new(gate)).await? else {
            return Ok(());
        };
        // The route is up first, so that GitHub's `ping` on creation finds it.
        let registered = match &register {
            None => None,
            Some(reg) => {
                let created = tokio::select! {
                    _ = ctx.stopped() => None,
                    r = reg.create(&self.client, &secret, &hook.events) => Some(r),
                };
                match created {
                    None => {
                        route.release().await;
                        return Ok(());
                    }
                    Some(Ok(id)) => {
                        tracing::info!(repository = %reg.repository, id, "GitHub hook registered");
                        Some((reg, id))
                    }
                    Some(Err(e)) => {
                        route.release().await;
                        return Err(e);
                    }
                }
            }
        };
        ctx.running();
        ctx.stopped().await;
        if let Some((reg, id)) = registered {
            reg.delete(&self.client, id).await;
        }
        route.release().await;
        Ok(())
    }
}
