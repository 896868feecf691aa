//! The standalone `fake-kube` program with the real `kubectl` pointed at it: the kubeconfig it
//! prints works, objects are created, listed and applied, and a write with a stale
//! `resourceVersion` is refused with `409 Conflict` as the API server refuses it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

/// The running program, killed when dropped.
struct Server {
    child: Child,
    kubeconfig: tempfile::NamedTempFile,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-kube"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fake-kube");
    // The kubeconfig is printed at once, and ends with the user's token.
    let mut text = String::new();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    loop {
        let mut line = String::new();
        let n = lines.read_line(&mut line).expect("read the kubeconfig");
        assert!(
            n > 0,
            "fake-kube ended before printing its kubeconfig: {text}"
        );
        text.push_str(&line);
        if line.trim_start().starts_with("token:") {
            break;
        }
    }
    let mut kubeconfig = tempfile::NamedTempFile::new().expect("a temporary file");
    kubeconfig.write_all(text.as_bytes()).unwrap();
    Server { child, kubeconfig }
}

fn kubectl(server: &Server, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(server.kubeconfig.path())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("run kubectl (scripts/test installs it: apt-get install kubectl)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("kubectl's output")
}

fn ok(server: &Server, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(server, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const LEASE: &str = "apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: bucket-0
  namespace: default
spec:
  holderIdentity: replica-a
  leaseDurationSeconds: 15
";

#[test]
fn kubectl_works_against_the_standalone_fake() {
    let server = start();
    // kubectl's client-side schema check needs the OpenAPI documents, which the fake does not
    // serve: every write says --validate=false.
    ok(
        &server,
        &["create", "--validate=false", "-f", "-"],
        Some(LEASE),
    );
    let lease = ok(&server, &["get", "lease", "bucket-0", "-o", "json"], None);
    let lease: serde_json::Value = serde_json::from_str(&lease).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    let rv = lease["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // A write from the current version wins; a second one from the same, now stale,
    // version is refused with 409, as a real API server guards a Lease.
    let take = |holder: &str| {
        LEASE.replace("replica-a", holder).replace(
            "  namespace: default\n",
            &format!("  namespace: default\n  resourceVersion: \"{rv}\"\n"),
        )
    };
    ok(
        &server,
        &["replace", "--validate=false", "-f", "-"],
        Some(&take("replica-b")),
    );
    let stale = kubectl(
        &server,
        &["replace", "--validate=false", "-f", "-"],
        Some(&take("replica-c")),
    );
    assert!(!stale.status.success());
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(err.contains("Conflict"), "{err}");
    let holder = ok(
        &server,
        &[
            "get",
            "lease",
            "bucket-0",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert_eq!(holder, "replica-b");

    // A gateway file applies as it is, in both groups.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/gateways/calendar.yaml"
    );
    ok(&server, &["apply", "--validate=false", "-f", example], None);
    let names = ok(
        &server,
        &["get", "gateways.portico.dev", "-o", "name"],
        None,
    );
    assert_eq!(names.trim(), "gateway.portico.dev/calendar-gateway");
    let argo = "apiVersion: argoproj.io/v1alpha1
kind: Gateway
metadata:
  name: webhook-gateway
  labels:
    gateways.argoproj.io/gateway-controller-instanceid: argo-events
spec:
  type: webhook
  eventVersion: \"1.0\"
";
    ok(
        &server,
        &["apply", "--validate=false", "-f", "-"],
        Some(argo),
    );
    let names = ok(
        &server,
        &[
            "get",
            "gateways.argoproj.io",
            "-l",
            "gateways.argoproj.io/gateway-controller-instanceid=argo-events",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(names.trim(), "gateway.argoproj.io/webhook-gateway");
    assert_eq!(
        ok(&server, &["get", "statefulsets", "-o", "name"], None).trim(),
        ""
    );
}
