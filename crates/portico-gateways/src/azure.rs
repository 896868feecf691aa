//! What the gateways that read Azure Storage (`azure-queue`, `azure-blob`) share: the storage
//! account, its endpoint and credentials and where they are read (a connection string, an
//! account key or a SAS token; files, environment variables, keys of Kubernetes Secrets), and
//! the client that calls the Storage REST API.
//!
//! The REST API is called directly with the gateway's HTTP client (`reqwest`): each request is
//! authorized with Shared Key (an HMAC-SHA256 of the request's canonical form under the
//! account key, `x-ms-date` and `x-ms-version` among the signed headers), or carries a SAS
//! token in its query. Answers are XML, read with `quick-xml`. The Azure SDK for Rust would do
//! the same few calls with a runtime and HTTP stack of its own. Every text Azure sends back is
//! scrubbed of the credentials before it is shown, and URLs are shown without their query.
//!
//! Endpoints are either Azure's (`https://<account>.queue.core.windows.net`, the account the
//! host's first label) or path-style, as the Azurite emulator serves them
//! (`http://127.0.0.1:10001/devstoreaccount1`, the account the first path segment).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use portico::secret::{redact_url, scrub};
use portico::{ConfigContext, ConfigError, ConfigErrorKind, Secret, SecretSource};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use sha2::Sha256;

use crate::broker::{self, SessionError};
use crate::kube_secret::{SecretFrom, SecretKeySelector};

/// The Storage REST API version requests are made in (Azurite 3.35 serves it).
pub(crate) const API_VERSION: &str = "2021-12-02";
/// The environment variable a connection string is read from when no credential is given
/// (the Azure CLI's and SDKs' convention).
pub(crate) const CONNECTION_STRING_ENV: &str = "AZURE_STORAGE_CONNECTION_STRING";
/// Longest text of an Azure answer kept in an error.
const MAX_MESSAGE: usize = 300;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A configuration error of `field`.
pub(crate) fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

/// Which Storage service a configuration reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Queue,
    Blob,
}

impl Service {
    /// Its name in Azure's host names (`queue`, `blob`).
    fn host_label(self) -> &'static str {
        match self {
            Service::Queue => "queue",
            Service::Blob => "blob",
        }
    }

    /// Its endpoint's key in a connection string.
    fn connection_key(self) -> &'static str {
        match self {
            Service::Queue => "QueueEndpoint",
            Service::Blob => "BlobEndpoint",
        }
    }

    /// Azurite's default port of the service (`UseDevelopmentStorage=true`).
    fn azurite_port(self) -> u16 {
        match self {
            Service::Queue => 10001,
            Service::Blob => 10000,
        }
    }
}

/// The account fields of a configuration, as its type declares them.
pub(crate) struct AccountFields {
    pub(crate) connection_string_file: Option<String>,
    pub(crate) connection_string_env: Option<String>,
    pub(crate) connection_string: Option<SecretKeySelector>,
    pub(crate) account: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) account_key_file: Option<String>,
    pub(crate) account_key_env: Option<String>,
    pub(crate) account_key: Option<SecretKeySelector>,
    pub(crate) sas_token_file: Option<String>,
    pub(crate) sas_token_env: Option<String>,
    pub(crate) sas_token: Option<SecretKeySelector>,
}

/// The credential, and where it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A connection string: the account, its endpoints and its key or SAS token.
    ConnectionString(SecretFrom),
    /// The account key (Shared Key authorization).
    Key(SecretFrom),
    /// A SAS token (the query string of a shared access signature).
    Sas(SecretFrom),
}

impl Credential {
    /// The credential's field stem, for errors.
    fn stem(&self) -> &'static str {
        match self {
            Credential::ConnectionString(_) => "connectionString",
            Credential::Key(_) => "accountKey",
            Credential::Sas(_) => "sasToken",
        }
    }

    fn source(&self) -> &SecretFrom {
        match self {
            Credential::ConnectionString(s) | Credential::Key(s) | Credential::Sas(s) => s,
        }
    }
}

/// A checked storage account: the credential, and the account and endpoint given besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccountSettings {
    pub(crate) service: Service,
    pub(crate) credential: Credential,
    pub(crate) account: Option<String>,
    pub(crate) endpoint: Option<url::Url>,
}

