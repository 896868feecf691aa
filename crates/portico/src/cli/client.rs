//! The commands that talk to a running gateway through its transformer's HTTP API: `status`,
//! `tail`, `send` and `dead-letters`, and `completions`.
//!
//! A gateway is reached by URL (`--url`, `PORTICO_URL`, default `http://127.0.0.1:9300` with
//! the port of `TRANSFORMER_PORT`), or in a cluster by its Gateway's name (`--gateway NAME`):
//! then through the Kubernetes API server's proxy to the gateway's pod
//! (`/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/…`), the pod found by the label the
//! controller puts on it. Writes (`send`, `dead-letters redrive`) send the gateway's ingest
//! token when one is given (`--token-file`, `PORTICO_INGEST_TOKEN_FILE`).
//!
//! Every failure is one line on stderr saying what to do, and a non-zero exit: no gateway
//! at the address, a token missing or refused, the gateway's own reason for a refusal.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::cloudevents::{CloudEvent, Data, ExtensionName, ExtensionValue, is_json_content_type};
use crate::controller::GATEWAY_LABEL;
use crate::env;

/// How long a request may take unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a redrive may take unless `--timeout` says otherwise: it waits for the deliveries.
const DEFAULT_REDRIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// Attempts of a write the gateway answers 503 (full): the first and the retries.
const FULL_ATTEMPTS: usize = 5;
/// Longest wait between two of them, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The help heading of the flags that say how to reach the gateway.
const HEADING: &str = "Reaching the gateway";

/// Where the gateway is: the flags every client command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Target {
    /// The address of the gateway's transformer API. Default: http://127.0.0.1:9300 (the
    /// port from TRANSFORMER_PORT when set), where `portico run` listens.
    #[arg(long, env = "PORTICO_URL", value_name = "URL", help_heading = HEADING)]
    url: Option<String>,
    /// In a cluster: reach the Gateway of this name through the Kubernetes API server's proxy
    /// to its pod, instead of --url (KUBECONFIG, ~/.kube/config or the pod's service
    /// account; needs `list` on pods and `get` on pods/proxy). The ingest token cannot pass
    /// that way: to write to a gateway that has one, use `kubectl port-forward` and --url.
    #[arg(long, value_name = "NAME", help_heading = HEADING)]
    gateway: Option<String>,
    /// The namespace of --gateway. Default: the kubeconfig context's.
    #[arg(short = 'n', long, value_name = "NAMESPACE", requires = "gateway", help_heading = HEADING)]
    namespace: Option<String>,
    /// How long to wait for the gateway's answer (`10s`, `2m`). Default: 30s; 5m for
    /// `dead-letters redrive`, which waits for the deliveries.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = HEADING)]
    timeout: Option<Duration>,
}

/// The ingest token flag of the commands that write.
#[derive(Debug, Clone, Args)]
pub(crate) struct TokenArg {
    /// A file holding the gateway's ingest token, sent as `Authorization: Bearer <token>`:
    /// the file the gateway was started with (`portico run --ingest-token-file`). Needed when
    /// the gateway has a token.
    #[arg(long, env = "PORTICO_INGEST_TOKEN_FILE", value_name = "FILE", help_heading = HEADING)]
    token_file: Option<PathBuf>,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusFormat {
    /// The gateway, then a table of its configurations.
    #[default]
    Table,
    /// `/status` as the gateway answered it, indented.
    Json,
    /// The same as YAML.
    Yaml,
}

/// `portico status`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = StatusFormat::Table)]
    output: StatusFormat,
}

/// How `tail` prints each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum TailFormat {
    /// One line per event: time, source, subject, type, id.
    #[default]
    Text,
    /// The CloudEvent as one JSON line.
    Json,
}

/// `portico tail`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  portico tail                                  # every event, one line each, until Ctrl-C
  portico tail --filter calendar.every2s -o json
  portico tail --gateway my-gateway -n events   # in a cluster, through the API server")]
pub(crate) struct TailArgs {
    #[command(flatten)]
    target: Target,
    /// Only the events whose JSON contains this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TailFormat::Text)]
    output: TailFormat,
    /// Exit after this many events (default: follow until interrupted).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// The help heading of `send`'s attribute flags.
const ATTRIBUTES: &str = "The event from flags";

/// `portico send`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("form").required(true).args(["json", "file", "ty"])))]
#[command(after_help = "Examples:
  portico send --type com.example.order --source /shop --data '{\"order\": 42}' --ext team=payments
  portico send --json '{\"specversion\": \"1.0\", \"id\": \"1\", \"source\": \"/shop\", \"type\": \"com.example.order\"}'
  portico send --file events.json --url http://gateway:9300 --token-file /var/run/portico/ingest-token

A gateway that is full (503) is asked again a few times, as its Retry-After says.")]
pub(crate) struct SendArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    token: TokenArg,
    /// The event as JSON: a CloudEvent (`{"specversion": "1.0", "id", "source", "type", …}`),
    /// a JSON array of CloudEvents (a batch), or the raw form `{"src": KEY, "payload":
    /// "<base64>"}` the gateway turns into a CloudEvent itself.
    #[arg(long, value_name = "JSON")]
    json: Option<String>,
    /// Like --json, read from FILE (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The CloudEvent's `type` (with --source, builds the event from these flags).
    #[arg(long = "type", value_name = "TYPE", requires = "source", help_heading = ATTRIBUTES)]
    ty: Option<String>,
    /// Its `source` (a URI-reference: `/my/app`, `urn:x`, `https://…`).
    #[arg(long, value_name = "SOURCE", requires = "ty", help_heading = ATTRIBUTES)]
    source: Option<String>,
    /// Its `subject`.
    #[arg(long, value_name = "SUBJECT", requires = "ty", help_heading = ATTRIBUTES)]
    subject: Option<String>,
    /// Its `id` (default: a fresh UUID).
    #[arg(long, value_name = "ID", requires = "ty", help_heading = ATTRIBUTES)]
    id: Option<String>,
    /// Its `time`, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME", requires = "ty", help_heading = ATTRIBUTES)]
    time: Option<String>,
    /// Its data: JSON goes as JSON (`datacontenttype: application/json` unless given), any
    /// other text as a string (`text/plain` unless given).
    #[arg(long, value_name = "DATA", requires = "ty", help_heading = ATTRIBUTES)]
    data: Option<String>,
    /// Its `datacontenttype`.
    #[arg(long, value_name = "MEDIA_TYPE", requires = "data", help_heading = ATTRIBUTES)]
    data_content_type: Option<String>,
    /// Its `dataschema` (an absolute URI).
    #[arg(long, value_name = "URI", requires = "ty", help_heading = ATTRIBUTES)]
    data_schema: Option<String>,
    /// An extension attribute, `name=value` (name: 1 to 20 of a-z and 0-9); repeat for more.
    #[arg(long = "ext", value_name = "NAME=VALUE", requires = "ty", help_heading = ATTRIBUTES)]
    extensions: Vec<String>,
}

