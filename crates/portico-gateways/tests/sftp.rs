//! The `sftp` gateway against a real OpenSSH `sshd` (`internal-sftp`) of the test's own: a new
//! and a changed file each emit once, with their content and extensions; an unchanged one
//! emits nothing; a restart with the same state file emits nothing again; `afterAccept:
//! delete` removes the file once accepted; a wrong host key is an `Error` that says so; a
//! server that goes away makes the node `Error`, and `Running` again once it is back.

mod common;
mod sftp_support;

use std::time::Duration;

use common::{map, wait_until};
use portico::Phase;
use portico::cloudevents::CloudEvent;
use portico::testing::{Harness, Supervisor};
use portico_gateways::builtin;
use sftp_support::{Sshd, keygen, keygen_of};

const WAIT: Duration = Duration::from_secs(15);
/// How long to listen for an event that must not come: more than two polls (`interval: 1s`).
const QUIET: Duration = Duration::from_millis(2500);

fn value(sshd: &Sshd, extra: &str) -> String {
    format!(
        "address: 127.0.0.1:{}\nuser: {}\ndirectory: {}\nprivateKeyFile: {}\nhostKey: {}\n\
         interval: 1s\nstateFile: {}\n{extra}",
        sshd.port,
        sshd.user,
        sshd.files.display(),
        sshd.client_key.display(),
        sshd.host_key,
        sshd.scratch().join("state/listing.json").display(),
    )
}

async fn start(h: &Harness, value: &str) -> Supervisor {
    let mut sup = h.supervisor(builtin("sftp").unwrap());
    sup.apply(&map(&[("c", value)])).await;
    sup
}

async fn phase(h: &Harness, phase: Phase, sshd: &Sshd) -> portico::Node {
    h.wait_for_phase("c", phase, WAIT).await.unwrap_or_else(|| {
        panic!(
            "not {phase:?}: {:?}\nsshd log:\n{}",
            h.node("c"),
            sshd.log()
        )
    })
}

fn ext(ce: &CloudEvent, name: &str) -> String {
    ce.extensions
        .get(name)
        .map(|v| v.to_string())
        .unwrap_or_else(|| panic!("no extension {name}: {ce:?}"))
}

fn payload(ce: &CloudEvent) -> String {
    String::from_utf8(ce.data.as_ref().unwrap().as_bytes().to_vec()).unwrap()
}

async fn next(h: &mut Harness, what: &str) -> CloudEvent {
    h.next_event(WAIT)
        .await
        .unwrap_or_else(|| panic!("no event: {what}"))
}

