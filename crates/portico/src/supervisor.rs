//! The supervisor: the life of every configuration and its node.
//!
//! Each new map from the configuration source is diffed against what runs, by configuration
//! id: removed configurations are stopped; new ones are validated, then started; a changed value
//! (a new id under the same key) stops the old and starts the new. A configuration that fails
//! validation becomes an `Error` node with the reason and is not started. One that fails while
//! running (or panics) shows `Error` and is restarted with capped exponential backoff; one that
//! ends by itself is `Completed`.
//!
//! Stopping a configuration cancels its context, waits for its task and every task it spawned
//! through the context for a grace period, then drops whatever is left: a stopped
//! configuration leaves nothing running.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::configuration::{ConfigId, Configuration, IdentifiedMap};
use crate::coordination::{Placement, bucket_of};
use crate::error::ConfigErrorKind;
use crate::executor::{Checked, ConfigContext, GatewayConfig, SharedExecutor, StopReason};
use crate::spec::ConfigMapData;
use crate::status::{Phase, StatusBoard};

/// Backoff between restarts of a failed configuration.
#[derive(Debug, Clone)]
pub(crate) struct RestartPolicy {
    /// Wait before the first restart.
    pub(crate) initial: Duration,
    /// Longest wait.
    pub(crate) max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
        let capped = exp.min(self.max);
        // ±20 % jitter so that many configurations failing together do not restart together.
        let jitter = rand::random_range(0.8..1.2);
        capped.mul_f64(jitter)
    }
}

struct Running {
    id: ConfigId,
    ctx: ConfigContext,
    task: Option<JoinHandle<()>>,
    /// Valid and sharded, but its bucket is another replica's: not started, no node.
    parked: bool,
}

/// Which configurations run here when the gateway's replicas share them: the everywhere
/// ones, and the sharded ones whose bucket this replica holds.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    /// Buckets configurations are hashed into.
    pub buckets: u32,
    /// The buckets held.
    pub held: Arc<BTreeSet<u32>>,
    /// `spec.placement`: every configuration placed so, whatever its executor says.
    pub placement: Option<Placement>,
}

impl Share {
    fn runs_here(&self, src: &str, placement: Placement) -> bool {
        self.placement.unwrap_or(placement) == Placement::Everywhere
            || self.held.contains(&bucket_of(src, self.buckets))
    }
}

/// Runs the configurations of one gateway with one executor: starts, stops and restarts them
/// as the map of configurations changes.
pub struct Supervisor {
    executor: SharedExecutor,
    gateway: GatewayConfig,
    board: Arc<StatusBoard>,
    restart: RestartPolicy,
    grace: Duration,
    running: BTreeMap<String, Running>,
    share: Option<Share>,
    /// The placement of each configuration that validated, by id.
    placements: BTreeMap<String, (ConfigId, Placement)>,
}

impl Supervisor {
    /// A supervisor running configurations with `executor`.
    pub(crate) fn new(
        executor: SharedExecutor,
        gateway: GatewayConfig,
        board: Arc<StatusBoard>,
    ) -> Self {
        Supervisor {
            executor,
            gateway,
            board,
            restart: RestartPolicy::default(),
            grace: Duration::from_secs(10),
            running: BTreeMap::new(),
            share: None,
            placements: BTreeMap::new(),
        }
    }

    /// Shares the configurations with other replicas: from now on only those `share` says
    /// run here (apply the map again after changing it).
    pub(crate) fn set_share(&mut self, share: Share) {
        self.share = Some(share);
    }

    /// Whether configuration `src` (of id `id`) should run on this replica.
    fn runs_here(&self, src: &str, id: ConfigId) -> bool {
        let Some(share) = &self.share else {
            return true;
        };
        match self.placements.get(src) {
            Some((known, placement)) if *known == id => share.runs_here(src, *placement),
            // Not validated yet: start_one decides.
            _ => true,
        }
    }

