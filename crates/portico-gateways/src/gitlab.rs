//! The `gitlab` gateway: GitLab webhook deliveries, verified and filtered; or, in Argo
//! Events v0.6's shape, the registration of a project hook whose deliveries go elsewhere.
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
//!
//! Argo Events v0.6's gitlab configuration (`projectId`, `url`, `event`, `accessToken`,
//! `enableSSLVerification`, `gitlabBaseUrl`) is taken unchanged: it registers (and keeps) the
//! project hook for that one event, with the API token as the hook's secret token, and runs
//! no server (GitLab's deliveries go to the webhook gateway at `url`).

use std::sync::Arc;

use hyper::http::{HeaderMap, HeaderName};
use portico::Placement;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Secret, SecretSource};
use reqwest::Url;
use schemars::JsonSchema;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::webhook::register::{Forge, ForgeHooks, Register, RegisterConfig, TokenSource};
use crate::webhook::{Gate, Hook, HookConfig, HookRules, NumberOrText, Verdict, filter_event};

const RULES: HookRules = HookRules {
    gateway_type: "gitlab",
    secret_required: true,
    takes_events: true,
    takes_register: true,
    takes_tolerance: false,
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

/// A `gitlab` configuration, in one of two shapes.
///
/// **Portico's**: a webhook that receives GitLab's deliveries (`port`, `endpoint`, …, a
/// required secret token, `events`, optionally `register`). Every delivery must carry
/// `X-Gitlab-Token` equal to the secret (compared in constant time); a missing or wrong one
/// gets 401, makes no event and counts in `portico_events_rejected_total{reason="unauthorized"}`.
/// Payload: `application/json` `{"header": {…}, "body": …, "bodyEncoding": "json" | "text" |
/// "base64"}` (the webhook's, without the `x-gitlab-token` header).
///
/// **Argo Events v0.6's**: `projectId`, `url`, `event`, `accessToken`,
/// `enableSSLVerification`, `gitlabBaseUrl`. The configuration registers the project hook
/// through GitLab's API (found by `url` and updated, or created; kept when the configuration
/// stops, as with `register`) for exactly that one event, calling `url` with
/// `enableSSLVerification`, and the API token as the hook's secret token, as v0.6 did. It runs
/// no server and makes no event itself: GitLab's deliveries go to the webhook gateway at
/// `url`. The node is `Running` once the hook is registered (retried with backoff while the API
/// refuses, the node showing why).
///
/// The two shapes do not mix: a configuration with fields of both is refused, naming them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitLabConfig {
    /// Portico's shape: the port to listen on, on every interface (a number or a string
    /// holding one). Without it, the configuration shares the server of the gateway's other
    /// configurations.
    #[serde(default)]
    pub port: Option<NumberOrText>,
    /// Portico's shape (required there): the path, starting with `/`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Portico's shape: the HTTP method (default `POST`).
    #[serde(default)]
    pub method: Option<String>,
    /// Portico's shape: a PEM certificate chain; with `serverKeyPath`, the port serves HTTPS.
    #[serde(default)]
    pub server_cert_path: Option<String>,
    /// Portico's shape: the PEM private key of `serverCertPath`.
    #[serde(default)]
    pub server_key_path: Option<String>,
    /// Portico's shape: the largest body taken: bytes, or `512KiB`, `4MiB`, `1MB`… (default
    /// `4MiB`); a larger one gets 413.
    #[serde(default)]
    pub max_body_size: Option<NumberOrText>,
    /// Portico's shape: a file holding the hook's secret token (`X-Gitlab-Token`; trailing
    /// newlines are not part of it). This or `secretEnv` is required.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Portico's shape: an environment variable holding the secret token, instead of
    /// `secretFile`.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Portico's shape: the event types to keep (`X-Gitlab-Event`: `Push Hook` or `push`,
    /// `Merge Request Hook` or `merge_request`, …); default all. Other deliveries get 200 with
    /// the reason and make no event.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Portico's shape: register the project hook through GitLab's REST API, and keep it
    /// registered.
    #[serde(default)]
    pub register: Option<RegisterConfig>,
    /// Argo Events v0.6's shape (required there): the project, by its numeric id (`"28"`) or
    /// its path (`group/name`).
    #[serde(default)]
    pub project_id: Option<NumberOrText>,
    /// Argo Events v0.6's shape (required there): the URL GitLab calls, an endpoint of a
    /// webhook gateway (`http://webhook-gateway-gateway-svc:12000/push`).
    #[serde(default)]
    pub url: Option<String>,
    /// Argo Events v0.6's shape (required there): the one event the hook is registered for,
    /// by the name of GitLab's hook option: `PushEvents`, `IssuesEvents`,
    /// `ConfidentialIssuesEvents`, `MergeRequestsEvents`, `TagPushEvents`, `NoteEvents`,
    /// `JobEvents`, `PipelineEvents` or `WikiPageEvents`.
    #[serde(default)]
    pub event: Option<String>,
    /// Argo Events v0.6's shape (required there): the API token that registers the hook, also
    /// the hook's secret token. `{name, key}`: key `key` of the Kubernetes Secret `name` in the
    /// gateway's namespace, read through the gateway's Kubernetes client in a cluster, or
    /// through `KUBECONFIG` outside one. Outside a cluster it may also be `{file: PATH}` (a
    /// file holding it) or `{env: VARIABLE}` (an environment variable holding it).
    #[serde(default)]
    pub access_token: Option<AccessToken>,
    /// Argo Events v0.6's shape: whether GitLab verifies the certificate of `url` (default
    /// `false`, as v0.6 sent it).
    #[serde(default, rename = "enableSSLVerification")]
    pub enable_ssl_verification: Option<bool>,
    /// Argo Events v0.6's shape: GitLab's URL (`https://gitlab.example.com`); `/api/v4` is
    /// added when it does not end with it. Default `https://gitlab.com/api/v4`.
    #[serde(default, rename = "gitlabBaseUrl")]
    pub gitlab_base_url: Option<String>,
}

