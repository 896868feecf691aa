//! Registering a hook through its forge's REST API (GitHub, GitLab), and keeping it.
//!
//! A configuration with `register:` serves its endpoint at once and registers its hook in the
//! background: it finds the hook with its `url` and updates it, or creates one. While the API
//! refuses or cannot be reached, the node shows `Error` with the reason and registration is
//! retried with backoff (1 s, doubling, at most 5 min); the endpoint keeps serving, so that
//! deliveries of a hook registered earlier still arrive. The node is `Running` once the hook
//! is registered.
//!
//! The hook outlives the configuration's process: a restart or a new version of the
//! configuration finds it and updates it. It is deleted only when the configuration is
//! removed from the gateway's map and says `deleteHookOnRemove: true`.
//!
//! Texts from the API (its error messages) pass through [`portico::secret::scrub`] with the
//! token and the hook secret before they reach the node, the logs or an error, and are cut
//! to 300 characters: an API that echoes the request shows nothing secret.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use portico::Placement;
use portico::secret::scrub;
use portico::{
    ConfigContext, ConfigError, ConfigExecutor, GatewayConfig, Secret, SecretSource, StopReason,
};

use super::{Gate, Hook, HookConfig, HookRules, Registration, Servers, run_hook};
use reqwest::{Method, RequestBuilder, Url};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// First wait between two registration attempts.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two registration attempts.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long deleting a hook may take when its configuration is removed.
const DELETE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest text of an API's answer kept in an error.
const MAX_MESSAGE: usize = 300;

/// `register:` of a `github` or `gitlab` configuration: the hook is registered through the
/// forge's REST API (found by `url` and updated, or created) and kept across restarts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterConfig {
    /// GitHub: the repository, `owner/name`. GitLab: the project, by its path
    /// (`group/name`, `group/subgroup/name`) or its numeric id.
    pub repository: String,
    /// The payload URL the forge calls: where this gateway is reachable from it.
    pub url: String,
    /// A file holding a token allowed to manage the repository's hooks (read again at every
    /// attempt, so a mounted Secret may change).
    #[serde(default)]
    pub token_file: Option<String>,
    /// An environment variable holding the token, instead of `tokenFile`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The API's base URL. GitHub: default `https://api.github.com` (GitHub Enterprise:
    /// `https://HOST/api/v3`). GitLab: default `https://gitlab.com/api/v4`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Let the forge skip verifying this gateway's certificate (default `false`).
    #[serde(default)]
    pub insecure_ssl: bool,
    /// Delete the hook when this configuration is removed from the gateway (default
    /// `false`: the hook is kept). A restart or a changed configuration never deletes it.
    #[serde(default)]
    pub delete_hook_on_remove: bool,
}

/// The forge whose API registers a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// GitHub's REST API (repository webhooks).
    GitHub,
    /// GitLab's REST API v4 (project hooks).
    GitLab,
}

impl Forge {
    fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "GitHub",
            Forge::GitLab => "GitLab",
        }
    }

    fn default_api(self) -> &'static str {
        match self {
            Forge::GitHub => "https://api.github.com",
            Forge::GitLab => "https://gitlab.com/api/v4",
        }
    }
}

/// Where the token that manages the hooks comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file or an environment variable (`tokenFile`, `tokenEnv`; `accessToken: {file}` or
    /// `{env}`), read again at every attempt.
    Local(SecretSource),
    /// Key `key` of the Kubernetes Secret `name` in the gateway's namespace (Argo Events
    /// v0.6's `accessToken: {name, key}`), read at every attempt through the gateway's
    /// Kubernetes client (in a cluster) or `KUBECONFIG` (outside one).
    KubeSecret {
        /// The Secret's name.
        name: String,
        /// The key of its `data`.
        key: String,
    },
}

