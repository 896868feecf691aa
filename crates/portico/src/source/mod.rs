//! Where configurations come from: a gateway file ([`file`]) or, in a cluster, the
//! gateway's ConfigMap. Every source sends the same [`SourceEvent`]s to the same supervisor.

pub(crate) mod configmap;
pub(crate) mod file;

use crate::configuration::IdentifiedMap;

/// Why a configuration source stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The gateway file's directory cannot be watched.
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        /// The directory.
        dir: std::path::PathBuf,
        /// What the watcher said.
        source: notify_debouncer_full::notify::Error,
    },
    /// The API server's watch of the ConfigMap ended.
    #[error("the ConfigMap watch ended")]
    Ended,
}

/// What a configuration source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceEvent {
    /// The whole current map (not a delta), with the id of each entry: the supervisor diffs it
    /// against what runs.
    Map(IdentifiedMap),
    /// The map is gone (its ConfigMap was deleted): every configuration stops.
    Gone,
}
