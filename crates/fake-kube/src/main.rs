//! `fake-kube`: the fake Kubernetes API server as a program, so that `kubectl` and other
//! clients can be pointed at it by hand.
//!
//! ```sh
//! cargo run -p fake-kube -- --port 8001 > /tmp/fake.kubeconfig
//! kubectl --kubeconfig /tmp/fake.kubeconfig apply -f examples/gateways/calendar.yaml
//! ```
//!
//! It prints a kubeconfig that points at it on standard output, then serves until it is
//! interrupted (Ctrl-C or SIGTERM). Everything it holds is in memory and gone when it stops.

use clap::Parser;

/// A small fake Kubernetes API server on loopback (test support: see docs/kubernetes.md for
/// what it serves and what it does not).
#[derive(Parser)]
#[command(name = "fake-kube", version)]
struct Args {
    /// The loopback port to listen on (0: a free one; the kubeconfig names it).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let fake = fake_kube::FakeKube::start_on(args.port).await;
    print!("{}", fake.kubeconfig());
    eprintln!("fake-kube: serving {} (Ctrl-C stops it)", fake.url());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-kube: cannot listen for SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