/// `accessToken` of Argo Events v0.6's gitlab configuration: a Kubernetes Secret's key
/// (`{name, key}`), or, outside a cluster, `{file}` or `{env}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessToken {
    /// The Kubernetes Secret, in the gateway's namespace.
    #[serde(default)]
    pub name: Option<String>,
    /// The key of the Secret's data holding the token.
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the token (trailing newlines are not part of it), instead of a Secret.
    #[serde(default)]
    pub file: Option<String>,
    /// An environment variable holding the token, instead of a Secret.
    #[serde(default)]
    pub env: Option<String>,
}

/// GitLab's hook options by the names v0.6's `event` uses.
const V06_EVENTS: &[(&str, &str)] = &[
    ("PushEvents", "push_events"),
    ("IssuesEvents", "issues_events"),
    ("ConfidentialIssuesEvents", "confidential_issues_events"),
    ("MergeRequestsEvents", "merge_requests_events"),
    ("TagPushEvents", "tag_push_events"),
    ("NoteEvents", "note_events"),
    ("JobEvents", "job_events"),
    ("PipelineEvents", "pipeline_events"),
    ("WikiPageEvents", "wiki_page_events"),
];

/// The fields of v0.6's shape.
const V06_FIELDS: &str = "projectId, url, event, accessToken, enableSSLVerification, gitlabBaseUrl";

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

/// A checked `gitlab` configuration.
#[derive(Debug, Clone)]
pub enum Checked {
    /// Portico's shape: a webhook, and its registration if it has `register`.
    Hook(Hook, Option<Register>),
    /// Argo Events v0.6's shape: only the registration.
    Registration(Register),
}

