//! The supervisor's promises, with a scripted executor: the diff by id, validation, restarts
//! with backoff after failures and panics, `Completed`, and that a stopped configuration
//! leaves no task behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::spec::ConfigMapData;
use crate::testing::Harness;
use crate::{ConfigContext, ConfigError, ConfigExecutor, Event, Phase};

const WAIT: Duration = Duration::from_secs(10);

/// Behaves as its configuration's first word says: `run`, `fail`, `panic`, `complete`,
/// `invalid`, `spawn` (three tasks of its own), `stubborn` (ignores the stop signal),
/// `flaky` (fails twice, then runs).
#[derive(Default)]
struct Scripted {
    starts: Mutex<HashMap<String, usize>>,
}

impl Scripted {
    fn starts(&self, src: &str) -> usize {
        self.starts.lock().unwrap().get(src).copied().unwrap_or(0)
    }
}

impl ConfigExecutor for Scripted {
    type Config = ();

    fn validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError> {
        if ctx.config().starts_with("invalid") {
            return Err(ConfigError::invalid("mode: `invalid` is not a mode"));
        }
        Ok(())
    }

    async fn start_config(&self, ctx: ConfigContext, (): ()) -> Result<(), ConfigError> {
        let n = {
            let mut starts = self.starts.lock().unwrap();
            let n = starts.entry(ctx.src().to_string()).or_default();
            *n += 1;
            *n
        };
        let mode = ctx
            .config()
            .split_whitespace()
            .next()
            .unwrap_or("run")
            .to_string();
        match mode.as_str() {
            "fail" => return Err(ConfigError::failed("the broker went away")),
            "panic" => panic!("executor bug"),
            "complete" => {
                ctx.running();
                ctx.dispatch(Event::new("done")).await?;
                return Ok(());
            }
            "flaky" if n <= 2 => return Err(ConfigError::failed(format!("attempt {n} failed"))),
            "spawn" => {
                for _ in 0..3 {
                    let c = ctx.clone();
                    ctx.spawn(async move { c.stopped().await });
                }
            }
            "stubborn" => {
                ctx.running();
                // Ignores the stop signal: only the supervisor's hard stop ends it.
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        ctx.running();
        ctx.stopped().await;
        Ok(())
    }
}

fn map(entries: &[(&str, &str)]) -> ConfigMapData {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>()
}

fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn wait_alive(at_most: usize) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if alive() <= at_most {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn the_diff_restarts_only_what_changed() {
    let h = Harness::new("g", "scripted");
    let exec = Arc::new(Scripted::default());
    let mut sup = h.supervisor(exec.clone());
    sup.apply(&map(&[("a", "run"), ("b", "run")])).await;
    h.wait_for_phase("a", Phase::Running, WAIT).await.unwrap();
    h.wait_for_phase("b", Phase::Running, WAIT).await.unwrap();
    let a_id = h.node("a").unwrap().id;

    sup.apply(&map(&[("a", "run"), ("b", "run  # changed")]))
        .await;
    h.wait_for_phase("b", Phase::Running, WAIT).await.unwrap();
    assert_eq!(
        exec.starts("a"),
        1,
        "an unchanged configuration is not restarted"
    );
    assert_eq!(
        exec.starts("b"),
        2,
        "a changed one is stopped and started again"
    );
    assert_eq!(h.node("a").unwrap().id, a_id);

    sup.apply(&map(&[("a", "run")])).await;
    assert!(
        h.node("b").is_none(),
        "a removed configuration's node is gone"
    );
    assert_eq!(h.nodes().len(), 1);
    sup.stop_all().await;
    assert!(h.nodes().is_empty());
}

#[tokio::test]
async fn an_invalid_configuration_is_an_error_node_and_never_started() {
    let h = Harness::new("g", "scripted");
    let exec = Arc::new(Scripted::default());
    let mut sup = h.supervisor(exec.clone());
    sup.apply(&map(&[("bad", "invalid"), ("good", "run")]))
        .await;
    let bad = h.wait_for_phase("bad", Phase::Error, WAIT).await.unwrap();
    assert_eq!(bad.message, "mode: `invalid` is not a mode");
    h.wait_for_phase("good", Phase::Running, WAIT)
        .await
        .unwrap();
    assert_eq!(exec.starts("bad"), 0);
    // Fixing the value starts it.
    sup.apply(&map(&[("bad", "run"), ("good", "run")])).await;
    h.wait_for_phase("bad", Phase::Running, WAIT).await.unwrap();
    sup.stop_all().await;
}

/// The supervisor reads again only the policies of keys new, changed or gone: these must
/// still follow every change of the map.
#[tokio::test]
async fn policies_follow_each_change_of_the_map() {
    let h = Harness::new("g", "scripted");
    let exec = Arc::new(Scripted::default());
    let mut sup = h.supervisor(exec.clone());
    let zero = "mode: run\nrateLimit: {perSecond: 0}";
    let fine = "mode: run\nrateLimit: {perSecond: 5}";
    sup.apply(&map(&[("a", zero), ("b", "mode: run")])).await;
    let a = h.wait_for_phase("a", Phase::Error, WAIT).await.unwrap();
    assert!(
        a.message.starts_with("rateLimit.perSecond is 0"),
        "{}",
        a.message
    );
    h.wait_for_phase("b", Phase::Running, WAIT).await.unwrap();
    assert_eq!(exec.starts("a"), 0);

    // The same map again: nothing changes, `a` stays refused.
    sup.apply(&map(&[("a", zero), ("b", "mode: run")])).await;
    assert_eq!(h.node("a").unwrap().phase, Phase::Error);

    // `a` mended, `b` given a bad limit.
    sup.apply(&map(&[("a", fine), ("b", zero)])).await;
    h.wait_for_phase("a", Phase::Running, WAIT).await.unwrap();
    let b = h.wait_for_phase("b", Phase::Error, WAIT).await.unwrap();
    assert!(
        b.message.starts_with("rateLimit.perSecond is 0"),
        "{}",
        b.message
    );

    // `b` removed and added again without a limit: its old policy went with it.
    sup.apply(&map(&[("a", fine)])).await;
    assert!(h.node("b").is_none());
    sup.apply(&map(&[("a", fine), ("b", "mode: run")])).await;
    h.wait_for_phase("b", Phase::Running, WAIT).await.unwrap();
    assert_eq!(
        exec.starts("a"),
        1,
        "`a` ran once, unchanged since it was mended"
    );
    sup.stop_all().await;
}

#[tokio::test]
async fn a_failing_configuration_shows_why_and_is_restarted_with_backoff() {
    let h = Harness::new("g", "scripted");
    let exec = Arc::new(Scripted::default());
    let mut sup = h.supervisor(exec.clone());
    sup.apply(&map(&[("flaky", "flaky"), ("steady", "run")]))
        .await;
    let err = h.wait_for_phase("flaky", Phase::Error, WAIT).await.unwrap();
    assert!(err.message.starts_with("attempt "), "{}", err.message);
    assert!(err.message.contains("restart"), "{}", err.message);
    let node = h
        .wait_for_phase("flaky", Phase::Running, WAIT)
        .await
        .unwrap();
    assert_eq!(exec.starts("flaky"), 3);
    assert_eq!(node.restarts, 2);
    assert_eq!(h.node("steady").unwrap().phase, Phase::Running);
    sup.stop_all().await;
}

#[tokio::test]
async fn a_panicking_configuration_does_not_take_the_gateway_down() {
    let h = Harness::new("g", "scripted");
    let exec = Arc::new(Scripted::default());
    let mut sup = h.supervisor(exec.clone());
    sup.apply(&map(&[("boom", "panic"), ("steady", "run")]))
        .await;
    let err = h.wait_for_phase("boom", Phase::Error, WAIT).await.unwrap();
    assert!(
        err.message.contains("panicked: executor bug"),
        "{}",
        err.message
    );
    // It is restarted with backoff, and panics again; the other one runs throughout.
    let deadline = tokio::time::Instant::now() + WAIT;
    while exec.starts("boom") < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(exec.starts("boom") >= 3);
    assert_eq!(h.node("steady").unwrap().phase, Phase::Running);
    sup.stop_all().await;
}

#[tokio::test]
async fn a_configuration_that_ends_by_itself_is_completed() {
    let mut h = Harness::new("g", "scripted");
    let exec = Arc::new(Scripted::default());
    let mut sup = h.supervisor(exec.clone());
    sup.apply(&map(&[("once", "complete")])).await;
    h.wait_for_phase("once", Phase::Completed, WAIT)
        .await
        .unwrap();
    let ev = h.next_event(WAIT).await.unwrap();
    assert_eq!(ev.source, "g/once");
    assert_eq!(exec.starts("once"), 1);
    sup.stop_all().await;
}

#[tokio::test]
async fn a_stopped_configuration_leaves_no_task_behind() {
    let h = Harness::new("g", "scripted");
    let exec = Arc::new(Scripted::default());
    let mut sup = h
        .supervisor(exec.clone())
        .with_stop_grace(Duration::from_millis(200));
    let baseline = alive();
    sup.apply(&map(&[
        ("tasks", "spawn"),
        ("stubborn", "stubborn"),
        ("plain", "run"),
    ]))
    .await;
    for src in ["tasks", "stubborn", "plain"] {
        h.wait_for_phase(src, Phase::Running, WAIT).await.unwrap();
    }
    // 3 configuration tasks and 3 spawned by `tasks`.
    assert!(
        alive() >= baseline + 6,
        "alive {} baseline {baseline}",
        alive()
    );
    sup.apply(&map(&[])).await;
    assert!(
        wait_alive(baseline).await,
        "tasks left after stopping: {} (baseline {baseline})",
        alive() - baseline
    );
    assert!(h.nodes().is_empty());
}
