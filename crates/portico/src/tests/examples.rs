//! The example gateway files against the types of the Gateway custom resource.

use serde_json::Value;

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
                    let g: crate::spec::GatewayResource = serde_json::from_value(doc)
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
