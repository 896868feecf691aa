//! The HTTP watcher: one pooled keep-alive client, one request per attempt.
//!
//! Events are written in structured mode by default (`application/cloudevents+json`), in
//! binary mode (`ce-*` headers, the data as body), or as the original's CloudEvents 0.1 JSON.
//! 2xx is delivered; connection errors, timeouts, 408, 429 and 5xx are retryable; any other
//! status is a permanent failure.

use std::time::Duration;

use http::StatusCode;

use super::{DeliveryError, Sender};
use crate::cloudevents::{self, CloudEvent};
use crate::executor::BoxFuture;
use crate::spec::Encoding;

/// The client every HTTP watcher of a gateway shares (pooled keep-alive connections).
pub fn shared_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends events to one URL.
pub struct HttpSender {
    client: reqwest::Client,
    url: reqwest::Url,
    encoding: Encoding,
    timeout: Duration,
    event_type_version: Option<String>,
}

impl HttpSender {
    /// A sender to `url`.
    pub fn new(
        client: reqwest::Client,
        url: &str,
        encoding: Encoding,
        timeout: Duration,
        event_type_version: Option<String>,
    ) -> Result<HttpSender, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("url `{url}`: {e}"))?;
        Ok(HttpSender {
            client,
            url,
            encoding,
            timeout,
            event_type_version,
        })
    }

    fn request(&self, event: &CloudEvent) -> reqwest::RequestBuilder {
        let (headers, body) = match self.encoding {
            Encoding::Structured => cloudevents::http::encode_structured(event),
            Encoding::Binary => cloudevents::http::encode_binary(event),
            Encoding::Legacy => {
                let mut h = http::HeaderMap::new();
                h.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                let body =
                    cloudevents::legacy::to_json_v01(event, self.event_type_version.as_deref());
                (h, bytes::Bytes::from(body))
            }
        };
        self.client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .timeout(self.timeout)
    }
}

/// Whether a status is worth another attempt.
pub fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

impl Sender for HttpSender {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let response = self.request(event).send().await.map_err(|e| {
                let what = if e.is_timeout() {
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    )
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    "request failed".to_string()
                };
                DeliveryError::retryable(format!("{what}: {e}"))
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let reason = format!("{} answered {status}", self.url);
            if retryable_status(status) {
                Err(DeliveryError::retryable(reason))
            } else {
                Err(DeliveryError::permanent(reason))
            }
        })
    }
}
