//! The gRPC style: the framework's side of a user's gRPC server.
//!
//! [`GrpcProcessor`] is a [`ConfigExecutor`], so the supervisor runs, stops and restarts gRPC
//! configurations exactly as it runs Rust ones. For each configuration it opens one
//! independent server stream on the user's server (`GatewayProcessor.RunGateway`, or
//! `Eventing.StartEventSource` for servers written for Argo Events' generic event source) and
//! dispatches every streamed event; it cancels the stream when the configuration stops.
//!
//! - Before running, `ValidateGateway` is asked (UNIMPLEMENTED counts as valid); an invalid
//!   answer makes the node `Error` with the server's reason until the configuration changes.
//! - A server that is not up yet, goes away or restarts (`UNAVAILABLE`, a broken connection)
//!   is waited for with capped exponential backoff; the node shows `Error` with the reason
//!   meanwhile and `Running` again once the stream is open.
//! - The stream ending OK marks the node `Completed`; `INVALID_ARGUMENT` (and the other
//!   answers that retrying cannot fix) marks it `Error` until the configuration changes;
//!   anything else is a failure that the supervisor restarts with backoff.

use std::sync::OnceLock;
use std::time::Duration;

use backon::BackoffBuilder;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{ConfigError, DispatchError};
use crate::event::Event;
use crate::executor::{ConfigContext, ConfigExecutor};
use crate::pipeline::Submit;
use crate::proto::argo_generic::eventing_client::EventingClient;
use crate::proto::argo_generic::{self, EventSource};
use crate::proto::v1::gateway_processor_client::GatewayProcessorClient;
use crate::proto::v1::{self as pb};
use crate::spec::GrpcProtocol;

/// How long `ValidateGateway` may take before the server counts as unreachable.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address of a gRPC server is not one.
#[derive(Debug, thiserror::Error)]
#[error("gRPC server address `{uri}` is not valid: {source}")]
pub(crate) struct BadAddress {
    uri: String,
    source: tonic::transport::Error,
}

/// Runs configurations on the user's gRPC server.
#[derive(Debug, Clone)]
pub(crate) struct GrpcProcessor {
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
    target: String,
    protocol: GrpcProtocol,
    retry_min: Duration,
    retry_max: Duration,
}

impl GrpcProcessor {
    /// A processor for the server listening on `127.0.0.1:port` (the user's server runs
    /// beside the framework: same pod, or a child of `portico run`), speaking `protocol`.
    pub(crate) fn new(port: u16, protocol: GrpcProtocol) -> Result<GrpcProcessor, BadAddress> {
        GrpcProcessor::for_uri(&format!("http://127.0.0.1:{port}"), protocol)
    }

