//! Every built-in gateway type has a runnable example in examples/gateways/, named after the
//! type, that `portico validate` (the real binary) finds valid.

mod support;

use std::path::PathBuf;

#[test]
fn every_builtin_type_has_an_example_that_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/gateways");
    for gateway_type in portico_gateways::BUILTIN_TYPES {
        let path = dir.join(format!("{gateway_type}.yaml"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no example for `{gateway_type}`: {}: {e}", path.display()));
        assert!(
            text.lines()
                .any(|l| l.trim() == format!("type: {gateway_type}")),
            "{}: its Gateway is not of type `{gateway_type}`",
            path.display()
        );
        let out = std::process::Command::new(support::portico_bin())
            .args(["validate", path.to_str().unwrap()])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
