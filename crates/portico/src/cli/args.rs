//! Command-line arguments and logging shared by the `portico` binary and every user gateway
//! built on [`crate::run`]: the same flags, the same environment variables, the same logs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::runtime::RunOptions;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Logging flags.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "PORTICO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to log, as a tracing filter (`info`, `portico=debug,info`).
    #[arg(long, env = "PORTICO_LOG", default_value = "info", global = true)]
    pub log: String,
}

impl LogArgs {
    /// Installs the global subscriber; logs go to stderr so that stdout stays for events.
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let ansi = colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        );
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        // A second init (tests) keeps the first subscriber.
        let _ = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
    }
}

/// Whether log lines are coloured: only on a terminal (a file or a log collector gets plain
/// text), and never when `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Flags of a running gateway.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The gateway's files, as `kubectl apply -f` takes them: a file with the Gateway and the
    /// ConfigMap it names (multi-document YAML), or several files and directories holding
    /// them (every .yaml, .yml and .json file of a directory). Without any, in a cluster
    /// (`GATEWAY_NAMESPACE`, `GATEWAY_NAME` and `GATEWAY_PROCESSOR_CONFIG_MAP` set), the
    /// Gateway and its ConfigMap are read from the API server (in-cluster config or
    /// `KUBECONFIG`).
    #[arg(env = "PORTICO_GATEWAY_FILE", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Port of the transformer's HTTP API (ingest, health, metrics, status); 0 picks a free one.
    #[arg(long, env = "TRANSFORMER_PORT", default_value_t = crate::env::DEFAULT_TRANSFORMER_PORT)]
    pub transformer_port: u16,
    /// Address the transformer's HTTP API listens on. Beyond loopback, the ingest API needs
    /// `--ingest-token-file` (or `--insecure-listen`).
    #[arg(long, env = "TRANSFORMER_ADDRESS", default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// A file holding the bearer token `POST /` of the transformer's API requires
    /// (`Authorization: Bearer <token>`): a mounted Secret, read again when it changes. When
    /// the file does not exist, a random token is written there (mode 0600) for the processes
    /// that post events to read.
    #[arg(long, env = "PORTICO_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// Let the ingest API listen beyond loopback with no token: anyone who reaches the port
    /// can post events.
    #[arg(long, env = "PORTICO_INSECURE_LISTEN")]
    pub insecure_listen: bool,
    /// Largest body the ingest API takes, in bytes.
    #[arg(long, env = "PORTICO_BODY_LIMIT", default_value_t = crate::server::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// The transformer's API closes a connection that starts no request for this long (a
    /// client sending its head slowly, or idle).
    #[arg(long, env = "PORTICO_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// The transformer's API answers 408 to a request whose body does not arrive within this.
    #[arg(long, env = "PORTICO_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Connections the transformer's API serves at once; past it, the one idle the longest is
    /// closed to make room.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// How long an HTTP caller (ingest API, webhook, the HTTP style's `/event`) is held
    /// waiting for room in a full gateway before it gets 503 + `Retry-After` (`0s`: at once).
    #[arg(long, env = "PORTICO_ADMISSION_WAIT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub admission_wait: Duration,
    /// How long events in flight may take to be delivered at shutdown.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// How long a stopping configuration may take before its tasks are dropped.
    #[arg(long, env = "PORTICO_STOP_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_grace: Duration,
    /// The largest gateway file read, in bytes (a bigger one is refused, and the last good
    /// configurations keep running).
    #[arg(long, env = "PORTICO_MAX_FILE_SIZE", default_value_t = crate::spec::file::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_size: u64,
    /// Where a sensor watcher given by name only goes, as a URL template with `{name}` and
    /// `{namespace}` (in a cluster: `http://{name}-sensor-svc.{namespace}.svc:9300/`).
    #[arg(long, env = "PORTICO_SENSOR_URL", value_name = "TEMPLATE")]
    pub sensor_url: Option<String>,
    /// Where a gateway watcher given by name only goes, as a URL template with `{name}`,
    /// `{namespace}`, `{port}` and `{endpoint}` (in a cluster:
    /// `http://{name}-gateway-svc.{namespace}.svc:{port}{endpoint}`).
    #[arg(long, env = "PORTICO_GATEWAY_URL", value_name = "TEMPLATE")]
    pub gateway_url: Option<String>,
    /// Directory of the durable outbox (`atLeastOnce`), over `spec.delivery.outbox.path`.
    /// Default: `$XDG_STATE_HOME/portico/<namespace>/<gateway>/outbox`.
    #[arg(long, env = "PORTICO_OUTBOX_DIR")]
    pub outbox_dir: Option<PathBuf>,
}

impl GatewayArgs {
    /// These flags as run options.
    pub(crate) fn options(&self) -> RunOptions {
        let files: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|f| !f.as_os_str().is_empty())
            .cloned()
            .collect();
        let cluster = if files.is_empty() {
            crate::cluster::ClusterTarget::from_env()
        } else {
            None
        };
        RunOptions {
            files,
            cluster,
            listen: self.listen,
            ingest_token_file: self.ingest_token_file.clone(),
            insecure_listen: self.insecure_listen,
            transformer_port: self.transformer_port,
            body_limit: self.body_limit,
            http_limits: crate::http1::Limits {
                idle_timeout: self.idle_timeout,
                body_timeout: self.body_timeout,
                max_connections: self.max_connections,
            },
            admission_wait: self.admission_wait,
            drain_timeout: self.drain_timeout,
            stop_grace: self.stop_grace,
            outbox_dir: self.outbox_dir.clone(),
            max_file_size: self.max_file_size,
            sensor_url: self.sensor_url.clone(),
            gateway_url: self.gateway_url.clone(),
            senders: Default::default(),
            stores: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