/// Whether `name` can be a storage account's name: 3 to 24 lower-case letters and digits
/// (Azurite's `devstoreaccount1` is one).
fn is_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl AccountFields {
    /// Checks the account fields of a configuration of `service`; errors name the field.
    pub(crate) fn check(self, service: Service) -> Result<AccountSettings, ConfigError> {
        let connection = SecretFrom::from_fields(
            "connectionString",
            self.connection_string_file.as_deref(),
            self.connection_string_env.as_deref(),
            self.connection_string,
        )?;
        let key = SecretFrom::from_fields(
            "accountKey",
            self.account_key_file.as_deref(),
            self.account_key_env.as_deref(),
            self.account_key,
        )?;
        let sas = SecretFrom::from_fields(
            "sasToken",
            self.sas_token_file.as_deref(),
            self.sas_token_env.as_deref(),
            self.sas_token,
        )?;
        let account = broker::optional(self.account);
        if let Some(a) = &account
            && !is_account_name(a)
        {
            return Err(invalid(
                "account",
                format!(
                    "`{a}` is not a storage account name (3 to 24 lower-case letters and digits)"
                ),
            ));
        }
        let endpoint = broker::optional(self.endpoint)
            .map(|e| {
                let u = broker::check_url("endpoint", &e, &["http", "https"])?;
                if u.query().is_some() || !u.username().is_empty() || u.password().is_some() {
                    return Err(invalid(
                        "endpoint",
                        format!(
                            "`{}` has a query or credentials: give the service's URL alone, and a SAS token as sasTokenFile, sasTokenEnv or sasToken",
                            redact_url(&e)
                        ),
                    ));
                }
                Ok(u)
            })
            .transpose()?;
        let given: Vec<Credential> = [
            connection.map(Credential::ConnectionString),
            key.map(Credential::Key),
            sas.map(Credential::Sas),
        ]
        .into_iter()
        .flatten()
        .collect();
        let credential = match given.as_slice() {
            [] => {
                if account.is_some() || endpoint.is_some() {
                    return Err(invalid(
                        "accountKey",
                        "missing: with account or endpoint, give the account key (accountKeyFile, accountKeyEnv, accountKey) or a SAS token (sasTokenFile, sasTokenEnv, sasToken)",
                    ));
                }
                Credential::ConnectionString(SecretFrom::Local(SecretSource::Env(
                    CONNECTION_STRING_ENV.into(),
                )))
            }
            [one] => one.clone(),
            [first, second, ..] => {
                return Err(invalid(
                    second.stem(),
                    format!(
                        "both {} and {} are given: give one credential",
                        first.stem(),
                        second.stem()
                    ),
                ));
            }
        };
        match &credential {
            Credential::ConnectionString(_) => {
                if account.is_some() {
                    return Err(invalid(
                        "account",
                        "given with a connection string, which names the account: leave it out",
                    ));
                }
            }
            Credential::Key(_) | Credential::Sas(_) => {
                if account.is_none() && endpoint.is_none() {
                    return Err(invalid(
                        "account",
                        format!(
                            "missing: give the storage account's name (its endpoint is then https://<account>.{}.core.windows.net), or endpoint",
                            service.host_label()
                        ),
                    ));
                }
                if let Some(e) = &endpoint
                    && account.is_none()
                    && account_of(e).is_none()
                {
                    return Err(invalid(
                        "account",
                        format!(
                            "missing: the endpoint `{}` does not name the account (neither `<account>.{}.…` nor a path `/<account>`): give account",
                            redact_url(e.as_str()),
                            service.host_label()
                        ),
                    ));
                }
            }
        }
        Ok(AccountSettings {
            service,
            credential,
            account,
            endpoint,
        })
    }
}

/// The account an endpoint names: the first path segment of a path-style one (an IP address
/// or `localhost`, as Azurite's), else the host's first label.
fn account_of(endpoint: &url::Url) -> Option<String> {
    let host = endpoint.host_str()?;
    let path_style = host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok()
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok();
    let name = if path_style {
        endpoint.path_segments()?.find(|s| !s.is_empty())?
    } else {
        host.split('.').next()?
    };
    is_account_name(name).then(|| name.to_string())
}

/// What a connection string says.
#[derive(Debug, Default, PartialEq, Eq)]
struct ConnectionString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    endpoint: Option<String>,
    protocol: Option<String>,
    suffix: Option<String>,
    development: bool,
}

