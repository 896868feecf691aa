//! Events per second over the last minutes, per configuration and per watcher: what the status
//! page draws (`GET /rates`).
//!
//! A task samples the counters every [`INTERVAL`] and keeps [`SAMPLES`] samples. A sample
//! holds only what moved since the one before, so a gateway with many quiet configurations
//! keeps little.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;

/// Time between two samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: five minutes.
pub(crate) const SAMPLES: usize = 150;

/// What moved in one interval.
struct Sample {
    /// When it was taken, ms since the epoch.
    at_ms: i64,
    /// Events received per configuration key (only those that received some).
    configurations: Vec<(Arc<str>, u64)>,
    /// Events delivered per watcher (by its index), every watcher.
    delivered: Vec<u64>,
}

/// The samples, and the totals the next one is counted from.
#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
    last_received: HashMap<Arc<str>, u64>,
    last_delivered: Vec<u64>,
    /// Whether the first sample (which only sets the totals) was taken.
    started: bool,
}

/// The recent rates of one gateway.
pub(crate) struct Rates {
    pipeline: Arc<Pipeline>,
    history: Mutex<History>,
}

/// What `GET /rates` answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RatesBody {
    /// Seconds between two samples.
    pub interval_seconds: u64,
    /// When each sample was taken, ms since the epoch, oldest first.
    pub times: Vec<i64>,
    /// Events per second received by each configuration that received any in the window, one
    /// value per sample.
    pub configurations: BTreeMap<String, Vec<f64>>,
    /// Each watcher's deliveries per second, one value per sample, and its counters now.
    pub watchers: BTreeMap<String, WatcherRates>,
}

/// One watcher on `GET /rates`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WatcherRates {
    /// Events per second it took, per sample.
    pub delivered: Vec<f64>,
    /// Events waiting or in flight now.
    pub queue_depth: i64,
    /// Events it never took, sent to the dead letters, since the start.
    pub dead_lettered: u64,
}

impl Rates {
    /// Rates of `pipeline`'s gateway, with no sample yet.
    pub(crate) fn new(pipeline: Arc<Pipeline>) -> Arc<Rates> {
        let rates = Arc::new(Rates {
            pipeline,
            history: Mutex::new(History::default()),
        });
        rates.sample();
        rates
    }

    /// Samples every [`INTERVAL`] until `stop` is cancelled.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.sample(),
            }
        }
    }

    /// Takes one sample (the first one only sets the totals).
    fn sample(&self) {
        let delivered: Vec<u64> = self
            .pipeline
            .dispatcher()
            .watcher_counters()
            .map(|w| w.delivered)
            .collect();
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut moved = Vec::new();
        let last_received = &h.last_received;
        self.pipeline.metrics().each_src_received(|key, now| {
            match last_received.get_key_value(key) {
                Some((k, last)) if now > *last => moved.push((k.clone(), now - *last)),
                Some(_) => {}
                None if now > 0 => moved.push((Arc::from(key), now)),
                None => {}
            }
        });
        for (key, delta) in &moved {
            *h.last_received.entry(key.clone()).or_default() += delta;
        }
        let deltas = delivered
            .iter()
            .enumerate()
            .map(|(i, now)| now.saturating_sub(h.last_delivered.get(i).copied().unwrap_or(0)))
            .collect();
        h.last_delivered = delivered;
        if !std::mem::replace(&mut h.started, true) {
            return;
        }
        if h.samples.len() == SAMPLES {
            h.samples.pop_front();
        }
        h.samples.push_back(Sample {
            at_ms: chrono::Utc::now().timestamp_millis(),
            configurations: moved,
            delivered: deltas,
        });
    }

    /// The rates of the samples kept.
    pub(crate) fn body(&self) -> RatesBody {
        let per_second = |n: u64| n as f64 / INTERVAL.as_secs_f64();
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let n = h.samples.len();
        let mut configurations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (i, s) in h.samples.iter().enumerate() {
            for (key, count) in &s.configurations {
                configurations
                    .entry(key.to_string())
                    .or_insert_with(|| vec![0.0; n])[i] = per_second(*count);
            }
        }
        let watchers = self
            .pipeline
            .dispatcher()
            .watcher_counters()
            .enumerate()
            .map(|(w, now)| {
                let delivered = h
                    .samples
                    .iter()
                    .map(|s| per_second(s.delivered.get(w).copied().unwrap_or(0)))
                    .collect();
                let rates = WatcherRates {
                    delivered,
                    queue_depth: now.queue_depth,
                    dead_lettered: now.dead_lettered,
                };
                (now.name.to_string(), rates)
            })
            .collect();
        RatesBody {
            interval_seconds: INTERVAL.as_secs(),
            times: h.samples.iter().map(|s| s.at_ms).collect(),
            configurations,
            watchers,
        }
    }
}
