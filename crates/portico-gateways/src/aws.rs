//! What the gateways that read an Amazon SQS queue (`artifact`, `sqs`) share: where the queue
//! is and which region requests are signed for, the credentials and where they are read
//! (files, environment variables, keys of Kubernetes Secrets), `waitTime`, and the SQS client.
//!
//! SQS is called through its JSON protocol (`X-Amz-Target: AmazonSQS.ReceiveMessage`,
//! `application/x-amz-json-1.0`) with the gateway's HTTP client (`reqwest`), each request
//! signed with Signature Version 4 by the `aws-sigv4` crate. The AWS SDK (`aws-sdk-sqs`) would
//! do the same few calls, but brings its own runtime, HTTP stack and code generation, several
//! times this crate's build on a small machine; the signing is the one part not written here.
//! Every text SQS sends back is scrubbed of the credentials' secrets before it is shown.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use portico::secret::{redact_url, scrub};
use portico::{ConfigContext, ConfigError, ConfigErrorKind, Secret, SecretSource};
use serde_json::{Value, json};

use crate::broker::{self, SessionError};

/// Default of `waitTime`, and SQS's longest long poll.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(20);
/// Longest text of an SQS answer kept in an error.
const MAX_MESSAGE: usize = 300;
/// The region requests to an SQS API outside AWS are signed for when none is given.
pub(crate) const LOCAL_REGION: &str = "us-east-1";

/// A configuration error of `field`.
pub(crate) fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

pub use crate::kube_secret::SecretKeySelector;

/// Where one credential is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// A file or an environment variable.
    Local(SecretSource),
    /// A key of a Kubernetes Secret; `field` names the configuration field, for errors.
    Kube {
        field: &'static str,
        selector: SecretKeySelector,
    },
}

/// Where the credentials are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CredentialSources {
    pub(crate) access: KeySource,
    pub(crate) secret: KeySource,
    /// The session token; `optional`: an unset variable means none.
    pub(crate) token: Option<(SecretSource, bool)>,
}

/// The credential fields of a configuration, as its type declares them (`accessKeyFile`,
/// `accessKeyEnv`, `accessKey`, and the same for `secretKey`; `sessionTokenFile`,
/// `sessionTokenEnv`).
pub(crate) struct CredentialFields {
    pub(crate) access_key_file: Option<String>,
    pub(crate) access_key_env: Option<String>,
    pub(crate) access_key: Option<SecretKeySelector>,
    pub(crate) secret_key_file: Option<String>,
    pub(crate) secret_key_env: Option<String>,
    pub(crate) secret_key: Option<SecretKeySelector>,
    pub(crate) session_token_file: Option<String>,
    pub(crate) session_token_env: Option<String>,
}

fn key_source(
    stem: &'static str,
    file: Option<&str>,
    env: Option<&str>,
    selector: Option<SecretKeySelector>,
) -> Result<Option<KeySource>, ConfigError> {
    let local = SecretSource::from_fields(stem, file, env)?;
    match (local, selector) {
        (Some(_), Some(_)) => Err(invalid(
            stem,
            format!(
                "both {stem} (a Kubernetes Secret) and {stem}File or {stem}Env are set: give one"
            ),
        )),
        (Some(s), None) => Ok(Some(KeySource::Local(s))),
        (None, Some(sel)) => {
            if sel.name.trim().is_empty() {
                return Err(invalid(&format!("{stem}.name"), "empty (required)"));
            }
            if sel.key.trim().is_empty() {
                return Err(invalid(&format!("{stem}.key"), "empty (required)"));
            }
            Ok(Some(KeySource::Kube {
                field: stem,
                selector: sel,
            }))
        }
        (None, None) => Ok(None),
    }
}

