//! The ConfigMap source: in a cluster, the gateway's configurations are the `data` of one
//! ConfigMap, followed through the API server with the kube-runtime watcher.
//!
//! It sends the same [`SourceEvent`]s as the file source: the whole map when the ConfigMap
//! appears or changes, [`SourceEvent::Gone`] when it is deleted (every configuration stops;
//! the original ignored deletions). The watcher re-lists after `410 Gone` and reconnects with
//! capped exponential backoff; a re-list that finds the same map sends nothing, and even if
//! it did, the supervisor diffs by id, so nothing is started twice.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{SourceError, SourceEvent};
use crate::configuration::IdentifiedMap;

/// Which ConfigMap to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigMapRef {
    /// Its namespace (`GATEWAY_NAMESPACE`).
    pub namespace: String,
    /// Its name (`GATEWAY_PROCESSOR_CONFIG_MAP`).
    pub name: String,
}

/// The configurations of a ConfigMap: its `data` (`binaryData` is not a configuration).
fn configurations(cm: ConfigMap) -> IdentifiedMap {
    IdentifiedMap::new(cm.data.unwrap_or_default())
}

/// Follows the ConfigMap `what` and sends its map to `tx` until `stop` is cancelled or the
/// receiver is gone. Errors of the API server are logged and retried with backoff; this
/// function only returns when told to.
pub(crate) async fn watch(
    client: Client,
    what: ConfigMapRef,
    tx: mpsc::Sender<SourceEvent>,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    let api: Api<ConfigMap> = Api::namespaced(client, &what.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", what.name));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    // The digest of what was last sent: `None` before anything, `Some(None)` after `Gone`.
    let mut sent: Option<Option<u128>> = None;
    // The objects of a re-list in progress.
    let mut listing: Option<Option<IdentifiedMap>> = None;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            e = stream.next() => e,
        };
        let next: Option<Option<IdentifiedMap>> = match event {
            None => return Err(SourceError::Ended),
            Some(Err(e)) => {
                tracing::warn!(
                    configmap = %what.name, namespace = %what.namespace,
                    "watching the ConfigMap failed, retrying with backoff: {e}"
                );
                None
            }
            Some(Ok(watcher::Event::Init)) => {
                listing = Some(None);
                None
            }
            Some(Ok(watcher::Event::InitApply(cm))) => {
                listing = Some(Some(configurations(cm)));
                None
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let found = listing.take().flatten();
                if found.is_none() {
                    tracing::warn!(
                        configmap = %what.name, namespace = %what.namespace,
                        "the ConfigMap does not exist: no configuration runs until it is created"
                    );
                }
                Some(found)
            }
            Some(Ok(watcher::Event::Apply(cm))) => Some(Some(configurations(cm))),
            Some(Ok(watcher::Event::Delete(_))) => {
                tracing::warn!(
                    configmap = %what.name, namespace = %what.namespace,
                    "the ConfigMap was deleted: stopping every configuration"
                );
                Some(None)
            }
        };
        let Some(next) = next else { continue };
        let next_digest = next.as_ref().map(IdentifiedMap::digest);
        if sent == Some(next_digest) {
            continue;
        }
        let event = match next {
            Some(map) => SourceEvent::Map(map),
            None => SourceEvent::Gone,
        };
        sent = Some(next_digest);
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = tx.send(event) => if r.is_err() { return Ok(()) },
        }
    }
}
