//! The generated reference pages of the framework are what the code makes of itself: the
//! Gateway resource (`docs/reference/gateway-resource.md`, from the CRD's types and their doc
//! comments) and the metrics (`docs/reference/metrics.md`, from the metrics registry). A field
//! or a metric added, renamed or documented in code and not in the docs fails here.
//!
//! To regenerate the pages: `PORTICO_BLESS=1 cargo test -p portico --test reference_docs`.

use std::path::PathBuf;

use portico::reference;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference")
}

/// Writes `page` to `docs/reference/<name>` under `PORTICO_BLESS`, else fails when the file
/// differs from it.
fn check(name: &str, page: &str) {
    let path = dir().join(name);
    if std::env::var_os("PORTICO_BLESS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&path, page).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == page,
        "{} is stale or missing; regenerate it with \
         `PORTICO_BLESS=1 cargo test -p portico --test reference_docs`",
        path.display()
    );
}

#[test]
fn the_gateway_resource_page_is_current() {
    check("gateway-resource.md", &reference::gateway_resource_page());
}

#[test]
fn the_metrics_page_is_current() {
    check("metrics.md", &reference::metrics_page().unwrap());
}

#[test]
fn the_gateway_resource_page_documents_every_field_of_spec_and_status() {
    let page = reference::gateway_resource_page();
    for field in [
        "`type`",
        "`configMap`",
        "`rpcPort`",
        "`httpServerPort`",
        "`watchers`",
        "`delivery`",
        "`deploySpec`",
        "`nodes`",
        "`maxAttempts`",
    ] {
        assert!(page.contains(&format!("| {field} |")), "{field}: {page}");
    }
    assert!(
        page.contains("| `eventVersion` | string | no | `1.0` |"),
        "{page}"
    );
    assert!(
        page.contains("[`WatcherSettings`](#watchersettings)")
            && page.contains("### `WatcherSettings`"),
        "{page}"
    );
    assert!(page.contains("`portico.dev/v1alpha1`") && page.contains("`argoproj.io/v1alpha1`"));
}

#[test]
fn the_metrics_page_lists_every_metric_with_its_labels() {
    let page = reference::metrics_page().unwrap();
    assert!(
        page.contains("| `portico_events_rejected_total` | counter | `reason`, `src` |"),
        "{page}"
    );
    assert!(
        page.contains("| `portico_nodes` | gauge | `phase` |"),
        "{page}"
    );
    assert!(
        page.contains("`portico_delivery_latency_seconds_bucket`"),
        "{page}"
    );
    assert!(page.contains("| `watcher` |"), "{page}");
}