/// How `dead-letters list` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListFormat {
    /// One line per dead letter: id, watcher, type, source, time, reason.
    #[default]
    Table,
    /// The gateway's answer as it came, indented.
    Json,
}

/// `portico dead-letters …`.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum DeadLetters {
    /// List the events the gateway's watchers never took (the dead letters kept in a file:
    /// `spec.delivery.deadLetter.file`, or the outbox's `dead-letter.jsonl`).
    List {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Send dead letters back through delivery, each to the watcher that did not take it;
    /// the delivered ones leave the dead-letter file. Exits non-zero when one was not
    /// delivered or not found.
    #[command(group(ArgGroup::new("which").required(true).args(["all", "ids"])))]
    Redrive {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        token: TokenArg,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// The ids of the dead letters (`dead-letters list` shows them).
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    /// Said on stderr, exit 1.
    Message(String),
    /// Standard output was closed (`| head`): nothing more to say.
    OutputClosed,
}

impl Failure {
    fn msg(text: impl Into<String>) -> Failure {
        Failure::Message(text.into())
    }
}

type Outcome<T = ()> = Result<T, Failure>;

/// Runs a client command on a small runtime of its own and turns its outcome into the exit
/// code.
fn block_on(main: impl std::future::Future<Output = Outcome>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Message(m)) => {
            eprintln!("error: {m}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout at once (a closed pipe ends the command quietly).
fn out(text: &str) -> Outcome {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Failure::OutputClosed,
            _ => Failure::msg(format!("cannot write to standard output: {e}")),
        })
}

// ---------------------------------------------------------------------------------------------
// Reaching the gateway.

/// How requests get to the gateway.
enum Transport {
    /// Straight to its transformer API.
    Http {
        client: reqwest::Client,
        /// The URL without a trailing `/`; paths are appended.
        base: String,
    },
    /// Through the Kubernetes API server's proxy to the gateway's pod.
    Pod {
        client: kube::Client,
        /// `/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy`.
        prefix: String,
        /// `kubectl port-forward` arguments that reach the same port.
        forward: String,
        /// `-n NAMESPACE pod/NAME`, for the hints.
        pod: String,
    },
}

/// A gateway to talk to.
struct Conn {
    transport: Transport,
    /// What messages call it: its URL, or its Gateway and pod.
    shown: String,
    timeout: Duration,
}

/// An answer of the gateway whose body is read as it comes.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: ReplyBody,
}

enum ReplyBody {
    Http(reqwest::Response),
    Pod(kube::client::Body),
}

/// The error chain of `e`, `: `-separated, without repeating a message its cause repeats.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// True when a connection was refused somewhere in `e`'s chain.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A failure of `what`, a request to the Kubernetes API server at `server`.
fn kube_failure(server: &str, what: &str, e: &kube::Error) -> Failure {
    match e {
        kube::Error::Api(status) if status.code == 403 => Failure::msg(format!(
            "{what}: the Kubernetes API server refused (403): {} (--gateway needs `list` on pods and `get` on pods/proxy)",
            status.message
        )),
        kube::Error::Api(status) => Failure::msg(format!(
            "{what}: the Kubernetes API server answered {}: {}",
            status.code, status.message
        )),
        other => Failure::msg(format!(
            "{what}: cannot reach the Kubernetes API server at {server}: {}",
            chain(other)
        )),
    }
}