    /// Sets the restart backoff.
    pub(crate) fn with_restart_policy(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how long a stopping configuration may take before its tasks are dropped.
    pub(crate) fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The ids of the configurations the supervisor holds (running or invalid), by key.
    pub fn ids(&self) -> BTreeMap<String, ConfigId> {
        self.running
            .iter()
            .map(|(k, r)| (k.clone(), r.id))
            .collect()
    }

    /// Brings what runs in line with `map`.
    pub async fn apply(&mut self, map: &ConfigMapData) {
        let ids: Vec<ConfigId> = map.iter().map(|(k, v)| ConfigId::of(k, v)).collect();
        self.apply_with_ids(map, &ids).await;
    }

    /// [`Supervisor::apply`] with the ids the map was read with.
    pub(crate) async fn apply_identified(&mut self, map: &IdentifiedMap) {
        self.apply_with_ids(map.map(), map.ids()).await;
    }

    /// Brings what runs in line with `map`, whose entries have the ids `ids` (in its order).
    async fn apply_with_ids(&mut self, map: &ConfigMapData, ids: &[ConfigId]) {
        // One walk of the map and what runs, both ordered by key. A configuration whose id is
        // that of the next one running is that one unchanged (the id is a hash of key and
        // value): among 100,000, a change of one key costs a comparison of ids per key, and
        // no key or value is read again.
        let mut stale: Vec<String> = Vec::new();
        let mut start: Vec<(&String, &String, ConfigId)> = Vec::new();
        let mut running = self.running.iter().peekable();
        for ((src, value), &id) in map.iter().zip(ids) {
            let r = match running.next_if(|(_, r)| r.id == id) {
                Some((_, r)) => Some(r),
                None => {
                    while let Some((gone, _)) = running.next_if(|(k, _)| *k < src) {
                        stale.push(gone.clone());
                    }
                    running.next_if(|(k, _)| *k == src).map(|(_, r)| r)
                }
            };
            match r {
                Some(r) if r.id == id && r.parked != self.runs_here(src, id) => {}
                Some(_) => {
                    stale.push(src.clone());
                    start.push((src, value, id));
                }
                None => start.push((src, value, id)),
            }
        }
        stale.extend(running.map(|(gone, _)| gone.clone()));
        let mut gone: Vec<&str> = Vec::new();
        let stopping: Vec<(Running, StopReason)> = stale
            .iter()
            .filter_map(|src| {
                let reason = match map.get(src) {
                    None => StopReason::Removed,
                    Some(v)
                        if self.running.get(src).map(|r| r.id) != Some(ConfigId::of(src, v)) =>
                    {
                        StopReason::Replaced
                    }
                    // Still in the map: its bucket moved to another replica (or came here).
                    Some(_) => StopReason::Shutdown,
                };
                if reason == StopReason::Removed {
                    gone.push(src);
                }
                if reason != StopReason::Shutdown {
                    self.gateway.checkpoints().forget(src);
                    self.placements.remove(src);
                }
                self.running.remove(src).map(|r| (r, reason))
            })
            .collect();
        // What runs had the policies of its value: only those of the keys gone, new or
        // changed are read again.
        self.gateway
            .pipeline()
            .policies()
            .update(&gone, &start, self.executor.dyn_own_keys());
        futures::future::join_all(stopping.into_iter().map(|(r, why)| self.stop_one(r, why))).await;
        for (src, value, id) in start {
            let configuration = Configuration {
                id,
                src: src.clone(),
                value: value.clone(),
            };
            let r = self.start_one(configuration);
            self.running.insert(src.clone(), r);
        }
    }

    /// Brings what runs in line with these configurations (key, value).
    pub async fn apply_pairs(&mut self, map: &[(&str, &str)]) {
        let map: ConfigMapData = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.apply(&map).await;
    }

    /// Stops every configuration.
    pub async fn stop_all(&mut self) {
        let all = std::mem::take(&mut self.running);
        futures::future::join_all(
            all.into_values()
                .map(|r| self.stop_one(r, StopReason::Shutdown)),
        )
        .await;
    }

    fn start_one(&mut self, configuration: Configuration) -> Running {
        let id = configuration.id;
        let src = configuration.src.clone();
        let ctx = ConfigContext::new(configuration, self.gateway.clone(), self.board.clone());
        if let Some(problem) = self.gateway.pipeline().policies().problem(&src, id) {
            self.board.set(id, &src, Phase::Error, problem);
            return Running {
                id,
                ctx,
                task: None,
                parked: false,
            };
        }
        let checked =
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.executor.dyn_validate(&ctx))) {
                Ok(Ok(checked)) => checked,
                Ok(Err(e)) => {
                    self.board
                        .set(id, &src, Phase::Error, e.message().to_string());
                    return Running {
                        id,
                        ctx,
                        task: None,
                        parked: false,
                    };
                }
                Err(panic) => {
                    self.board.set(
                        id,
                        &src,
                        Phase::Error,
                        format!(
                            "validating the configuration panicked: {}",
                            panic_text(&*panic)
                        ),
                    );
                    return Running {
                        id,
                        ctx,
                        task: None,
                        parked: false,
                    };
                }
            };
        let placement = self.executor.dyn_placement(&checked);
        self.placements.insert(src.clone(), (id, placement));
        if let Some(share) = &self.share
            && !share.runs_here(&src, placement)
        {
            return Running {
                id,
                ctx,
                task: None,
                parked: true,
            };
        }
        for w in ctx.warnings() {
            tracing::warn!(src = %src, id = %id, "{w}");
        }
        self.board.set(id, &src, Phase::Initialized, "");
        let span = tracing::info_span!("configuration", src = %src, id = %id);
        let task = tokio::spawn(tracing::Instrument::instrument(
            run_configuration(
                self.executor.clone(),
                ctx.clone(),
                checked,
                self.restart.clone(),
            ),
            span,
        ));
        Running {
            id,
            ctx,
            task: Some(task),
            parked: false,
        }
    }

    async fn stop_one(&self, r: Running, reason: StopReason) {
        let Running { id, ctx, task, .. } = r;
        if let Some(task) = task {
            ctx.stopping_because(reason);
            self.executor.dyn_stop(&ctx).await;
            ctx.stop_because(reason);
            let tasks = ctx.tasks().clone();
            tasks.close();
            let all_done = async {
                let _ = task.await;
                tasks.wait().await;
            };
            let mut all_done = std::pin::pin!(all_done);
            if tokio::time::timeout(self.grace, &mut all_done)
                .await
                .is_err()
            {
                tracing::warn!(
                    src = %ctx.src(), id = %id,
                    grace_ms = self.grace.as_millis() as u64,
                    "configuration did not stop within its grace period: dropping its tasks"
                );
                ctx.hard_stop().cancel();
                all_done.await;
            }
        }
        self.board.remove(id);
    }
}