impl CredentialFields {
    /// Where the credentials are read: the fields given, or without any the environment
    /// variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (if set) `AWS_SESSION_TOKEN`.
    /// Errors name the field.
    pub(crate) fn check(self) -> Result<CredentialSources, ConfigError> {
        let access = key_source(
            "accessKey",
            self.access_key_file.as_deref(),
            self.access_key_env.as_deref(),
            self.access_key,
        )?;
        let secret = key_source(
            "secretKey",
            self.secret_key_file.as_deref(),
            self.secret_key_env.as_deref(),
            self.secret_key,
        )?;
        let token = SecretSource::from_fields(
            "sessionToken",
            self.session_token_file.as_deref(),
            self.session_token_env.as_deref(),
        )?;
        match (access, secret) {
            (Some(access), Some(secret)) => Ok(CredentialSources {
                access,
                secret,
                token: token.map(|t| (t, false)),
            }),
            (None, None) => {
                if token.is_some() {
                    return Err(invalid(
                        "sessionToken",
                        "given without accessKey and secretKey: give all three, or none to use AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN",
                    ));
                }
                Ok(CredentialSources {
                    access: KeySource::Local(SecretSource::Env("AWS_ACCESS_KEY_ID".into())),
                    secret: KeySource::Local(SecretSource::Env("AWS_SECRET_ACCESS_KEY".into())),
                    token: Some((SecretSource::Env("AWS_SESSION_TOKEN".into()), true)),
                })
            }
            (Some(_), None) => Err(invalid(
                "secretKey",
                "missing: give secretKeyFile, secretKeyEnv or secretKey with the access key",
            )),
            (None, Some(_)) => Err(invalid(
                "accessKey",
                "missing: give accessKeyFile, accessKeyEnv or accessKey with the secret key",
            )),
        }
    }
}

/// Which queue to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Its URL.
    Url(url::Url),
    /// Its name, asked of the SQS API at this URL.
    Name { name: String, endpoint: url::Url },
}

/// The region an AWS host names: `sqs.<region>.amazonaws.com`, `<region>.queue.amazonaws.com`,
/// `s3.<region>.amazonaws.com`, `s3-<region>.amazonaws.com`.
pub(crate) fn region_of_host(host: &str) -> Option<String> {
    let base = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let region = if let Some(r) = base.strip_prefix("sqs.") {
        r
    } else if let Some(r) = base.strip_suffix(".queue") {
        r
    } else if let Some(r) = base.strip_prefix("s3.") {
        r.strip_prefix("dualstack.").unwrap_or(r)
    } else {
        base.strip_prefix("s3-")?
    };
    (!region.is_empty() && !region.contains('.')).then(|| region.to_string())
}

/// Whether `host` is one of AWS's.
pub(crate) fn is_aws_host(host: &str) -> bool {
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
}

