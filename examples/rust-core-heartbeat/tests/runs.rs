//! The example user gateway runs as its README says and emits its heartbeats as CloudEvents.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_example_gateway_emits_heartbeats() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml");
    // A fresh outbox: nothing replayed from an earlier run comes before beat 1.
    let outbox =
        std::env::temp_dir().join(format!("portico-heartbeat-test-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_rust-core-heartbeat"))
        .args([file, "--transformer-port", "0"])
        .env("PORTICO_OUTBOX_DIR", &outbox)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut beats = Vec::new();
    while beats.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
            if ev["source"] == "heartbeat-gateway/fast" {
                beats.push(ev);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&outbox);
    assert_eq!(beats.len(), 2, "two heartbeats within the deadline");
    assert_eq!(beats[0]["type"], "heartbeat");
    assert_eq!(beats[0]["data"]["beat"], 1);
    assert_eq!(beats[1]["data"]["beat"], 2);
    assert_eq!(beats[0]["data"]["note"], "hello from a user gateway");
}