impl TokenSource {
    /// The token as it is now; an error says where it was looked for, never its value.
    async fn load(&self, gateway: &GatewayConfig) -> Result<Secret, String> {
        let (name, key) = match self {
            TokenSource::Local(source) => {
                return source
                    .load()
                    .map_err(|e| format!("the token: {}", e.message()));
            }
            TokenSource::KubeSecret { name, key } => (name, key),
        };
        let client = match gateway.kube_client() {
            Some(c) => c,
            None => kube::Client::try_default().await.map_err(|e| {
                format!(
                    "accessToken: cannot read key `{key}` of the Kubernetes Secret `{name}`: no Kubernetes client ({e}); run in a cluster or set KUBECONFIG, or give the token as accessToken: {{file: PATH}} or {{env: VARIABLE}}"
                )
            })?,
        };
        let namespace = match gateway.namespace() {
            "" => client.default_namespace().to_string(),
            ns => ns.to_string(),
        };
        crate::kube_secret::read(client, &namespace, name, key)
            .await
            .map_err(|e| format!("accessToken: {e}"))
    }
}

/// A checked `register:`.
#[derive(Debug, Clone)]
pub struct Register {
    forge: Forge,
    repository: String,
    url: String,
    token: TokenSource,
    api: Url,
    insecure_ssl: bool,
    delete_on_remove: bool,
    /// GitLab: the event flags the hook is created with.
    gitlab_events: Vec<&'static str>,
}

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("register.{field}: {what}"))
}

/// GitLab's hook event flags, by the event name a configuration's `events` uses (the
/// `X-Gitlab-Event` header's value, normalized: `Merge Request Hook` → `merge_request`).
const GITLAB_EVENTS: &[(&str, &str)] = &[
    ("push", "push_events"),
    ("tag_push", "tag_push_events"),
    ("issue", "issues_events"),
    ("confidential_issue", "confidential_issues_events"),
    ("note", "note_events"),
    ("confidential_note", "confidential_note_events"),
    ("merge_request", "merge_requests_events"),
    ("job", "job_events"),
    ("pipeline", "pipeline_events"),
    ("wiki_page", "wiki_page_events"),
    ("deployment", "deployment_events"),
    ("release", "releases_events"),
];

impl RegisterConfig {
    /// Checks what the fields' types do not, for `forge`, whose configuration keeps
    /// `events` (normalized names); errors name the field.
    pub fn check(&self, forge: Forge, events: &[String]) -> Result<Register, ConfigError> {
        let repository = self.repository.trim().to_string();
        let parts: Vec<&str> = repository.split('/').collect();
        let blank = |p: &&str| p.is_empty() || p.contains(char::is_whitespace);
        let ok = match forge {
            Forge::GitHub => parts.len() == 2 && !parts.iter().any(blank),
            Forge::GitLab => {
                (parts.len() == 1 && repository.bytes().all(|b| b.is_ascii_digit()))
                    || (parts.len() >= 2 && !parts.iter().any(blank))
            }
        };
        if !ok {
            let form = match forge {
                Forge::GitHub => "owner/name",
                Forge::GitLab => "a project path like group/name, or a numeric project id",
            };
            return Err(invalid(
                "repository",
                format!("`{repository}` is not {form}"),
            ));
        }
        let url = self.url.trim();
        if !matches!(Url::parse(url), Ok(u) if matches!(u.scheme(), "http" | "https")) {
            return Err(invalid(
                "url",
                format!("`{url}` is not an http(s) URL {} can call", forge.name()),
            ));
        }
        let token = SecretSource::from_fields(
            "token",
            self.token_file.as_deref(),
            self.token_env.as_deref(),
        )
        .map_err(|e| invalid("token", e.message()))?
        .ok_or_else(|| {
            invalid(
                "tokenFile",
                "give one of tokenFile or tokenEnv: a token allowed to manage the hooks",
            )
        })?;
        let api_text = self
            .api_url
            .as_deref()
            .map(str::trim)
            .unwrap_or(forge.default_api());
        let api = match Url::parse(api_text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base() => u,
            _ => {
                return Err(invalid(
                    "apiUrl",
                    format!("`{api_text}` is not an http(s) URL"),
                ));
            }
        };
        let mut gitlab_events = Vec::new();
        if forge == Forge::GitLab {
            for (i, e) in events.iter().enumerate() {
                let name = crate::gitlab::normalize_event(e);
                match GITLAB_EVENTS.iter().find(|(n, _)| *n == name) {
                    Some((_, flag)) => gitlab_events.push(*flag),
                    None => {
                        let known: Vec<&str> = GITLAB_EVENTS.iter().map(|(n, _)| *n).collect();
                        return Err(ConfigError::invalid(format!(
                            "events[{i}]: `{e}` is not a GitLab hook event a hook can be registered for ({})",
                            known.join(", ")
                        )));
                    }
                }
            }
        }
        Ok(Register {
            forge,
            repository,
            url: url.to_string(),
            token: TokenSource::Local(token),
            api,
            insecure_ssl: self.insecure_ssl,
            delete_on_remove: self.delete_hook_on_remove,
            gitlab_events,
        })
    }
}

