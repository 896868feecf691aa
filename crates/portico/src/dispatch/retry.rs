//! The retry policy of deliveries: capped exponential backoff with jitter (backon).
//!
//! Only failures that another attempt may cure are retried: connection errors, timeouts,
//! 408, 429 and 5xx. A delivery that runs out of attempts is given up on, and the dispatcher
//! says so in a log line and a metric — never silently.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{DeliveryError, Sender};
use crate::cloudevents::CloudEvent;
use crate::spec::RetrySettings;

/// How often and how patiently a delivery is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: usize,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Longest time an event is retried from its acceptance (no limit when `None`).
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_age: None,
        }
    }
}

impl RetryPolicy {
    /// This policy with the fields `settings` gives replaced.
    pub fn merged(&self, settings: Option<&RetrySettings>) -> RetryPolicy {
        let Some(s) = settings else {
            return self.clone();
        };
        RetryPolicy {
            max_attempts: s.max_attempts.unwrap_or(self.max_attempts).max(1),
            initial_backoff: s.initial_backoff.unwrap_or(self.initial_backoff),
            max_backoff: s.max_backoff.unwrap_or(self.max_backoff),
            max_age: s.max_age.or(self.max_age),
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff.max(self.initial_backoff))
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter()
    }
}

/// Delivers `event` through `sender`, retrying per `policy` until it succeeds, fails for good,
/// runs out of attempts, or `abort` is cancelled. `on_retry` hears of every retry.
pub async fn deliver_with_retry(
    sender: &dyn Sender,
    event: &CloudEvent,
    policy: &RetryPolicy,
    abort: &CancellationToken,
    on_retry: impl FnMut(&DeliveryError, Duration),
) -> Result<(), DeliveryError> {
    deliver_with_retry_aged(
        sender,
        event,
        None,
        policy,
        Duration::ZERO,
        abort.cancelled(),
        on_retry,
    )
    .await
}

/// [`deliver_with_retry`] for an event accepted `age` ago: with `policy.max_age`, retries stop
/// once the event is that old, and the last failure is returned. It gives up when `aborted`
/// completes (a worker passes one cancellation future it keeps for all its deliveries, rather
/// than registering a new one per event). `json`, the event's JSON event format when it is
/// already written, goes to [`Sender::send_json`].
pub async fn deliver_with_retry_aged(
    sender: &dyn Sender,
    event: &CloudEvent,
    json: Option<&Bytes>,
    policy: &RetryPolicy,
    age: Duration,
    aborted: impl Future<Output = ()>,
    mut on_retry: impl FnMut(&DeliveryError, Duration),
) -> Result<(), DeliveryError> {
    let last = std::sync::Mutex::new(None::<DeliveryError>);
    let attempts = (|| match json {
        Some(json) => sender.send_json(event, json),
        None => sender.send(event),
    })
    .retry(policy.backoff())
    .sleep(tokio::time::sleep)
    .when(|e: &DeliveryError| e.retryable)
    .notify(|e, d| {
        if let Ok(mut l) = last.lock() {
            *l = Some(e.clone());
        }
        on_retry(e, d)
    });
    let expired = async {
        match policy.max_age {
            Some(max) => tokio::time::sleep(max.saturating_sub(age)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = aborted => Err(DeliveryError::permanent("abandoned: the gateway is shutting down")),
        r = attempts => r,
        _ = expired => {
            let last = last.lock().ok().and_then(|mut l| l.take());
            let max = policy.max_age.unwrap_or_default();
            Err(DeliveryError::permanent(format!(
                "not delivered within maxAge {}{}",
                humantime::format_duration(max),
                last.map(|e| format!(" (last failure: {})", e.reason)).unwrap_or_default()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::BoxFuture;
    use std::sync::Mutex;

    struct Script(Mutex<Vec<Result<(), DeliveryError>>>);
    impl Sender for Script {
        fn send<'a>(&'a self, _: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn event() -> CloudEvent {
        crate::transform::Transformer::new("g", "t", "1")
            .transform("s", crate::Event::new(&b"x"[..]))
            .unwrap()
    }

    fn fast(max_attempts: usize) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_age: None,
        }
    }

    #[tokio::test]
    async fn retries_retryable_failures_until_success() {
        let s = Script(Mutex::new(vec![
            Err(DeliveryError::retryable("503")),
            Err(DeliveryError::retryable("503")),
            Ok(()),
        ]));
        let mut retries = 0;
        let r = deliver_with_retry(&s, &event(), &fast(5), &CancellationToken::new(), |_, _| {
            retries += 1
        })
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(retries, 2);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_failures() {
        let s = Script(Mutex::new(vec![
            Err(DeliveryError::permanent("400")),
            Ok(()),
        ]));
        let r =
            deliver_with_retry(&s, &event(), &fast(5), &CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r, Err(DeliveryError::permanent("400")));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let s = Script(Mutex::new(
            (0..3)
                .map(|_| Err(DeliveryError::retryable("503")))
                .collect(),
        ));
        let r =
            deliver_with_retry(&s, &event(), &fast(3), &CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r, Err(DeliveryError::retryable("503")));
        assert!(s.0.lock().unwrap().is_empty());
    }
}