/// Azurite's well-known development account.
pub(crate) const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account's key (public, the same for every Azurite).
pub(crate) const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Parses `Key=Value;…` (keys case-insensitive, values may hold `=`). Errors never quote it.
fn parse_connection_string(text: &str, service: Service) -> Result<ConnectionString, String> {
    let mut c = ConnectionString::default();
    for (i, part) in text.split(';').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!(
                "part {} of the connection string is not Key=Value",
                i + 1
            ));
        };
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "accountname" => c.account = Some(value),
            "accountkey" => c.key = Some(value),
            "sharedaccesssignature" => c.sas = Some(value),
            "defaultendpointsprotocol" => c.protocol = Some(value),
            "endpointsuffix" => c.suffix = Some(value),
            "usedevelopmentstorage" => c.development = value.eq_ignore_ascii_case("true"),
            k if k == service.connection_key().to_ascii_lowercase() => c.endpoint = Some(value),
            // The other services' endpoints, and what else SDKs accept.
            _ => {}
        }
    }
    if c.development {
        c.account.get_or_insert_with(|| DEV_ACCOUNT.to_string());
        c.key.get_or_insert_with(|| DEV_KEY.to_string());
        c.endpoint.get_or_insert_with(|| {
            format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", service.azurite_port())
        });
    }
    Ok(c)
}

/// How requests are authorized.
enum Auth {
    /// Shared Key: the account key's bytes.
    Key(Vec<u8>),
    /// A SAS token: its query pairs, added to each request.
    Sas(Vec<(String, String)>),
}

/// An Azure Storage service client: one account, one endpoint, one credential.
pub(crate) struct Client {
    http: reqwest::Client,
    /// The service's endpoint, without a trailing `/`.
    base: url::Url,
    account: String,
    auth: Auth,
    /// The credentials, scrubbed out of every text Azure sends back.
    secrets: Vec<Secret>,
}

/// An Azure Storage call that did not succeed.
#[derive(Debug)]
pub(crate) struct AzureError {
    /// Azure's error code (`QueueNotFound`, `MessageNotFound`, …), when it gave one.
    pub(crate) code: Option<String>,
    text: String,
}

impl std::fmt::Display for AzureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A credential or Kubernetes error as a session error: invalid ends the configuration,
/// failed is retried.
fn session_error(e: ConfigError) -> SessionError {
    match e.kind() {
        ConfigErrorKind::Invalid => SessionError::Fatal(e),
        _ => SessionError::Broker(e.message().to_string()),
    }
}

async fn load(ctx: &ConfigContext, stem: &str, source: &SecretFrom) -> Result<Secret, ConfigError> {
    let field = source.field(stem);
    match source {
        SecretFrom::Local(s) => s.load().map_err(|e| {
            let message = format!("{field}: {}", e.message());
            match e.kind() {
                ConfigErrorKind::Invalid => ConfigError::invalid(message),
                _ => ConfigError::failed(message),
            }
        }),
        SecretFrom::Kube(sel) => crate::kube_secret::read_selected(ctx, &field, sel).await,
    }
}

/// The HTTP client of a configuration.
pub(crate) fn http_client() -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ConfigError::failed(format!("cannot make an HTTP client: {e}")))
}

/// `u` without a trailing `/` in its path, query or fragment.
fn base_of(mut u: url::Url) -> url::Url {
    u.set_query(None);
    u.set_fragment(None);
    let path = u.path().trim_end_matches('/').to_string();
    u.set_path(&path);
    u
}

