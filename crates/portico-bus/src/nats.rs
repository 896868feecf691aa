//! The NATS JetStream watcher: one CloudEvent, one JetStream publish in binary mode (`ce-*`
//! headers, `content-type`, the data as the payload, per the CloudEvents NATS binding), done
//! when JetStream acks it. Each of the watcher's workers awaits its own ack, so up to
//! `concurrency` publishes are in flight at once (a window of acks, not one at a time).
//!
//! The connection is made on the first send and kept; a failed connect or publish is a
//! retryable failure (the dispatcher's retries and the outbox take it from there). TLS and
//! credentials are the `nats` gateway's: a `tls` block, and a user and password, a token, a
//! credentials file or an nkey seed, read when the connection is made. When a file of the
//! `tls` block changes, the next send makes a new connection that uses it.

use async_nats::jetstream;
use portico::cloudevents::CloudEvent;
use portico::secret::redact_url;
use portico::security::{FILE_CHECK_EVERY, FileWatch};
use portico::watcher::{BoxFuture, DeliveryError, NatsDispatch, Sender};
use std::time::Instant;
use tokio::sync::Mutex;

/// Publishes CloudEvents to a JetStream subject.
pub struct JetStreamSender {
    settings: NatsDispatch,
    connection: Mutex<Option<Connection>>,
}

/// A connection made, and the TLS files as it read them.
struct Connection {
    js: jetstream::Context,
    files: FileWatch,
    checked: Instant,
}

impl JetStreamSender {
    /// A sender for `settings` (connects on first use).
    pub fn new(settings: NatsDispatch) -> JetStreamSender {
        JetStreamSender {
            settings,
            connection: Mutex::new(None),
        }
    }

    /// The connection's JetStream context: made on first use, and again when a TLS file
    /// changed since (looked at no more often than every [`FILE_CHECK_EVERY`]).
    async fn context(&self) -> Result<jetstream::Context, DeliveryError> {
        let mut connection = self.connection.lock().await;
        if let Some(c) = connection.as_mut()
            && c.checked.elapsed() >= FILE_CHECK_EVERY
        {
            c.checked = Instant::now();
            if let Some(changed) = c.files.changed() {
                tracing::info!(file = %changed.display(), "a TLS file of the NATS JetStream watcher changed; connecting again to use it");
                *connection = None;
            }
        }
        match &mut *connection {
            Some(c) => Ok(c.js.clone()),
            None => {
                let c = self.connect().await?;
                let js = c.js.clone();
                *connection = Some(c);
                Ok(js)
            }
        }
    }

    async fn connect(&self) -> Result<Connection, DeliveryError> {
        let s = &self.settings;
        // Checked when the gateway's spec was read; an error here is a file that
        // could not be read, and a later send tries again.
        let failed = |e: String| {
            DeliveryError::retryable(format!(
                "cannot connect to NATS at {}: {e}",
                redact_url(&s.url)
            ))
        };
        let tls = s
            .tls
            .as_ref()
            .map(|t| t.check())
            .transpose()
            .map_err(|e| failed(e.to_string()))?;
        let files = FileWatch::new(tls.as_ref().map(|t| t.files()).unwrap_or_default());
        let auth = s.auth().map_err(|e| failed(e.to_string()))?;
        let options =
            portico_gateways::nats::secure(async_nats::ConnectOptions::new(), tls.as_ref(), &auth)
                .await
                .map_err(|e| failed(e.to_string()))?;
        let client = options
            .connect(&s.url)
            .await
            .map_err(|e| failed(e.to_string()))?;
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
        Ok(Connection {
            js,
            files,
            checked: Instant::now(),
        })
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