/// A failed API call, its text already scrubbed of the token and the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError(String);

/// One registration's calls: the client, the credentials, what the hook carries.
struct Calls<'a> {
    reg: &'a Register,
    client: &'a reqwest::Client,
    token: Secret,
    secret: Secret,
    events: &'a [String],
}

impl Calls<'_> {
    /// `{api}/repos/{owner}/{name}/hooks[/{id}]` or `{api}/projects/{project}/hooks[/{id}]`
    /// (the project path is one segment: its `/` are encoded).
    fn hooks_url(&self, id: Option<u64>) -> Url {
        let mut u = self.reg.api.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty();
            match self.reg.forge {
                Forge::GitHub => {
                    path.push("repos");
                    path.extend(self.reg.repository.split('/'));
                }
                Forge::GitLab => {
                    path.push("projects");
                    path.push(&self.reg.repository);
                }
            }
            path.push("hooks");
            if let Some(id) = id {
                path.push(&id.to_string());
            }
        }
        u
    }

    fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, ApiError> {
        let token = self
            .token
            .expose_text("the token")
            .map_err(|e| ApiError(e.message().to_string()))?;
        let r = self.client.request(method, url);
        Ok(match self.reg.forge {
            Forge::GitHub => r
                .bearer_auth(token)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28"),
            Forge::GitLab => r.header("private-token", token),
        })
    }

    /// `text` without the token or the secret, and not too long.
    fn clean(&self, text: &str) -> String {
        let mut out = scrub(text, &[&self.token, &self.secret]);
        if out.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push('…');
        }
        out
    }

    /// Sends `request`; a refusal (any status but 2xx and the ones `allowed`) is an error
    /// with the status and the API's message.
    async fn send(
        &self,
        what: &str,
        request: RequestBuilder,
        allowed: &[u16],
    ) -> Result<reqwest::Response, ApiError> {
        let r = request
            .send()
            .await
            .map_err(|e| ApiError(self.clean(&format!("cannot {what}: {}", error_chain(&e)))))?;
        let status = r.status();
        if status.is_success() || allowed.contains(&status.as_u16()) {
            return Ok(r);
        }
        let body: Value = r.json().await.unwrap_or_default();
        let message = match (&body["message"], &body["error"]) {
            (Value::String(m), _) | (_, Value::String(m)) => m.clone(),
            (Value::Null, Value::Null) => "no message".to_string(),
            (m, Value::Null) => m.to_string(),
            (_, e) => e.to_string(),
        };
        Err(ApiError(self.clean(&format!(
            "{} answered {status} to {what}: {message}",
            self.reg.forge.name()
        ))))
    }

    /// The id of the hook whose URL is this configuration's, if there is one.
    async fn find(&self) -> Result<Option<u64>, ApiError> {
        let mut url = self.hooks_url(None);
        url.query_pairs_mut().append_pair("per_page", "100");
        let r = self
            .send("list the hooks", self.request(Method::GET, url)?, &[])
            .await?;
        let hooks: Vec<Value> = r
            .json()
            .await
            .map_err(|e| ApiError(self.clean(&format!("cannot read the list of hooks: {e}"))))?;
        let url_of = |h: &Value| match self.reg.forge {
            Forge::GitHub => h["config"]["url"].as_str().map(str::to_string),
            Forge::GitLab => h["url"].as_str().map(str::to_string),
        };
        Ok(hooks
            .iter()
            .find(|h| url_of(h).as_deref() == Some(self.reg.url.as_str()))
            .and_then(|h| h["id"].as_u64()))
    }

    /// What the hook is created or updated with.
    fn body(&self) -> Result<Value, ApiError> {
        let secret = self
            .secret
            .expose_text("the hook secret")
            .map_err(|e| ApiError(e.message().to_string()))?;
        Ok(match self.reg.forge {
            Forge::GitHub => {
                let events: Vec<&str> = if self.events.is_empty() {
                    vec!["*"]
                } else {
                    self.events.iter().map(String::as_str).collect()
                };
                json!({
                    "name": "web",
                    "active": true,
                    "events": events,
                    "config": {
                        "url": self.reg.url,
                        "content_type": "json",
                        "secret": secret,
                        "insecure_ssl": if self.reg.insecure_ssl { "1" } else { "0" },
                    },
                })
            }
            Forge::GitLab => {
                let mut body = json!({
                    "url": self.reg.url,
                    "token": secret,
                    "enable_ssl_verification": !self.reg.insecure_ssl,
                });
                for (_, flag) in GITLAB_EVENTS {
                    let on =
                        self.reg.gitlab_events.is_empty() || self.reg.gitlab_events.contains(flag);
                    body[*flag] = Value::Bool(on);
                }
                body
            }
        })
    }

    /// Finds the hook by URL and updates it, or creates it; its id.
    async fn ensure(&self) -> Result<u64, ApiError> {
        let body = self.body()?;
        if let Some(id) = self.find().await? {
            let method = match self.reg.forge {
                Forge::GitHub => Method::PATCH,
                Forge::GitLab => Method::PUT,
            };
            let request = self.request(method, self.hooks_url(Some(id)))?.json(&body);
            let r = self.send("update the hook", request, &[404]).await?;
            if r.status() != 404 {
                return Ok(id);
            }
            // Deleted between the listing and the update: create it again.
        }
        let request = self
            .request(Method::POST, self.hooks_url(None))?
            .json(&body);
        let r = self.send("create the hook", request, &[]).await?;
        let created: Value = r.json().await.unwrap_or_default();
        created["id"].as_u64().ok_or_else(|| {
            ApiError(format!(
                "{}'s answer to creating the hook has no id",
                self.reg.forge.name()
            ))
        })
    }

    /// Deletes hook `id` (or the one with this URL); a hook already gone is fine.
    async fn delete(&self, id: Option<u64>) -> Result<Option<u64>, ApiError> {
        let id = match id {
            Some(id) => id,
            None => match self.find().await? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let request = self.request(Method::DELETE, self.hooks_url(Some(id)))?;
        self.send("delete the hook", request, &[404]).await?;
        Ok(Some(id))
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Register {
    /// The registration of Argo Events v0.6's gitlab configuration: the hook of `project`
    /// calls `url` for the one event `flag` (`push_events`, …), with the token itself as its
    /// secret token; `enable_ssl_verification` as given. The hook is kept when the
    /// configuration is removed, as v0.6 left it.
    pub fn gitlab_v06(
        project: &str,
        url: &str,
        flag: &'static str,
        token: TokenSource,
        api: Url,
        enable_ssl_verification: bool,
    ) -> Register {
        Register {
            forge: Forge::GitLab,
            repository: project.to_string(),
            url: url.to_string(),
            token,
            api,
            insecure_ssl: !enable_ssl_verification,
            delete_on_remove: false,
            gitlab_events: vec![flag],
        }
    }

    /// The project or repository.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The URL the hook calls.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The calls of one attempt, with the token as it is now (a mounted Secret may change);
    /// the hook's secret is `secret`, or the token itself when there is none.
    async fn calls<'a>(
        &'a self,
        gateway: &GatewayConfig,
        client: &'a reqwest::Client,
        secret: Option<&Secret>,
        events: &'a [String],
    ) -> Result<Calls<'a>, ApiError> {
        let token = self.token.load(gateway).await.map_err(ApiError)?;
        let secret = secret.cloned().unwrap_or_else(|| token.clone());
        Ok(Calls {
            reg: self,
            client,
            token,
            secret,
            events,
        })
    }

    /// Registers the hook of `ctx`'s configuration (with `secret` as the hook's secret, or
    /// the token when `None`; keeping `events`) and keeps it until the configuration stops,
    /// as the module's documentation says: retried with backoff while refused (the node shows
    /// why), `Running` once registered, deleted at the end only if the configuration was
    /// removed and `deleteHookOnRemove` is set.
    pub async fn keep(
        &self,
        ctx: &ConfigContext,
        client: &reqwest::Client,
        secret: Option<&Secret>,
        events: &[String],
    ) {
        let forge = self.forge.name();
        let repository = self.repository.as_str();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(RETRY_MAX)
            .with_jitter()
            .without_max_times()
            .build();
        let mut registered = None;
        while !ctx.is_stopped() {
            let attempt = async {
                self.calls(ctx.gateway(), client, secret, events)
                    .await?
                    .ensure()
                    .await
            };
            let outcome = tokio::select! {
                _ = ctx.stopped() => break,
                o = attempt => o,
            };
            match outcome {
                Ok(id) => {
                    tracing::info!(%repository, id, url = %self.url, "{forge} hook registered");
                    ctx.running();
                    registered = Some(id);
                    break;
                }
                Err(ApiError(reason)) => {
                    let wait = backoff.next().unwrap_or(RETRY_MAX);
                    tracing::warn!(%repository, %reason, retry_in = ?wait, "cannot register the {forge} hook; the endpoint serves meanwhile");
                    ctx.report_error(format!(
                        "registering the {forge} hook of {repository}: {reason} (retrying in {}s; the endpoint serves meanwhile)",
                        wait.as_secs().max(1)
                    ));
                    tokio::select! {
                        _ = ctx.stopped() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        ctx.stopped().await;
        if ctx.stop_reason() != Some(StopReason::Removed) || !self.delete_on_remove {
            if registered.is_some() {
                tracing::info!(%repository, url = %self.url, "{forge} hook kept");
            }
            return;
        }
        let delete = async {
            self.calls(ctx.gateway(), client, secret, events)
                .await?
                .delete(registered)
                .await
        };
        match tokio::time::timeout(DELETE_DEADLINE, delete).await {
            Ok(Ok(Some(id))) => tracing::info!(%repository, id, "{forge} hook deleted"),
            Ok(Ok(None)) => {
                tracing::info!(%repository, url = %self.url, "no {forge} hook to delete")
            }
            Ok(Err(ApiError(reason))) => {
                tracing::warn!(%repository, %reason, "cannot delete the {forge} hook")
            }
            Err(_) => tracing::warn!(
                %repository,
                "cannot delete the {forge} hook: no answer within {}s",
                DELETE_DEADLINE.as_secs()
            ),
        }
    }
}

/// The executor of a forge's hooks: a webhook whose [`Gate`] checks the forge's signature,
/// with its hook registered and kept when the configuration says `register:`. The `github` and
/// `gitlab` executors are this one with their own gate. Its configurations share servers by
/// port.
#[derive(Debug, Clone)]
pub struct ForgeHooks {
    servers: Arc<Servers>,
    client: reqwest::Client,
    forge: Forge,
    rules: HookRules,
    gate: fn(Secret, &Hook) -> Arc<dyn Gate>,
}

impl ForgeHooks {
    /// The executor of `forge`'s hooks, checked by `rules`, each delivery judged by the gate
    /// `gate` makes from the configuration's secret and hook.
    pub fn new(forge: Forge, rules: HookRules, gate: fn(Secret, &Hook) -> Arc<dyn Gate>) -> Self {
        ForgeHooks {
            servers: Arc::default(),
            client: client(),
            forge,
            rules,
            gate,
        }
    }
}

impl ForgeHooks {
    /// Checks a configuration under this forge's rules: its hook and its `register:`.
    pub fn check(&self, config: &HookConfig) -> Result<(Hook, Option<Register>), ConfigError> {
        let hook = config.check(self.rules)?;
        let register = config
            .register
            .as_ref()
            .map(|r| r.check(self.forge, &hook.events))
            .transpose()?;
        Ok((hook, register))
    }

    /// The client hooks are registered with.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

impl ConfigExecutor for ForgeHooks {
    type Config = (Hook, Option<Register>);

    /// Callers spread deliveries over the replicas; registering the hook again finds it there.
    fn placement(&self, _: &(Hook, Option<Register>)) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<(Hook, Option<Register>), ConfigError> {
        self.check(&ctx.parse()?)
    }

    async fn start_config(
        &self,
        ctx: ConfigContext,
        (hook, register): (Hook, Option<Register>),
    ) -> Result<(), ConfigError> {
        let Some(source) = &hook.secret else {
            return Err(ConfigError::invalid(format!(
                "a {} configuration needs its secret",
                self.rules.gateway_type
            )));
        };
        let secret = source.load()?;
        let gate = (self.gate)(secret.clone(), &hook);
        let registration = register.as_ref().map(|register| Registration {
            register,
            client: &self.client,
            secret: &secret,
        });
        run_hook(&self.servers, &ctx, &hook, gate, registration).await
    }
}

/// The client hooks are registered with: a user agent, a 30 s deadline, no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("portico/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RegisterConfig {
        portico::testing::parse_config(yaml).unwrap()
    }

    #[test]
    fn hook_urls_encode_a_gitlab_project_path_as_one_segment() {
        let reg = config("repository: group/sub/name\nurl: https://x/h\ntokenEnv: T\napiUrl: https://gl.example/api/v4/")
            .check(Forge::GitLab, &[])
            .unwrap();
        let calls = Calls {
            reg: &reg,
            client: &reqwest::Client::new(),
            token: Secret::new("t"),
            secret: Secret::new("s"),
            events: &[],
        };
        assert_eq!(
            calls.hooks_url(Some(7)).as_str(),
            "https://gl.example/api/v4/projects/group%2Fsub%2Fname/hooks/7"
        );
        let reg = config("repository: acme/widgets\nurl: https://x/h\ntokenEnv: T")
            .check(Forge::GitHub, &[])
            .unwrap();
        let calls = Calls { reg: &reg, ..calls };
        assert_eq!(
            calls.hooks_url(None).as_str(),
            "https://api.github.com/repos/acme/widgets/hooks"
        );
    }

    #[test]
    fn gitlab_events_must_be_hook_events() {
        let c = config("repository: 42\nurl: https://x/h\ntokenEnv: T");
        let reg = c
            .check(Forge::GitLab, &["Merge Request Hook".into(), "push".into()])
            .unwrap();
        assert_eq!(reg.gitlab_events, ["merge_requests_events", "push_events"]);
        let e = c.check(Forge::GitLab, &["pushed".into()]).unwrap_err();
        assert!(e.to_string().starts_with("events[0]: `pushed`"), "{e}");
        let e = config("repository: 42/\nurl: https://x/h\ntokenEnv: T")
            .check(Forge::GitLab, &[])
            .unwrap_err();
        assert!(e.to_string().starts_with("register.repository"), "{e}");
    }

    #[test]
    fn api_texts_lose_secrets_and_length() {
        let reg = config("repository: a/b\nurl: https://x/h\ntokenEnv: T")
            .check(Forge::GitHub, &[])
            .unwrap();
        let secret = Secret::new("hook-secret-1");
        let calls = Calls {
            reg: &reg,
            client: &reqwest::Client::new(),
            token: Secret::new("ghp_token_2"),
            secret: secret.clone(),
            events: &[],
        };
        let echoed = format!(
            "bad: {{\"secret\":\"hook-secret-1\"}} ghp_token_2 {}",
            "x".repeat(400)
        );
        let clean = calls.clean(&echoed);
        assert!(
            !clean.contains("hook-secret-1") && !clean.contains("ghp_token_2"),
            "{clean}"
        );
        assert!(
            clean.starts_with("bad: {\"secret\":\"****\"} ****"),
            "{clean}"
        );
        assert!(clean.chars().count() <= MAX_MESSAGE + 1, "{}", clean.len());
    }
}