/// The URL the flags and the environment give.
fn base_url(url: Option<&str>) -> Outcome<String> {
    let url = match url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None => {
            let port = match env::var(env::TRANSFORMER_PORT) {
                None => env::DEFAULT_TRANSFORMER_PORT,
                Some(p) => p.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Failure::msg(format!(
                        "TRANSFORMER_PORT=`{p}` is not a port number: fix it, or give the gateway's address with --url"
                    ))
                })?,
            };
            format!("http://127.0.0.1:{port}")
        }
    };
    // `127.0.0.1:9300` is taken as http.
    let url = if url.contains("://") {
        url
    } else {
        format!("http://{url}")
    };
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(u) => {
            return Err(Failure::msg(format!(
                "--url `{url}`: the scheme `{}` is not http or https",
                u.scheme()
            )));
        }
        Err(e) => return Err(Failure::msg(format!("--url `{url}` is not a URL: {e}"))),
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl Conn {
    /// The gateway `target` names.
    async fn open(target: &Target, default_timeout: Duration) -> Outcome<Conn> {
        let timeout = target.timeout.unwrap_or(default_timeout);
        if let Some(name) = &target.gateway {
            return Conn::pod(name, target.namespace.as_deref(), timeout).await;
        }
        let base = base_url(target.url.as_deref())?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Failure::msg(format!("cannot make an HTTP client: {}", chain(&e))))?;
        Ok(Conn {
            shown: base.clone(),
            transport: Transport::Http { client, base },
            timeout,
        })
    }

    /// The pod of Gateway `name`, through the API server.
    async fn pod(name: &str, namespace: Option<&str>, timeout: Duration) -> Outcome<Conn> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, ListParams};

        let mut config = kube::Config::infer().await.map_err(|e| {
            Failure::msg(
                crate::cluster::ClusterError::Client(kube::Error::InferConfig(e)).to_string(),
            )
        })?;
        // A 503 is the gateway's answer (full) or the API server's (the pod cannot be
        // reached): this client decides what to do with it, not kube's retries.
        config.default_retry = false;
        let client = kube::Client::try_from(config.clone())
            .map_err(|e| Failure::msg(crate::cluster::ClusterError::Client(e).to_string()))?;
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| client.default_namespace().to_string());
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let selector = format!("{GATEWAY_LABEL}={name}");
        let list =
            tokio::time::timeout(timeout, pods.list(&ListParams::default().labels(&selector)))
                .await
                .map_err(|_| {
                    Failure::msg(format!(
                        "the Kubernetes API server at {server} did not answer within {}",
                        humantime::format_duration(timeout)
                    ))
                })?
                .map_err(|e| {
                    kube_failure(
                        &server,
                        &format!(
                            "cannot list the pods of Gateway `{name}` in namespace `{namespace}`"
                        ),
                        &e,
                    )
                })?;
        let phase = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Unknown".to_string())
        };
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let chosen = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running")
            .max_by_key(|p| (ready(p), p.metadata.creation_timestamp.clone()));
        let Some(pod) = chosen else {
            let seen = list
                .items
                .iter()
                .map(|p| {
                    format!(
                        "{} ({})",
                        p.metadata.name.as_deref().unwrap_or("?"),
                        phase(p)
                    )
                })
                .collect::<Vec<_>>();
            let seen = if seen.is_empty() {
                "there is none".to_string()
            } else {
                format!("there are: {}", seen.join(", "))
            };
            return Err(Failure::msg(format!(
                "no running pod of Gateway `{name}` in namespace `{namespace}` (pods labelled {selector}: {seen}): is the Gateway applied, and `portico controller` running? (`kubectl get gateways,pods -n {namespace}`)"
            )));
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        // The port the controller gave the gateway's containers.
        let port = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == env::TRANSFORMER_PORT)
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.trim().parse::<u16>().ok())
            .unwrap_or(env::DEFAULT_TRANSFORMER_PORT);
        Ok(Conn {
            shown: format!(
                "Gateway `{name}` in namespace `{namespace}` (pod {pod_name}, port {port}, through the API server at {server})"
            ),
            transport: Transport::Pod {
                client,
                prefix: format!("/api/v1/namespaces/{namespace}/pods/{pod_name}:{port}/proxy"),
                forward: format!("-n {namespace} pod/{pod_name} {port}"),
                pod: format!("-n {namespace} pod/{pod_name}"),
            },
            timeout,
        })
    }

    /// Whether requests go through the API server (which keeps `Authorization` for itself).
    fn proxied(&self) -> bool {
        matches!(self.transport, Transport::Pod { .. })
    }

    /// Sends one request; `path` starts with `/` and may carry a query.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Outcome<Reply> {
        match &self.transport {
            Transport::Http { client, base } => {
                let mut req = client
                    .request(method, format!("{base}{path}"))
                    .headers(headers);
                if let Some(body) = body {
                    req = req.body(body);
                }
                match req.send().await {
                    Ok(r) => Ok(Reply {
                        status: r.status().as_u16(),
                        headers: r.headers().clone(),
                        body: ReplyBody::Http(r),
                    }),
                    Err(e) if refused(&e) => Err(Failure::msg(format!(
                        "no gateway answers at {base} (connection refused): is `portico run` running, on this port? Give its address with --url or PORTICO_URL"
                    ))),
                    Err(e) => Err(Failure::msg(format!(
                        "cannot reach the gateway at {base}: {}",
                        chain(&e)
                    ))),
                }
            }
            Transport::Pod { client, prefix, .. } => {
                let mut builder = http::Request::builder()
                    .method(method)
                    .uri(format!("{prefix}{path}"));
                if let Some(h) = builder.headers_mut() {
                    h.extend(headers);
                }
                let body = body.map_or_else(kube::client::Body::empty, Into::into);
                let req = builder
                    .body(body)
                    .map_err(|e| Failure::msg(format!("cannot build the request: {e}")))?;
                match client.send(req).await {
                    Ok(r) => {
                        let (parts, body) = r.into_parts();
                        Ok(Reply {
                            status: parts.status.as_u16(),
                            headers: parts.headers,
                            body: ReplyBody::Pod(body),
                        })
                    }
                    Err(e) => Err(Failure::msg(format!(
                        "cannot reach the Kubernetes API server for {}: {}",
                        self.shown,
                        chain(&e)
                    ))),
                }
            }
        }
    }

    /// Sends one request and reads the whole answer, within the timeout.
    async fn fetch(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Outcome<(u16, HeaderMap, Bytes)> {
        let exchange = async {
            let mut reply = self.send(method, path, headers, body).await?;
            let body = reply.bytes(&self.shown).await?;
            Ok::<_, Failure>((reply.status, reply.headers, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure::msg(format!(
                "{} did not answer within {} (--timeout)",
                self.shown,
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    /// A failure for a non-2xx answer to `what`: the gateway's reason and what to do.
    /// `token` is the token file the request carried, if any.
    fn refusal(
        &self,
        what: &str,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        token: Option<&Path>,
    ) -> Failure {
        if let Transport::Pod { pod, .. } = &self.transport
            && let Some(m) = api_server_status(headers, body)
        {
            let hint = match status {
                403 => " (--gateway needs `get` on pods/proxy)".to_string(),
                500.. => format!(": is the gateway up in its pod? (`kubectl logs {pod}`)"),
                _ => String::new(),
            };
            return Failure::msg(format!(
                "{what}: the Kubernetes API server answered {status}: {m}{hint}"
            ));
        }
        let reason = reason(body);
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        };
        let forward = match &self.transport {
            Transport::Pod { forward, .. } => Some(forward),
            Transport::Http { .. } => None,
        };
        match (status, forward, token) {
            (401, Some(forward), _) => Failure::msg(format!(
                "{what}: the gateway wants its ingest token (401), which cannot pass through the Kubernetes API server (it keeps the Authorization header for itself): run `kubectl port-forward {forward}` and give --url http://127.0.0.1:PORT and --token-file"
            )),
            (401, None, Some(file)) => Failure::msg(format!(
                "{what}: the gateway refused the ingest token in {} (401{reason}): give the file the gateway reads (`portico run --ingest-token-file FILE`)",
                file.display()
            )),
            (401, None, None) => Failure::msg(format!(
                "{what}: the gateway wants its ingest token (401{reason}): give the file it reads (`portico run --ingest-token-file FILE`) with --token-file FILE or PORTICO_INGEST_TOKEN_FILE"
            )),
            (404, _, _) => Failure::msg(format!(
                "{what}: {} answered 404 (not found): is it a portico gateway, and one recent enough to serve this?{reason}",
                self.shown
            )),
            _ => Failure::msg(format!("{what}: the gateway answered {status}{reason}")),
        }
    }
}

impl Reply {
    /// The next piece of the body, `None` at its end.
    async fn chunk(&mut self, shown: &str) -> Outcome<Option<Bytes>> {
        match &mut self.body {
            ReplyBody::Http(r) => r
                .chunk()
                .await
                .map_err(|e| Failure::msg(format!("reading the answer of {shown}: {}", chain(&e)))),
            ReplyBody::Pod(body) => {
                use http_body_util::BodyExt as _;
                loop {
                    match body.frame().await {
                        None => return Ok(None),
                        Some(Err(e)) => {
                            return Err(Failure::msg(format!(
                                "reading the answer of {shown}: {}",
                                chain(&e)
                            )));
                        }
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                return Ok(Some(data));
                            }
                        }
                    }
                }
            }
        }
    }

    /// The whole body.
    async fn bytes(&mut self, shown: &str) -> Outcome<Bytes> {
        let mut all = Vec::new();
        while let Some(c) = self.chunk(shown).await? {
            all.extend_from_slice(&c);
        }
        Ok(all.into())
    }
}

/// The message of a Kubernetes `Status` object (an error of the API server itself, not of the
/// gateway behind it).
fn api_server_status(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !json {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    (v["kind"] == "Status").then(|| v["message"].as_str().unwrap_or("(no message)").to_string())
}

/// A reason the gateway gave, on one line and not too long.
fn reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// `Authorization: Bearer <token>` from `file`, when one is given and the request goes
/// straight to the gateway.
fn token_header(conn: &Conn, file: Option<&Path>) -> Outcome<HeaderMap> {
    let mut headers = HeaderMap::new();
    let Some(file) = file.filter(|f| !f.as_os_str().is_empty()) else {
        return Ok(headers);
    };
    if conn.proxied() {
        // The API server would take it as a credential for itself.
        return Ok(headers);
    }
    let secret = crate::secret::SecretSource::File(file.to_path_buf())
        .load()
        .map_err(|e| {
            Failure::msg(format!(
                "the ingest token (--token-file, PORTICO_INGEST_TOKEN_FILE): {}",
                e.message()
            ))
        })?;
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(secret.expose());
    let mut value = HeaderValue::from_bytes(&value).map_err(|_| {
        Failure::msg(format!(
            "the ingest token in {} holds characters a header cannot carry",
            file.display()
        ))
    })?;
    value.set_sensitive(true);
    headers.insert(header::AUTHORIZATION, value);
    Ok(headers)
}

/// JSON text indented as `serde_json`'s pretty printer does, its keys and numbers kept as
/// they are. `text` must be valid JSON.
fn pretty_json(text: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// `body` as JSON, or a failure naming `what`.
fn json_body(what: &str, body: &[u8]) -> Outcome<Value> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::msg(format!(
            "{what}: the answer is not JSON ({e}): {}",
            reason(body)
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Tables.

/// Columns padded to their widest cell, but the last.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}   ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `time` (RFC 3339) was, as `kubectl` says it: `42s`, `5m`, `3h`, `2d`.
fn age(time: &Value, now: DateTime<Utc>) -> String {
    let Some(t) = time
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return "?".to_string();
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A string field, or `-`.
fn field(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => one_line(s),
        other => other.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// What `status` prints as a table.
fn status_table(status: &Value, now: DateTime<Utc>) -> String {
    let g = &status["gateway"];
    let watchers = g["watchers"]
        .as_array()
        .map(|w| w.iter().map(field).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut out = format!(
        "Gateway {} in namespace {}: type {}, processor {}, up {}{}\nWatchers: {}\n",
        field(&g["name"]),
        field(&g["namespace"]),
        field(&g["type"]),
        field(&g["processor"]),
        age(&g["startedAt"], now),
        match &g["replica"] {
            Value::String(r) if !r.is_empty() => format!(", replica {r}"),
            _ => String::new(),
        },
        if watchers.is_empty() {
            "none".to_string()
        } else {
            watchers.join(", ")
        }
    );
    let outbox = &status["outbox"];
    if outbox.is_object() {
        let _ = writeln!(
            out,
            "Outbox: {} of {} in {}",
            outbox["bytes"].as_u64().map_or("?".to_string(), size),
            outbox["maxBytes"].as_u64().map_or("?".to_string(), size),
            field(&outbox["dir"]),
        );
        if let Some(e) = outbox["lastError"].as_str() {
            let _ = writeln!(out, "Outbox: the last write failed: {}", one_line(e));
        }
    }
    out.push('\n');
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.is_empty() {
        out.push_str("No configurations.\n");
        return out;
    }
    let mut rows = vec![
        ["NAME", "PHASE", "RESTARTS", "AGE", "UPDATED", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &nodes {
        rows.push(vec![
            field(&n["name"]),
            field(&n["phase"]),
            field(&n["restarts"]),
            age(&n["startedAt"], now),
            age(&n["updatedAt"], now),
            match &n["message"] {
                Value::String(s) if s.is_empty() => String::new(),
                m => field(m),
            },
        ]);
    }
    out.push_str(&table(&rows));
    out
}

// ---------------------------------------------------------------------------------------------
// The commands.

/// `portico status`.
pub(crate) fn status(args: StatusArgs) -> ExitCode {
    block_on(async move {
        let conn = Conn::open(&args.target, DEFAULT_TIMEOUT).await?;
        let (code, headers, body) = conn
            .fetch(Method::GET, "/status", HeaderMap::new(), None)
            .await?;
        if !(200..300).contains(&code) {
            return Err(conn.refusal("GET /status", code, &headers, &body, None));
        }
        let value = json_body("GET /status", &body)?;
        match args.output {
            StatusFormat::Json => {
                let text = String::from_utf8_lossy(&body);
                out(&format!("{}\n", pretty_json(text.trim())))
            }
            StatusFormat::Yaml => {
                let yaml = serde_saphyr::to_string(&value)
                    .map_err(|e| Failure::msg(format!("cannot write the status as YAML: {e}")))?;
                out(&yaml)
            }
            StatusFormat::Table => out(&status_table(&value, Utc::now())),
        }
    })
}

/// Server-sent events read from a byte stream.
#[derive(Default)]
struct SseReader {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseReader {
    /// Takes `chunk`; returns the events it completed: (event name, data).
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if self.has_data {
                    let name = std::mem::take(&mut self.event);
                    let name = if name.is_empty() {
                        "message".to_string()
                    } else {
                        name
                    };
                    done.push((name, std::mem::take(&mut self.data)));
                }
                self.event.clear();
                self.data.clear();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match name {
                "event" => self.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        done
    }
}

/// One event as `tail` prints it in text: time, source, subject, type, id.
fn tail_line(event: &Value) -> String {
    [
        &event["time"],
        &event["source"],
        &event["subject"],
        &event["type"],
        &event["id"],
    ]
    .map(field)
    .join("  ")
}

/// `portico tail`.
pub(crate) fn tail(args: TailArgs) -> ExitCode {
    block_on(async move {
        let conn = Conn::open(&args.target, DEFAULT_TIMEOUT).await?;
        let path = match &args.filter {
            Some(f) => format!(
                "/events?filter={}",
                percent_encoding::utf8_percent_encode(f, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => "/events".to_string(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let mut reply =
            tokio::time::timeout(conn.timeout, conn.send(Method::GET, &path, headers, None))
                .await
                .map_err(|_| {
                    Failure::msg(format!(
                        "{} did not answer within {} (--timeout)",
                        conn.shown,
                        humantime::format_duration(conn.timeout)
                    ))
                })??;
        if !(200..300).contains(&reply.status) {
            let body = tokio::time::timeout(conn.timeout, reply.bytes(&conn.shown))
                .await
                .unwrap_or(Ok(Bytes::new()))
                .unwrap_or_default();
            return Err(conn.refusal("GET /events", reply.status, &reply.headers, &body, None));
        }
        eprintln!(
            "following the events of {}{} (Ctrl-C to stop)",
            conn.shown,
            args.filter
                .as_deref()
                .map(|f| format!(" that contain `{f}`"))
                .unwrap_or_default()
        );
        if args.count == Some(0) {
            return Ok(());
        }
        let mut reader = SseReader::default();
        let mut printed = 0u64;
        while let Some(chunk) = reply.chunk(&conn.shown).await? {
            for (name, data) in reader.push(&chunk) {
                if name == "lagged" {
                    eprintln!(
                        "warning: {} event(s) went by while this tail could not keep up",
                        data.trim()
                    );
                    continue;
                }
                if name != "cloudevent" && name != "message" {
                    continue;
                }
                let line = match args.output {
                    TailFormat::Json => one_line(&data),
                    TailFormat::Text => match serde_json::from_str::<Value>(&data) {
                        Ok(v) => tail_line(&v),
                        Err(_) => one_line(&data),
                    },
                };
                out(&format!("{line}\n"))?;
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
        }
        Err(Failure::msg(format!(
            "{} ended the event stream (did the gateway stop?)",
            conn.shown
        )))
    })
}

/// What `send` posts: the body, its content type, and what to say once it is accepted.
struct Posting {
    body: Vec<u8>,
    content_type: &'static str,
    /// One line per event, for the confirmation.
    events: Vec<Value>,
    /// The raw form: the gateway makes the CloudEvent.
    raw_src: Option<String>,
}

/// The posting of a JSON text given with --json or --file.
fn posting_from_json(text: &[u8], from: &str) -> Outcome<Posting> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| Failure::msg(format!("{from} is not JSON: {e}")))?;
    match &value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(Failure::msg(format!("{from}: the batch holds no event")));
            }
            Ok(Posting {
                body: text.to_vec(),
                content_type: "application/cloudevents-batch+json",
                events: items.clone(),
                raw_src: None,
            })
        }
        Value::Object(o) if o.contains_key("specversion") => Ok(Posting {
            body: text.to_vec(),
            content_type: "application/cloudevents+json",
            events: vec![value.clone()],
            raw_src: None,
        }),
        Value::Object(o) if o.contains_key("src") && o.contains_key("payload") => Ok(Posting {
            body: text.to_vec(),
            content_type: "application/json",
            events: Vec::new(),
            raw_src: Some(field(&o["src"])),
        }),
        Value::Object(_) => Err(Failure::msg(format!(
            "{from}: neither a CloudEvent (it has no `specversion`) nor the raw form {{\"src\", \"payload\"}}"
        ))),
        _ => Err(Failure::msg(format!(
            "{from}: expected a JSON object (a CloudEvent) or an array of them (a batch)"
        ))),
    }
}

/// The CloudEvent the attribute flags describe.
fn event_from_flags(args: &SendArgs) -> Outcome<CloudEvent> {
    let invalid = |e: crate::cloudevents::Error| Failure::msg(format!("the event: {e}"));
    let mut event = CloudEvent::new(
        args.id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        args.source.clone().unwrap_or_default(),
        args.ty.clone().unwrap_or_default(),
    );
    event.subject = args.subject.clone();
    event.dataschema = args.data_schema.clone();
    event.time = Some(match &args.time {
        None => Utc::now(),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| Failure::msg(format!("--time `{t}` is not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc),
    });
    if let Some(data) = &args.data {
        let ct = args.data_content_type.clone();
        let looks_json = serde_json::from_str::<&serde_json::value::RawValue>(data).is_ok();
        let (data, ct) = match ct {
            Some(ct) if is_json_content_type(&ct) => {
                let d = Data::json(Bytes::from(data.clone().into_bytes())).map_err(|e| {
                    Failure::msg(format!(
                        "--data is not JSON, but --data-content-type says `{ct}`: {e}"
                    ))
                })?;
                (d, ct)
            }
            Some(ct) => (Data::Text(data.clone()), ct),
            None if looks_json => (
                Data::json(Bytes::from(data.clone().into_bytes())).map_err(invalid)?,
                "application/json".to_string(),
            ),
            None => (Data::Text(data.clone()), "text/plain".to_string()),
        };
        event.data = Some(data);
        event.datacontenttype = Some(ct);
    }
    for ext in &args.extensions {
        let Some((name, value)) = ext.split_once('=') else {
            return Err(Failure::msg(format!("--ext `{ext}`: expected NAME=VALUE")));
        };
        let name = ExtensionName::new(name.trim()).map_err(invalid)?;
        event
            .extensions
            .insert(name, ExtensionValue::from(value.to_string()));
    }
    event.validate().map_err(invalid)?;
    Ok(event)
}

/// The number of events of a batch the gateway accepted before it refused the rest (it says
/// `accepted N of M events of the batch; then: …`).
fn accepted_of_batch(body: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = text.trim_start().strip_prefix("accepted ")?;
    let (n, rest) = rest.split_once(' ')?;
    rest.starts_with("of ").then(|| n.parse().ok()).flatten()
}

/// How long `Retry-After` says to wait (seconds; an HTTP date or nothing: one second).
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .clamp(Duration::from_millis(100), MAX_RETRY_WAIT)
}

/// `portico send`.
pub(crate) fn send(args: SendArgs) -> ExitCode {
    block_on(async move {
        let mut posting = if let Some(json) = &args.json {
            posting_from_json(json.as_bytes(), "--json")?
        } else if let Some(file) = &args.file {
            let text = if file.as_os_str() == "-" {
                let mut text = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
                    .map_err(|e| Failure::msg(format!("cannot read the standard input: {e}")))?;
                text
            } else {
                std::fs::read(file)
                    .map_err(|e| Failure::msg(format!("cannot read {}: {e}", file.display())))?
            };
            posting_from_json(&text, &file.display().to_string())?
        } else {
            let event = event_from_flags(&args)?;
            let body = event.to_json();
            let shown = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Posting {
                body,
                content_type: "application/cloudevents+json",
                events: vec![shown],
                raw_src: None,
            }
        };
        let conn = Conn::open(&args.target, DEFAULT_TIMEOUT).await?;
        let mut headers = token_header(&conn, args.token.token_file.as_deref())?;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(posting.content_type),
        );
        let accepted = posting.events.clone();
        let mut attempt = 1;
        loop {
            let (code, answer_headers, body) = conn
                .fetch(
                    Method::POST,
                    "/",
                    headers.clone(),
                    Some(posting.body.clone()),
                )
                .await?;
            if (200..300).contains(&code) {
                break;
            }
            let token = args.token.token_file.as_deref();
            if code != 503
                || (conn.proxied() && api_server_status(&answer_headers, &body).is_some())
            {
                return Err(conn.refusal(
                    "the event was not accepted",
                    code,
                    &answer_headers,
                    &body,
                    token,
                ));
            }
            if attempt >= FULL_ATTEMPTS {
                let what = format!(
                    "the gateway is full: it refused the event {attempt} times (try again later)"
                );
                return Err(conn.refusal(&what, code, &answer_headers, &body, token));
            }
            // A batch refused part way: its first events are in; send only the others.
            if let Some(n) =
                accepted_of_batch(&body).filter(|n| *n > 0 && *n < posting.events.len())
            {
                let rest: Vec<Value> = posting.events.split_off(n);
                posting.body = serde_json::to_vec(&rest).unwrap_or_default();
                posting.events = rest;
            }
            let wait = retry_after(&answer_headers);
            eprintln!(
                "the gateway is full (503: {}); trying again in {}",
                reason(&body),
                humantime::format_duration(wait)
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
        if let Some(src) = posting.raw_src {
            return out(&format!("accepted: a raw event of src {src}\n"));
        }
        let mut text = String::new();
        if accepted.len() > 1 {
            let _ = writeln!(text, "accepted {} events:", accepted.len());
        }
        for e in &accepted {
            let _ = writeln!(
                text,
                "accepted: id {}, type {}, source {}{}",
                field(&e["id"]),
                field(&e["type"]),
                field(&e["source"]),
                match &e["subject"] {
                    Value::String(s) => format!(", subject {s}"),
                    _ => String::new(),
                }
            );
        }
        out(&text)
    })
}

/// `portico dead-letters …`.
pub(crate) fn dead_letters(command: DeadLetters) -> ExitCode {
    match command {
        DeadLetters::List { target, output } => block_on(list_dead_letters(target, output)),
        DeadLetters::Redrive {
            target,
            token,
            all,
            ids,
        } => block_on(redrive(target, token, all, ids)),
    }
}

async fn list_dead_letters(target: Target, output: ListFormat) -> Outcome {
    let conn = Conn::open(&target, DEFAULT_TIMEOUT).await?;
    let (code, headers, body) = conn
        .fetch(Method::GET, "/dead-letters", HeaderMap::new(), None)
        .await?;
    if code == 409 && api_server_status(&headers, &body).is_none() {
        return Err(Failure::msg(format!(
            "the dead letters cannot be listed: {}",
            reason(&body)
        )));
    }
    if !(200..300).contains(&code) {
        return Err(conn.refusal("GET /dead-letters", code, &headers, &body, None));
    }
    let value = json_body("GET /dead-letters", &body)?;
    if output == ListFormat::Json {
        let text = String::from_utf8_lossy(&body);
        return out(&format!("{}\n", pretty_json(text.trim())));
    }
    let destinations = value["destinations"]
        .as_array()
        .map(|d| d.iter().map(field).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let letters = value["deadLetters"].as_array().cloned().unwrap_or_default();
    let mut text = String::new();
    if letters.is_empty() {
        let _ = writeln!(text, "No dead letters (in {destinations}).");
        return out(&text);
    }
    let _ = writeln!(
        text,
        "{} dead letter(s) in {destinations}:\n",
        letters.len()
    );
    let mut rows = vec![
        ["ID", "WATCHER", "TYPE", "SOURCE", "TIME", "REASON"]
            .map(String::from)
            .to_vec(),
    ];
    for l in &letters {
        rows.push(vec![
            field(&l["id"]),
            field(&l["deadletterwatcher"]),
            field(&l["type"]),
            field(&l["source"]),
            field(&l["time"]),
            field(&l["deadletterreason"]),
        ]);
    }
    text.push_str(&table(&rows));
    if let Some(n) = value["unreadable"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(
            text,
            "\n{n} line(s) of the dead-letter files are not JSON (a torn write?): left as they are"
        );
    }
    out(&text)
}

async fn redrive(target: Target, token: TokenArg, all: bool, ids: Vec<String>) -> Outcome {
    let conn = Conn::open(&target, DEFAULT_REDRIVE_TIMEOUT).await?;
    let mut headers = token_header(&conn, token.token_file.as_deref())?;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let request = if all {
        serde_json::json!({"all": true})
    } else {
        serde_json::json!({"ids": ids})
    };
    let (code, answer_headers, body) = conn
        .fetch(
            Method::POST,
            "/dead-letters/redrive",
            headers,
            Some(request.to_string().into_bytes()),
        )
        .await?;
    if code == 409 && api_server_status(&answer_headers, &body).is_none() {
        return Err(Failure::msg(format!(
            "the dead letters cannot be redriven: {}",
            reason(&body)
        )));
    }
    if !(200..300).contains(&code) {
        return Err(conn.refusal(
            "the dead letters were not redriven",
            code,
            &answer_headers,
            &body,
            token.token_file.as_deref(),
        ));
    }
    let value = json_body("POST /dead-letters/redrive", &body)?;
    let list = |k: &str| value[k].as_array().cloned().unwrap_or_default();
    let (delivered, failed, missing) = (list("delivered"), list("failed"), list("missing"));
    let mut text = String::new();
    for id in &delivered {
        let _ = writeln!(text, "delivered  {}", field(id));
    }
    for f in &failed {
        let _ = writeln!(
            text,
            "failed     {} (watcher {}): {}",
            field(&f["id"]),
            field(&f["watcher"]),
            field(&f["reason"])
        );
    }
    for id in &missing {
        let _ = writeln!(text, "missing    {} (no such dead letter)", field(id));
    }
    if delivered.is_empty() && failed.is_empty() && missing.is_empty() {
        text.push_str("No dead letters to redrive.\n");
    } else {
        let _ = writeln!(
            text,
            "{} delivered (and removed from the dead letters), {} failed (kept), {} not found",
            delivered.len(),
            failed.len(),
            missing.len()
        );
    }
    out(&text)?;
    if failed.is_empty() && missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::msg(format!(
            "{} dead letter(s) not redriven",
            failed.len() + missing.len()
        )))
    }
}

/// The log filter of a client command: the Kubernetes client's own error lines (one per
/// 5xx answer) are left out, as the command says what went wrong, unless the filter names
/// it.
pub(crate) fn log_filter(filter: &str) -> String {
    if filter.contains("kube") {
        filter.to_string()
    } else {
        format!("{filter},kube_client=off")
    }
}

/// `portico completions SHELL`.
pub(crate) fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "portico", &mut script);
    match out(&String::from_utf8_lossy(&script)) {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Message(m)) => {
            eprintln!("error: {m}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_order_and_matches_serde() {
        let text = r#"{"z":1,"a":[],"m":{},"s":"a,b:{c}[\"]","n":[1,{"x":null}],"f":1.50}"#;
        let pretty = pretty_json(text);
        assert_eq!(
            serde_json::from_str::<Value>(&pretty).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert!(pretty.starts_with("{\n  \"z\": 1,\n  \"a\": [],\n  \"m\": {},"));
        assert!(pretty.contains("\"f\": 1.50"));
        let plain = r#"{"a":[1,2],"b":{"c":"d"}}"#;
        let v: Value = serde_json::from_str(plain).unwrap();
        assert_eq!(
            pretty_json(plain),
            serde_json::to_string_pretty(&v).unwrap()
        );
    }

    #[test]
    fn sse_events_across_chunks_and_comments() {
        let mut r = SseReader::default();
        assert!(r.push(b": keep-alive\n\nevent: cloud").is_empty());
        let got = r.push(b"event\r\ndata: {\"id\":1}\r\n\r\ndata: a\ndata: b\n\n");
        assert_eq!(
            got,
            vec![
                ("cloudevent".to_string(), "{\"id\":1}".to_string()),
                ("message".to_string(), "a\nb".to_string())
            ]
        );
    }

    #[test]
    fn batches_accepted_part_way() {
        assert_eq!(
            accepted_of_batch(b"accepted 3 of 10 events of the batch; then: full"),
            Some(3)
        );
        assert_eq!(accepted_of_batch(b"the gateway is full"), None);
    }

    #[test]
    fn urls_from_flags_and_defaults() {
        assert_eq!(
            base_url(Some("127.0.0.1:9400/")).unwrap(),
            "http://127.0.0.1:9400"
        );
        assert_eq!(
            base_url(Some("https://gw.example/prefix/")).unwrap(),
            "https://gw.example/prefix"
        );
        assert!(base_url(Some("ftp://x")).is_err());
    }

    #[test]
    fn ages_and_sizes() {
        let now = Utc::now();
        let t = |secs: i64| Value::String((now - chrono::Duration::seconds(secs)).to_rfc3339());
        assert_eq!(age(&t(5), now), "5s");
        assert_eq!(age(&t(600), now), "10m");
        assert_eq!(age(&t(3 * 3600), now), "3h");
        assert_eq!(age(&t(3 * 86400), now), "3d");
        assert_eq!(age(&Value::Null, now), "?");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
    }

    #[test]
    fn events_from_flags() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["send", "--type", "t", "--source", "/s"];
            argv.extend_from_slice(extra);
            #[derive(clap::Parser)]
            struct P {
                #[command(flatten)]
                send: SendArgs,
            }
            <P as clap::Parser>::try_parse_from(argv).map(|p| p.send)
        };
        let e = event_from_flags(&args(&["--data", "{\"a\":1}", "--ext", "team=pay"]).unwrap())
            .unwrap();
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert!(matches!(e.data, Some(Data::Json(_))));
        assert_eq!(e.extensions.len(), 1);
        assert!(uuid::Uuid::parse_str(&e.id).is_ok());
        let e = event_from_flags(&args(&["--data", "hello"]).unwrap()).unwrap();
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        assert!(event_from_flags(&args(&["--ext", "Bad=x"]).unwrap()).is_err());
        assert!(event_from_flags(&args(&["--ext", "id=x"]).unwrap()).is_err());
        assert!(
            event_from_flags(
                &args(&["--data", "nope", "--data-content-type", "application/json"]).unwrap()
            )
            .is_err()
        );
        // The attribute flags need --type and --source; --json stands alone.
        assert!(args(&["--json", "{}"]).is_err());
    }
}
