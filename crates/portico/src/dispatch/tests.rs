//! The dispatcher's promises: acceptance for every watcher or none, waiting for room,
//! ack after delivery, maxAge, replay after a restart, and the retry policy.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::error::BoxFuture;

/// Never takes an event (a retryable failure every time).
struct Refuses;
impl Sender for Refuses {
    fn send<'a>(&'a self, _: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async { Err(DeliveryError::retryable("503")) })
    }
}

/// Takes every event and remembers its id.
#[derive(Default)]
struct Takes(Mutex<Vec<String>>);
impl Sender for Takes {
    fn send<'a>(&'a self, e: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.0.lock().unwrap().push(e.id.clone());
        Box::pin(async { Ok(()) })
    }
}

fn event(i: usize) -> CloudEvent {
    CloudEvent::new(format!("id-{i}"), "g/s", "t")
}

fn entry(sender: Arc<dyn Sender>, retry: RetryPolicy, dead: &std::path::Path) -> WatcherEntry {
    WatcherEntry {
        name: "w".into(),
        sender,
        queue: QueueSettings {
            retry,
            ..QueueSettings::default()
        },
        dead_letter: Arc::new(DeadLetter::file(dead.to_path_buf())),
        moved_from: None,
    }
}

fn patient() -> RetryPolicy {
    RetryPolicy {
        max_attempts: usize::MAX,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_age: None,
    }
}

async fn until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Takes events only while its gate is open.
struct Gated(tokio::sync::watch::Receiver<bool>);
impl Sender for Gated {
    fn send<'a>(&'a self, _: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let mut open = self.0.clone();
        Box::pin(async move {
            let _ = open.wait_for(|o| *o).await;
            Ok(())
        })
    }
}

fn named(
    name: &str,
    sender: Arc<dyn Sender>,
    retry: RetryPolicy,
    dead: &std::path::Path,
) -> WatcherEntry {
    WatcherEntry {
        name: name.into(),
        ..entry(sender, retry, dead)
    }
}

#[tokio::test]
async fn ack_after_delivery_resolves_once_every_watcher_took_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let metrics = Metrics::new();
    let d = Dispatcher::start_with(
        vec![
            named("fast", Arc::new(Takes::default()), patient(), &dead),
            named("slow", Arc::new(Gated(gate_rx)), patient(), &dead),
        ],
        &metrics,
        &Delivery::AckAfterDelivery(OutboxOptions {
            dir: dir.path().join("outbox"),
            max_bytes: 1 << 20,
        }),
    )
    .unwrap();
    assert!(!d.never_waits());
    let delivered = d
        .accept(event(1).into(), Admission::NoWait, None, Ack::AfterDelivery)
        .await
        .unwrap();
    assert!(!delivered.is_done());
    let fast = metrics.for_watcher("fast").delivered;
    until(|| (fast.get() == 1).then_some(())).await;
    let mut waiting = tokio::spawn(delivered.wait());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut waiting)
            .await
            .is_err(),
        "resolved before the slow watcher took the event"
    );
    gate.send_replace(true);
    assert!(waiting.await.unwrap());
    // The broker keeps the event until the ack: nothing went to the outbox.
    assert_eq!(metrics.outbox.appends.get(), 0);
    // An event of a source that cannot ack still goes through the outbox.
    d.accept(event(2).into(), Admission::NoWait, None, Ack::OnAcceptance)
        .await
        .unwrap();
    assert_eq!(metrics.outbox.appends.get(), 1);
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

#[tokio::test]
async fn ack_after_delivery_counts_a_dead_letter_as_done_and_a_shutdown_as_not() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let give_up = RetryPolicy {
        max_attempts: 2,
        ..patient()
    };
    let metrics = Metrics::new();
    let opts = OutboxOptions {
        dir: dir.path().join("outbox"),
        max_bytes: 1 << 20,
    };
    let d = Dispatcher::start_with(
        vec![entry(Arc::new(Refuses), give_up, &dead)],
        &metrics,
        &Delivery::AckAfterDelivery(opts.clone()),
    )
    .unwrap();
    let delivered = d
        .accept(event(1).into(), Admission::NoWait, None, Ack::AfterDelivery)
        .await
        .unwrap();
    assert!(delivered.wait().await);
    let line = std::fs::read_to_string(&dead).unwrap();
    assert!(line.contains("id-1"), "{line}");
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );

    drop(d);
    // A watcher that never takes it, and the gateway stops: not done, do not ack.
    let d = Dispatcher::start_with(
        vec![entry(Arc::new(Refuses), patient(), &dead)],
        &metrics,
        &Delivery::AckAfterDelivery(OutboxOptions {
            dir: dir.path().join("outbox2"),
            ..opts
        }),
    )
    .unwrap();
    let delivered = d
        .accept(event(2).into(), Admission::NoWait, None, Ack::AfterDelivery)
        .await
        .unwrap();
    d.drain(Duration::from_millis(50), &CancellationToken::new())
        .await;
    assert!(!delivered.wait().await);
}

