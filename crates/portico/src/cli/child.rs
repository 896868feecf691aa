//! `portico run FILE -- COMMAND…`: the user's server as a child of the gateway.
//!
//! The child gets the inherited environment plus the gateway's contract variables
//! ([`crate::spec::Gateway::contract`]): `TRANSFORMER_PORT`, `GATEWAY_NAME`, …, and for a
//! gRPC-style gateway the port its server must listen on. Its stdout and stderr are forwarded line by
//! line to portico's stderr (portico's stdout carries CloudEvents when a gateway has no
//! watchers). The gateway does not wait for the child to be up: its processor keeps retrying
//! until the server answers. A child that exits is logged and the gateway keeps running; when
//! portico exits, the child gets SIGTERM, then SIGKILL after the stop grace.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::GatewayArgs;
use crate::env;
use crate::spec::GatewayFile;

/// Starts `command` with the gateway's environment, runs the gateway with `run`, then stops
/// the child.
pub(crate) fn serve_with(
    args: &mut GatewayArgs,
    command: &[String],
    run: impl FnOnce(GatewayArgs) -> ExitCode,
) -> ExitCode {
    // A file that does not load is reported by the gateway itself, with every problem.
    let Ok(file) = GatewayFile::load_one(&args.files, args.max_file_size) else {
        return run(args.clone());
    };
    if args.transformer_port == 0 {
        // The child must be told the real port: pick a free one now.
        match std::net::TcpListener::bind((args.listen, 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => args.transformer_port = addr.port(),
            Err(e) => {
                eprintln!("error: cannot find a free port for the transformer: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut vars = file.gateway.contract(args.transformer_port, None);
    // The ConfigMap of the file, when the Gateway does not name it.
    if let Some(cm) = &file.config_map {
        for (k, v) in vars.iter_mut() {
            if *k == env::GATEWAY_PROCESSOR_CONFIG_MAP && v.is_empty() {
                *v = cm.clone();
            }
        }
    }
    match super::grpc_port(&file.gateway) {
        Ok(Some(port)) => {
            vars.retain(|(k, _)| *k != env::GATEWAY_PROCESSOR_GRPC_SERVER_PORT);
            vars.push((env::GATEWAY_PROCESSOR_GRPC_SERVER_PORT, port.to_string()));
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &args.ingest_token_file {
        // Made before the child starts, so that it finds the token it must send.
        if let Err(e) = crate::runtime::ingest_token(path) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        vars.push((env::PORTICO_INGEST_TOKEN_FILE, path.display().to_string()));
    }
    let program = &command[0];
    let mut cmd = Command::new(program);
    cmd.args(&command[1..])
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tie_to_portico(&mut cmd);
    let child = cmd.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start `{}`: {e}", command.join(" "));
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    tracing::info!(pid, command = %command.join(" "), "started the gateway's server process");
    forward(child.stdout.take());
    forward(child.stderr.take());
    let stopping = Arc::new(AtomicBool::new(false));
    let exited = watch(child, command.join(" "), stopping.clone());

    let code = run(args.clone());

    stopping.store(true, Ordering::Release);
    stop(pid, &exited, args.stop_grace);
    code
}

/// Keeps the child's life inside portico's. In its own process group, a Ctrl-C on the
/// terminal reaches portico only, which stops the configurations and then the child, in that
/// order. On Linux, the child also gets SIGTERM if portico dies without stopping it (SIGKILL),
/// so it is never left behind.
#[cfg(unix)]
fn tie_to_portico(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        let portico = std::process::id();
        // SAFETY: between fork and exec the closure only makes two system calls (prctl,
        // getppid), which are async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                // Portico may have died before the call above: then nobody would signal.
                if nix::unistd::getppid().as_raw() as u32 != portico {
                    return Err(std::io::Error::other(
                        "portico exited while starting the command",
                    ));
                }
                Ok(())
            });
        }
    }
}

#[cfg(not(unix))]
fn tie_to_portico(_cmd: &mut Command) {}

/// Copies a child's output to our stderr, one whole line at a time.
fn forward<R: Read + Send + 'static>(from: Option<R>) {
    let Some(from) = from else { return };
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    let _ = std::io::stderr().lock().write_all(&line);
                }
            }
        }
    });
}

/// Waits for the child in a thread; logs its exit and reports it on the returned channel.
fn watch(
    mut child: Child,
    command: String,
    stopping: Arc<AtomicBool>,
) -> mpsc::Receiver<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || match child.wait() {
        Ok(status) if stopping.load(Ordering::Acquire) => {
            tracing::info!(command = %command, %status, "the gateway's server process stopped");
            let _ = tx.send(status);
        }
        Ok(status) => {
            tracing::error!(
                command = %command, %status,
                "the gateway's server process exited; the gateway keeps running and waits for a server"
            );
            let _ = tx.send(status);
        }
        Err(e) => {
            tracing::error!(command = %command, "cannot wait for the gateway's server process: {e}")
        }
    });
    rx
}

/// SIGTERM, then SIGKILL after `grace`, unless the child is gone already.
fn stop(pid: u32, exited: &mpsc::Receiver<ExitStatus>, grace: Duration) {
    if exited.try_recv().is_ok() {
        return;
    }
    tracing::info!(pid, "stopping the gateway's server process");
    signal(pid, Signal::Term);
    if exited.recv_timeout(grace).is_ok() {
        return;
    }
    tracing::warn!(
        pid,
        grace_ms = grace.as_millis() as u64,
        "the gateway's server process did not stop within the grace period: killing it"
    );
    signal(pid, Signal::Kill);
    let _ = exited.recv_timeout(Duration::from_secs(5));
}

enum Signal {
    Term,
    Kill,
}

#[cfg(unix)]
fn signal(pid: u32, which: Signal) {
    use nix::sys::signal::{Signal as S, kill};
    use nix::unistd::Pid;
    let sig = match which {
        Signal::Term => S::SIGTERM,
        Signal::Kill => S::SIGKILL,
    };
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(e) = kill(Pid::from_raw(raw), sig) {
        tracing::debug!(pid, "cannot signal the gateway's server process: {e}");
    }
}

#[cfg(not(unix))]
fn signal(pid: u32, _which: Signal) {
    // No signals here: the only way is to kill it.
    let _ = Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .status();
}
