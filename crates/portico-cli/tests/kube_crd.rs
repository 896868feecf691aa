//! `portico crd`: the output parses into two CRDs (Portico's group and Argo Events'), each
//! declares the status subresource, the printer columns and the schema of the spec, is small
//! enough for `kubectl apply`, and `deploy/crd.yaml` is exactly what it prints.

use std::process::Command;

use serde_json::Value;

fn crd_text() -> String {
    crd_text_with(&[])
}

fn crd_text_with(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("crd")
        .args(args)
        .output()
        .expect("run portico crd");
    assert!(
        out.status.success(),
        "portico crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The CRDs `portico crd` prints, Portico's first.
fn crds() -> Vec<Value> {
    serde_saphyr::from_multiple(&crd_text()).expect("the CRDs are YAML")
}

#[test]
fn both_groups_are_printed_and_one_can_be_chosen() {
    let names: Vec<Value> = crds()
        .iter()
        .map(|c| c["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, ["gateways.portico.dev", "gateways.argoproj.io"]);
    let argo: Value =
        serde_saphyr::from_str(&crd_text_with(&["--group", "argoproj.io"])).expect("one CRD");
    assert_eq!(argo["spec"]["group"], "argoproj.io");
    // The same schema in both groups.
    assert_eq!(argo["spec"]["versions"], crds()[0]["spec"]["versions"]);
    assert_eq!(argo["spec"]["names"]["kind"], "Gateway");
    assert_eq!(argo["spec"]["names"]["plural"], "gateways");
}

#[test]
fn crd_declares_status_columns_and_the_spec_schema() {
    let crd = crds().remove(0);
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "gateways.portico.dev");
    assert_eq!(crd["spec"]["group"], "portico.dev");
    assert_eq!(crd["spec"]["names"]["kind"], "Gateway");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object(), "{version}");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(columns, ["Type", "Phase", "Age"]);

    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    let spec = &schema["spec"]["properties"];
    for field in [
        "type",
        "eventVersion",
        "configMap",
        "rpcPort",
        "httpServerPort",
        "dispatchMechanism",
        "watchers",
        "delivery",
        "deploySpec",
        "serviceSpec",
    ] {
        assert!(spec[field].is_object(), "spec.{field} is not in the schema");
    }
    // deploySpec (a PodSpec) and serviceSpec (a ServiceSpec) are kept open.
    for field in ["deploySpec", "serviceSpec"] {
        assert_eq!(spec[field]["type"], "object");
        assert_eq!(spec[field]["x-kubernetes-preserve-unknown-fields"], true);
    }
    assert_eq!(spec["rpcPort"]["x-kubernetes-int-or-string"], true);
    assert_eq!(
        spec["dispatchMechanism"]["enum"],
        serde_json::json!(["HTTP", "NATS", "Kafka"])
    );
    // The status the controller and the gateway write.
    let status = &schema["status"]["properties"];
    assert!(status["phase"].is_object());
    assert!(status["nodes"]["additionalProperties"]["properties"]["phase"].is_object());
}

/// Client-side `kubectl apply` keeps the whole object in an annotation, which the API server
/// takes up to 262,144 bytes: the CRD's JSON must stay well under it.
#[test]
fn the_crd_is_small_enough_for_kubectl_apply() {
    for crd in crds() {
        let json = serde_json::to_string(&crd).unwrap();
        assert!(
            json.len() < 200 * 1024,
            "the JSON of {} is {} bytes, over 200 KiB",
            crd["metadata"]["name"],
            json.len()
        );
    }
}

#[test]
fn deploy_crd_yaml_is_the_generated_one() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crd.yaml"
    ))
    .expect("read deploy/crd.yaml");
    assert!(
        committed == crd_text(),
        "deploy/crd.yaml is stale: regenerate it with `portico crd > deploy/crd.yaml`"
    );
}
