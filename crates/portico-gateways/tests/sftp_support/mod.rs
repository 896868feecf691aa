//! A private OpenSSH `sshd` for the `sftp` tests: on a free loopback port, with a throwaway
//! host key and client key made by `ssh-keygen` in a temporary directory, `internal-sftp`,
//! running as the current user. `scripts/test` installs `openssh-server` when `/usr/sbin/sshd`
//! is missing. The server and every process it forked (one per connection) are killed on
//! [`Sshd::stop`] and on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
/// How long `sshd` may take to listen.
const START_WAIT: Duration = Duration::from_secs(20);

/// A running (or stopped) private `sshd`.
pub struct Sshd {
    /// Its loopback port (the same across [`Sshd::stop`] and [`Sshd::start_again`]).
    pub port: u16,
    /// The directory the tests write files into (an absolute path, as the server names it).
    pub files: PathBuf,
    /// The client's private key (OpenSSH format, no passphrase).
    pub client_key: PathBuf,
    /// The server's host key line, `ssh-ed25519 AAAA…`.
    pub host_key: String,
    /// The user it lets in (the current user).
    pub user: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// Makes an ed25519 key pair at `path` (and `path.pub`) with `ssh-keygen`.
pub fn keygen(path: &Path) -> String {
    keygen_of("ed25519", path)
}

/// Makes a key pair of type `kind` (`ed25519`, `rsa`, `ecdsa`) at `path` (and `path.pub`)
/// with `ssh-keygen`; its public key line.
pub fn keygen_of(kind: &str, path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (Debian package openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let mut words = public.split_whitespace();
    format!("{} {}", words.next().unwrap(), words.next().unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Sshd {
    /// Starts one; panics when it does not listen within [`START_WAIT`].
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "the sftp tests need OpenSSH's sshd: run scripts/test (it installs it), or apt-get install openssh-server"
        );
        // sshd checks that its privilege separation directory exists.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        let host_key = keygen(&dir.path().join("host_key"));
        let client_key = dir.path().join("client_key");
        let client_public = keygen(&client_key);
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{client_public}\n"),
        )
        .unwrap();
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
                 Subsystem sftp internal-sftp\nStrictModes no\nPidFile none\nUsePAM no\n\
                 PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 LogLevel VERBOSE\n",
                host = dir.path().join("host_key").display(),
                auth = dir.path().join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("sshd.log");
        let mut sshd = Sshd {
            port,
            files,
            client_key,
            host_key,
            user: current_user(),
            config,
            log,
            child: None,
            dir,
        };
        sshd.start_again();
        sshd
    }

    /// Lets the holder of `public` (a public key line) log in too.
    pub fn authorize(&self, public: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .unwrap();
        writeln!(file, "{public}").unwrap();
    }

    /// A scratch directory of the server's (for state files, other keys).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts it (again) on the same port and waits until it listens.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "sshd is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on 127.0.0.1:{} within {START_WAIT:?}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server and the processes it forked for its connections (which would outlive
    /// it), and waits for them.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pids = descendants(child.id());
        let _ = child.kill();
        let _ = child.wait();
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processes below `pid` (children, their children…), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …: comm may hold spaces, so read after the last `)`.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &parents {
            if *pp == parent && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}
