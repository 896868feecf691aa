//! Nodes: the status of each configuration, and where status changes go.
//!
//! The supervisor and the configurations' contexts write phases into one [`StatusBoard`]. The
//! board keeps the current nodes (what `GET /status` shows) and tells every [`StatusSink`] of
//! each real transition: a log line standalone; Gateway status and Kubernetes Events in a
//! cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::configuration::ConfigId;
use crate::metrics::{Metrics, PhaseLabels};

/// The phase of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Phase {
    /// Validated and starting.
    Initialized,
    /// Running: listening or generating events.
    Running,
    /// Ended by itself without error.
    Completed,
    /// Invalid, failed, or retrying after a failure; `message` says why.
    Error,
}

impl Phase {
    /// Every phase, for metrics.
    pub const ALL: [Phase; 4] = [
        Phase::Initialized,
        Phase::Running,
        Phase::Completed,
        Phase::Error,
    ];

    /// The phase's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initialized => "Initialized",
            Phase::Running => "Running",
            Phase::Completed => "Completed",
            Phase::Error => "Error",
        }
    }
}

/// The status of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// The configuration id.
    pub id: ConfigId,
    /// The configuration key (`src`).
    pub name: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// Why it is in that phase (empty when there is nothing to say).
    pub message: String,
    /// When the node was created.
    pub started_at: DateTime<Utc>,
    /// When the phase or message last changed.
    pub updated_at: DateTime<Utc>,
    /// How often the configuration was restarted after a failure.
    pub restarts: u32,
}

/// One change of the board.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeChange {
    /// A node appeared or changed phase or message.
    Updated {
        /// The node as it is now.
        node: Node,
        /// Its phase before, `None` for a new node.
        previous: Option<Phase>,
    },
    /// The configuration left the map (the node is `Removed`).
    Removed {
        /// The node as it was.
        node: Node,
    },
}

/// Something that wants to hear of node changes.
pub(crate) trait StatusSink: Send + Sync + 'static {
    /// Called once per change, in order, outside the board's lock.
    fn node_changed(&self, change: &NodeChange);
}

/// Writes each transition as a log line.
#[derive(Debug, Default)]
pub(crate) struct LogSink;

impl StatusSink for LogSink {
    fn node_changed(&self, change: &NodeChange) {
        match change {
            NodeChange::Updated { node, .. } if node.phase == Phase::Error => tracing::warn!(
                src = %node.name, id = %node.id, phase = node.phase.as_str(), reason = %node.message,
                "configuration failed"
            ),
            NodeChange::Updated { node, .. } if node.phase == Phase::Initialized => {
                tracing::debug!(
                    src = %node.name, id = %node.id, "configuration initialized"
                )
            }
            NodeChange::Updated { node, .. } => tracing::info!(
                src = %node.name, id = %node.id, phase = node.phase.as_str(), reason = %node.message,
                "configuration {}", node.phase.as_str().to_lowercase()
            ),
            NodeChange::Removed { node } => {
                tracing::info!(src = %node.name, id = %node.id, "configuration removed")
            }
        }
    }
}

/// The current nodes of a gateway, and the sinks told of their changes.
pub(crate) struct StatusBoard {
    nodes: Mutex<BTreeMap<ConfigId, Node>>,
    sinks: Vec<Arc<dyn StatusSink>>,
    metrics: Arc<Metrics>,
}

impl StatusBoard {
    /// A board with these sinks.
    pub(crate) fn new(metrics: Arc<Metrics>, sinks: Vec<Arc<dyn StatusSink>>) -> StatusBoard {
        for phase in Phase::ALL {
            let _ = metrics.nodes.get_or_create(&PhaseLabels {
                phase: phase.as_str().to_string(),
            });
        }
        StatusBoard {
            nodes: Mutex::new(BTreeMap::new()),
            sinks,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ConfigId, Node>> {
        // A panic while holding this lock cannot leave the map half-written (every write is
        // one insert or remove), so a poisoned lock is still good.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauge(&self, phase: Phase, delta: i64) {
        self.metrics
            .nodes
            .get_or_create(&PhaseLabels {
                phase: phase.as_str().to_string(),
            })
            .inc_by(delta);
    }

    /// Sets a node's phase and message, creating it if needed. Does nothing when neither
    /// changes.
    pub(crate) fn set(&self, id: ConfigId, name: &str, phase: Phase, message: impl Into<String>) {
        self.set_if(id, name, phase, message, |_| true);
    }

    /// [`StatusBoard::set`], only if the node is absent or `still(node)` holds, checked and
    /// set at once (so that a phase another task set meanwhile is not overwritten).
    pub(crate) fn set_if(
        &self,
        id: ConfigId,
        name: &str,
        phase: Phase,
        message: impl Into<String>,
        still: impl FnOnce(&Node) -> bool,
    ) {
        let message = message.into();
        let now = Utc::now();
        let change = {
            let mut nodes = self.lock();
            match nodes.get_mut(&id) {
                Some(node) if !still(node) => return,
                Some(node) if node.phase == phase && node.message == message => return,
                Some(node) => {
                    let previous = node.phase;
                    node.phase = phase;
                    node.message = message;
                    node.updated_at = now;
                    NodeChange::Updated {
                        node: node.clone(),
                        previous: Some(previous),
                    }
                }
                None => {
                    let node = Node {
                        id,
                        name: name.to_string(),
                        phase,
                        message,
                        started_at: now,
                        updated_at: now,
                        restarts: 0,
                    };
                    nodes.insert(id, node.clone());
                    NodeChange::Updated {
                        node,
                        previous: None,
                    }
                }
            }
        };
        if let NodeChange::Updated { node, previous } = &change {
            if let Some(p) = previous {
                self.gauge(*p, -1);
            }
            self.gauge(node.phase, 1);
        }
        self.tell(&change);
    }

    /// Counts one restart of a node.
    pub(crate) fn restarted(&self, id: ConfigId) {
        if let Some(node) = self.lock().get_mut(&id) {
            node.restarts += 1;
        }
    }

    /// Removes a node (its configuration left the map).
    pub(crate) fn remove(&self, id: ConfigId) {
        let removed = self.lock().remove(&id);
        if let Some(node) = removed {
            self.gauge(node.phase, -1);
            self.tell(&NodeChange::Removed { node });
        }
    }

    /// Every node, ordered by name.
    pub(crate) fn nodes(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.lock().values().cloned().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    fn tell(&self, change: &NodeChange) {
        for sink in &self.sinks {
            sink.node_changed(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<NodeChange>>);
    impl StatusSink for Recorder {
        fn node_changed(&self, change: &NodeChange) {
            self.0.lock().unwrap().push(change.clone());
        }
    }

    #[test]
    fn only_real_changes_reach_the_sinks() {
        let rec = Arc::new(Recorder::default());
        let metrics = Metrics::new();
        let board = StatusBoard::new(metrics.clone(), vec![rec.clone()]);
        let id = ConfigId(1);
        board.set(id, "a", Phase::Initialized, "");
        board.set(id, "a", Phase::Running, "");
        board.set(id, "a", Phase::Running, "");
        board.set(id, "a", Phase::Error, "boom");
        board.remove(id);
        let changes = rec.0.lock().unwrap();
        assert_eq!(changes.len(), 4);
        assert!(matches!(&changes[3], NodeChange::Removed { node } if node.message == "boom"));
        let text = metrics.encode();
        assert!(text.contains("portico_nodes{phase=\"Error\"} 0"), "{text}");
        assert!(
            text.contains("portico_nodes{phase=\"Running\"} 0"),
            "{text}"
        );
    }
}
