//! The retry policy of deliveries: capped exponential backoff with jitter (backon).
//!
//! Only failures that another attempt may cure are retried: connection errors, timeouts,
//! 408, 429 and 5xx. A delivery that runs out of attempts is given up on, and the dispatcher
//! says so in a log line and a metric — never silently.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;

use super::Sender;
use crate::cloudevents::CloudEvent;
use crate::error::DeliveryError;
use crate::spec::watchers::RetryPolicy;

impl RetryPolicy {
    /// The waits between attempts: capped exponential backoff with jitter.
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff.max(self.initial_backoff))
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter()
    }
}

/// Delivers `event` through `sender`, retrying per `policy` until it succeeds, fails for good or
/// runs out of attempts; `on_retry` hears of every retry. For an event accepted `age` ago: with
/// `policy.max_age`, retries stop
/// once the event is that old, and the last failure is returned. It gives up when `aborted`
/// completes (a worker passes one cancellation future it keeps for all its deliveries, rather
/// than registering a new one per event). `json`, the event's JSON event format when it is
/// already written, goes to [`Sender::send_json`].
pub(crate) async fn deliver_with_retry(
    sender: &dyn Sender,
    event: &CloudEvent,
    json: Option<&Bytes>,
    policy: &RetryPolicy,
    age: Duration,
    aborted: impl Future<Output = ()>,
    mut on_retry: impl FnMut(&DeliveryError, Duration),
) -> Result<(), DeliveryError> {
    let expired = async {
        match policy.max_age {
            Some(max) => tokio::time::sleep(max.saturating_sub(age)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(aborted, expired);
    let gone = || DeliveryError::permanent("abandoned: the gateway is shutting down");
    let too_old = |last: Option<&DeliveryError>| {
        DeliveryError::permanent(format!(
            "not delivered within maxAge {}{}",
            humantime::format_duration(policy.max_age.unwrap_or_default()),
            last.map(|e| format!(" (last failure: {})", e.reason))
                .unwrap_or_default()
        ))
    };
    // The waits between attempts, made at the first failure: nearly every event is delivered
    // by its first attempt, which then costs no more than the attempt itself.
    let mut backoff = None;
    let mut last = None;
    loop {
        let attempt = match json {
            Some(json) => sender.send_json(event, json),
            None => sender.send(event),
        };
        let failure = tokio::select! {
            biased;
            _ = &mut aborted => return Err(gone()),
            r = attempt => match r {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            _ = &mut expired => return Err(too_old(last.as_ref())),
        };
        if !failure.retryable {
            return Err(failure);
        }
        let Some(wait) = backoff
            .get_or_insert_with(|| policy.backoff().build())
            .next()
        else {
            return Err(failure);
        };
        on_retry(&failure, wait);
        // Past `maxAge`, no retry: the expiry is checked before the wait's end.
        tokio::select! {
            biased;
            _ = &mut aborted => return Err(gone()),
            _ = &mut expired => return Err(too_old(Some(&failure))),
            _ = tokio::time::sleep(wait) => {}
        }
        last = Some(failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BoxFuture;
    use std::sync::Mutex;
    use tokio_util::sync::CancellationToken;

    /// Delivers a fresh event, retrying until `abort` is cancelled.
    async fn deliver(
        sender: &dyn Sender,
        event: &CloudEvent,
        policy: &RetryPolicy,
        abort: &CancellationToken,
        on_retry: impl FnMut(&DeliveryError, Duration),
    ) -> Result<(), DeliveryError> {
        deliver_with_retry(
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

    struct Script(Mutex<Vec<Result<(), DeliveryError>>>);
    impl Sender for Script {
        fn send<'a>(&'a self, _: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn event() -> CloudEvent {
        crate::pipeline::Transformer::new("g", "t", "1")
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
        let r = deliver(&s, &event(), &fast(5), &CancellationToken::new(), |_, _| {
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
        let r = deliver(&s, &event(), &fast(5), &CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r, Err(DeliveryError::permanent("400")));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let s = Script(Mutex::new(
            (0..3)
                .map(|_| Err(DeliveryError::retryable("503")))
                .collect(),
        ));
        let r = deliver(&s, &event(), &fast(3), &CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r, Err(DeliveryError::retryable("503")));
        assert!(s.0.lock().unwrap().is_empty());
    }

    /// Fails every attempt with a retryable error, counting them.
    struct Down(Mutex<usize>);
    impl Sender for Down {
        fn send<'a>(&'a self, _: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
            *self.0.lock().unwrap() += 1;
            Box::pin(async { Err(DeliveryError::retryable("503")) })
        }
    }

    #[tokio::test]
    async fn max_age_stops_the_retries_and_names_the_last_failure() {
        let s = Down(Mutex::new(0));
        let policy = RetryPolicy {
            max_attempts: usize::MAX,
            max_age: Some(Duration::from_millis(50)),
            ..fast(0)
        };
        let r = deliver(&s, &event(), &policy, &CancellationToken::new(), |_, _| {})
            .await
            .unwrap_err();
        assert!(!r.retryable);
        assert_eq!(
            r.reason,
            "not delivered within maxAge 50ms (last failure: 503)"
        );
        assert!(*s.0.lock().unwrap() >= 2, "it retried before giving up");
    }

    #[tokio::test]
    async fn an_event_already_too_old_gets_one_attempt_and_no_retry() {
        let s = Down(Mutex::new(0));
        let policy = RetryPolicy {
            max_age: Some(Duration::from_millis(50)),
            ..fast(5)
        };
        let r = deliver_with_retry(
            &s,
            &event(),
            None,
            &policy,
            Duration::from_secs(1),
            std::future::pending(),
            |_, _| {},
        )
        .await;
        assert_eq!(
            r,
            Err(DeliveryError::permanent(
                "not delivered within maxAge 50ms (last failure: 503)"
            ))
        );
        assert_eq!(*s.0.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn shutting_down_abandons_the_retries() {
        let s = Down(Mutex::new(0));
        let policy = RetryPolicy {
            max_attempts: usize::MAX,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            max_age: None,
        };
        let abort = CancellationToken::new();
        let r = deliver(&s, &event(), &policy, &abort, |_, _| abort.cancel()).await;
        assert_eq!(
            r,
            Err(DeliveryError::permanent(
                "abandoned: the gateway is shutting down"
            ))
        );
        assert_eq!(*s.0.lock().unwrap(), 1, "no attempt after the abort");
    }
}
