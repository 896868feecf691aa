//! The file gateway on a real temporary directory: each operation gives its configured events
//! and nothing else, globs match only what they should, a missing directory is an `Error` node
//! until it appears.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{data, map};
use portico::Phase;
use portico::testing::{Harness, Supervisor};
use portico_gateways::builtin;

/// A harness whose watcher takes one event at a time, so events arrive in the order they
/// were dispatched (the default delivers several at once, in any order).
fn harness() -> Harness {
    Harness::builder("files", "file").concurrency(1).build()
}

const WAIT: Duration = Duration::from_secs(10);
/// How long to keep listening for events that must not come, once the expected ones came.
const QUIET: Duration = Duration::from_millis(400);

/// The (name, op) of the next events until `last` has been seen (inclusive).
async fn events_until(h: &mut Harness, last: (&str, &str)) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let ce = h
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("no {last:?} event; got {got:?}"));
        let d = data(&ce);
        let e = (
            d["name"].as_str().unwrap().to_string(),
            d["op"].as_str().unwrap().to_string(),
        );
        got.push(e.clone());
        if e.0 == last.0 && e.1 == last.1 {
            return got;
        }
    }
}

/// The same, dropping repeated consecutive events (a write can be several WRITEs).
fn dedup(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.dedup();
    v
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Create a.txt (and c.log), write it, chmod it, rename it to b.txt, remove b.txt.
fn script(dir: &Path) {
    std::fs::write(dir.join("c.log"), "not matched").unwrap();
    let a = dir.join("a.txt");
    std::fs::File::create(&a).unwrap();
    std::fs::write(&a, "hello").unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&a, dir.join("b.txt")).unwrap();
    std::fs::remove_file(dir.join("b.txt")).unwrap();
}

async fn start(h: &Harness, src: &str, value: &str) -> Supervisor {
    let mut sup = h.supervisor(builtin("file").unwrap());
    sup.apply(&map(&[(src, value)])).await;
    assert!(
        h.wait_for_phase(src, Phase::Running, WAIT).await.is_some(),
        "{:?}",
        h.node(src)
    );
    sup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_write_rename_remove_in_order_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness();
    let cfg = format!(
        "directory: {}\npath: '*.txt'\ntype: [CREATE, WRITE, RENAME, REMOVE]",
        dir.path().display()
    );
    let mut sup = start(&h, "txt", &cfg).await;
    script(dir.path());
    let got = dedup(events_until(&mut h, ("b.txt", "REMOVE")).await);
    assert_eq!(
        got,
        pairs(&[
            ("a.txt", "CREATE"),
            ("a.txt", "WRITE"),
            ("a.txt", "RENAME"),
            ("b.txt", "CREATE"),
            ("b.txt", "REMOVE"),
        ])
    );
    assert!(h.try_next_event().is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_type_gives_only_its_events() {
    let expected: [(&str, &[(&str, &str)]); 5] = [
        ("CREATE", &[("a.txt", "CREATE"), ("b.txt", "CREATE")]),
        ("WRITE", &[("a.txt", "WRITE")]),
        ("CHMOD", &[("a.txt", "CHMOD")]),
        ("RENAME", &[("a.txt", "RENAME")]),
        ("REMOVE", &[("b.txt", "REMOVE")]),
    ];
    for (op, want) in expected {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness();
        let cfg = format!(
            "directory: {}\npath: '*.txt'\ntype: {op}",
            dir.path().display()
        );
        let mut sup = start(&h, "one", &cfg).await;
        script(dir.path());
        let last = want[want.len() - 1];
        let mut got = dedup(events_until(&mut h, last).await);
        // Nothing else comes (a short quiet window: absence cannot be awaited).
        while let Some(ce) = h.next_event(QUIET).await {
            let d = data(&ce);
            got.push((
                d["name"].as_str().unwrap().into(),
                d["op"].as_str().unwrap().into(),
            ));
        }
        assert_eq!(dedup(got), pairs(want), "type {op}");
        sup.stop_all().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_matches_only_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut h = harness();
    let flat = format!(
        "directory: {}\npath: 'data-*.csv'\ntype: CREATE",
        dir.path().display()
    );
    let mut sup = start(&h, "flat", &flat).await;
    for name in [
        "other.csv",
        "data-1.csv.bak",
        "sub/data-2.csv",
        "data-1.csv",
        "xdata-3.csv",
        "data-zz.csv",
    ] {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }
    let got = events_until(&mut h, ("data-zz.csv", "CREATE")).await;
    assert_eq!(
        got,
        pairs(&[("data-1.csv", "CREATE"), ("data-zz.csv", "CREATE")])
    );
    sup.stop_all().await;

    let deep = format!(
        "directory: {}\npath: '**/data-*.csv'\ntype: CREATE\nrecursive: true",
        dir.path().display()
    );
    let mut sup = start(&h, "deep", &deep).await;
    for name in [
        "sub/other.csv",
        "sub/data-4.csv",
        "data-5.csv",
        "data-5.txt",
        "sub/data-zz.csv",
    ] {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }
    let got = events_until(&mut h, ("sub/data-zz.csv", "CREATE")).await;
    assert_eq!(
        got,
        pairs(&[
            ("sub/data-4.csv", "CREATE"),
            ("data-5.csv", "CREATE"),
            ("sub/data-zz.csv", "CREATE")
        ])
    );
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_is_an_error_until_it_appears() {
    let base = tempfile::tempdir().unwrap();
    let later = base.path().join("later");
    let mut h = harness();
    let mut sup = h.supervisor(builtin("file").unwrap());
    let cfg = format!("directory: {}\npollInterval: 20ms", later.display());
    sup.apply(&map(&[("later", &cfg)])).await;
    let node = h
        .wait_for_phase("later", Phase::Error, WAIT)
        .await
        .expect("Error node");
    assert!(node.message.contains("does not exist"), "{}", node.message);
    std::fs::create_dir(&later).unwrap();
    assert!(
        h.wait_for_phase("later", Phase::Running, WAIT)
            .await
            .is_some()
    );
    std::fs::write(later.join("f"), "x").unwrap();
    let d = data(&h.next_event(WAIT).await.expect("an event"));
    assert_eq!(
        (d["name"].as_str(), d["op"].as_str()),
        (Some("f"), Some("CREATE"))
    );
    assert_eq!(d["path"].as_str(), Some(later.join("f").to_str().unwrap()));
    // Removed while watched: Error again, then Running when it is back.
    std::fs::remove_dir_all(&later).unwrap();
    assert!(
        h.wait_for_phase("later", Phase::Error, WAIT)
            .await
            .is_some()
    );
    std::fs::create_dir(&later).unwrap();
    assert!(
        h.wait_for_phase("later", Phase::Running, WAIT)
            .await
            .is_some()
    );
    sup.stop_all().await;
}
