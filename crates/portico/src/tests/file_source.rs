//! The file configuration source follows a file the way it really changes: editors rename a
//! new file over it, and ConfigMap volumes swap a `..data` symlink; a file that stops parsing
//! is reported and nothing is sent until it parses again.

use std::path::Path;
use std::time::Duration;

use crate::source::SourceEvent;
use crate::source::file::watch;
use crate::spec::GatewayFile;
use crate::spec::file::DEFAULT_MAX_FILE_BYTES;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn gateway(configs: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  type: calendar\n  configMap: cm\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n",
    );
    for (k, v) in configs {
        s.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    s
}

async fn next_map(rx: &mut mpsc::Receiver<SourceEvent>) -> Vec<String> {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(SourceEvent::Map(m))) => m.map().keys().cloned().collect(),
        other => panic!("expected a new map, got {other:?}"),
    }
}

fn start(
    path: &Path,
) -> (
    mpsc::Receiver<SourceEvent>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), crate::source::SourceError>>,
) {
    let loaded = GatewayFile::load(path, DEFAULT_MAX_FILE_BYTES).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let task = tokio::spawn(watch(
        vec![path.to_path_buf()],
        loaded,
        DEFAULT_MAX_FILE_BYTES,
        tx,
        Default::default(),
        stop.clone(),
    ));
    (rx, stop, task)
}

#[tokio::test]
async fn follows_renames_and_keeps_the_last_good_map_on_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, gateway(&[("a", "interval: 1s")])).unwrap();
    let (mut rx, stop, task) = start(&path);

    let tmp = dir.path().join(".gateway.yaml.swp");
    std::fs::write(
        &tmp,
        gateway(&[("a", "interval: 1s"), ("b", "interval: 2s")]),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(next_map(&mut rx).await, ["a", "b"]);

    // Broken, then fixed: only the fixed map is sent.
    std::fs::write(&path, "kind: Gateway\nspec: [\n").unwrap();
    std::fs::write(&path, gateway(&[("c", "interval: 3s")])).unwrap();
    assert_eq!(next_map(&mut rx).await, ["c"]);

    // Touching the file without changing it sends nothing; a change after that does.
    std::fs::write(&path, gateway(&[("c", "interval: 3s")])).unwrap();
    std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
    std::fs::write(&path, gateway(&[("d", "interval: 3s")])).unwrap();
    assert_eq!(next_map(&mut rx).await, ["d"]);

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn follows_a_configmap_volume_symlink_swap() {
    use std::os::unix::fs::symlink;
    // The layout kubelet makes: gateway.yaml -> ..data/gateway.yaml, ..data -> ..<timestamp>.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v1 = root.join("..2026_11_28_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("gateway.yaml"), gateway(&[("a", "interval: 1s")])).unwrap();
    symlink("..2026_11_28_v1", root.join("..data")).unwrap();
    symlink("..data/gateway.yaml", root.join("gateway.yaml")).unwrap();
    let path = root.join("gateway.yaml");
    let (mut rx, stop, task) = start(&path);

    // An update: a new timestamped dir, a temp symlink, renamed over `..data`.
    let v2 = root.join("..2026_11_28_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("gateway.yaml"),
        gateway(&[("a", "interval: 1s"), ("z", "interval: 9s")]),
    )
    .unwrap();
    symlink("..2026_11_28_v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    assert_eq!(next_map(&mut rx).await, ["a", "z"]);

    stop.cancel();
    task.await.unwrap().unwrap();
}