/// One configuration's life: start, and restart with backoff after failures, until stopped.
async fn run_configuration(
    executor: SharedExecutor,
    ctx: ConfigContext,
    config: Checked,
    restart: RestartPolicy,
) {
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let attempt = AssertUnwindSafe(executor.dyn_start(ctx.clone(), &config)).catch_unwind();
        let outcome = tokio::select! {
            biased;
            _ = ctx.hard_stop().cancelled() => return,
            o = attempt => o,
        };
        if ctx.is_stopped() {
            return;
        }
        let message = match outcome {
            Ok(Ok(())) => {
                ctx.set_phase(Phase::Completed, "");
                return;
            }
            Ok(Err(e)) if e.kind() == ConfigErrorKind::Invalid => {
                ctx.set_phase(Phase::Error, e.message().to_string());
                return;
            }
            Ok(Err(e)) => e.message().to_string(),
            Err(panic) => format!("the configuration's task panicked: {}", panic_text(&*panic)),
        };
        if started.elapsed() > restart.max {
            failures = 0;
        }
        failures += 1;
        let wait = restart.delay(failures);
        ctx.set_phase(
            Phase::Error,
            format!(
                "{message} (restart {failures} in {})",
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
            ),
        );
        ctx.board().restarted(ctx.id());
        tokio::select! {
            _ = ctx.stopped() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        ctx.set_phase(Phase::Initialized, "");
    }
}

/// What a panic said, when it said it with a string.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}