/// The queue of `queueUrl` or `queue` (with `endpoint`, or AWS's SQS in `region`), and the
/// region requests are signed for (`region`, else the one the SQS host names, else
/// [`LOCAL_REGION`] outside AWS). All values trimmed, blank ones `None`. `region_field` names
/// the region's field in errors; `missing` is what the error says when no queue is given.
pub(crate) fn check_queue(
    queue_url: Option<String>,
    queue_name: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    region_field: &str,
    missing: &str,
) -> Result<(Queue, String), ConfigError> {
    let queue = match (queue_url, queue_name) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "queue",
                "both queue and queueUrl are set: give one",
            ));
        }
        (None, None) => return Err(invalid("queueUrl", missing)),
        (Some(u), None) => {
            if endpoint.is_some() {
                return Err(invalid(
                    "endpoint",
                    "only with queue (a queue's name); queueUrl says where SQS is",
                ));
            }
            let u = broker::check_url("queueUrl", &u, &["http", "https"])?;
            if u.path().trim_matches('/').is_empty() {
                return Err(invalid(
                    "queueUrl",
                    format!(
                        "`{}` names no queue: expected like https://sqs.us-east-1.amazonaws.com/123456789012/NAME",
                        redact_url(u.as_str())
                    ),
                ));
            }
            Queue::Url(u)
        }
        (None, Some(name)) => {
            if name.contains(['/', ' ']) {
                return Err(invalid(
                    "queue",
                    format!("`{name}` is not a queue name (give a URL as queueUrl)"),
                ));
            }
            let endpoint = match endpoint {
                Some(e) => broker::check_url("endpoint", &e, &["http", "https"])?,
                None => {
                    let r = region.as_deref().ok_or_else(|| {
                        invalid("region", "required with queue and no endpoint (the SQS API is then AWS's, sqs.<region>.amazonaws.com)")
                    })?;
                    url::Url::parse(&format!("https://sqs.{r}.amazonaws.com"))
                        .map_err(|e| invalid("region", format!("`{r}`: {e}")))?
                }
            };
            Queue::Name { name, endpoint }
        }
    };
    let host = match &queue {
        Queue::Url(u) => u.host_str(),
        Queue::Name { endpoint, .. } => endpoint.host_str(),
    }
    .unwrap_or_default()
    .to_string();
    let region = match region.or_else(|| region_of_host(&host)) {
        Some(r) if r.contains(char::is_whitespace) => {
            return Err(invalid(region_field, format!("`{r}` is not a region")));
        }
        Some(r) => r,
        // A local SQS (moto, ElasticMQ, …) takes any region: requests are signed for one.
        None if !is_aws_host(&host) => LOCAL_REGION.to_string(),
        None => {
            return Err(invalid(
                region_field,
                format!(
                    "required: the SQS host `{host}` does not name its region (requests are signed for one)"
                ),
            ));
        }
    };
    Ok((queue, region))
}

/// `waitTime`: how long one `ReceiveMessage` waits, `1s` to `20s` in whole seconds (default
/// `20s`).
pub(crate) fn check_wait_time(value: Option<String>) -> Result<Duration, ConfigError> {
    let Some(text) = broker::optional(value) else {
        return Ok(MAX_WAIT);
    };
    let d = humantime::parse_duration(&text).map_err(|e| {
        invalid(
            "waitTime",
            format!("`{text}` is not a duration like `20s`: {e}"),
        )
    })?;
    if d < Duration::from_secs(1) || d > MAX_WAIT {
        return Err(invalid(
            "waitTime",
            format!("`{text}` is not from 1s to 20s (SQS's long poll)"),
        ));
    }
    Ok(Duration::from_secs(d.as_secs()))
}

/// The HTTP client of a configuration whose long polls last `wait`.
pub(crate) fn http_client(wait: Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(wait + Duration::from_secs(15))
        .build()
        .map_err(|e| ConfigError::failed(format!("cannot make an HTTP client: {e}")))
}

/// A credential or Kubernetes error as a session error: invalid ends the configuration,
/// failed is retried.
fn session_error(e: ConfigError) -> SessionError {
    match e.kind() {
        ConfigErrorKind::Invalid => SessionError::Fatal(e),
        _ => SessionError::Broker(e.message().to_string()),
    }
}

async fn load_key(ctx: &ConfigContext, source: &KeySource) -> Result<Secret, ConfigError> {
    match source {
        KeySource::Local(s) => s.load(),
        KeySource::Kube { field, selector } => {
            crate::kube_secret::read_selected(ctx, field, selector).await
        }
    }
}

async fn credentials(
    ctx: &ConfigContext,
    c: &CredentialSources,
) -> Result<Credentials, ConfigError> {
    let access = load_key(ctx, &c.access).await?;
    let secret = load_key(ctx, &c.secret).await?;
    let token = match &c.token {
        None => None,
        Some((source, optional)) => match source.load() {
            Ok(t) => Some(t),
            Err(_) if *optional => None,
            Err(e) => return Err(e),
        },
    };
    let text = |s: &Secret, what: &str| s.expose_text(what).map(str::to_string);
    Ok(Credentials::new(
        text(&access, "accessKey")?,
        text(&secret, "secretKey")?,
        token
            .as_ref()
            .map(|t| text(t, "sessionToken"))
            .transpose()?,
        None,
        "portico",
    ))
}

