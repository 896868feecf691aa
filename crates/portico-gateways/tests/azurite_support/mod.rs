//! The Azurite emulator (Azure Storage's blob and queue services) the `azure-queue` and
//! `azure-blob` tests use, and what they do to it through Microsoft's SDKs (`storage.js`).
//!
//! `scripts/test` installs Azurite and the SDKs with npm under `$PORTICO_AZURITE`
//! (default `$HOME/.cache/portico/azurite`), starts one Azurite (in memory, on free ports) for
//! every test and exports its endpoints as `PORTICO_AZURITE_BLOB_URL` and
//! `PORTICO_AZURITE_QUEUE_URL`; without them (a plain `cargo test`), each test process starts
//! its own on free ports and kills it when the process's last user drops it. A test that
//! stops the server uses one of its own ([`Azurite::private`]). Every test uses queues and
//! containers of its own (a uuid).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a test waits for Azurite to listen.
const START_WAIT: Duration = Duration::from_secs(30);
/// Azurite's development account, and its well-known (public) key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where npm installed Azurite and the SDKs.
pub fn prefix() -> PathBuf {
    std::env::var_os("PORTICO_AZURITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/portico/azurite")
        })
}

/// A unique queue or container name (lower-case letters and digits).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// An Azurite: the shared one or one of this process.
pub struct Azurite {
    /// Like `http://127.0.0.1:10001/devstoreaccount1`.
    pub queue_url: String,
    /// Like `http://127.0.0.1:10000/devstoreaccount1`.
    pub blob_url: String,
    child: Option<std::process::Child>,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

static SHARED: Mutex<Weak<Azurite>> = Mutex::new(Weak::new());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn port_of(url: &str) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .expect("a URL with a port")
}

impl Azurite {
    /// The Azurite of this run: the one `scripts/test` started, or one this process starts
    /// (and kills once the last `Arc` is dropped).
    pub fn shared() -> Arc<Azurite> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = shared.upgrade() {
            return a;
        }
        let env = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().trim_end_matches('/').to_string())
                .filter(|v| !v.is_empty())
        };
        let a = Arc::new(
            match (
                env("PORTICO_AZURITE_QUEUE_URL"),
                env("PORTICO_AZURITE_BLOB_URL"),
            ) {
                (Some(queue_url), Some(blob_url)) => Azurite {
                    queue_url,
                    blob_url,
                    child: None,
                    dir: None,
                },
                _ => Azurite::private(),
            },
        );
        *shared = Arc::downgrade(&a);
        a
    }

    /// An Azurite of the caller's own, on free ports (it can be killed and started again).
    pub fn private() -> Azurite {
        let mut a = Azurite {
            queue_url: format!("http://127.0.0.1:{}/{ACCOUNT}", free_port()),
            blob_url: format!("http://127.0.0.1:{}/{ACCOUNT}", free_port()),
            child: None,
            dir: None,
        };
        a.start();
        a
    }

    /// Starts this Azurite (again, on the same ports; in memory, so it starts empty).
    pub fn start(&mut self) {
        let program = prefix().join("node_modules/.bin/azurite");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (blob, queue) = (port_of(&self.blob_url), port_of(&self.queue_url));
        let child = Command::new(&program)
            .args(["--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1"])
            .args(["--tableHost", "127.0.0.1"])
            .args([
                "--blobPort",
                &blob.to_string(),
                "--queuePort",
                &queue.to_string(),
            ])
            .args(["--tablePort", &free_port().to_string()])
            .args(["--inMemoryPersistence", "--silent", "--skipApiVersionCheck"])
            .arg("--disableTelemetry")
            // In memory, nothing written; its working directory a temporary one all the same.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/test, which installs Azurite with npm",
                    program.display()
                )
            });
        self.child = Some(child);
        self.dir = Some(dir);
        let deadline = std::time::Instant::now() + START_WAIT;
        for port in [blob, queue] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "Azurite did not listen on {port} within {START_WAIT:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills this Azurite (a private one).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.dir = None;
    }

    /// The connection string of the development account at this Azurite.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};QueueEndpoint={};BlobEndpoint={};",
            self.queue_url, self.blob_url
        )
    }

    /// Runs `storage.js` with these arguments; its output, trimmed.
    pub fn run(&self, args: &[&str]) -> String {
        // Beside this file, whichever crate's test includes it (`file!()` is relative to the
        // workspace's root).
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file!())
            .with_file_name("storage.js");
        let out = Command::new("node")
            .arg(&script)
            .arg(self.connection_string())
            .args(args)
            .env("NODE_PATH", prefix().join("node_modules"))
            .output()
            .expect("node");
        assert!(
            out.status.success(),
            "storage.js {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Makes queue `name`.
    pub fn create_queue(&self, name: &str) {
        self.run(&["create-queue", name]);
    }

    /// Sends `texts` to queue `name`, in order; base64-encoded first when `base64`.
    pub fn send(&self, name: &str, texts: &[&str], base64: bool) {
        let list = serde_json::to_string(texts).unwrap();
        let mut args = vec!["send", name, &list];
        if base64 {
            args.push("base64");
        }
        self.run(&args);
    }

    /// The messages of queue `name`: (visible, all).
    pub fn count(&self, name: &str) -> (u64, u64) {
        let out = self.run(&["count", name]);
        let mut n = out.split_whitespace().map(|w| w.parse::<u64>().unwrap());
        (n.next().unwrap(), n.next().unwrap())
    }

    /// A SAS token that lets read and process the messages of queue `name`.
    pub fn queue_sas(&self, name: &str) -> String {
        self.run(&["sas-queue", name])
    }

    /// Makes container `name`.
    pub fn create_container(&self, name: &str) {
        self.run(&["create-container", name]);
    }

    /// Uploads blob `name` with `text` to `container` (metadata `origin: test`); its ETag.
    pub fn put_blob(&self, container: &str, name: &str, text: &str, content_type: &str) -> String {
        self.run(&["put-blob", container, name, text, content_type])
    }

    /// Deletes blob `name` of `container`.
    pub fn delete_blob(&self, container: &str, name: &str) {
        self.run(&["delete-blob", container, name]);
    }

    /// A SAS token that lets list container `name`.
    pub fn container_sas(&self, name: &str) -> String {
        self.run(&["sas-container", name])
    }
}