/// The query pairs of a SAS token (with or without its leading `?`).
fn sas_pairs(token: &str) -> Result<Vec<(String, String)>, String> {
    let token = token.trim().trim_start_matches('?');
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(token.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !pairs.iter().any(|(k, _)| k == "sig") {
        return Err("is not a SAS token (no `sig=` in it)".into());
    }
    Ok(pairs)
}

impl Client {
    /// Reads the credential and makes the client. `None` when the configuration stopped
    /// meanwhile. A credential that cannot be read yet, or does not make sense, is a session
    /// error (retried; the node shows why, never the credential).
    pub(crate) async fn connect(
        ctx: &ConfigContext,
        s: &AccountSettings,
        http: reqwest::Client,
    ) -> Result<Option<Client>, SessionError> {
        let stem = s.credential.stem();
        let secret = tokio::select! {
            r = load(ctx, stem, s.credential.source()) => r.map_err(session_error)?,
            _ = ctx.stopped() => return Ok(None),
        };
        let field = s.credential.source().field(stem);
        let text = secret
            .expose_text(&field)
            .map_err(SessionError::Fatal)?
            .trim()
            .to_string();
        let broken = |what: String| SessionError::Broker(format!("{field}: {what}"));
        let (account, endpoint, auth, secrets) = match &s.credential {
            Credential::ConnectionString(_) => {
                let c = parse_connection_string(&text, s.service).map_err(broken)?;
                let endpoint = match (&s.endpoint, &c.endpoint) {
                    (Some(e), _) => e.clone(),
                    (None, Some(e)) => url::Url::parse(e).map_err(|_| {
                        broken(format!("its {} is not a URL", s.service.connection_key()))
                    })?,
                    (None, None) => {
                        let account = c.account.as_deref().ok_or_else(|| {
                            broken(format!(
                                "has neither AccountName nor {}",
                                s.service.connection_key()
                            ))
                        })?;
                        let url = format!(
                            "{}://{account}.{}.{}",
                            c.protocol.as_deref().unwrap_or("https"),
                            s.service.host_label(),
                            c.suffix.as_deref().unwrap_or("core.windows.net")
                        );
                        url::Url::parse(&url).map_err(|_| {
                            broken("its AccountName, DefaultEndpointsProtocol or EndpointSuffix do not make a URL".into())
                        })?
                    }
                };
                let account = c
                    .account
                    .clone()
                    .or_else(|| account_of(&endpoint))
                    .ok_or_else(|| {
                        broken(
                            "has no AccountName, and its endpoint does not name the account".into(),
                        )
                    })?;
                let (auth, credential) = match (c.key, c.sas) {
                    (Some(k), _) => (
                        Auth::Key(
                            STANDARD
                                .decode(k.trim())
                                .map_err(|_| broken("its AccountKey is not base64".into()))?,
                        ),
                        k,
                    ),
                    (None, Some(sas)) => (Auth::Sas(sas_pairs(&sas).map_err(broken)?), sas),
                    (None, None) => {
                        return Err(broken(
                            "has neither AccountKey nor SharedAccessSignature".into(),
                        ));
                    }
                };
                (account, endpoint, auth, vec![credential])
            }
            Credential::Key(_) | Credential::Sas(_) => {
                let endpoint = match &s.endpoint {
                    Some(e) => e.clone(),
                    None => {
                        let account = s.account.as_deref().unwrap_or_default();
                        url::Url::parse(&format!(
                            "https://{account}.{}.core.windows.net",
                            s.service.host_label()
                        ))
                        .map_err(|e| SessionError::Fatal(invalid("account", e)))?
                    }
                };
                let account = s
                    .account
                    .clone()
                    .or_else(|| account_of(&endpoint))
                    .unwrap_or_default();
                let auth = match &s.credential {
                    Credential::Key(_) => Auth::Key(
                        STANDARD
                            .decode(&text)
                            .map_err(|_| broken("is not base64 (an account key is)".into()))?,
                    ),
                    _ => Auth::Sas(sas_pairs(&text).map_err(broken)?),
                };
                (account, endpoint, auth, vec![text.clone()])
            }
        };
        let mut all: Vec<Secret> = vec![secret];
        all.extend(secrets.into_iter().map(Secret::new));
        if let Auth::Sas(pairs) = &auth {
            all.extend(
                pairs
                    .iter()
                    .filter(|(k, _)| k == "sig")
                    .map(|(_, v)| Secret::new(v)),
            );
        }
        Ok(Some(Client {
            http,
            base: base_of(endpoint),
            account,
            auth,
            secrets: all,
        }))
    }

    /// The account's name.
    pub(crate) fn account(&self) -> &str {
        &self.account
    }

    /// The endpoint as it may be shown (no credentials, no query).
    pub(crate) fn shown(&self) -> String {
        redact_url(self.base.as_str())
    }

    /// The URL of `segments` under the endpoint, without the query: for events and messages.
    pub(crate) fn url_of(&self, segments: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        u
    }

    /// Calls `method` on `segments` under the endpoint with `query`; the answer's headers and
    /// body when its status is a success, else an error with Azure's code and message.
    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<(HeaderMap, String), AzureError> {
        let mut url = self.url_of(segments);
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            if let Auth::Sas(pairs) = &self.auth {
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let length = body.as_ref().map_or(0, String::len);
        let content_type = body.as_ref().map(|_| "application/xml; charset=utf-8");
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Auth::Key(key) = &self.auth {
            let headers = [("x-ms-date", date.as_str()), ("x-ms-version", API_VERSION)];
            let signature = sign(
                key,
                &string_to_sign(
                    method.as_str(),
                    length,
                    content_type.unwrap_or(""),
                    &headers,
                    &self.account,
                    &url,
                ),
            );
            req = req.header(
                "authorization",
                format!("SharedKey {}:{signature}", self.account),
            );
        }
        if let Some(b) = body {
            req = req.body(b);
        } else if method == Method::PUT || method == Method::POST {
            req = req.header("content-length", "0");
        }
        let shown = self.shown();
        let what = format!("{method} {}", redact_url(self.url_of(segments).as_str()));
        let resp = req.send().await.map_err(|e| AzureError {
            code: None,
            text: format!("Azure Storage at {shown} cannot be reached ({what}): {e}"),
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| AzureError {
            code: None,
            text: format!("Azure Storage at {shown}: {what}: {e}"),
        })?;
        if status.is_success() {
            return Ok((headers, text));
        }
        let secrets: Vec<&Secret> = self.secrets.iter().collect();
        let error: Option<ErrorBody> =
            quick_xml::de::from_str(text.trim_start_matches('\u{feff}')).ok();
        let code = error
            .as_ref()
            .and_then(|e| e.code.clone())
            .or_else(|| {
                headers
                    .get("x-ms-error-code")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .filter(|c| !c.is_empty());
        let message = error
            .and_then(|e| e.message)
            .map(|m| m.lines().next().unwrap_or_default().to_string())
            .unwrap_or_else(|| text.clone());
        let message = short(&scrub(&message, &secrets));
        let code_text = code.clone().unwrap_or_else(|| "error".into());
        Err(AzureError {
            code,
            text: scrub(
                &format!(
                    "Azure Storage at {shown} refused {what} with {status}: {code_text}: {message}"
                ),
                &secrets,
            ),
        })
    }
}

/// `text` cut to [`MAX_MESSAGE`] bytes.
fn short(text: &str) -> String {
    let mut s = text.trim().to_string();
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Azure's error answer.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// The string Shared Key signs (Blob, Queue and File services, versions since 2015-02-21):
/// the verb, the standard headers (only `Content-Length` and `Content-Type` are sent), the
/// `x-ms-` headers sorted, then the canonical resource: `/<account><path>` and each query
/// parameter sorted by name, `\nname:value` (values decoded, several joined by `,`).
fn string_to_sign(
    verb: &str,
    content_length: usize,
    content_type: &str,
    ms_headers: &[(&str, &str)],
    account: &str,
    url: &url::Url,
) -> String {
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    let mut s = format!("{verb}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n");
    let mut headers: Vec<(String, &str)> = ms_headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .collect();
    headers.sort();
    for (k, v) in headers {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push('/');
    s.push_str(account);
    s.push_str(url.path());
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in url.query_pairs() {
        params
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in params {
        values.sort();
        s.push_str(&format!("\n{k}:{}", values.join(",")));
    }
    s
}

/// The base64 HMAC-SHA256 of `text` under `key`.
fn sign(key: &[u8], text: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length.
        return String::new();
    };
    mac.update(text.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A duration field within `min` and `max`.
pub(crate) fn duration_field(
    field: &str,
    text: Option<String>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = broker::optional(text) else {
        return Ok(default);
    };
    let d = humantime::parse_duration(&text)
        .map_err(|e| invalid(field, format!("`{text}` is not a duration like `30s`: {e}")))?;
    if d < min || d > max {
        return Err(invalid(
            field,
            format!(
                "`{text}` is not from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

/// An RFC 1123 date of Azure's (`Fri, 04 Dec 2026 04:17:31 GMT`).
pub(crate) fn parse_date(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AccountFields {
        AccountFields {
            connection_string_file: None,
            connection_string_env: None,
            connection_string: None,
            account: None,
            endpoint: None,
            account_key_file: None,
            account_key_env: None,
            account_key: None,
            sas_token_file: None,
            sas_token_env: None,
            sas_token: None,
        }
    }

    #[test]
    fn accounts_and_their_credentials() {
        let s = fields().check(Service::Queue).unwrap();
        assert_eq!(
            s.credential,
            Credential::ConnectionString(SecretFrom::Local(SecretSource::Env(
                CONNECTION_STRING_ENV.into()
            )))
        );
        let s = AccountFields {
            account: Some("acct1".into()),
            account_key_env: Some("K".into()),
            ..fields()
        }
        .check(Service::Blob)
        .unwrap();
        assert_eq!(s.account.as_deref(), Some("acct1"));
        let e = |f: AccountFields| f.check(Service::Queue).unwrap_err().message().to_string();
        assert!(
            e(AccountFields {
                account_key_env: Some("K".into()),
                ..fields()
            })
            .starts_with("account:")
        );
        assert!(
            e(AccountFields {
                account: Some("Bad_Name".into()),
                ..fields()
            })
            .starts_with("account:")
        );
        assert!(
            e(AccountFields {
                account: Some("acct".into()),
                ..fields()
            })
            .starts_with("accountKey:")
        );
        assert!(
            e(AccountFields {
                account_key_env: Some("K".into()),
                sas_token_env: Some("S".into()),
                account: Some("acct".into()),
                ..fields()
            })
            .starts_with("sasToken:")
        );
        assert!(
            e(AccountFields {
                connection_string_env: Some("C".into()),
                account: Some("acct".into()),
                ..fields()
            })
            .starts_with("account:")
        );
        assert!(
            e(AccountFields {
                endpoint: Some("http://127.0.0.1:1/".into()),
                account_key_env: Some("K".into()),
                ..fields()
            })
            .starts_with("account:")
        );
        assert!(
            e(AccountFields {
                endpoint: Some("http://127.0.0.1:1/devstoreaccount1?sig=x".into()),
                account_key_env: Some("K".into()),
                ..fields()
            })
            .starts_with("endpoint:")
        );
    }

    #[test]
    fn endpoints_name_their_account() {
        let a = |u: &str| account_of(&url::Url::parse(u).unwrap());
        assert_eq!(
            a("https://acct1.queue.core.windows.net"),
            Some("acct1".into())
        );
        assert_eq!(
            a("http://127.0.0.1:10001/devstoreaccount1"),
            Some("devstoreaccount1".into())
        );
        assert_eq!(
            a("http://localhost:10000/devstoreaccount1/"),
            Some("devstoreaccount1".into())
        );
        assert_eq!(a("http://127.0.0.1:10000/"), None);
    }

    #[test]
    fn connection_strings() {
        let c = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=abc==;QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;BlobEndpoint=http://127.0.0.1:2/devstoreaccount1;",
            Service::Queue,
        )
        .unwrap();
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(c.key.as_deref(), Some("abc=="));
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://127.0.0.1:1/devstoreaccount1")
        );
        let c = parse_connection_string("UseDevelopmentStorage=true", Service::Blob).unwrap();
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(c.key.as_deref(), Some(DEV_KEY));
        let e = parse_connection_string("AccountName=a;secretwithoutequals", Service::Blob)
            .unwrap_err();
        assert!(!e.contains("secretwithoutequals"), "{e}");
    }

    #[test]
    fn shared_key_signs_the_canonical_request() {
        let url = url::Url::parse(
            "http://127.0.0.1:10001/devstoreaccount1/q1/messages?numofmessages=32&VisibilityTimeout=30",
        )
        .unwrap();
        let s = string_to_sign(
            "GET",
            0,
            "",
            &[
                ("x-ms-version", "2021-12-02"),
                ("x-ms-date", "Fri, 04 Dec 2026 04:17:31 GMT"),
            ],
            "devstoreaccount1",
            &url,
        );
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Fri, 04 Dec 2026 04:17:31 GMT\nx-ms-version:2021-12-02\n/devstoreaccount1/devstoreaccount1/q1/messages\nnumofmessages:32\nvisibilitytimeout:30"
        );
        // The HMAC of a known text under a known key (RFC 4231, test case 2).
        let mac = sign(b"Jefe", "what do ya want for nothing?");
        assert_eq!(
            hex::encode(STANDARD.decode(mac).unwrap()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sas_tokens_and_dates() {
        let p = sas_pairs("?sv=2021-12-02&sig=a%2Bb%3D").unwrap();
        assert!(p.contains(&("sig".into(), "a+b=".into())));
        assert!(sas_pairs("sv=1").is_err());
        assert_eq!(
            parse_date("Fri, 04 Dec 2026 04:17:31 GMT")
                .unwrap()
                .timestamp(),
            1_796_357_851
        );
    }
}