/// A queue ready to be read: its client, its URL, and the queue attributes asked of it.
pub(crate) struct OpenQueue {
    pub(crate) sqs: Sqs,
    pub(crate) url: String,
    /// The answer's `Attributes` (name → text).
    pub(crate) attributes: Value,
}

/// Reads the credentials, finds the queue's URL (`GetQueueUrl`, for a queue given by name)
/// and checks that the queue exists and the credentials are taken, with one
/// `GetQueueAttributes` asking `attributes`. `None` when the configuration stopped meanwhile.
pub(crate) async fn open_queue(
    ctx: &ConfigContext,
    queue: &Queue,
    region: &str,
    sources: &CredentialSources,
    http: reqwest::Client,
    attributes: &[&str],
) -> Result<Option<OpenQueue>, SessionError> {
    let creds = tokio::select! {
        c = credentials(ctx, sources) => c.map_err(session_error)?,
        _ = ctx.stopped() => return Ok(None),
    };
    let (sqs, url) = match queue {
        Queue::Url(u) => (Sqs::new(http, u, region, creds), u.to_string()),
        Queue::Name { name, endpoint } => {
            let sqs = Sqs::new(http, endpoint, region, creds);
            let answer = tokio::select! {
                a = sqs.call("GetQueueUrl", json!({"QueueName": name})) => a,
                _ = ctx.stopped() => return Ok(None),
            };
            let answer = answer.map_err(|e| SessionError::Broker(e.to_string()))?;
            let Some(u) = answer.get("QueueUrl").and_then(Value::as_str) else {
                return Err(SessionError::Broker(format!(
                    "SQS at {} gave no QueueUrl for queue `{name}`",
                    redact_url(endpoint.as_str())
                )));
            };
            (sqs, u.to_string())
        }
    };
    // One call before Running: the queue exists and the credentials are taken.
    let checked = tokio::select! {
        a = sqs.call("GetQueueAttributes", json!({"QueueUrl": url, "AttributeNames": attributes})) => a,
        _ = ctx.stopped() => return Ok(None),
    };
    let checked = checked.map_err(|e| SessionError::Broker(e.to_string()))?;
    let attributes = checked.get("Attributes").cloned().unwrap_or(Value::Null);
    Ok(Some(OpenQueue {
        sqs,
        url,
        attributes,
    }))
}

/// An SQS client: one endpoint, one region, one set of credentials.
pub(crate) struct Sqs {
    http: reqwest::Client,
    /// Where requests go: the endpoint's scheme, host and port, path `/`.
    endpoint: String,
    region: String,
    identity: Identity,
    /// The credentials' secrets, scrubbed out of every text SQS sends back.
    secrets: Vec<Secret>,
}

/// An SQS call that did not succeed: the server is unreachable or refused it.
#[derive(Debug)]
pub(crate) struct SqsError(String);

impl std::fmt::Display for SqsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The scheme, host and port of `u`, with path `/`: where SQS's JSON protocol is spoken.
fn origin(u: &url::Url) -> String {
    let mut o = u.clone();
    o.set_path("/");
    o.set_query(None);
    o.set_fragment(None);
    let _ = o.set_username("");
    let _ = o.set_password(None);
    o.to_string()
}

impl Sqs {
    fn new(http: reqwest::Client, endpoint: &url::Url, region: &str, creds: Credentials) -> Sqs {
        let mut secrets = vec![Secret::new(creds.secret_access_key())];
        if let Some(t) = creds.session_token() {
            secrets.push(Secret::new(t));
        }
        Sqs {
            http,
            endpoint: origin(endpoint),
            region: region.to_string(),
            identity: creds.into(),
            secrets,
        }
    }

    /// Where requests go, without credentials: for messages.
    pub(crate) fn shown(&self) -> String {
        redact_url(&self.endpoint)
    }