    /// A processor for the server at `uri` (`http://host:port`), speaking `protocol`.
    fn for_uri(uri: &str, protocol: GrpcProtocol) -> Result<GrpcProcessor, BadAddress> {
        let endpoint = Endpoint::from_shared(uri.to_string())
            .map_err(|source| BadAddress {
                uri: uri.to_string(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Ok(GrpcProcessor {
            endpoint,
            channel: OnceLock::new(),
            target: uri.to_string(),
            protocol,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
        })
    }

    /// Sets the backoff between attempts to reach the server (default 200 ms doubling up to
    /// 5 s, with jitter).
    #[cfg(test)]
    pub(crate) fn with_retry(mut self, min: Duration, max: Duration) -> GrpcProcessor {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.retry_min)
            .with_max_delay(self.retry_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The channel to the server, made on first use (inside the runtime). It connects lazily
    /// and reconnects after the server restarts; every configuration's stream is its own
    /// HTTP/2 stream on it.
    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }

    fn request(ctx: &ConfigContext) -> pb::GatewayConfig {
        pb::GatewayConfig {
            id: ctx.id().to_string(),
            src: ctx.src().to_string(),
            config: ctx.config_for_server(),
            gateway: ctx.gateway().name().to_string(),
            namespace: ctx.gateway().namespace().to_string(),
        }
    }

    /// Asks the server whether the configuration is valid (portico protocol only).
    async fn validate_remote(&self, req: &pb::GatewayConfig) -> Result<Validity, Status> {
        if self.protocol != GrpcProtocol::Portico {
            return Ok(Validity::Valid);
        }
        let mut client = GatewayProcessorClient::new(self.channel());
        let mut request = tonic::Request::new(req.clone());
        request.set_timeout(VALIDATE_TIMEOUT);
        match client.validate_gateway(request).await {
            Ok(answer) => {
                let v = answer.into_inner();
                if v.valid {
                    Ok(Validity::Valid)
                } else if v.reason.trim().is_empty() {
                    Ok(Validity::Invalid(
                        "the gRPC server rejected the configuration (it gave no reason)".into(),
                    ))
                } else {
                    Ok(Validity::Invalid(v.reason))
                }
            }
            Err(s) if s.code() == Code::Unimplemented => Ok(Validity::Valid),
            Err(s) => Err(s),
        }
    }

    /// Opens the event stream of one configuration.
    async fn open(&self, req: &pb::GatewayConfig) -> Result<EventStream, Status> {
        match self.protocol {
            GrpcProtocol::Portico => {
                let mut client = GatewayProcessorClient::new(self.channel())
                    .max_decoding_message_size(usize::MAX);
                let stream = client.run_gateway(req.clone()).await?.into_inner();
                Ok(EventStream::Portico(stream))
            }
            GrpcProtocol::ArgoGeneric => {
                let mut client =
                    EventingClient::new(self.channel()).max_decoding_message_size(usize::MAX);
                let source = EventSource {
                    name: req.src.clone(),
                    config: req.config.clone().into_bytes(),
                };
                let stream = client.start_event_source(source).await?.into_inner();
                Ok(EventStream::ArgoGeneric(stream))
            }
        }
    }

    /// Streams one configuration's events until the server ends the stream, it fails, or
    /// the configuration stops.
    async fn pump(&self, ctx: &ConfigContext, mut stream: EventStream) -> StreamEnd {
        loop {
            let next = tokio::select! {
                biased;
                _ = ctx.stopped() => return StreamEnd::Stopped,
                n = stream.next() => n,
            };
            let event = match next {
                Ok(Some(event)) => event,
                Ok(None) => return StreamEnd::Completed,
                Err(status) => return StreamEnd::Failed(status),
            };
            // A full gateway slows the stream down (HTTP/2 flow control) in every mode.
            match ctx.submit(event, Submit::FLOW_CONTROLLED).await {
                Ok(_) => {}
                Err(DispatchError::Stopped) => return StreamEnd::Stopped,
                Err(e) => {
                    // One bad event must not end the configuration: it is counted as
                    // rejected by the pipeline and logged here.
                    tracing::warn!(src = %ctx.src(), "event from the gRPC server dropped: {e}");
                }
            }
        }
    }
}

enum Validity {
    Valid,
    Invalid(String),
}

enum StreamEnd {
    Stopped,
    Completed,
    Failed(Status),
}

/// A configuration's open stream, in either protocol.
enum EventStream {
    Portico(tonic::Streaming<pb::Event>),
    ArgoGeneric(tonic::Streaming<argo_generic::Event>),
}

impl EventStream {
    async fn next(&mut self) -> Result<Option<Event>, Status> {
        Ok(match self {
            EventStream::Portico(s) => s.message().await?.map(from_portico),
            EventStream::ArgoGeneric(s) => s.message().await?.map(|e| Event::new(e.payload)),
        })
    }
}

/// A streamed event as a raw [`Event`]: the server's content type (none when empty, never a
/// guess) and extensions.
fn from_portico(e: pb::Event) -> Event {
    let mut event = Event::new(e.data);
    if !e.content_type.trim().is_empty() {
        event.content_type = Some(e.content_type);
    }
    let mut extensions: Vec<(String, String)> = e.extensions.into_iter().collect();
    extensions.sort();
    event.extensions = extensions;
    event
}

/// What to do after the server answered with `status`.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The server is away or restarting: wait and try again.
    Retry,
    /// The configuration is wrong: stay `Error` until it changes.
    Invalid,
    /// Something else failed: let the supervisor restart it with backoff.
    Fail,
}

fn classify(status: &Status) -> Next {
    match status.code() {
        // A refused or broken connection comes as UNAVAILABLE, or as UNKNOWN/CANCELLED
        // when the connection dropped under an open stream (the server was killed).
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => Next::Retry,
        Code::ResourceExhausted | Code::Aborted => Next::Retry,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::NotFound
        | Code::AlreadyExists => Next::Invalid,
        Code::Ok | Code::Internal | Code::DataLoss => Next::Fail,
    }
}

/// A status as a node message: the code in the contract's words and the server's reason.
fn describe(status: &Status) -> String {
    let message = status.message().trim();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {message}", status.code())
    }
}

impl ConfigExecutor for GrpcProcessor {
    /// Only the server knows its configurations: it is asked in `start_config`.
    type Config = ();

