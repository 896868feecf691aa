//! What the `sqs` tests do to moto's SQS, through boto3 (`moto_support/sqs.py`): make
//! queues, send messages. The messages in a queue are counted with
//! [`Moto::count`](super::moto_support::Moto::count).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use super::moto_support::{Moto, venv};

/// Runs `sqs.py` against `moto` with these arguments; its output, trimmed.
fn run(moto: &Moto, args: &[&str]) -> String {
    // Beside `moto_support/mod.rs`, whichever crate's test includes this file (`file!()` is
    // relative to the workspace's root).
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file!());
    let script = here.with_file_name("../moto_support/sqs.py");
    let out = Command::new(venv().join("bin/python"))
        .arg(&script)
        .arg(&moto.url)
        .args(args)
        .output()
        .expect("the venv's python");
    assert!(
        out.status.success(),
        "sqs.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes queue `name` (FIFO when it ends with `.fifo`) with a visibility timeout of
/// `visibility` seconds; its URL.
pub fn create_queue(moto: &Moto, name: &str, visibility: u32) -> String {
    run(moto, &["create", name, &visibility.to_string()])
}

/// Sends `messages` to the queue at `url`, in order: a JSON list of `{"body", "group"
/// (FIFO), "attributes": {name: [data type, value]}}`.
pub fn send(moto: &Moto, url: &str, messages: &serde_json::Value) {
    run(moto, &["send", url, &messages.to_string()]);
}

/// Sends one message with this body.
pub fn send_body(moto: &Moto, url: &str, body: &str) {
    send(moto, url, &serde_json::json!([{ "body": body }]));
}