    /// Calls `AmazonSQS.<action>` with a JSON `body`; the JSON answer.
    pub(crate) async fn call(&self, action: &str, body: Value) -> Result<Value, SqsError> {
        let body = serde_json::to_vec(&body).map_err(|e| SqsError(format!("{action}: {e}")))?;
        let target = format!("AmazonSQS.{action}");
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target.as_str()),
        ];
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("sqs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SqsError(format!("cannot sign {action}: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| SqsError(format!("cannot sign {action}: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| SqsError(format!("cannot sign {action}: {e}")))?
            .into_parts();
        let mut req = self.http.post(&self.endpoint);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            req = req.header(name, value);
        }
        let shown = self.shown();
        let resp =
            req.body(body).send().await.map_err(|e| {
                SqsError(format!("SQS at {shown} cannot be reached ({action}): {e}"))
            })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| SqsError(format!("SQS at {shown}: {action}: {e}")))?;
        let secrets: Vec<&Secret> = self.secrets.iter().collect();
        let mut short = scrub(&text, &secrets);
        if short.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !short.is_char_boundary(end) {
                end -= 1;
            }
            short.truncate(end);
            short.push('…');
        }
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                SqsError(format!(
                    "SQS at {shown} answered {action} with what is not JSON (is it an SQS API?): {short}"
                ))
            });
        }
        let Some(error) = json else {
            return Err(SqsError(format!(
                "SQS at {shown} refused {action} with {status} and no SQS error (is it an SQS API? MinIO, for one, has none): {short}"
            )));
        };
        let kind = error
            .get("__type")
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t))
            .unwrap_or("error");
        let message = error
            .get("message")
            .or_else(|| error.get("Message"))
            .and_then(Value::as_str)
            .map(|m| scrub(m, &secrets))
            .unwrap_or_default();
        Err(SqsError(format!(
            "SQS at {shown} refused {action} with {status}: {kind}: {message}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_keep_scheme_host_and_port_only() {
        let u =
            url::Url::parse("https://user:pw@sqs.eu-west-1.amazonaws.com:8443/1/q?x=1#f").unwrap();
        assert_eq!(origin(&u), "https://sqs.eu-west-1.amazonaws.com:8443/");
    }

    #[test]
    fn queues_and_regions() {
        let q = |url: Option<&str>,
                 name: Option<&str>,
                 endpoint: Option<&str>,
                 region: Option<&str>| {
            check_queue(
                url.map(str::to_string),
                name.map(str::to_string),
                endpoint.map(str::to_string),
                region.map(str::to_string),
                "region",
                "missing: give one",
            )
        };
        let (queue, region) = q(
            Some("https://sqs.us-west-2.amazonaws.com/1/q"),
            None,
            None,
            None,
        )
        .unwrap();
        assert!(matches!(queue, Queue::Url(_)));
        assert_eq!(region, "us-west-2");
        let (_, region) = q(Some("http://127.0.0.1:5000/1/q"), None, None, None).unwrap();
        assert_eq!(region, LOCAL_REGION);
        let e = q(None, None, None, None).unwrap_err();
        assert_eq!(e.message(), "queueUrl: missing: give one");
        let e = q(None, Some("q"), Some("ftp://x"), None).unwrap_err();
        assert!(e.message().starts_with("endpoint:"), "{e}");
        let e = q(Some("http://x/1/q"), None, None, Some("a b")).unwrap_err();
        assert!(e.message().starts_with("region:"), "{e}");
    }

    #[test]
    fn wait_times() {
        assert_eq!(check_wait_time(None).unwrap(), MAX_WAIT);
        assert_eq!(
            check_wait_time(Some("1500ms".into())).unwrap(),
            Duration::from_secs(1)
        );
        for bad in ["0s", "21s", "soon"] {
            let e = check_wait_time(Some(bad.into())).unwrap_err();
            assert!(e.message().starts_with("waitTime:"), "{e}");
        }
    }
}