impl GitLabConfig {
    /// The v0.6 fields that are set.
    fn v06_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let set = [
            ("projectId", self.project_id.is_some()),
            ("url", self.url.is_some()),
            ("event", self.event.is_some()),
            ("accessToken", self.access_token.is_some()),
            (
                "enableSSLVerification",
                self.enable_ssl_verification.is_some(),
            ),
            ("gitlabBaseUrl", self.gitlab_base_url.is_some()),
        ];
        out.extend(set.iter().filter(|(_, on)| *on).map(|(n, _)| *n));
        out
    }

    /// Portico's fields that are set.
    fn portico_fields(&self) -> Vec<&'static str> {
        let set = [
            ("port", self.port.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("method", self.method.is_some()),
            ("serverCertPath", self.server_cert_path.is_some()),
            ("serverKeyPath", self.server_key_path.is_some()),
            ("maxBodySize", self.max_body_size.is_some()),
            ("secretFile", self.secret_file.is_some()),
            ("secretEnv", self.secret_env.is_some()),
            ("events", self.events.is_some()),
            ("register", self.register.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
    }

    /// Portico's shape as the webhook's configuration.
    fn into_hook(self) -> Result<HookConfig, ConfigError> {
        let Some(endpoint) = self.endpoint else {
            return Err(invalid(
                "endpoint",
                format!(
                    "required: a path like /gitlab where this gateway receives GitLab's deliveries (or write Argo Events v0.6's shape: {V06_FIELDS})"
                ),
            ));
        };
        Ok(HookConfig {
            port: self.port,
            endpoint,
            method: self.method,
            server_cert_path: self.server_cert_path,
            server_key_path: self.server_key_path,
            max_body_size: self.max_body_size,
            secret_file: self.secret_file,
            secret_env: self.secret_env,
            events: self.events,
            register: self.register,
            tolerance: None,
        })
    }

    /// Checks v0.6's shape; errors name the field.
    fn check_v06(&self) -> Result<Register, ConfigError> {
        let project = match &self.project_id {
            None => return Err(invalid("projectId", "required: the project's id or path")),
            Some(NumberOrText::Number(n)) => n.to_string(),
            Some(NumberOrText::Text(t)) => t.trim().to_string(),
        };
        let parts: Vec<&str> = project.split('/').collect();
        let id =
            parts.len() == 1 && !project.is_empty() && project.bytes().all(|b| b.is_ascii_digit());
        let path = parts.len() >= 2
            && !parts
                .iter()
                .any(|p| p.is_empty() || p.contains(char::is_whitespace));
        if !id && !path {
            return Err(invalid(
                "projectId",
                format!(
                    "`{project}` is not a numeric project id or a project path like group/name"
                ),
            ));
        }
        let url = self.url.as_deref().map(str::trim).unwrap_or_default();
        if url.is_empty() {
            return Err(invalid(
                "url",
                "required: the URL GitLab calls (an endpoint of the webhook gateway that receives the deliveries)",
            ));
        }
        if !matches!(Url::parse(url), Ok(u) if matches!(u.scheme(), "http" | "https")) {
            return Err(invalid(
                "url",
                format!("`{url}` is not an http(s) URL GitLab can call"),
            ));
        }
        let names = || {
            V06_EVENTS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let flag = match self.event.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(invalid("event", format!("required: one of {}", names())));
            }
            Some(e) => V06_EVENTS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(e))
                .map(|(_, f)| *f)
                .ok_or_else(|| invalid("event", format!("`{e}` is not one of {}", names())))?,
        };
        let token = match &self.access_token {
            None => {
                return Err(invalid(
                    "accessToken",
                    "required: {name, key} of the Kubernetes Secret holding the API token (or, outside a cluster, {file: PATH} or {env: VARIABLE})",
                ));
            }
            Some(t) => t.check()?,
        };
        let base = self
            .gitlab_base_url
            .as_deref()
            .map(str::trim)
            .unwrap_or("https://gitlab.com/api/v4");
        let api = api_url(base).ok_or_else(|| {
            invalid(
                "gitlabBaseUrl",
                format!("`{base}` is not an http(s) URL like https://gitlab.example.com"),
            )
        })?;
        Ok(Register::gitlab_v06(
            &project,
            url,
            flag,
            token,
            api,
            self.enable_ssl_verification.unwrap_or(false),
        ))
    }

    /// Checks the configuration in whichever shape it is written, refusing a mix.
    pub fn check(self, hooks: &ForgeHooks) -> Result<Checked, ConfigError> {
        let v06 = self.v06_fields();
        let portico = self.portico_fields();
        match (v06.is_empty(), portico.is_empty()) {
            (false, false) => Err(ConfigError::invalid(format!(
                "{}: Argo Events v0.6's gitlab fields ({}) and Portico's ({}) in one configuration: use one shape, either v0.6's ({V06_FIELDS}: the hook is registered, its deliveries go to a webhook gateway) or Portico's (port, endpoint, secretFile or secretEnv, events, register: this gateway receives the deliveries)",
                v06[0],
                v06.join(", "),
                portico.join(", ")
            ))),
            (false, true) => Ok(Checked::Registration(self.check_v06()?)),
            _ => {
                let (hook, register) = hooks.check(&self.into_hook()?)?;
                Ok(Checked::Hook(hook, register))
            }
        }
    }
}