#[tokio::test]
async fn a_bounded_admission_waits_for_room_then_says_full() {
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let metrics = Metrics::new();
    let one = QueueSettings {
        queue_size: 1,
        concurrency: 1,
        retry: patient(),
        ..QueueSettings::default()
    };
    let d = Dispatcher::start(
        vec![("w".into(), Arc::new(Gated(gate_rx)) as Arc<dyn Sender>, one)],
        &metrics,
    );
    d.accept(event(1).into(), Admission::NoWait, None, Ack::OnAcceptance)
        .await
        .unwrap();
    // Full, and nothing frees a slot: refused when the wait is over, not before.
    let start = Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_millis(100);
    assert!(matches!(
        d.accept(
            event(2).into(),
            Admission::Until(until),
            None,
            Ack::OnAcceptance
        )
        .await,
        Err(DispatchError::Full { .. })
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
    // Room comes within the wait: accepted.
    let opener = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.send_replace(true);
        gate
    });
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    d.accept(
        event(3).into(),
        Admission::Until(until),
        None,
        Ack::OnAcceptance,
    )
    .await
    .unwrap();
    let _gate = opener.await.unwrap();
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

#[tokio::test]
async fn tracked_events_are_done_at_once_in_the_other_modes() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let metrics = Metrics::new();
    let d = Dispatcher::start_with(
        vec![entry(Arc::new(Refuses), patient(), &dead)],
        &metrics,
        &Delivery::AtLeastOnce(OutboxOptions {
            dir: dir.path().join("outbox"),
            max_bytes: 1 << 20,
        }),
    )
    .unwrap();
    let delivered = d
        .accept(event(1).into(), Admission::NoWait, None, Ack::AfterDelivery)
        .await
        .unwrap();
    assert!(delivered.is_done());
    assert_eq!(metrics.outbox.appends.get(), 1);
    d.drain(Duration::from_millis(10), &CancellationToken::new())
        .await;
}

