//! The NATS JetStream watcher: one CloudEvent, one JetStream publish in binary mode (`ce-*`
//! headers, `content-type`, the data as the payload, per the CloudEvents NATS binding), done
//! when JetStream acks it. Each of the watcher's workers awaits its own ack, so up to
//! `concurrency` publishes are in flight at once (a window of acks, not one at a time).
//!
//! The connection is made on the first send and kept; a failed connect or publish is a
//! retryable failure (the dispatcher's retries and the outbox take it from there). TLS and
//! credentials are the `nats` gateway's: a `tls` block, and a user and password, a token, a
//! credentials file or an nkey seed, read when the connection is made.

use async_nats::jetstream;
use portico::cloudevents::CloudEvent;
use portico::secret::redact_url;
use portico::watcher::{BoxFuture, DeliveryError, NatsDispatch, Sender};
use tokio::sync::OnceCell;

/// Publishes CloudEvents to a JetStream subject.
pub struct JetStreamSender {
    settings: NatsDispatch,
    context: OnceCell<jetstream::Context>,
}

impl JetStreamSender {
    /// A sender for `settings` (connects on first use).
    pub fn new(settings: NatsDispatch) -> JetStreamSender {
        JetStreamSender {
            settings,
            context: OnceCell::new(),
        }
    }

    async fn context(&self) -> Result<&jetstream::Context, DeliveryError> {
        self.context
            .get_or_try_init(|| async {
                let s = &self.settings;
                // Checked when the gateway's spec was read; an error here is a file that
                // could not be read, and a later send tries again.
                let failed = |e: String| {
                    DeliveryError::retryable(format!("cannot connect to NATS at {}: {e}", redact_url(&s.url)))
                };
                let tls = s.tls.as_ref().map(|t| t.check()).transpose().map_err(|e| failed(e.to_string()))?;
                let auth = s.auth().map_err(|e| failed(e.to_string()))?;
                let options = portico_gateways::nats::secure(async_nats::ConnectOptions::new(), tls.as_ref(), &auth)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let client = options.connect(&s.url).await.map_err(|e| failed(e.to_string()))?;
                let js = jetstream::new(client);
                if let Some(stream) = &s.stream {
                    js.get_or_create_stream(jetstream::stream::Config {
                        name: stream.clone(),
                        subjects: vec![s.subject.clone()],
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        DeliveryError::retryable(format!(
                            "JetStream stream `{stream}` over `{}`: {e}",
                            s.subject
                        ))
                    })?;
                }
                tracing::info!(url = %redact_url(&s.url), subject = %s.subject, "NATS JetStream watcher connected");
                Ok(js)
            })
            .await
    }
}

impl Sender for JetStreamSender {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let js = self.context().await?;
            let (attrs, body) = crate::binary_parts(event, "ce-");
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in &attrs {
                headers.insert(name.as_str(), value.as_str());
            }
            let subject = self.settings.subject.clone();
            let ack = js
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| DeliveryError::retryable(format!("JetStream publish: {e}")))?;
            ack.await
                .map_err(|e| DeliveryError::retryable(format!("JetStream ack: {e}")))?;
            Ok(())
        })
    }
}
