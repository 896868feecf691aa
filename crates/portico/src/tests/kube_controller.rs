//! The controller against the fake API server (crates/fake-kube): a Gateway with the right
//! instance id becomes a StatefulSet (and Services) whose containers have the environment of
//! the gateway environment (docs/contract.md) for its style; another id is ignored; a deleted StatefulSet comes back; an edited
//! spec updates it; an invalid Gateway gets phase Error.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::controller::{ControllerOptions, run};
use fake_kube::FakeKube;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const GW: &str = "portico.dev/v1alpha1";

fn gateway(name: &str, instance: &str, spec: Value) -> Value {
    json!({
        "apiVersion": GW, "kind": "Gateway",
        "metadata": {"name": name, "namespace": "ns",
            "labels": {"portico.dev/controller-instance-id": instance}},
        "spec": spec,
    })
}

fn pod(image: &str) -> Value {
    json!({"containers": [
        {"name": "processor", "image": image, "env": [{"name": "USER_VAR", "value": "kept"}, {"name": "TRANSFORMER_PORT", "value": "1"}]},
        {"name": "sidecar", "image": "busybox"},
    ]})
}

fn deployment(fake: &FakeKube, name: &str) -> Option<Value> {
    fake.get("apps/v1", "StatefulSet", "ns", &format!("{name}-gateway"))
}

