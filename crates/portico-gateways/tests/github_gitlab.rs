//! The github and gitlab gateways: signatures and tokens checked, 401s counted, event types
//! filtered, secrets kept out of events.

mod common;

use std::time::Duration;

use common::{client, data, free_port, map};
use portico::Phase;
use portico::testing::Harness;
use portico_gateways::builtin;
use portico_gateways::webhook::sign_hmac_sha256;

const WAIT: Duration = Duration::from_secs(10);

fn unauthorized(h: &Harness, src: &str) -> u64 {
    h.metric(
        "portico_events_rejected_total",
        &[("src", src), ("reason", "unauthorized")],
    ) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_checks_the_signature_and_filters_event_types() {
    let mut h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "It's a Secret to Everybody\n").unwrap();
    let p = free_port();
    let cfg = format!(
        "port: {p}\nendpoint: /github\nsecretFile: {}\nevents: [push, pull_request]",
        secret_file.display()
    );
    sup.apply(&map(&[("repo", &cfg)])).await;
    assert!(
        h.wait_for_phase("repo", Phase::Running, WAIT)
            .await
            .is_some(),
        "{:?}",
        h.node("repo")
    );
    let c = client();
    let url = format!("http://127.0.0.1:{p}/github");
    let body = br#"{"ref":"refs/heads/main","commits":[]}"#;
    let good = sign_hmac_sha256(b"It's a Secret to Everybody", body);

    let send = |event: &'static str, sig: Option<String>| {
        let mut r = c
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .body(&body[..]);
        if let Some(sig) = sig {
            r = r.header("x-hub-signature-256", sig);
        }
        r.send()
    };

    // Right secret, wanted type: accepted, one event with the delivery.
    let r = send("push", Some(good.clone())).await.unwrap();
    assert_eq!(r.status(), 200);
    let ce = h.next_event(WAIT).await.expect("the push event");
    assert_eq!(ce.source, "gh/repo");
    let d = data(&ce);
    assert_eq!(d["body"]["ref"], "refs/heads/main");
    assert_eq!(d["header"]["x-github-event"][0], "push");

    // Right secret, a type the configuration does not keep: 200, no event, the reason said.
    let r = send("issues", Some(good.clone())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("`issues` is not one of"));

    // Wrong or missing signature: 401, no event, counted.
    let wrong = sign_hmac_sha256(b"not the secret", body);
    let r = send("push", Some(wrong)).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = send("push", None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("missing x-hub-signature-256")
    );
    let r = send("push", Some("sha256=zz".into())).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(unauthorized(&h, "repo"), 3);

    // A second wanted type still passes; then nothing else was produced.
    assert_eq!(
        send("pull_request", Some(good)).await.unwrap().status(),
        200
    );
    let ce = h.next_event(WAIT).await.expect("the pull_request event");
    assert_eq!(data(&ce)["header"]["x-github-event"][0], "pull_request");
    assert!(h.try_next_event().is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_checks_the_token_and_keeps_it_out_of_the_event() {
    let mut h = Harness::new("gl", "gitlab");
    let mut sup = h.supervisor(builtin("gitlab").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, "tok-123").unwrap();
    let p = free_port();
    let cfg = format!(
        "port: {p}\nendpoint: /gitlab\nsecretFile: {}\nevents: [push, Merge Request Hook]",
        secret_file.display()
    );
    sup.apply(&map(&[("project", &cfg)])).await;
    assert!(
        h.wait_for_phase("project", Phase::Running, WAIT)
            .await
            .is_some(),
        "{:?}",
        h.node("project")
    );
    let c = client();
    let url = format!("http://127.0.0.1:{p}/gitlab");
    let send = |event: &'static str, token: Option<&'static str>| {
        let mut r = c
            .post(&url)
            .header("x-gitlab-event", event)
            .body(r#"{"object_kind":"push"}"#);
        if let Some(t) = token {
            r = r.header("x-gitlab-token", t);
        }
        r.send()
    };
    assert_eq!(
        send("Push Hook", Some("tok-123")).await.unwrap().status(),
        200
    );
    let d = data(&h.next_event(WAIT).await.expect("the push event"));
    assert_eq!(d["body"]["object_kind"], "push");
    assert!(
        d["header"].get("x-gitlab-token").is_none(),
        "the token is not copied: {d}"
    );
    assert_eq!(
        send("Merge Request Hook", Some("tok-123"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(h.next_event(WAIT).await.is_some());
    let r = send("Issue Hook", Some("tok-123")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("ignored"));
    assert_eq!(
        send("Push Hook", Some("tok-124")).await.unwrap().status(),
        401
    );
    assert_eq!(send("Push Hook", None).await.unwrap().status(), 401);
    assert_eq!(unauthorized(&h, "project"), 2);
    assert!(h.try_next_event().is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_clear_error() {
    let h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    let p = free_port();
    sup.apply(&map(&[
        ("nosecret", &format!("port: {p}\nendpoint: /x")),
        (
            "noenv",
            &format!("port: {p}\nendpoint: /y\nsecretEnv: PORTICO_TEST_SURELY_UNSET_VARIABLE"),
        ),
    ]))
    .await;
    let n = h
        .wait_for_phase("nosecret", Phase::Error, WAIT)
        .await
        .unwrap();
    assert!(n.message.contains("secretFile"), "{}", n.message);
    let n = h.wait_for_phase("noenv", Phase::Error, WAIT).await.unwrap();
    assert!(
        n.message
            .contains("PORTICO_TEST_SURELY_UNSET_VARIABLE is not set"),
        "{}",
        n.message
    );
    sup.stop_all().await;
}
