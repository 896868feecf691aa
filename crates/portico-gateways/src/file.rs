//! The `file` gateway: events when files in a directory change.
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`FileConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};
use portico::{ConfigContext, ConfigError, ConfigExecutor, DispatchError, Event};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    /// Created (or renamed to this name).
    Create,
    /// Its content changed.
    Write,
    /// Removed.
    Remove,
    /// Renamed away from this name.
    Rename,
    /// Its metadata changed.
    Chmod,
}

impl Op {
    const ALL: [Op; 5] = [Op::Create, Op::Write, Op::Remove, Op::Rename, Op::Chmod];

    fn parse(text: &str) -> Option<Op> {
        Op::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// Its name, as in the configuration and the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "CREATE",
            Op::Write => "WRITE",
            Op::Remove => "REMOVE",
            Op::Rename => "RENAME",
            Op::Chmod => "CHMOD",
        }
    }
}

/// One name or a list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// A list.
    Many(Vec<String>),
}

/// A `file` configuration.
///
/// Payload: `{"name": "<path relative to directory>", "op": "CREATE", "path": "<full path>"}`
/// as `application/json`, one event per change (a large write can be several `WRITE`s).
///
/// Operations follow the original (Go's fsnotify): a file renamed inside the directory gives
/// `RENAME` for its old name and `CREATE` for its new one; `WRITE` is a change of content,
/// `CHMOD` one of metadata (mode, owner, times).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// The directory to watch, an absolute path. One that does not exist yet makes the node
    /// `Error` with that reason and is looked for again every `pollInterval` until it
    /// appears (then watched, and the node `Running`); one removed while watched is waited
    /// for the same way.
    pub directory: String,
    /// A name or a glob, relative to `directory` (`data.csv`, `*.csv`, `**/*.csv`; `*` does
    /// not cross `/`); default `**`, everything.
    #[serde(default)]
    pub path: Option<String>,
    /// The operations to report: one of `CREATE`, `WRITE`, `REMOVE`, `RENAME`, `CHMOD`, or a
    /// list of them; default all.
    #[serde(default, rename = "type")]
    pub types: Option<OneOrMany>,
    /// Watch subdirectories too.
    #[serde(default)]
    pub recursive: bool,
    /// How often to look for a missing directory, a duration like `1s` (the default).
    #[serde(default)]
    pub poll_interval: Option<String>,
}

/// A checked file configuration.
#[derive(Debug, Clone)]
pub struct FileWatch {
    /// Directory.
    pub directory: PathBuf,
    /// Matches names relative to the directory.
    pub matcher: GlobMatcher,
    /// Operations reported.
    pub ops: Vec<Op>,
    /// Subdirectories too.
    pub recursive: bool,
    /// Missing-directory poll period.
    pub poll: Duration,
}

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

impl FileConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<FileWatch, ConfigError> {
        let config = self;
        let directory = match config.directory.trim() {
            "" => {
                return Err(invalid(
                    "directory",
                    "empty (required): the directory to watch, like /tmp/portico-files",
                ));
            }
            d => PathBuf::from(d),
        };
        if !directory.is_absolute() {
            return Err(invalid(
                "directory",
                format!(
                    "`{}` must be an absolute path (the gateway's working directory is not a stable place)",
                    directory.display()
                ),
            ));
        }
        let pattern = config.path.as_deref().map(str::trim).unwrap_or("**");
        if pattern.is_empty() {
            return Err(invalid(
                "path",
                "is empty: give a name or a glob like *.csv",
            ));
        }
        if pattern.starts_with('/') {
            return Err(invalid(
                "path",
                format!("`{pattern}` must be relative to the directory"),
            ));
        }
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| invalid("path", format!("`{pattern}` is not a valid glob: {e}")))?
            .compile_matcher();
        let names: Vec<&String> = match &config.types {
            None => Vec::new(),
            Some(OneOrMany::One(t)) => vec![t],
            Some(OneOrMany::Many(list)) => list.iter().collect(),
        };
        let mut ops = Vec::new();
        for name in names {
            let op = Op::parse(name).ok_or_else(|| {
                invalid(
                    "type",
                    format!("`{name}` is not one of CREATE, WRITE, REMOVE, RENAME, CHMOD"),
                )
            })?;
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
        if ops.is_empty() {
            if matches!(&config.types, Some(OneOrMany::Many(l)) if l.is_empty()) {
                return Err(invalid(
                    "type",
                    "is an empty list: leave it out to get every operation",
                ));
            }
            ops = Op::ALL.to_vec();
        }
        let poll = match &config.poll_interval {
            None => Duration::from_secs(1),
            Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                invalid(
                    "pollInterval",
                    format!("`{t}` is not a duration like 1s: {e}"),
                )
            })?,
        };
        if poll < Duration::from_millis(10) {
            return Err(invalid("pollInterval", "must be at least 10ms"));
        }
        Ok(FileWatch {
            directory,
            matcher,
            ops,
            recursive: config.recursive,
            poll,
        })
    }
}

impl FileWatch {
    /// The (name relative to the directory, operation) pairs of a watcher event that this
    /// configuration reports.
    pub fn changes(&self, event: &notify::Event) -> Vec<(String, Op, PathBuf)> {
        let op = match event.kind {
            EventKind::Create(_) => Op::Create,
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => Op::Write,
            EventKind::Modify(ModifyKind::Metadata(_)) => Op::Chmod,
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Op::Create,
            // Both is the pair of the From and To events already seen.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return Vec::new(),
            EventKind::Modify(ModifyKind::Name(_)) => Op::Rename,
            EventKind::Remove(_) => Op::Remove,
            _ => return Vec::new(),
        };
        if !self.ops.contains(&op) {
            return Vec::new();
        }
        event
            .paths
            .iter()
            .filter_map(|p| {
                let rel = p.strip_prefix(&self.directory).ok()?;
                if rel.as_os_str().is_empty() {
                    return None; // the directory itself
                }
                if !self.recursive && rel.components().count() > 1 {
                    return None;
                }
                let name = rel.to_string_lossy().into_owned();
                self.matcher
                    .is_match(Path::new(&name))
                    .then(|| (name, op, p.clone()))
            })
            .collect()
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    name: &'a str,
    op: &'static str,
    path: &'a str,
}

/// The file executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct File;

/// How a watch ended.
enum Ended {
    Stopped,
    DirectoryGone,
}

impl ConfigExecutor for File {
    type Config = FileWatch;

    fn validate(&self, ctx: &ConfigContext) -> Result<FileWatch, ConfigError> {
        ctx.parse::<FileConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, watch: FileWatch) -> Result<(), ConfigError> {
        loop {
            if !watch.directory.is_dir() {
                let what = if watch.directory.exists() {
                    "is not a directory"
                } else {
                    "does not exist (yet)"
                };
                ctx.report_error(format!(
                    "directory {} {what}; looking for it every {}",
                    watch.directory.display(),
                    humantime::format_duration(watch.poll)
                ));
                while !watch.directory.is_dir() {
                    tokio::select! {
                        _ = ctx.stopped() => return Ok(()),
                        _ = tokio::time::sleep(watch.poll) => {}
                    }
                }
            }
            match watch_directory(&ctx, &watch).await? {
                Ended::Stopped => return Ok(()),
                Ended::DirectoryGone => {}
            }
        }
    }
}

/// Watches the directory until stopped or until it disappears.
async fn watch_directory(ctx: &ConfigContext, watch: &FileWatch) -> Result<Ended, ConfigError> {
    let (tx, mut rx) = mpsc::channel::<notify::Result<notify::Event>>(1024);
    // The callback runs on notify's own thread: blocking there pushes back on the kernel
    // queue rather than growing memory. It fails at once when we are gone.
    let mut watcher = notify::recommended_watcher(move |r| {
        let _ = tx.blocking_send(r);
    })
    .map_err(|e| ConfigError::failed(format!("cannot start a file watcher: {e}")))?;
    let mode = if watch.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    if let Err(e) = watcher.watch(&watch.directory, mode) {
        if !watch.directory.is_dir() {
            return Ok(Ended::DirectoryGone);
        }
        return Err(ConfigError::failed(format!(
            "cannot watch {}: {e}",
            watch.directory.display()
        )));
    }
    tracing::info!(directory = %watch.directory.display(), "watching");
    ctx.running();
    let mut check = tokio::time::interval(watch.poll);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.stopped() => return Ok(Ended::Stopped),
            _ = check.tick() => {
                if !watch.directory.is_dir() {
                    return Ok(Ended::DirectoryGone);
                }
            }
            got = rx.recv() => match got {
                None => return Err(ConfigError::failed("the file watcher stopped")),
                Some(Err(e)) => tracing::warn!(error = %e, "file watcher error"),
                Some(Ok(event)) => {
                    for (name, op, path) in watch.changes(&event) {
                        let payload = Payload { name: &name, op: op.as_str(), path: &path.to_string_lossy() };
                        match ctx.dispatch(Event::json(&payload)?).await {
                            // atMostOnce, gateway full: dropped (and counted) by design.
                            Ok(()) | Err(DispatchError::Full { .. }) => {}
                            Err(DispatchError::Stopped) => return Ok(Ended::Stopped),
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<FileWatch, String> {
        portico::testing::parse_config::<FileConfig>(yaml)
            .and_then(FileConfig::check)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fields_are_checked_by_name() {
        let w = check("directory: /tmp/x\npath: '*.txt'\ntype: [create, WRITE]").unwrap();
        assert_eq!(w.ops, [Op::Create, Op::Write]);
        assert!(w.matcher.is_match("a.txt"));
        assert!(!w.matcher.is_match("sub/a.txt"));
        assert_eq!(check("directory: /tmp/x").unwrap().ops.len(), 5);
        assert!(
            check("path: a")
                .unwrap_err()
                .contains("missing field `directory`")
        );
        assert!(
            check("directory: rel")
                .unwrap_err()
                .starts_with("directory:")
        );
        assert!(
            check("directory: /x\npath: '[a'")
                .unwrap_err()
                .starts_with("path:")
        );
        assert!(
            check("directory: /x\ntype: DELETE")
                .unwrap_err()
                .starts_with("type:")
        );
        assert!(
            check("directory: /x\npollInterval: soon")
                .unwrap_err()
                .starts_with("pollInterval:")
        );
    }
}
