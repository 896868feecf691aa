//! `portico crd`: the output parses, declares the status subresource, the printer columns
//! and the schema of the spec, and `deploy/crd.yaml` is exactly what it prints.

use std::process::Command;

use serde_json::Value;

fn crd_text() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("crd")
        .output()
        .expect("run portico crd");
    assert!(
        out.status.success(),
        "portico crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn crd_declares_status_columns_and_the_spec_schema() {
    let crd: Value = serde_saphyr::from_str(&crd_text()).expect("the CRD is YAML");
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
    // deploySpec is a PodSpec, serviceSpec a ServiceSpec.
    assert!(
        spec["deploySpec"]["properties"]["containers"]["items"]["properties"]["env"].is_object()
    );
    assert!(spec["serviceSpec"]["properties"]["ports"].is_object());
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

/// Every example gateway file is a set of manifests `kubectl apply -f` takes: each Gateway
/// is a valid `portico.dev/v1alpha1` Gateway of the CRD (the same types the API server's
/// objects are read into), each ConfigMap has text values.
#[test]
fn example_gateways_apply_as_they_are() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gateways");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/gateways") {
        let path = entry.expect("a directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read the example");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
                (Some("portico.dev/v1alpha1"), Some("Gateway")) => {
                    let g: portico::spec::GatewayResource = serde_json::from_value(doc)
                        .unwrap_or_else(|e| {
                            panic!("{}: not a Gateway of the CRD: {e}", path.display())
                        });
                    assert!(g.metadata.name.is_some(), "{}", path.display());
                    seen += 1;
                }
                (Some("v1"), Some("ConfigMap")) => {
                    let data = doc["data"].as_object().cloned().unwrap_or_default();
                    for (k, v) in data {
                        assert!(
                            v.is_string(),
                            "{}: ConfigMap value `{k}` is not text",
                            path.display()
                        );
                    }
                }
                other => panic!("{}: unexpected document {other:?}", path.display()),
            }
        }
    }
    assert!(seen >= 2, "expected the example gateways, found {seen}");
}
