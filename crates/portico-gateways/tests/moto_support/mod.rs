//! The moto server the `artifact`, `sqs` and `sns` tests use (S3, SQS and SNS on one port,
//! sending S3's event notifications to SQS queues and SNS's messages to HTTP subscriptions),
//! and what the `artifact` tests do to it, through boto3 (`s3.py`; the `sns` tests' is
//! `sns.py`).
//!
//! `scripts/test` starts one moto server for every test and exports its URL as
//! `PORTICO_MOTO_URL`; without it (a plain `cargo test`), each test process starts its own from
//! `$PORTICO_VENV/bin/moto_server` (default `$HOME/.cache/portico/venv`) on a free port, and
//! kills it when the process's last user drops it. Every test uses buckets and queues of its
//! own (a uuid).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a test waits for moto.
const START_WAIT: Duration = Duration::from_secs(30);

/// The Python venv that holds moto and boto3.
pub fn venv() -> PathBuf {
    std::env::var_os("PORTICO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/portico/venv")
        })
}

/// A moto server: the shared one (`PORTICO_MOTO_URL`) or one of this process.
pub struct Moto {
    /// Like `http://127.0.0.1:5000`.
    pub url: String,
    child: Option<std::process::Child>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());

impl Moto {
    /// The moto server of this run: `PORTICO_MOTO_URL`'s, or one this process starts (and
    /// kills once the last `Arc` is dropped).
    pub fn shared() -> Arc<Moto> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = shared.upgrade() {
            return m;
        }
        let m = Arc::new(match std::env::var("PORTICO_MOTO_URL") {
            Ok(url) if !url.trim().is_empty() => Moto {
                url: url.trim().trim_end_matches('/').to_string(),
                child: None,
            },
            _ => Moto::private(),
        });
        *shared = Arc::downgrade(&m);
        m
    }

    /// A moto server of the caller's own, on a free port (it can be killed and restarted).
    pub fn private() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut m = Moto {
            url: format!("http://127.0.0.1:{port}"),
            child: None,
        };
        m.start();
        m
    }

    fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    /// Starts this server (again, on the same port; its state starts empty).
    pub fn start(&mut self) {
        let program = venv().join("bin/moto_server");
        let port = self.port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/test, which installs moto in the venv, or `pip install 'moto[server]'` into $PORTICO_VENV",
                    program.display()
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + START_WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto did not listen on {port} within {START_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills this server (a private one).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `s3.py` with these arguments; its output, trimmed.
    pub fn run(&self, args: &[&str]) -> String {
        // Beside this file, whichever crate's test includes it (`file!()` is relative to the
        // workspace's root).
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file!())
            .with_file_name("s3.py");
        let out = Command::new(venv().join("bin/python"))
            .arg(&script)
            .arg(&self.url)
            .args(args)
            .output()
            .expect("the venv's python");
        assert!(
            out.status.success(),
            "s3.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Makes `queue` (visibility timeout `visibility` seconds) and `bucket`, whose
    /// notifications go to the queue; the queue's URL.
    pub fn setup(&self, bucket: &str, queue: &str, visibility: u32) -> String {
        self.run(&["setup", bucket, queue, &visibility.to_string()])
    }

    /// Puts one object per key in `bucket`.
    pub fn put(&self, bucket: &str, keys: &[&str]) {
        let mut args = vec!["put", bucket];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The messages in a queue: (visible, in flight).
    pub fn count(&self, queue_url: &str) -> (u64, u64) {
        let out = self.run(&["count", queue_url]);
        let mut n = out.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        (n.next().unwrap(), n.next().unwrap())
    }
}

/// A bucket or queue name of this test alone.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