impl AccessToken {
    fn check(&self) -> Result<TokenSource, ConfigError> {
        let blank = |v: &Option<String>| v.as_deref().is_some_and(|s| s.trim().is_empty());
        for (field, value) in [
            ("name", &self.name),
            ("key", &self.key),
            ("file", &self.file),
            ("env", &self.env),
        ] {
            if blank(value) {
                return Err(invalid(&format!("accessToken.{field}"), "is empty"));
            }
        }
        match (&self.name, &self.key, &self.file, &self.env) {
            (Some(name), Some(key), None, None) => Ok(TokenSource::KubeSecret {
                name: name.trim().to_string(),
                key: key.trim().to_string(),
            }),
            (None, None, Some(file), None) => {
                Ok(TokenSource::Local(SecretSource::File(file.trim().into())))
            }
            (None, None, None, Some(env)) => Ok(TokenSource::Local(SecretSource::Env(
                env.trim().to_string(),
            ))),
            (Some(_), None, None, None) => Err(invalid(
                "accessToken.key",
                "required with name: the key of the Secret's data holding the token",
            )),
            (None, Some(_), None, None) => Err(invalid(
                "accessToken.name",
                "required with key: the Kubernetes Secret holding the token",
            )),
            _ => Err(invalid(
                "accessToken",
                "give one of {name, key} (a Kubernetes Secret in the gateway's namespace), {file: PATH} or {env: VARIABLE}",
            )),
        }
    }
}

/// GitLab's API URL from v0.6's `gitlabBaseUrl`: `/api/v4` added when it does not end with
/// it, as v0.6's client did.
fn api_url(base: &str) -> Option<Url> {
    let mut u = Url::parse(base).ok()?;
    if !matches!(u.scheme(), "http" | "https") || u.cannot_be_a_base() {
        return None;
    }
    let path = u.path().trim_end_matches('/').to_string();
    if !path.ends_with("/api/v4") {
        u.set_path(&format!("{path}/api/v4"));
    }
    Some(u)
}

/// The gitlab executor: [`ForgeHooks`] with GitLab's gate, and Argo Events v0.6's
/// registration-only configurations.
#[derive(Debug, Clone)]
pub struct GitLab {
    hooks: ForgeHooks,
}

/// The gitlab executor.
pub fn executor() -> GitLab {
    GitLab {
        hooks: ForgeHooks::new(Forge::GitLab, RULES, |secret, hook| {
            Arc::new(GitLabGate {
                secret,
                events: hook.events.clone(),
                redacted: [TOKEN],
            })
        }),
    }
}

impl ConfigExecutor for GitLab {
    type Config = Checked;