async fn quiet(h: &mut Harness, what: &str) {
    if let Some(ce) = h.next_event(QUIET).await {
        panic!("{what}: an event came: {ce:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_changed_files_emit_once_and_a_restart_emits_nothing_again() {
    let sshd = Sshd::start();
    std::fs::write(sshd.files.join("a.txt"), "one").unwrap();
    std::fs::create_dir(sshd.files.join("sub")).unwrap();
    let mut h = Harness::new("sftp", "sftp");
    let value = value(&sshd, "");
    let mut sup = start(&h, &value).await;
    phase(&h, Phase::Running, &sshd).await;

    let first = next(&mut h, "the file there at start").await;
    assert_eq!(payload(&first), "one");
    assert_eq!(
        ext(&first, "path"),
        sshd.files.join("a.txt").display().to_string()
    );
    assert_eq!(ext(&first, "size"), "3");
    let mtime = std::fs::metadata(sshd.files.join("a.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let mtime: chrono::DateTime<chrono::Utc> = mtime.into();
    let shown = chrono::DateTime::parse_from_rfc3339(&ext(&first, "mtime")).unwrap();
    assert_eq!(shown.timestamp(), mtime.timestamp());
    assert_eq!(first.source, "sftp/c");
    assert_eq!(first.ty, "sftp");
    quiet(&mut h, "an unchanged file (and a subdirectory)").await;

    std::fs::write(sshd.files.join("b.txt"), "two").unwrap();
    let b = next(&mut h, "a new file").await;
    assert_eq!(payload(&b), "two");
    assert!(ext(&b, "path").ends_with("/b.txt"));

    std::fs::write(sshd.files.join("a.txt"), "one, changed").unwrap();
    let a = next(&mut h, "a changed file").await;
    assert_eq!(payload(&a), "one, changed");
    assert_eq!(ext(&a, "size"), "12");
    quiet(&mut h, "nothing changed since").await;

    // The same configuration again, with the same state file: nothing is new.
    sup.stop_all().await;
    let mut sup = start(&h, &value).await;
    phase(&h, Phase::Running, &sshd).await;
    quiet(&mut h, "after a restart").await;
    std::fs::write(sshd.files.join("c.txt"), "three").unwrap();
    let c = next(&mut h, "a new file after the restart").await;
    assert_eq!(payload(&c), "three");
    quiet(&mut h, "after the new file").await;
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_after_accept_removes_the_file_and_a_pattern_filters() {
    let sshd = Sshd::start();
    let mut h = Harness::new("sftp", "sftp");
    let mut sup = start(&h, &value(&sshd, "afterAccept: delete\npattern: '*.csv'")).await;
    phase(&h, Phase::Running, &sshd).await;
    std::fs::write(sshd.files.join("skip.txt"), "no").unwrap();
    std::fs::write(sshd.files.join("d.csv"), "a,b\n").unwrap();
    let ce = next(&mut h, "the csv file").await;
    assert_eq!(payload(&ce), "a,b\n");
    let gone = wait_until(WAIT, || async { !sshd.files.join("d.csv").exists() }).await;
    assert!(gone, "d.csv is deleted once accepted");
    quiet(&mut h, "a name the pattern does not take").await;
    assert!(sshd.files.join("skip.txt").exists());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ecdsa_client_keys_log_in() {
    let sshd = Sshd::start();
    std::fs::write(sshd.files.join("k.txt"), "keyed").unwrap();
    for kind in ["rsa", "ecdsa"] {
        let key = sshd.scratch().join(format!("{kind}_key"));
        sshd.authorize(&keygen_of(kind, &key));
        let mut h = Harness::new("sftp", "sftp");
        let value = value(&sshd, "").replace(
            &format!("privateKeyFile: {}", sshd.client_key.display()),
            &format!("privateKeyFile: {}", key.display()),
        );
        assert!(value.contains(&format!("{kind}_key")), "{value}");
        let value = value.replace("listing.json", &format!("{kind}.json"));
        let mut sup = start(&h, &value).await;
        phase(&h, Phase::Running, &sshd).await;
        let ce = next(&mut h, &format!("the file, read with an {kind} key")).await;
        assert_eq!(payload(&ce), "keyed");
        sup.stop_all().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_is_an_error_that_says_so_and_known_hosts_work() {
    let sshd = Sshd::start();
    let other = keygen(&sshd.scratch().join("other_key"));
    let wrong = value(&sshd, "").replace(&sshd.host_key, &other);
    let h = Harness::new("sftp", "sftp");
    let mut sup = start(&h, &wrong).await;
    let node = phase(&h, Phase::Error, &sshd).await;
    assert!(
        node.message.contains("host key mismatch") && node.message.contains("127.0.0.1"),
        "{}",
        node.message
    );
    sup.stop_all().await;

    // A key the server does not know: authentication refused, the key shown nowhere.
    let stranger = sshd.scratch().join("stranger_key");
    keygen(&stranger);
    let refused = value(&sshd, "").replace(
        &sshd.client_key.display().to_string(),
        &stranger.display().to_string(),
    );
    let h = Harness::new("sftp", "sftp");
    let mut sup = start(&h, &refused).await;
    let node = phase(&h, Phase::Error, &sshd).await;
    assert!(
        node.message.contains("authentication refused"),
        "{}",
        node.message
    );
    assert!(!node.message.contains("PRIVATE KEY"), "{}", node.message);
    sup.stop_all().await;

    // A known_hosts file that lists the server's key.
    let known = sshd.scratch().join("known_hosts");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key),
    )
    .unwrap();
    let mut h = Harness::new("sftp", "sftp");
    let listed = value(&sshd, "").replace(
        &format!("hostKey: {}", sshd.host_key),
        &format!("knownHostsFile: {}", known.display()),
    );
    std::fs::write(sshd.files.join("k.txt"), "known").unwrap();
    let mut sup = start(&h, &listed).await;
    phase(&h, Phase::Running, &sshd).await;
    assert_eq!(payload(&next(&mut h, "with knownHostsFile").await), "known");
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_an_error_and_running_again_once_back() {
    let mut sshd = Sshd::start();
    let mut h = Harness::new("sftp", "sftp");
    let mut sup = start(&h, &value(&sshd, "")).await;
    phase(&h, Phase::Running, &sshd).await;
    sshd.stop();
    let node = phase(&h, Phase::Error, &sshd).await;
    assert!(
        node.message.contains(&format!("127.0.0.1:{}", sshd.port)),
        "{}",
        node.message
    );
    assert!(!node.message.contains("PRIVATE KEY"), "{}", node.message);
    std::fs::write(sshd.files.join("late.txt"), "after the outage").unwrap();
    sshd.start_again();
    phase(&h, Phase::Running, &sshd).await;
    let ce = next(&mut h, "a file written while the server was down").await;
    assert_eq!(payload(&ce), "after the outage");
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_after_accept_moves_the_file_to_move_to() {
    let sshd = Sshd::start();
    let done = sshd.scratch().join("done");
    std::fs::create_dir(&done).unwrap();
    let mut h = Harness::new("sftp", "sftp");
    let extra = format!("afterAccept: move\nmoveTo: {}", done.display());
    let mut sup = start(&h, &value(&sshd, &extra)).await;
    phase(&h, Phase::Running, &sshd).await;
    std::fs::write(sshd.files.join("m.txt"), "moved").unwrap();
    assert_eq!(payload(&next(&mut h, "the file to move").await), "moved");
    let moved = wait_until(WAIT, || async { done.join("m.txt").exists() }).await;
    assert!(moved, "m.txt is moved once accepted");
    assert!(!sshd.files.join("m.txt").exists());
    quiet(&mut h, "a moved file").await;
    sup.stop_all().await;
}