#[tokio::test]
async fn an_event_older_than_max_age_goes_to_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let retry = RetryPolicy {
        max_age: Some(Duration::from_millis(200)),
        ..patient()
    };
    let metrics = Metrics::new();
    let d = Dispatcher::start_with(
        vec![entry(Arc::new(Refuses), retry, &dead)],
        &metrics,
        &Delivery::AtLeastOnce(OutboxOptions {
            dir: dir.path().join("outbox"),
            max_bytes: 1 << 20,
        }),
    )
    .unwrap();
    d.accept(event(1).into(), Admission::NoWait, None, Ack::OnAcceptance)
        .await
        .unwrap();
    let line = until(|| {
        std::fs::read_to_string(&dead)
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .await;
    let letter = CloudEvent::from_json(line.trim().as_bytes()).unwrap();
    assert_eq!(letter.id, "id-1");
    let json: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(
        json["deadletterreason"]
            .as_str()
            .unwrap()
            .contains("maxAge"),
        "{json}"
    );
    assert_eq!(json["deadletterwatcher"], "w");
    let counted = metrics.for_watcher("w").dead_lettered;
    until(|| (counted.get() == 1).then_some(())).await;
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

/// An `atLeastOnce` delivery in `dir` whose outbox holds events 0..`n`, which its watcher `w`
/// never took before the dispatcher stopped. Returns the delivery and the dead-letter file.
async fn left_in_the_outbox(dir: &std::path::Path, n: usize) -> (Delivery, std::path::PathBuf) {
    let dead = dir.join("dead.jsonl");
    let delivery = Delivery::AtLeastOnce(OutboxOptions {
        dir: dir.join("outbox"),
        max_bytes: 1 << 20,
    });
    let d = Dispatcher::start_with(
        vec![entry(Arc::new(Refuses), patient(), &dead)],
        &Metrics::new(),
        &delivery,
    )
    .unwrap();
    for i in 0..n {
        d.accept(event(i).into(), Admission::NoWait, None, Ack::OnAcceptance)
            .await
            .unwrap();
    }
    d.drain(Duration::from_millis(50), &CancellationToken::new())
        .await;
    (delivery, dead)
}

#[tokio::test]
async fn events_not_delivered_before_a_stop_are_replayed_at_the_next_start_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (delivery, dead) = left_in_the_outbox(dir.path(), 50).await;

    let takes = Arc::new(Takes::default());
    let d = Dispatcher::start_with(
        vec![entry(takes.clone(), patient(), &dead)],
        &Metrics::new(),
        &delivery,
    )
    .unwrap();
    let mut ids = until(|| {
        let ids = takes.0.lock().unwrap().clone();
        (ids.len() >= 50).then_some(ids)
    })
    .await;
    ids.sort();
    ids.dedup();
    let mut want: Vec<String> = (0..50).map(|i| format!("id-{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
    assert!(!dead.exists(), "nothing dead-lettered");
}

/// The retry loop.
mod retry {
    use super::*;

    /// Delivers a fresh event, retrying until `abort` is cancelled.
    async fn deliver(
        sender: &dyn Sender,
        event: &CloudEvent,
        policy: &RetryPolicy,
        abort: &CancellationToken,
        on_retry: impl FnMut(&DeliveryError, Duration),
    ) -> Result<(), DeliveryError> {
        deliver_with_retry(
            "test",
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
            "test",
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

/// Refuses every event for good (a 400) until it is switched on, then takes them in order.
#[derive(Default)]
struct Switch {
    on: std::sync::atomic::AtomicBool,
    took: Mutex<Vec<String>>,
}
impl Sender for Switch {
    fn send<'a>(&'a self, e: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let on = self.on.load(Ordering::SeqCst);
        if on {
            assert!(
                !e.extensions.contains_key("deadletterwatcher")
                    && !e.extensions.contains_key("deadletterreason"),
                "a redriven event keeps the dead-letter extensions"
            );
            self.took.lock().unwrap().push(e.id.clone());
        }
        Box::pin(async move {
            if on {
                Ok(())
            } else {
                Err(DeliveryError::permanent("400 Bad Request"))
            }
        })
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_to_their_watcher_once_it_takes_them() {
    use super::redrive::Which;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let switch = Arc::new(Switch::default());
    let metrics = Metrics::new();
    let d = Dispatcher::start_with(
        vec![entry(switch.clone(), patient(), &dead)],
        &metrics,
        &Delivery::AtMostOnce,
    )
    .unwrap();
    for i in 1..=3 {
        d.accept(event(i).into(), Admission::NoWait, None, Ack::OnAcceptance)
            .await
            .unwrap();
    }
    until(|| {
        let text = std::fs::read_to_string(&dead).unwrap_or_default();
        (text.lines().count() == 3).then_some(())
    })
    .await;
    let listing = d.dead_letters().await.unwrap();
    assert_eq!(listing.dead_letters.len(), 3);
    assert_eq!(listing.dead_letters[0]["deadletterwatcher"], "w");
    assert_eq!(
        listing.dead_letters[0]["deadletterreason"],
        "400 Bad Request"
    );

    // Still refused: nothing leaves the file, and the rest of that watcher is not tried.
    let report = d.redrive(&Which::All).await.unwrap();
    assert!(report.delivered.is_empty());
    assert_eq!(report.failed.len(), 3);
    assert!(report.failed[1].reason.contains("not tried"), "{report:?}");
    assert_eq!(std::fs::read_to_string(&dead).unwrap().lines().count(), 3);

    switch.on.store(true, Ordering::SeqCst);
    let ids = ["id-2", "id-9"].map(String::from).into_iter().collect();
    let report = d.redrive(&Which::Ids(ids)).await.unwrap();
    assert_eq!(report.delivered, ["id-2"]);
    assert_eq!(report.missing, ["id-9"]);
    let left = std::fs::read_to_string(&dead).unwrap();
    assert_eq!(left.lines().count(), 2);
    assert!(!left.contains("\"id-2\""), "{left}");

    // The watcher's workers take events concurrently, so the file's order is theirs; a
    // redrive keeps the file's order.
    let in_file: Vec<String> = left
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let report = d.redrive(&Which::All).await.unwrap();
    assert_eq!(report.delivered, in_file);
    let mut all = vec!["id-2".to_string()];
    all.extend(in_file);
    assert_eq!(*switch.took.lock().unwrap(), all);
    assert_eq!(std::fs::read_to_string(&dead).unwrap(), "");
    assert!(d.dead_letters().await.unwrap().dead_letters.is_empty());
}

#[tokio::test]
async fn dead_letters_that_go_only_to_the_log_cannot_be_listed() {
    let metrics = Metrics::new();
    let d = Dispatcher::start(
        vec![(
            "w".to_string(),
            Arc::new(Takes::default()) as Arc<dyn Sender>,
            QueueSettings::default(),
        )],
        &metrics,
    );
    let e = d.dead_letters().await.unwrap_err().to_string();
    assert!(
        e.contains("no watcher of this gateway writes its dead letters to a file"),
        "{e}"
    );
    assert!(e.contains("log"), "{e}");
}

fn filtered(sender: Arc<dyn Sender>, dead: &std::path::Path, cel: &str) -> WatcherEntry {
    let mut e = entry(sender, patient(), dead);
    let spec = crate::filter::FilterSpec::Cel(cel.into());
    e.queue.filter = Some(Arc::new(crate::filter::Filter::compile(&spec).unwrap()));
    e
}

#[tokio::test]
async fn a_watcher_gets_only_what_its_filter_passes_and_is_done_with_the_rest_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let delivery = Delivery::AtLeastOnce(OutboxOptions {
        dir: dir.path().join("outbox"),
        max_bytes: 1 << 20,
    });
    let metrics = Metrics::new();
    let takes = Arc::new(Takes::default());
    let d = Dispatcher::start_with(
        vec![filtered(takes.clone(), &dead, r#"id == "id-1""#)],
        &metrics,
        &delivery,
    )
    .unwrap();
    for i in 0..5 {
        d.accept(event(i).into(), Admission::NoWait, None, Ack::OnAcceptance)
            .await
            .unwrap();
    }
    until(|| (!takes.0.lock().unwrap().is_empty()).then_some(())).await;
    // Nothing is left outstanding in the outbox: the four filtered out were done at once.
    let outbox = d.outbox.clone().unwrap();
    until(|| (outbox.pending(0) == 0).then_some(())).await;
    assert_eq!(*takes.0.lock().unwrap(), ["id-1"]);
    assert_eq!(metrics.for_watcher("w").filtered.get(), 4);
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

#[tokio::test]
async fn a_replay_applies_the_filter_again() {
    let dir = tempfile::tempdir().unwrap();
    let (delivery, dead) = left_in_the_outbox(dir.path(), 5).await;

    let takes = Arc::new(Takes::default());
    let d = Dispatcher::start_with(
        vec![filtered(takes.clone(), &dead, r#"id == "id-2""#)],
        &Metrics::new(),
        &delivery,
    )
    .unwrap();
    let outbox = d.outbox.clone().unwrap();
    until(|| (outbox.pending(0) == 0 && !takes.0.lock().unwrap().is_empty()).then_some(())).await;
    assert_eq!(*takes.0.lock().unwrap(), ["id-2"]);
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

#[tokio::test]
async fn a_rate_limited_watcher_takes_every_event_paced_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let takes = Arc::new(Takes::default());
    let mut limited = entry(takes.clone(), patient(), &dir.path().join("dead.jsonl"));
    limited.queue.rate_limit = Some(crate::spec::RateLimitSettings {
        per_second: 40.0,
        burst: None,
    });
    let d = Dispatcher::start_with(vec![limited], &metrics, &Delivery::AtMostOnce).unwrap();
    let started = Instant::now();
    for i in 0..20 {
        d.accept(event(i).into(), Admission::NoWait, None, Ack::OnAcceptance)
            .await
            .unwrap();
    }
    until(|| (takes.0.lock().unwrap().len() == 20).then_some(())).await;
    // 20 events at 40/s with a burst of 1: the last leaves 19 periods after the first
    // (0.475 s); the bound is generous, the exact rate is a benchmark's.
    let spread = started.elapsed();
    assert!(spread >= Duration::from_millis(400), "{spread:?}");
    assert!(metrics.for_watcher("w").rate_limited.get() > 0.3);
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

/// Takes batches: refuses (retryably) every `fail_every`-th attempt, and remembers each
/// attempt's ids and whether it was taken.
struct Batches {
    fail_every: usize,
    attempts: Mutex<Vec<(Vec<String>, bool)>>,
}
impl Sender for Batches {
    fn send<'a>(&'a self, e: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.send_batch_owned(vec![e.id.clone()])
    }
    fn batches(&self) -> bool {
        true
    }
    fn send_batch<'a>(
        &'a self,
        events: &'a [&'a CloudEvent],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.send_batch_owned(events.iter().map(|e| e.id.clone()).collect())
    }
}
impl Batches {
    fn send_batch_owned(&self, ids: Vec<String>) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let mut attempts = self.attempts.lock().unwrap();
        let take = !(attempts.len() + 1).is_multiple_of(self.fail_every);
        attempts.push((ids, take));
        Box::pin(async move {
            if take {
                Ok(())
            } else {
                Err(DeliveryError::retryable("503"))
            }
        })
    }
}

/// Accepts `n` events for a batch watcher (`max_events` a batch) under `delivery`; every
/// attempt the watcher saw, once it took all `n`.
async fn batched(delivery: Delivery, n: usize, max_events: usize) -> Vec<(Vec<String>, bool)> {
    let dir = tempfile::tempdir().unwrap();
    let delivery = match delivery {
        Delivery::AtLeastOnce(_) => Delivery::AtLeastOnce(OutboxOptions {
            dir: dir.path().join("outbox"),
            max_bytes: 1 << 26,
        }),
        other => other,
    };
    let sender = Arc::new(Batches {
        fail_every: 3,
        attempts: Mutex::new(Vec::new()),
    });
    let mut w = entry(sender.clone(), patient(), &dir.path().join("dead.jsonl"));
    w.queue.batch = crate::spec::watchers::Batching {
        max_events,
        max_delay: Duration::from_millis(2),
    };
    let metrics = Metrics::new();
    let d = Dispatcher::start_with(vec![w], &metrics, &delivery).unwrap();
    for i in 0..n {
        d.accept(
            event(i).into(),
            Admission::Wait(None),
            None,
            Ack::OnAcceptance,
        )
        .await
        .unwrap();
    }
    until(|| (metrics.for_watcher("w").delivered.get() == n as u64).then_some(())).await;
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
    assert!(
        !dir.path().join("dead.jsonl").exists(),
        "nothing dead-lettered"
    );
    sender.attempts.lock().unwrap().clone()
}

/// What a batch watcher must see: batches of at most `max_events`; a refused batch tried
/// again as it was, before anything after it; the batches taken hold every event once, in the
/// order they were accepted.
fn assert_batches_in_order(attempts: &[(Vec<String>, bool)], n: usize, max_events: usize) {
    let mut taken = Vec::new();
    for (i, (ids, took)) in attempts.iter().enumerate() {
        assert!(
            !ids.is_empty() && ids.len() <= max_events,
            "batch {i}: {}",
            ids.len()
        );
        if *took {
            taken.extend(ids.iter().cloned());
        } else {
            assert_eq!(
                &attempts[i + 1].0,
                ids,
                "a refused batch is sent again as it was"
            );
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("id-{i}")).collect();
    assert_eq!(taken, want);
    assert!(
        attempts.len() < n,
        "events went in batches ({} attempts for {n} events)",
        attempts.len()
    );
}

#[tokio::test]
async fn a_batch_watcher_gets_batches_in_order_and_a_refused_one_again_whole() {
    for delivery in [
        Delivery::AtMostOnce,
        Delivery::AtLeastOnce(OutboxOptions {
            dir: std::path::PathBuf::new(),
            max_bytes: 0,
        }),
    ] {
        let attempts = batched(delivery.clone(), 2000, 50).await;
        assert_batches_in_order(&attempts, 2000, 50);
        assert!(
            attempts.iter().any(|(_, took)| !took),
            "{delivery:?}: some batches were refused"
        );
    }
}

#[tokio::test]
async fn a_lone_event_leaves_after_max_delay_in_a_batch_of_one() {
    let attempts = batched(Delivery::AtMostOnce, 1, 100).await;
    assert_eq!(attempts, vec![(vec!["id-0".to_string()], true)]);
}

/// A watcher `w` that takes events one at a time (`Takes`), its queue `queue_size` long, in an
/// `atLeastOnce` dispatcher with its outbox in `dir`.
fn one_at_a_time(
    dir: &std::path::Path,
    queue_size: usize,
    sender: Arc<dyn Sender>,
    metrics: &Metrics,
) -> Dispatcher {
    let mut w = entry(sender, patient(), &dir.join("dead.jsonl"));
    w.queue.queue_size = queue_size;
    w.queue.concurrency = 1;
    let delivery = Delivery::AtLeastOnce(OutboxOptions {
        dir: dir.join("outbox"),
        max_bytes: 1 << 24,
    });
    Dispatcher::start_with(vec![w], metrics, &delivery).unwrap()
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("id-{i}")).collect()
}

#[tokio::test]
async fn events_accepted_together_share_one_fsync_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let takes = Arc::new(Takes::default());
    let d = one_at_a_time(dir.path(), 1000, takes.clone(), &metrics);
    let events = (0..200).map(|i| (event(i), None)).collect();
    let (accepted, refused) = d.accept_all(events, Admission::NoWait).await;
    assert_eq!((accepted, refused.map(|e| e.to_string())), (200, None));
    assert_eq!(metrics.outbox.fsyncs.get(), 1, "one fsync for the request");
    assert_eq!(metrics.outbox.appends.get(), 200);
    until(|| (takes.0.lock().unwrap().len() == 200).then_some(())).await;
    assert_eq!(*takes.0.lock().unwrap(), ids(0..200));
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

#[tokio::test]
async fn events_accepted_together_past_a_short_queue_wait_for_room_in_order() {
    // The queue holds 5; the request has 40. What has room is queued before the rest waits,
    // so the watcher makes the room: holding 5 slots while waiting for a sixth never would.
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let takes = Arc::new(Takes::default());
    let d = one_at_a_time(dir.path(), 5, takes.clone(), &metrics);
    let events = (0..40).map(|i| (event(i), None)).collect();
    let until_at = tokio::time::Instant::now() + Duration::from_secs(10);
    let (accepted, refused) = d.accept_all(events, Admission::Until(until_at)).await;
    assert_eq!((accepted, refused.map(|e| e.to_string())), (40, None));
    until(|| (takes.0.lock().unwrap().len() == 40).then_some(())).await;
    assert_eq!(*takes.0.lock().unwrap(), ids(0..40));
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

#[tokio::test]
async fn events_accepted_together_without_room_are_a_prefix_and_the_rest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let d = one_at_a_time(dir.path(), 3, Arc::new(Gated(gate_rx)), &metrics);
    let events = (0..5).map(|i| (event(i), None)).collect();
    let (accepted, refused) = d.accept_all(events, Admission::NoWait).await;
    assert_eq!(accepted, 3);
    assert!(
        matches!(refused, Some(DispatchError::Full { .. })),
        "{refused:?}"
    );
    // The refused ones hold nothing back: once the three are delivered the outbox is done.
    gate.send_replace(true);
    let w = metrics.for_watcher("w");
    until(|| (w.delivered.get() == 3).then_some(())).await;
    assert_eq!(metrics.outbox.appends.get(), 3);
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}

#[tokio::test]
async fn an_event_is_queued_before_its_record_is_on_disk_and_delivered_if_its_source_goes() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let takes = Arc::new(Takes::default());
    let d = one_at_a_time(dir.path(), 10, takes.clone(), &metrics);
    let mut accept =
        Box::pin(d.accept(event(0).into(), Admission::NoWait, None, Ack::OnAcceptance));
    assert!(
        futures::poll!(accept.as_mut()).is_pending(),
        "accept waits for the disk"
    );
    // The client hung up while its record was being written: the event was queued already,
    // so it is delivered and written all the same.
    drop(accept);
    until(|| (takes.0.lock().unwrap().len() == 1).then_some(())).await;
    assert_eq!(*takes.0.lock().unwrap(), ids(0..1));
    until(|| (metrics.outbox.appends.get() == 1).then_some(())).await;
    assert_eq!(
        d.drain(Duration::from_secs(5), &CancellationToken::new())
            .await,
        0
    );
}
