//! The SaaS webhook gateways through their real HTTP servers: deliveries signed as Slack,
//! Stripe, Bitbucket and Gerrit sign them become events; bad, missing, stale and replayed
//! signatures get 401, make no event and are counted; event types are filtered; Slack's URL
//! verification is answered; Gerrit's credentials stay out of the event.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{client, data, free_port, map};
use portico::Phase;
use portico::testing::Harness;
use portico_gateways::builtin;
use portico_gateways::saas::{sign_slack, sign_stripe, unix_now};
use portico_gateways::webhook::sign_hmac_sha256;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &[u8] = b"whsec_portico";

fn unauthorized(h: &Harness, src: &str) -> u64 {
    h.metric(
        "portico_events_rejected_total",
        &[("src", src), ("reason", "unauthorized")],
    ) as u64
}

/// Runs one configuration of `gateway_type` with `extra` fields; its URL.
async fn start(
    h: &Harness,
    sup: &mut portico::testing::Supervisor,
    dir: &tempfile::TempDir,
    extra: &str,
) -> String {
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, [SECRET, b"\n"].concat()).unwrap();
    let p = free_port();
    let cfg = format!(
        "port: {p}\nendpoint: /hook\nsecretFile: {}\n{extra}",
        secret_file.display()
    );
    sup.apply(&map(&[("c", &cfg)])).await;
    assert!(
        h.wait_for_phase("c", Phase::Running, WAIT).await.is_some(),
        "{:?}",
        h.node("c")
    );
    format!("http://127.0.0.1:{p}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_signed_deliveries_the_challenge_and_replays() {
    let mut h = Harness::new("sl", "slack");
    let mut sup = h.supervisor(builtin("slack").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let url = start(&h, &mut sup, &dir, "events: [app_mention]\ntolerance: 2m").await;
    let c = client();
    let post = |body: &'static str, ts: String, sig: String| {
        c.post(&url)
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body)
            .send()
    };

    // The URL verification: answered with its challenge, no event.
    let challenge = r#"{"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}"#;
    let (ts, sig) = sign_slack(SECRET, unix_now(), challenge.as_bytes());
    let r = post(challenge, ts, sig).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    // A signed event of a kept type: one event.
    let body = r#"{"type": "event_callback", "event": {"type": "app_mention", "text": "hi"}}"#;
    let (ts, sig) = sign_slack(SECRET, unix_now(), body.as_bytes());
    let r = post(body, ts.clone(), sig.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let ce = h.next_event(WAIT).await.expect("the app_mention event");
    assert_eq!(ce.source, "sl/c");
    assert_eq!(ce.ty, "slack");
    assert_eq!(data(&ce)["body"]["event"]["text"], "hi");

    // The same request again: a replay. A stale timestamp, a wrong secret, no signature.
    let r = post(body, ts, sig).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("replay"));
    let (old_ts, old_sig) = sign_slack(SECRET, unix_now() - 180, body.as_bytes());
    assert_eq!(post(body, old_ts, old_sig).await.unwrap().status(), 401);
    let (ts, wrong) = sign_slack(b"not the secret", unix_now(), body.as_bytes());
    assert_eq!(post(body, ts, wrong).await.unwrap().status(), 401);
    let r = c.post(&url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(unauthorized(&h, "c"), 4);

    // A type the configuration does not keep: 200 with the reason, no event.
    let other = r#"{"type": "event_callback", "event": {"type": "message"}}"#;
    let (ts, sig) = sign_slack(SECRET, unix_now(), other.as_bytes());
    let r = post(other, ts, sig).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("`message` is not one of"));
    assert!(h.next_event(Duration::from_millis(200)).await.is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_signatures_with_their_timestamp() {
    let mut h = Harness::new("st", "stripe");
    let mut sup = h.supervisor(builtin("stripe").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let url = start(&h, &mut sup, &dir, "events: [invoice.paid]").await;
    let c = client();
    let body = r#"{"id": "evt_1", "type": "invoice.paid"}"#;
    let post = |sig: Option<String>| {
        let mut r = c.post(&url).body(body);
        if let Some(sig) = sig {
            r = r.header("stripe-signature", sig);
        }
        r.send()
    };
    let good = sign_stripe(SECRET, unix_now(), body.as_bytes());
    assert_eq!(post(Some(good.clone())).await.unwrap().status(), 200);
    let ce = h.next_event(WAIT).await.expect("the invoice.paid event");
    assert_eq!(data(&ce)["body"]["id"], "evt_1");
    assert_eq!(post(Some(good)).await.unwrap().status(), 401);
    let stale = sign_stripe(SECRET, unix_now() - 400, body.as_bytes());
    assert_eq!(post(Some(stale)).await.unwrap().status(), 401);
    let wrong = sign_stripe(b"whsec_other", unix_now(), body.as_bytes());
    assert_eq!(post(Some(wrong)).await.unwrap().status(), 401);
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(unauthorized(&h, "c"), 4);
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitbucket_and_gerrit_deliveries() {
    let mut h = Harness::new("bb", "bitbucket");
    let mut sup = h.supervisor(builtin("bitbucket").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let url = start(&h, &mut sup, &dir, "events: ['repo:push']").await;
    let c = client();
    let body = r#"{"push": {"changes": [{"new": {"name": "main"}}]}}"#;
    let sig = sign_hmac_sha256(SECRET, body.as_bytes());
    let post = |key: &'static str, sig: String| {
        c.post(&url)
            .header("x-event-key", key)
            .header("x-hub-signature", sig)
            .body(body)
            .send()
    };
    assert_eq!(post("repo:push", sig.clone()).await.unwrap().status(), 200);
    let ce = h.next_event(WAIT).await.expect("the push");
    assert_eq!(data(&ce)["header"]["x-event-key"][0], "repo:push");
    assert_eq!(
        post("pullrequest:created", sig).await.unwrap().status(),
        200
    );
    let wrong = sign_hmac_sha256(b"nope", body.as_bytes());
    assert_eq!(post("repo:push", wrong).await.unwrap().status(), 401);
    assert!(h.next_event(Duration::from_millis(200)).await.is_none());
    sup.stop_all().await;

    let mut h = Harness::new("gr", "gerrit");
    let mut sup = h.supervisor(builtin("gerrit").unwrap());
    let url = start(&h, &mut sup, &dir, "").await;
    let body = r#"{"type": "change-merged", "change": {"number": 42}}"#;
    let secret = std::str::from_utf8(SECRET).unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("gerrit:{secret}"));
    let r = c
        .post(&url)
        .header("authorization", format!("Basic {basic}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ce = h.next_event(WAIT).await.expect("the change-merged event");
    let d = data(&ce);
    assert_eq!(d["body"]["change"]["number"], 42);
    assert!(d["header"].get("authorization").is_none(), "{d}");
    assert!(!d.to_string().contains(secret));
    let r = c
        .post(&url)
        .header("authorization", "Bearer wrong")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    sup.stop_all().await;
}
