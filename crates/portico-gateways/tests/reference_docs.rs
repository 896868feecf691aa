//! The reference page of every built-in gateway type in `docs/reference/gateways/` is what
//! the configuration types' doc comments make (`portico_gateways::reference::page`): a field
//! added, renamed or documented in code and not in the docs fails here.
//!
//! To regenerate the pages: `PORTICO_BLESS=1 cargo test -p portico-gateways --test reference_docs`.

use std::path::PathBuf;

use portico_gateways::{BUILTIN_TYPES, reference};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference/gateways")
}

#[test]
fn every_builtin_type_has_a_current_reference_page() {
    let bless = std::env::var_os("PORTICO_BLESS").is_some();
    let mut stale = Vec::new();
    for ty in BUILTIN_TYPES {
        let page = reference::page(ty).unwrap_or_else(|| panic!("no schema for `{ty}`"));
        let path = dir().join(format!("{ty}.md"));
        if bless {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &page).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(page.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing reference pages: {stale:?}; regenerate them with \
         `PORTICO_BLESS=1 cargo test -p portico-gateways --test reference_docs`"
    );
}

#[test]
fn a_page_lists_every_field_with_its_type_and_whether_it_is_required() {
    let page = reference::page("kafka").unwrap();
    assert!(page.contains("| `url` | string | yes |"), "{page}");
    assert!(
        page.contains("| `partition` | number or string | no |"),
        "{page}"
    );
    assert!(page.contains("`newest` (At the end"), "{page}");
    let page = reference::page("resource").unwrap();
    assert!(
        page.contains("[`ResourceFilter`](#resourcefilter)")
            && page.contains("## `ResourceFilter`"),
        "{page}"
    );
    assert!(reference::page("no-such-type").is_none());
}