fn env_of(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn containers(d: &Value) -> Vec<Value> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn gateways_become_deployments_that_are_repaired_and_updated() {
    let fake = FakeKube::start().await;
    // gRPC style, with a Service.
    let grpc = fake.create(gateway(
        "grpc",
        "a",
        json!({"type": "mine", "configMap": "grpc-cm", "rpcPort": "9898",
            "deploySpec": pod("example/grpc:1"),
            "serviceSpec": {"ports": [{"port": 9330, "targetPort": 9300}]}}),
    ));
    // HTTP style, no Service.
    fake.create(gateway(
        "web",
        "a",
        json!({"type": "mine", "configMap": "web-cm", "httpServerPort": 9696, "replicas": 3,
            "delivery": {"outbox": {"storage": {"size": "2Gi", "storageClassName": "fast"}}},
            "deploySpec": pod("example/http:1")}),
    ));
    // Another controller's.
    fake.create(gateway(
        "theirs",
        "b",
        json!({"type": "mine", "deploySpec": pod("example/x:1")}),
    ));
    // Invalid: no deploySpec.
    fake.create(gateway("broken", "a", json!({"type": "mine"})));

    let stop = CancellationToken::new();
    let mut options = ControllerOptions::new("a");
    options.namespace = Some("ns".into());
    options.initial_backoff = Duration::from_millis(200);
    let shutdown = stop.clone();
    let controller = tokio::spawn(run(fake.client(), options, None, async move {
        shutdown.cancelled().await
    }));

    // gRPC style: every variable of the gateway environment for that style, on every container.
    let d = fake
        .wait_for("the grpc StatefulSet", WAIT, |f| deployment(f, "grpc"))
        .await;
    let owner = &d["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Gateway");
    assert_eq!(owner["uid"], grpc["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["portico.dev/gateway"],
        "grpc"
    );
    let cs = containers(&d);
    assert_eq!(cs.len(), 2);
    assert_eq!(
        d["spec"]["replicas"], 1,
        "one replica unless spec.replicas says"
    );
    for c in &cs {
        // Each replica is named after its pod.
        let replica = c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == "PORTICO_REPLICA"))
            .unwrap_or_else(|| panic!("PORTICO_REPLICA in {c}"));
        assert_eq!(
            replica["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let env = env_of(c);
        let want = [
            ("TRANSFORMER_PORT", "9300"),
            ("GATEWAY_NAMESPACE", "ns"),
            ("GATEWAY_PROCESSOR_CONFIG_MAP", "grpc-cm"),
            ("GATEWAY_NAME", "grpc"),
            ("GATEWAY_CONTROLLER_INSTANCE_ID", "a"),
            ("GATEWAY_PROCESSOR_GRPC_SERVER_PORT", "9898"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {c}");
        }
        assert!(!env.contains_key("GATEWAY_PROCESSOR_SERVER_HTTP_PORT"));
    }
    assert_eq!(
        env_of(&cs[0]).get("USER_VAR").map(String::as_str),
        Some("kept")
    );
    let svc = fake
        .wait_for("the grpc Service", WAIT, |f| {
            f.get("v1", "Service", "ns", "grpc-gateway-svc")
        })
        .await;
    assert_eq!(svc["spec"]["selector"]["portico.dev/gateway"], "grpc");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9330);

    // HTTP style.
    let d = fake
        .wait_for("the web StatefulSet", WAIT, |f| deployment(f, "web"))
        .await;
    assert_eq!(d["spec"]["replicas"], 3, "spec.replicas");
    // One PersistentVolumeClaim per replica for its outbox, mounted where PORTICO_OUTBOX_DIR
    // says.
    let claim = &d["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "outbox");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(claim["spec"]["storageClassName"], "fast");
    let c = &containers(&d)[0];
    assert_eq!(env_of(c)["PORTICO_OUTBOX_DIR"], "/var/lib/portico/outbox");
    assert!(
        c["volumeMounts"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["name"] == "outbox" && m["mountPath"] == "/var/lib/portico/outbox")),
        "{c}"
    );
    assert!(
        !d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == "outbox")),
        "the claim, not an emptyDir"
    );
    let env = env_of(&containers(&d)[0]);
    for (k, v) in [
        ("TRANSFORMER_PORT", "9300"),
        ("GATEWAY_NAMESPACE", "ns"),
        ("GATEWAY_PROCESSOR_CONFIG_MAP", "web-cm"),
        ("GATEWAY_NAME", "web"),
        ("GATEWAY_CONTROLLER_INSTANCE_ID", "a"),
        ("GATEWAY_PROCESSOR_SERVER_HTTP_PORT", "9696"),
        ("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "9393"),
        ("GATEWAY_HTTP_CONFIG_START", "/start"),
        ("GATEWAY_HTTP_CONFIG_STOP", "/stop"),
        ("GATEWAY_HTTP_CONFIG_EVENT", "/event"),
        ("GATEWAY_HTTP_CONFIG_RUNNING", "/activated"),
        ("GATEWAY_HTTP_CONFIG_ERROR", "/error"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(fake.get("v1", "Service", "ns", "web-gateway-svc").is_none());

    // Status: Running for the good ones, Error with the reason for the invalid one.
    fake.wait_for("grpc Running", WAIT, |f| {
        let g = f.get(GW, "Gateway", "ns", "grpc")?;
        (g["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let broken = fake
        .wait_for("broken in Error", WAIT, |f| {
            let g = f.get(GW, "Gateway", "ns", "broken")?;
            (g["status"]["phase"] == "Error").then_some(g)
        })
        .await;
    assert!(
        broken["status"]["message"]
            .as_str()
            .unwrap()
            .contains("deploySpec"),
        "{broken}"
    );
    assert!(deployment(&fake, "broken").is_none());
    // Requeued with backoff: fixing nothing, it is tried again (several status reads are
    // not needed; a fixed Gateway is picked up by its own watch event).
    let mut fixed = fake.get(GW, "Gateway", "ns", "broken").unwrap();
    fixed["spec"]["deploySpec"] = pod("example/fixed:1");
    fake.replace(fixed);
    fake.wait_for("the fixed StatefulSet", WAIT, |f| deployment(f, "broken"))
        .await;

    // Deleting the StatefulSet makes the controller create it again.
    fake.delete("apps/v1", "StatefulSet", "ns", "grpc-gateway")
        .expect("the StatefulSet exists");
    let d = fake
        .wait_for("the grpc StatefulSet again", WAIT, |f| {
            deployment(f, "grpc")
        })
        .await;
    assert_eq!(containers(&d)[0]["image"], "example/grpc:1");

    // Drift: someone edits the StatefulSet; it is put back.
    let mut drifted = d.clone();
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/image:6");
    fake.replace(drifted);
    fake.wait_for("the drift repaired", WAIT, |f| {
        let d = deployment(f, "grpc")?;
        (containers(&d)[0]["image"] == "example/grpc:1").then_some(())
    })
    .await;

    // Editing the Gateway's spec updates the StatefulSet.
    fake.patch(
        GW,
        "Gateway",
        "ns",
        "grpc",
        json!({"spec": {"rpcPort": "7070", "deploySpec": pod("example/grpc:2")}}),
    )
    .unwrap();
    fake.wait_for("the updated StatefulSet", WAIT, |f| {
        let d = deployment(f, "grpc")?;
        let c = &containers(&d)[0];
        (c["image"] == "example/grpc:2"
            && env_of(c)
                .get("GATEWAY_PROCESSOR_GRPC_SERVER_PORT")
                .map(String::as_str)
                == Some("7070"))
        .then_some(())
    })
    .await;

    // Removing serviceSpec removes the Service the gateway owned.
    fake.patch(
        GW,
        "Gateway",
        "ns",
        "grpc",
        json!({"spec": {"serviceSpec": null}}),
    )
    .unwrap();
    fake.wait_for("the Service removed", WAIT, |f| {
        f.get("v1", "Service", "ns", "grpc-gateway-svc")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(deployment(&fake, "grpc").is_some());

    // The other controller's Gateway was never touched.
    assert!(deployment(&fake, "theirs").is_none());
    let theirs = fake.get(GW, "Gateway", "ns", "theirs").unwrap();
    assert!(theirs["status"].is_null(), "{theirs}");

    stop.cancel();
    tokio::time::timeout(WAIT, controller)
        .await
        .expect("the controller stops")
        .expect("the controller task ends cleanly");
}

/// An Argo Events v0.6 Gateway, as its examples wrote it.
fn argo_gateway(name: &str, instance: &str) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "ns", "labels": {
            "gateways.argoproj.io/gateway-controller-instanceid": instance,
            "gateway-name": name,
        }},
        "spec": {
            "configMap": format!("{name}-configmap"),
            "type": "webhook",
            "dispatchMechanism": "HTTP",
            "eventVersion": "1.0",
            "imageVersion": "latest",
            "deploySpec": {
                "containers": [{"name": "webhook-events", "image": "argoproj/webhook-gateway",
                    "command": ["/bin/webhook-gateway"]}],
                "serviceAccountName": "argo-events-sa",
            },
            "serviceSpec": {
                "selector": {"gateway-name": name},
                "ports": [{"port": 12000, "targetPort": 12000}],
                "type": "LoadBalancer",
            },
            "watchers": {"sensors": [{"name": "webhook-sensor"}]},
        },
    })
}

#[tokio::test]
async fn argo_gateways_are_selected_by_their_own_instance_label() {
    const ARGO: &str = "argoproj.io/v1alpha1";
    let fake = FakeKube::start().await;
    let ours = fake.create(argo_gateway("webhook-gateway", "argo-events"));
    fake.create(argo_gateway("other-gateway", "another-instance"));
    // A portico.dev Gateway labelled with Argo's label (not its group's) is not ours either.
    let mut mislabelled = argo_gateway("mislabelled", "argo-events");
    mislabelled["apiVersion"] = json!(GW);
    mislabelled["spec"]
        .as_object_mut()
        .unwrap()
        .remove("imageVersion");
    fake.create(mislabelled);

    let stop = CancellationToken::new();
    let mut options = ControllerOptions::new("argo-events");
    options.namespace = Some("ns".into());
    let shutdown = stop.clone();
    let controller = tokio::spawn(run(fake.client(), options, None, async move {
        shutdown.cancelled().await
    }));

    // v0.6's names: `<gateway>-gateway-deployment` and `<gateway>-gateway-svc`.
    let d = fake
        .wait_for("the Argo gateway's StatefulSet", WAIT, |f| {
            f.get(
                "apps/v1",
                "StatefulSet",
                "ns",
                "webhook-gateway-gateway-deployment",
            )
        })
        .await;
    let owner = &d["metadata"]["ownerReferences"][0];
    assert_eq!(owner["apiVersion"], ARGO);
    assert_eq!(owner["kind"], "Gateway");
    assert_eq!(owner["uid"], ours["metadata"]["uid"]);
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["gateway-name"], "webhook-gateway", "{d}");
    assert_eq!(
        pod_labels["gateways.argoproj.io/gateway-controller-instanceid"],
        "argo-events"
    );
    let env = env_of(&containers(&d)[0]);
    for (k, v) in [
        ("GATEWAY_NAME", "webhook-gateway"),
        ("GATEWAY_NAMESPACE", "ns"),
        ("GATEWAY_PROCESSOR_CONFIG_MAP", "webhook-gateway-configmap"),
        ("GATEWAY_CONTROLLER_INSTANCE_ID", "argo-events"),
        ("TRANSFORMER_PORT", "9300"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    // The Service's v0.6 selector (`gateway-name`) matches the pods.
    let svc = fake
        .wait_for("the Argo gateway's Service", WAIT, |f| {
            f.get("v1", "Service", "ns", "webhook-gateway-gateway-svc")
        })
        .await;
    assert_eq!(svc["spec"]["selector"]["gateway-name"], "webhook-gateway");
    fake.wait_for("the Argo gateway Running", WAIT, |f| {
        let g = f.get(ARGO, "Gateway", "ns", "webhook-gateway")?;
        (g["status"]["phase"] == "Running").then_some(())
    })
    .await;

    // Repaired like Portico's own.
    fake.delete(
        "apps/v1",
        "StatefulSet",
        "ns",
        "webhook-gateway-gateway-deployment",
    )
    .expect("the StatefulSet exists");
    fake.wait_for("the Argo StatefulSet again", WAIT, |f| {
        f.get(
            "apps/v1",
            "StatefulSet",
            "ns",
            "webhook-gateway-gateway-deployment",
        )
    })
    .await;

    // Another instance id's Gateway and the mislabelled one were never touched.
    for (api, name) in [(ARGO, "other-gateway"), (GW, "mislabelled")] {
        let g = fake.get(api, "Gateway", "ns", name).unwrap();
        assert!(g["status"].is_null(), "{g}");
    }
    for name in [
        "other-gateway-gateway-deployment",
        "mislabelled-gateway",
        "mislabelled-gateway-deployment",
    ] {
        assert!(
            fake.get("apps/v1", "StatefulSet", "ns", name).is_none(),
            "{name}"
        );
    }

    stop.cancel();
    tokio::time::timeout(WAIT, controller)
        .await
        .expect("the controller stops")
        .expect("the controller task ends cleanly");
}

/// `GET path` of the controller's page: (status, content type, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let r = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, r.text().await.expect("a body"))
}

#[tokio::test]
async fn the_controller_page_lists_every_gateway_it_manages() {
    let fake = FakeKube::start().await;
    // Its `type` is shown on the page, escaped.
    fake.create(gateway(
        "web",
        "a",
        json!({"type": "hook<b>&", "configMap": "web-cm", "deploySpec": pod("example/http:1")}),
    ));
    fake.create(gateway("broken", "a", json!({"type": "mine"})));
    fake.create(gateway(
        "theirs",
        "b",
        json!({"type": "mine", "deploySpec": pod("example/x:1")}),
    ));
    fake.create(argo_gateway("argo-hook", "a"));

    let listener = crate::controller::bind_page("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind the page");
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let mut options = ControllerOptions::new("a");
    options.namespace = Some("ns".into());
    options.initial_backoff = Duration::from_millis(200);
    let shutdown = stop.clone();
    let controller = tokio::spawn(run(fake.client(), options, Some(listener), async move {
        shutdown.cancelled().await
    }));

    // The gateway's own pod writes its nodes into the status (as crates/portico/src/kube_status.rs
    // does); the controller's watch sees them.
    fake.wait_for("web Running", WAIT, |f| {
        let g = f.get(GW, "Gateway", "ns", "web")?;
        (g["status"]["phase"] == "Running").then_some(())
    })
    .await;
    fake.patch(
        GW,
        "Gateway",
        "ns",
        "web",
        json!({"status": {"nodes": {
            "1": {"id": "1", "name": "a", "phase": "Running"},
            "2": {"id": "2", "name": "b", "phase": "Running"},
            "3": {"id": "3", "name": "c", "phase": "Error", "message": "bad"},
        }}}),
    )
    .unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let (code, content_type, body) = get(addr, "/status").await;
        assert_eq!(code, 200, "{body}");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let s: Value = serde_json::from_str(&body).expect("/status is JSON");
        let by_name = |name: &str| {
            s["gateways"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["name"] == name)
                .cloned()
        };
        let settled = by_name("web").is_some_and(|g| g["nodeCount"] == 3)
            && by_name("broken").is_some_and(|g| g["phase"] == "Error")
            && by_name("argo-hook").is_some_and(|g| g["phase"] == "Running");
        if settled {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page's /status did not settle: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["controller"]["instanceId"], "a");
    assert_eq!(status["controller"]["namespace"], "ns");
    let gateways = status["gateways"].as_array().unwrap();
    let names: Vec<&str> = gateways
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    // Sorted by namespace and name; another controller's Gateway is not there.
    assert_eq!(names, ["argo-hook", "broken", "web"], "{status:#}");
    let web = &gateways[2];
    assert_eq!(web["group"], "portico.dev");
    assert_eq!(web["namespace"], "ns");
    assert_eq!(web["type"], "hook<b>&");
    assert_eq!(web["phase"], "Running");
    assert_eq!(web["nodes"], json!({"Error": 1, "Running": 2}));
    assert_eq!(gateways[0]["group"], "argoproj.io");
    assert!(
        gateways[1]["message"]
            .as_str()
            .unwrap()
            .contains("deploySpec"),
        "{status:#}"
    );

    let (code, content_type, page) = get(addr, "/").await;
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for needle in [
        "data-gateway=\"ns/web\"",
        "data-gateway=\"ns/broken\"",
        "data-gateway=\"ns/argo-hook\"",
        "<span class=\"phase\" data-phase=\"Error\">Error</span>",
        "<span class=\"count\" data-phase=\"Error\">1 Error</span>",
        "<span class=\"count\" data-phase=\"Running\">2 Running</span>",
        "hook&lt;b&gt;&amp;",
        "<b id=\"gateway-count\">3</b>",
    ] {
        assert!(
            page.contains(needle),
            "{needle} is not in the page:\n{page}"
        );
    }
    assert!(!page.contains("hook<b>"), "{page}");
    assert!(!page.contains("theirs"), "{page}");
    assert!(!page.contains("<!--ROWS-->"), "{page}");
    assert_eq!(get(addr, "/healthz").await.2, "ok");

    stop.cancel();
    tokio::time::timeout(WAIT, controller)
        .await
        .expect("the controller stops")
        .expect("the controller task ends cleanly");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the page stopped with the controller"
    );
}