    /// Callers spread deliveries over the replicas.
    fn placement(&self, _: &Checked) -> Placement {
        Placement::Everywhere
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Checked, ConfigError> {
        let checked = ctx.parse::<GitLabConfig>()?.check(&self.hooks)?;
        if let Checked::Registration(r) = &checked {
            ctx.warn(format!(
                "Argo Events v0.6's gitlab shape: registers (and keeps) the hook of project {} calling {}, and runs no server: GitLab's deliveries go to the webhook gateway at that URL",
                r.repository(),
                r.url()
            ));
        }
        Ok(checked)
    }

    async fn start_config(&self, ctx: ConfigContext, checked: Checked) -> Result<(), ConfigError> {
        match checked {
            Checked::Hook(hook, register) => self.hooks.start_config(ctx, (hook, register)).await,
            Checked::Registration(register) => {
                tracing::info!(
                    project = register.repository(),
                    url = register.url(),
                    "Argo Events v0.6's gitlab configuration: registering the project hook; no server is run"
                );
                register.keep(&ctx, self.hooks.client(), None, &[]).await;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Checked, String> {
        portico::testing::parse_config::<GitLabConfig>(yaml)
            .and_then(|c| c.check(&executor().hooks))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_v06_shape_is_checked_by_field_and_does_not_mix() {
        let v06 = "projectId: \"28\"\nurl: http://hooks.example/push\nevent: PushEvents\naccessToken:\n  key: accesskey\n  name: gitlab-access\nenableSSLVerification: false\ngitlabBaseUrl: https://gitlab.example";
        assert!(matches!(check(v06), Ok(Checked::Registration(_))));
        let e = check(&format!("{v06}\nport: 12000")).unwrap_err();
        assert!(
            e.starts_with("projectId: Argo Events v0.6's gitlab fields") && e.contains("(port)"),
            "{e}"
        );
        let e = check(&v06.replace("PushEvents", "Pushes")).unwrap_err();
        assert!(
            e.starts_with("event: `Pushes` is not one of PushEvents"),
            "{e}"
        );
        let e = check(&v06.replace("  name: gitlab-access\n", "")).unwrap_err();
        assert!(e.starts_with("accessToken.name: required"), "{e}");
        let e = check("projectId: 28\nurl: http://h/x\nevent: NoteEvents").unwrap_err();
        assert!(e.starts_with("accessToken: required"), "{e}");
        let e = check("url: http://h/x").unwrap_err();
        assert!(e.starts_with("projectId: required"), "{e}");
        let e = check(
            "projectId: 28\nurl: http://h/x\nevent: NoteEvents\naccessToken: {env: T, file: f}",
        )
        .unwrap_err();
        assert!(e.starts_with("accessToken: give one of"), "{e}");
        assert!(
            check("projectId: 28\nurl: http://h/x\nevent: noteevents\naccessToken: {env: T}")
                .is_ok()
        );
        // Portico's shape still needs its endpoint, and says where the other shape is.
        let e = check("secretEnv: T").unwrap_err();
        assert!(e.starts_with("endpoint: required"), "{e}");
        assert!(matches!(
            check("endpoint: /gl\nsecretEnv: T"),
            Ok(Checked::Hook(_, None))
        ));
    }

    #[test]
    fn the_api_url_gets_api_v4_as_v06_client_added_it() {
        for (base, want) in [
            ("https://gitlab.example", "https://gitlab.example/api/v4"),
            ("https://gitlab.example/", "https://gitlab.example/api/v4"),
            (
                "https://gitlab.example/api/v4",
                "https://gitlab.example/api/v4",
            ),
            (
                "https://gitlab.example/api/v4/",
                "https://gitlab.example/api/v4/",
            ),
            ("http://h/gl", "http://h/gl/api/v4"),
        ] {
            assert_eq!(api_url(base).unwrap().as_str(), want);
        }
        assert!(api_url("gitlab.example").is_none());
    }

    #[test]
    fn event_names_normalize() {
        assert_eq!(normalize_event("Merge Request Hook"), "merge_request");
        assert_eq!(normalize_event("merge_request"), "merge_request");
        assert_eq!(normalize_event("Push Hook"), "push");
        assert_eq!(normalize_event(" push "), "push");
    }
}
