//! The listing a polling gateway keeps in its state file (`sftp`, `azure-blob`): what it saw of
//! each entry at its last poll, written once every event of that poll was accepted, so that a
//! restart emits only what changed since. The file names what was listed; a file of another
//! listing (another server, directory or container) is not used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portico::ConfigContext;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The state file's content as read.
#[derive(Deserialize)]
struct State<T> {
    listing: String,
    /// `files` and `blobs`: the names the `sftp` and `azure-blob` files had before.
    #[serde(alias = "files", alias = "blobs")]
    entries: BTreeMap<String, T>,
}

/// The state file's content as written.
#[derive(Serialize)]
struct StateRef<'a, T> {
    listing: &'a str,
    entries: &'a BTreeMap<String, T>,
}

/// Reads the listing kept in `path`: empty when there is none, it cannot be read, or it is of
/// another listing than `listing` (each case logged, naming the file). `what` names the
/// entries in the log (`file`, `blob`).
pub(crate) fn load<T: DeserializeOwned>(
    ctx: &ConfigContext,
    path: &Path,
    listing: &str,
    what: &str,
) -> BTreeMap<String, T> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(
                src = ctx.src(),
                "cannot read the state file {}: {e}; every {what} is new",
                path.display()
            );
            return BTreeMap::new();
        }
    };
    match serde_json::from_slice::<State<T>>(&text) {
        Ok(state) if state.listing == listing => state.entries,
        Ok(state) => {
            tracing::info!(
                src = ctx.src(),
                "the state file {} is of {}, not {listing}: every {what} is new",
                path.display(),
                state.listing
            );
            BTreeMap::new()
        }
        Err(e) => {
            tracing::warn!(
                src = ctx.src(),
                "the state file {} is not valid ({e}); every {what} is new",
                path.display()
            );
            BTreeMap::new()
        }
    }
}

/// Writes the listing to `path`: a new file, synced, renamed over the old one.
pub(crate) async fn save<T: Serialize>(
    path: &Path,
    listing: &str,
    entries: &BTreeMap<String, T>,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(&StateRef { listing, entries }).map_err(|e| e.to_string())?;
    let target = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = target.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &target)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot write the state file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_is_kept_for_what_was_listed_and_earlier_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/state.json");
        let h = portico::testing::Harness::new("t", "sftp");
        let ctx = h.context("c", "");
        assert!(
            load::<u32>(&ctx, &path, "a@h:22/d", "file").is_empty(),
            "no file yet"
        );
        let entries = BTreeMap::from([("x.csv".to_string(), 7u32)]);
        save(&path, "a@h:22/d", &entries).await.unwrap();
        assert_eq!(load::<u32>(&ctx, &path, "a@h:22/d", "file"), entries);
        assert!(
            load::<u32>(&ctx, &path, "a@h:22/other", "file").is_empty(),
            "another directory's listing is not used"
        );
        assert!(!dir.path().join("deep/state.json.tmp").exists());
        // A file written before the entries had one name.
        std::fs::write(&path, r#"{"listing": "a@h:22/d", "files": {"y": 1}}"#).unwrap();
        assert_eq!(
            load::<u32>(&ctx, &path, "a@h:22/d", "file"),
            BTreeMap::from([("y".to_string(), 1u32)])
        );
        std::fs::write(&path, "garbage").unwrap();
        assert!(load::<u32>(&ctx, &path, "a@h:22/d", "file").is_empty());
    }
}