    fn validate(&self, _ctx: &ConfigContext) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn start_config(&self, ctx: ConfigContext, (): ()) -> Result<(), ConfigError> {
        let req = GrpcProcessor::request(&ctx);
        let mut backoff = self.backoff();
        let what = match self.protocol {
            GrpcProtocol::Portico => "gRPC server",
            GrpcProtocol::ArgoGeneric => "gRPC server (argo-generic)",
        };
        loop {
            let attempt = async {
                match self.validate_remote(&req).await? {
                    Validity::Valid => {}
                    Validity::Invalid(reason) => return Ok(Err(reason)),
                }
                self.open(&req).await.map(Ok)
            };
            let status = tokio::select! {
                biased;
                _ = ctx.stopped() => return Ok(()),
                r = attempt => match r {
                    Ok(Ok(stream)) => {
                        ctx.running();
                        backoff = self.backoff();
                        tracing::debug!(src = %ctx.src(), "event stream open");
                        match self.pump(&ctx, stream).await {
                            StreamEnd::Stopped => return Ok(()),
                            StreamEnd::Completed => {
                                tracing::info!(src = %ctx.src(), "the {what} ended the event stream");
                                return Ok(());
                            }
                            StreamEnd::Failed(status) => status,
                        }
                    }
                    Ok(Err(reason)) => return Err(ConfigError::invalid(reason)),
                    Err(status) => status,
                },
            };
            let mut reason = format!("{what} at {}: {}", self.target, describe(&status));
            if status.code() == Code::Unimplemented {
                reason.push_str(match self.protocol {
                    GrpcProtocol::Portico => " (does the server implement portico.v1.GatewayProcessor? Servers written for Argo Events' generic event source need `spec.grpcProtocol: argo-generic`)",
                    GrpcProtocol::ArgoGeneric => " (does the server implement generic.Eventing? Portico servers need no `spec.grpcProtocol`)",
                });
            }
            match classify(&status) {
                Next::Invalid => return Err(ConfigError::invalid(reason)),
                Next::Fail => return Err(ConfigError::failed(reason)),
                Next::Retry => {}
            }
            let wait = backoff.next().unwrap_or(self.retry_max);
            tracing::warn!(
                src = %ctx.src(), retry_in_ms = wait.as_millis() as u64,
                "{reason}; retrying"
            );
            ctx.report_error(format!(
                "{reason} (retrying in {})",
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
            ));
            tokio::select! {
                _ = ctx.stopped() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_servers_content_type_and_extensions() {
        let e = from_portico(pb::Event {
            data: b"{}".to_vec(),
            content_type: "application/json".into(),
            extensions: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())]
                .into_iter()
                .collect(),
        });
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            e.extensions,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        let e = from_portico(pb::Event::default());
        assert_eq!(e.content_type, None);
    }

    #[test]
    fn statuses_map_to_the_contract() {
        assert_eq!(classify(&Status::unavailable("down")), Next::Retry);
        assert_eq!(classify(&Status::invalid_argument("bad")), Next::Invalid);
        assert_eq!(classify(&Status::internal("boom")), Next::Fail);
        assert_eq!(
            describe(&Status::invalid_argument("interval: missing")),
            "InvalidArgument: interval: missing"
        );
    }
}
