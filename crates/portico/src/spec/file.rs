//! Reading a gateway file: multi-document YAML that `kubectl apply -f` takes as is, one
//! `Gateway` and, optionally, the `ConfigMap` it names.
//!
//! Every document is read into one [`Document`] shape (so that parse errors keep their exact
//! line and column), then checked for what a parser cannot check: kinds, API versions, names,
//! processor styles, watchers. Every error names the file, the line and column, and what was
//! expected.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::ConfigError;

use super::{ConfigMapData, Gateway, GatewayGroup, GatewaySpec, GrpcProtocol, ObjectMeta};

/// A gateway read from its files and checked: the gateway and its configurations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatewayFile {
    /// The file of the Gateway document.
    pub path: PathBuf,
    /// Every file read with it (the Gateway's and its ConfigMap's among them).
    pub files: Vec<PathBuf>,
    /// The gateway.
    pub gateway: Gateway,
    /// The configurations of the ConfigMap the gateway names (empty when the file has none).
    pub configurations: ConfigMapData,
    /// The name of that ConfigMap, when the file has it.
    pub config_map: Option<String>,
}

/// The largest gateway file read by default (`--max-file-size`): 16 MiB, room for about
/// 100,000 ordinary configurations.
pub(crate) const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;

/// The text of the gateway file at `path`: a regular file (or a symbolic link to one, as a
/// ConfigMap volume's `..data` is) of at most `max_bytes`. Anything else (a directory, a FIFO,
/// a device such as `/dev/zero`) is refused without being opened.
pub(crate) fn read_text(path: &Path, max_bytes: u64) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is not a regular file but {}: give the path of a gateway file",
            kind_of(&meta.file_type())
        ));
    }
    let too_big = |n: u64| {
        format!(
            "the file is {n} bytes, over the limit of {max_bytes} (--max-file-size, PORTICO_MAX_FILE_SIZE)"
        )
    };
    if meta.len() > max_bytes {
        return Err(too_big(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut text = String::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if text.len() as u64 > max_bytes {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

/// What a file that is not a regular one is, in words.
fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// One YAML document of a gateway file, in the one shape that fits both kinds, so that
/// serde-saphyr reports every error at its exact place.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    #[serde(default)]
    metadata: Option<Spanned<ObjectMeta>>,
    spec: Option<Spanned<GatewaySpec>>,
    data: Option<ConfigMapData>,
    #[serde(default, rename = "binaryData")]
    _binary_data: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "status")]
    _status: Option<serde::de::IgnoredAny>,
}

/// What is wrong with a gateway file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// What was wrong and what was expected.
    pub message: String,
    /// The lines around the place, when the parser rendered them.
    pub snippet: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in one gateway file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// The files a gateway is read from, as `kubectl apply -f` takes them: each file given, and
/// the `.yaml`, `.yml` and `.json` files of each directory given (not its subdirectories), in
/// name order.
pub(crate) fn expand(sources: &[PathBuf]) -> Result<Vec<PathBuf>, SpecErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for source in sources {
        match std::fs::metadata(source) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(source) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            p.extension()
                                .and_then(|x| x.to_str())
                                .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
                                && std::fs::metadata(p).is_ok_and(|m| m.is_file())
                        })
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        errors.push(SpecError::whole(
                            source,
                            "the directory holds no .yaml, .yml or .json file",
                        ));
                    }
                    files.extend(found);
                }
                Err(e) => errors.push(SpecError::whole(
                    source,
                    format!("cannot read the directory: {e}"),
                )),
            },
            // Files (and what is not one: `read_text` says what it is).
            _ => files.push(source.clone()),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(SpecErrors(errors))
    }
}

impl SpecError {
    /// A problem with a whole file (no line).
    fn whole(path: &Path, message: impl Into<String>) -> SpecError {
        SpecError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
            snippet: None,
        }
    }
}

/// Reads the texts of `files`, each a regular file of at most `max_bytes`.
pub(crate) fn read_all(
    files: &[PathBuf],
    max_bytes: u64,
) -> Result<Vec<(PathBuf, String)>, SpecErrors> {
    let mut texts = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for f in files {
        match read_text(f, max_bytes) {
            Ok(t) => texts.push((f.clone(), t)),
            Err(message) => errors.push(SpecError::whole(f, message)),
        }
    }
    if errors.is_empty() {
        Ok(texts)
    } else {
        Err(SpecErrors(errors))
    }
}

impl GatewayFile {
    /// Reads and checks the gateway of one file.
    #[cfg(test)]
    pub(crate) fn load(path: &Path, max_bytes: u64) -> Result<GatewayFile, SpecErrors> {
        Self::load_one(&[path.to_path_buf()], max_bytes)
    }

    /// Reads and checks the one gateway that `sources` (files and directories) hold, with the
    /// ConfigMap it names.
    pub(crate) fn load_one(sources: &[PathBuf], max_bytes: u64) -> Result<GatewayFile, SpecErrors> {
        let texts = read_all(&expand(sources)?, max_bytes)?;
        Self::one_of(Self::parse_texts(&texts)?)
    }

    /// Reads and checks every gateway that `sources` hold, each with its ConfigMap.
    pub(crate) fn load_all(
        sources: &[PathBuf],
        max_bytes: u64,
    ) -> Result<Vec<GatewayFile>, SpecErrors> {
        let texts = read_all(&expand(sources)?, max_bytes)?;
        Self::parse_texts(&texts)
    }

    /// Parses and checks the text of a gateway file; `path` is only used in messages.
    #[cfg(test)]
    pub(crate) fn parse(path: &Path, text: &str) -> Result<GatewayFile, SpecErrors> {
        Self::one_of(Self::parse_texts(&[(
            path.to_path_buf(),
            text.to_string(),
        )])?)
    }

    /// The one gateway of `gateways`, or an error naming them.
    pub(crate) fn one_of(mut gateways: Vec<GatewayFile>) -> Result<GatewayFile, SpecErrors> {
        if gateways.len() == 1 {
            return Ok(gateways.remove(0));
        }
        let names: Vec<String> = gateways
            .iter()
            .map(|g| format!("`{}` ({})", g.gateway.metadata.name, g.path.display()))
            .collect();
        let path = gateways.first().map(|g| g.path.clone()).unwrap_or_default();
        Err(SpecErrors(vec![SpecError::whole(
            &path,
            format!(
                "expected one Gateway, found {}: {}; give the files of one gateway",
                gateways.len(),
                names.join(", ")
            ),
        )]))
    }

    /// Parses and checks the texts of gateway files (path, text): every Gateway among their
    /// documents, each paired with the ConfigMap it names.
    pub(crate) fn parse_texts(texts: &[(PathBuf, String)]) -> Result<Vec<GatewayFile>, SpecErrors> {
        let mut checker = Checker::default();
        for (path, text) in texts {
            match serde_saphyr::from_multiple_with_options::<Document>(text, yaml_options(text)) {
                Ok(docs) => checker.read(path, docs),
                Err(e) => checker.errors.push(parse_error(path, &e)),
            }
        }
        checker.pair(texts.iter().map(|(p, _)| p.clone()).collect())
    }
}

/// The parser's limits for a gateway file of `text`: as many nodes and events as a plain
/// document of its size can hold (at least the parser's defaults), so that 100,000 and more
/// configurations parse, while aliases cannot make a document bigger than one of its size
/// written out: a small file that expands into millions of nodes (an alias bomb) is refused.
fn yaml_options(text: &str) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // A node takes at least two bytes (`a\n`), an event at most as many.
    budget.max_nodes = budget.max_nodes.max(text.len() / 2);
    budget.max_events = budget.max_events.max(text.len());
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// A YAML error of `path` as a [`SpecError`]: the message, its place, and the lines around it.
fn parse_error(path: &Path, e: &serde_saphyr::Error) -> SpecError {
    let loc = e.location();
    let rendered = e.to_string();
    // The first line repeats "line L column C: message"; keep the message alone and the
    // rendered lines around the place as the snippet.
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let message = first
        .split_once(": ")
        .map(|(_, rest)| rest)
        .unwrap_or(first)
        .trim_start_matches("error: ")
        .to_string();
    let message = message
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("line "))
        .map(|(_, m)| m.to_string())
        .unwrap_or(message);
    let snippet: Vec<&str> = lines.collect();
    SpecError {
        path: path.to_path_buf(),
        line: loc.map(|l| l.line()),
        column: loc.map(|l| l.column()),
        message,
        snippet: (!snippet.is_empty()).then(|| {
            snippet
                .join("\n")
                .replace("<input>", &path.display().to_string())
        }),
    }
}

/// A ConfigMap read from a file: its name, where its `kind` is, its data, its file.
struct FoundConfigMap {
    name: String,
    at: Option<serde_saphyr::Location>,
    data: ConfigMapData,
    path: PathBuf,
}

/// A Gateway read from a file: it, where its `spec` is, its file.
struct FoundGateway {
    gateway: Gateway,
    spec_at: serde_saphyr::Location,
    path: PathBuf,
}

#[derive(Default)]
struct Checker {
    path: PathBuf,
    errors: Vec<SpecError>,
    gateways: Vec<FoundGateway>,
    config_maps: Vec<FoundConfigMap>,
    seen_docs: usize,
}

impl Checker {
    fn err(&mut self, at: Option<serde_saphyr::Location>, message: impl Into<String>) {
        self.errors.push(SpecError {
            path: self.path.clone(),
            line: at.map(|l| l.line()),
            column: at.map(|l| l.column()),
            message: message.into(),
            snippet: None,
        });
    }

    /// Takes the documents of the file at `path`.
    fn read(&mut self, path: &Path, docs: Vec<Document>) {
        self.path = path.to_path_buf();
        for (index, doc) in docs.into_iter().enumerate() {
            let n = index + 1;
            let (Some(kind), Some(api_version)) = (doc.kind.as_ref(), doc.api_version.as_ref())
            else {
                if doc.kind.is_none()
                    && doc.api_version.is_none()
                    && doc.spec.is_none()
                    && doc.metadata.is_none()
                    && doc.data.is_none()
                {
                    // An empty document (a stray `---`) is harmless.
                    continue;
                }
                let at = doc
                    .kind
                    .as_ref()
                    .map(|k| k.referenced)
                    .or(doc.api_version.as_ref().map(|a| a.referenced))
                    .or(doc.metadata.as_ref().map(|m| m.referenced));
                self.err(
                    at,
                    format!("document {n}: expected both `apiVersion` and `kind`"),
                );
                continue;
            };
            self.seen_docs += 1;
            let meta = doc.metadata.as_ref().map(|m| m.value.clone());
            match kind.value.as_str() {
                "Gateway" => {
                    if GatewayGroup::of(&api_version.value).is_none() {
                        self.err(
                            Some(api_version.referenced),
                            format!(
                                "apiVersion `{}` is not a Gateway version: expected one of {}",
                                api_version.value,
                                GatewayGroup::ALL.map(GatewayGroup::api_version).join(", ")
                            ),
                        );
                        continue;
                    }
                    let Some(meta) = meta.filter(|m| !m.name.is_empty()) else {
                        self.err(
                            Some(kind.referenced),
                            "Gateway: expected `metadata.name`".to_string(),
                        );
                        continue;
                    };
                    if let Err(why) = check_object_name(&meta.name) {
                        let at = doc.metadata.as_ref().map(|m| m.referenced);
                        self.err(
                            at.or(Some(kind.referenced)),
                            format!("Gateway: metadata.name `{}` {why}", meta.name),
                        );
                        continue;
                    }
                    let Some(spec) = doc.spec else {
                        self.err(
                            Some(kind.referenced),
                            format!("Gateway `{}`: expected a `spec`", meta.name),
                        );
                        continue;
                    };
                    self.gateways.push(FoundGateway {
                        gateway: Gateway {
                            api_version: api_version.value.clone(),
                            kind: kind.value.clone(),
                            metadata: meta,
                            spec: spec.value,
                        },
                        spec_at: spec.referenced,
                        path: path.to_path_buf(),
                    });
                }
                "ConfigMap" => {
                    if api_version.value != "v1" {
                        self.err(
                            Some(api_version.referenced),
                            format!(
                                "apiVersion `{}` is not a ConfigMap version: expected v1",
                                api_version.value
                            ),
                        );
                        continue;
                    }
                    let Some(meta) = meta.filter(|m| !m.name.is_empty()) else {
                        self.err(
                            Some(kind.referenced),
                            "ConfigMap: expected `metadata.name`".to_string(),
                        );
                        continue;
                    };
                    self.config_maps.push(FoundConfigMap {
                        name: meta.name,
                        at: Some(kind.referenced),
                        data: doc.data.unwrap_or_default(),
                        path: path.to_path_buf(),
                    });
                }
                other => self.err(
                    Some(kind.referenced),
                    format!("kind `{other}` is not expected here: expected Gateway or ConfigMap"),
                ),
            }
        }
    }

    /// Pairs each Gateway read with the ConfigMap it names (or the only one, when it names
    /// none and there is one of each); `files` are the files read.
    fn pair(mut self, files: Vec<PathBuf>) -> Result<Vec<GatewayFile>, SpecErrors> {
        if self.gateways.is_empty() {
            if self.errors.is_empty() {
                let what = if self.seen_docs == 0 {
                    "holds no document"
                } else {
                    "holds no Gateway"
                };
                let (path, what) = match files.as_slice() {
                    [one] => (one.clone(), format!("the file {what}")),
                    _ => (
                        files.first().cloned().unwrap_or_default(),
                        format!(
                            "none of the {} files {}",
                            files.len(),
                            what.replace("holds", "hold")
                        ),
                    ),
                };
                self.errors.push(SpecError::whole(
                    &path,
                    format!("{what}: expected a `kind: Gateway` document"),
                ));
            }
            return Err(SpecErrors(self.errors));
        }
        let mut names: Vec<&str> = self
            .gateways
            .iter()
            .map(|g| g.gateway.metadata.name.as_str())
            .collect();
        names.sort();
        if let Some(twice) = names
            .windows(2)
            .find(|w| w[0] == w[1])
            .map(|w| w[0].to_string())
        {
            self.path = self.gateways[1].path.clone();
            let at = self.gateways[1].spec_at;
            self.err(
                Some(at),
                format!("Gateway `{twice}` is given more than once"),
            );
        }
        let gateways = std::mem::take(&mut self.gateways);
        let only_pair = gateways.len() == 1 && self.config_maps.len() == 1;
        let mut out = Vec::new();
        for found in gateways {
            self.path = found.path.clone();
            self.check_spec(&found.gateway, found.spec_at);
            let gateway = found.gateway;
            let (config_map, configurations) = match &gateway.spec.config_map {
                Some(name) => match self.config_maps.iter().find(|c| &c.name == name) {
                    Some(c) => (Some(name.clone()), c.data.clone()),
                    None if self.config_maps.is_empty() => (None, ConfigMapData::new()),
                    None => {
                        let found: Vec<&str> =
                            self.config_maps.iter().map(|c| c.name.as_str()).collect();
                        let message = format!(
                            "Gateway `{}` names ConfigMap `{name}`, but the ConfigMap given is named {}",
                            gateway.metadata.name,
                            found.join(", ")
                        );
                        let (path, at) = (self.config_maps[0].path.clone(), self.config_maps[0].at);
                        self.path = path;
                        self.err(at, message);
                        (None, ConfigMapData::new())
                    }
                },
                None if only_pair => {
                    let c = &self.config_maps[0];
                    (Some(c.name.clone()), c.data.clone())
                }
                None if self.config_maps.len() > 1 => {
                    self.err(
                        Some(found.spec_at),
                        "several ConfigMaps are given: name the gateway's with `spec.configMap`",
                    );
                    (None, ConfigMapData::new())
                }
                None => (None, ConfigMapData::new()),
            };
            out.push(GatewayFile {
                path: found.path,
                files: files.clone(),
                gateway,
                configurations,
                config_map,
            });
        }
        if self.errors.is_empty() {
            Ok(out)
        } else {
            Err(SpecErrors(self.errors))
        }
    }

    fn check_spec(&mut self, gateway: &Gateway, at: serde_saphyr::Location) {
        let spec = &gateway.spec;
        let name = &gateway.metadata.name;
        if spec.gateway_type.trim().is_empty() {
            self.err(
                Some(at),
                format!("Gateway `{name}`: expected `spec.type` (the CloudEvent type)"),
            );
        }
        if spec.rpc_port.is_some() && spec.http_server_port.is_some() {
            self.err(
                Some(at),
                format!(
                    "Gateway `{name}`: `rpcPort` and `httpServerPort` are both set: choose one processor style"
                ),
            );
        }
        if spec.grpc_protocol != GrpcProtocol::Portico && spec.rpc_port.is_none() {
            self.err(
                Some(at),
                format!(
                    "Gateway `{name}`: `grpcProtocol` is set but `rpcPort` is not: set `rpcPort` to the gRPC server's port, or drop `grpcProtocol`"
                ),
            );
        }
        if let Some(c) = &spec.coordination
            && let Err(e) = c.settings()
        {
            self.err(Some(at), format!("Gateway `{name}`: spec.{e}"));
        }
        if spec.replicas == Some(0) {
            self.err(
                Some(at),
                format!("Gateway `{name}`: spec.replicas is 0: give 1 or more"),
            );
        }
        let problems = super::watchers::problems(spec);
        for p in problems {
            self.err(Some(at), format!("Gateway `{name}`: {p}"));
        }
    }
}

/// Parses one configuration's value (YAML or JSON text) into `T`; the error names the field
/// (its path, when it is not at the top), the line and the column:
/// `exchangeType: line 3 column 15: unknown variant …`. The keys Portico reads itself
/// (`filter`, `rateLimit`) are skipped at the top of the value, so that a type that refuses
/// unknown fields takes them.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    parse_value(text, true)
}

/// [`parse_config`] with every key, the reserved ones included.
pub(crate) fn parse_value_as_written<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, ConfigError> {
    parse_value(text, false)
}

fn parse_value<T: serde::de::DeserializeOwned>(
    text: &str,
    skip_reserved: bool,
) -> Result<T, ConfigError> {
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str(text, |de| {
        let parsed = if skip_reserved {
            serde_path_to_error::deserialize(crate::policy::SkipReserved(de))
        } else {
            serde_path_to_error::deserialize(de)
        };
        parsed.map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| {
        let msg = e.to_string();
        let first = msg
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        if path.is_empty() || path == "." {
            ConfigError::invalid(first)
        } else {
            ConfigError::invalid(format!("{path}: {first}"))
        }
    })
}

/// Checks an object name as the API server does for a Gateway (a DNS subdomain: at most 253
/// lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit), so
/// that a file that runs here also applies to a cluster.
fn check_object_name(name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.len() > 253 {
        return Err(format!(
            "is {} characters long: a Kubernetes object name has at most 253",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(alnum(*c) || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "has `{bad}`: a Kubernetes object name has only lower-case letters, digits, `-` and `.`"
        ));
    }
    if !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err(
            "must start and end with a lower-case letter or a digit (a Kubernetes object name)"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Encoding, Port, UrlWatcher};
    use std::time::Duration;

    fn parse(text: &str) -> Result<GatewayFile, SpecErrors> {
        GatewayFile::parse(Path::new("gw.yaml"), text)
    }

    const GOOD: &str = "apiVersion: portico.dev/v1alpha1
kind: Gateway
metadata:
  name: cal
spec:
  type: calendar
  configMap: cal-cm
  watchers:
    urls: [\"http://127.0.0.1:1/x\", {url: \"http://127.0.0.1:2/y\", encoding: binary, timeout: 2s}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cal-cm
data:
  a: |
    interval: 1s
";

    #[test]
    fn two_hundred_thousand_configurations_parse() {
        let mut text = String::from(
            "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata: {name: big}\nspec: {type: calendar, configMap: big-cm}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: big-cm}\ndata:\n",
        );
        for i in 0..200_000 {
            text.push_str(&format!("  c{i}: \"interval: 3600s\"\n"));
        }
        let f = parse(&text).unwrap();
        assert_eq!(f.configurations.len(), 200_000);
        assert_eq!(f.configurations.get("c199999").unwrap(), "interval: 3600s");
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        // Nine levels of ten aliases each: 10^9 nodes from a few hundred bytes.
        let mut text = String::from(
            "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata: {name: bomb}\nspec: {type: calendar, configMap: bomb-cm}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb-cm}\nx0: &a0 [lol]\n",
        );
        for level in 1..=9 {
            let refs = vec![format!("*a{}", level - 1); 10].join(", ");
            text.push_str(&format!("x{level}: &a{level} [{refs}]\n"));
        }
        text.push_str("data: {}\n");
        let errors = parse(&text).unwrap_err().to_string();
        assert!(errors.contains("budget breached"), "{errors}");
    }

    #[test]
    fn reads_a_gateway_and_its_configmap() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.gateway.metadata.name, "cal");
        assert_eq!(f.gateway.spec.gateway_type, "calendar");
        assert_eq!(f.gateway.spec.event_version, "1.0");
        assert_eq!(f.configurations.get("a").unwrap(), "interval: 1s\n");
        assert_eq!(f.gateway.spec.watchers.urls.len(), 2);
        match &f.gateway.spec.watchers.urls[1] {
            UrlWatcher::Detailed { url, settings } => {
                assert_eq!(url, "http://127.0.0.1:2/y");
                assert_eq!(settings.encoding, Some(Encoding::Binary));
                assert_eq!(settings.timeout, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_the_argoproj_group_and_numeric_ports() {
        let text = GOOD
            .replace("portico.dev/v1alpha1", "argoproj.io/v1alpha1")
            .replace(
                "  configMap: cal-cm",
                "  configMap: cal-cm\n  rpcPort: 9898",
            );
        let f = parse(&text).unwrap();
        assert_eq!(f.gateway.spec.rpc_port, Some(Port(9898)));
    }

    #[test]
    fn grpc_protocol_selects_the_argo_generic_contract_and_needs_rpc_port() {
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  rpcPort: 9898\n  grpcProtocol: argo-generic",
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.gateway.spec.grpc_protocol, GrpcProtocol::ArgoGeneric);
        assert_eq!(
            parse(GOOD).unwrap().gateway.spec.grpc_protocol,
            GrpcProtocol::Portico
        );
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  grpcProtocol: argo-generic",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("`rpcPort` is not"), "{e}");
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  rpcPort: 9898\n  grpcProtocol: grpc-web",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("argo-generic"),
            "the error lists the choices: {e}"
        );
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let text = GOOD.replace("  type: calendar", "  type: [calendar");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.0.len(), 1);
        let e = &e.0[0];
        assert_eq!(e.line, Some(6));
        assert!(e.column.is_some());
        assert!(e.to_string().starts_with("gw.yaml:6:"), "{e}");
    }

    #[test]
    fn an_unknown_field_is_reported_with_what_was_expected() {
        let text = GOOD.replace("  type: calendar", "  tpye: calendar");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:6:3"), "{e}");
        assert!(e.contains("unknown field `tpye`"), "{e}");
    }

    #[test]
    fn a_bad_port_names_its_place() {
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  rpcPort: \"99999\"",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:8:"), "{e}");
        assert!(e.contains("port number"), "{e}");
    }

    #[test]
    fn a_gateway_name_must_be_a_kubernetes_object_name() {
        for (name, word) in [
            ("storage_grid-gateway", "`_`"),
            ("Upper", "`U`"),
            ("-dash", "start and end"),
        ] {
            let text = GOOD.replacen("name: cal\n", &format!("name: {name}\n"), 1);
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains("metadata.name") && e.contains(word),
                "{name}: {e}"
            );
            assert!(e.contains("gw.yaml:4"), "the line of the name: {e}");
        }
        assert!(check_object_name("calendar-gateway.v1").is_ok());
    }

    #[test]
    fn a_wrong_api_version_and_kind_are_errors() {
        let text = GOOD.replace("portico.dev/v1alpha1", "portico.dev/v9");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:1:13"), "{e}");
        assert!(e.contains("portico.dev/v1alpha1"), "{e}");
        let text = GOOD.replace("kind: ConfigMap", "kind: Secret");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("kind `Secret`"), "{e}");
    }

    #[test]
    fn a_configmap_value_must_be_text() {
        let text = GOOD.replace("  a: |\n    interval: 1s\n", "  a:\n    interval: 1s\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:17:"), "{e}");
    }

    #[test]
    fn the_named_configmap_must_be_the_files() {
        let text = GOOD.replace("  name: cal-cm", "  name: other");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("names ConfigMap `cal-cm`"), "{e}");
    }

    #[test]
    fn a_sensor_named_only_is_taken_when_checking_a_file() {
        // It resolves where the gateway runs: in a cluster, or with --sensor-url.
        let text = GOOD.replace("    urls:", "    sensors: [{name: s1}]\n    urls:");
        let f = parse(&text).unwrap();
        assert_eq!(f.gateway.spec.watchers.sensors[0].name, "s1");
        let notes = crate::spec::watchers::notes(&f.gateway);
        assert!(
            notes[0].contains("`s1`") && notes[0].contains("s1-sensor-svc.default.svc:9300"),
            "{notes:?}"
        );
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("no document"), "{e}");
    }

    #[test]
    fn parse_config_reports_line_and_column() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct C {
            interval: String,
        }
        let e = parse_config::<C>("intreval: 1s").unwrap_err();
        assert!(e.message().starts_with("line 1 column 1"), "{e}");
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            inner: Inner,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        enum Mode {
            #[serde(rename = "a")]
            A,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            mode: Mode,
        }
        let e = parse_config::<Outer>("inner:\n  mode: b\n").unwrap_err();
        assert!(
            e.message()
                .starts_with("inner.mode: line 2 column 9: unknown variant `b`"),
            "{e}"
        );
    }

    /// A gateway file whose spec has `spec_lines` (indented two spaces).
    fn with_spec(spec_lines: &str) -> String {
        format!(
            "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  type: calendar\n{spec_lines}\n"
        )
    }

    #[test]
    fn an_unknown_key_at_any_level_of_the_spec_is_an_error_with_its_line() {
        for (lines, key, line) in [
            ("  delivery: {mode: atMostOnce, bogus: 1}", "bogus", 7),
            (
                "  watchers:\n    urls:\n      - {url: \"http://h/\", nonsense: x}",
                "nonsense",
                9,
            ),
            // In a block map, the line of the entry that holds the key.
            (
                "  watchers:\n    sensors:\n      - name: s\n        colour: red",
                "colour",
                9,
            ),
            (
                "  watchers:\n    gateways:\n      - {name: g, port: 1, retry: {maxAtempts: 3}}",
                "maxAtempts",
                9,
            ),
            ("  deliveryy: {}", "deliveryy", 7),
        ] {
            let e = parse(&with_spec(lines)).unwrap_err();
            let first = &e.0[0];
            assert!(
                first.message.contains(&format!("unknown field `{key}`")),
                "{lines}: {e}"
            );
            assert_eq!(first.line, Some(line), "{lines}: {e}");
        }
    }

    #[test]
    fn argo_gateway_fields_are_taken_with_a_warning_each() {
        let f = parse(&with_spec(
            "  imageVersion: v0.6\n  imagePullPolicy: Always\n  serviceAccountName: sa",
        ))
        .unwrap();
        let w = f.gateway.spec.warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("spec.imageVersion: a field of Argo Events"),
            "{w:?}"
        );
        assert!(parse(GOOD).unwrap().gateway.spec.warnings().is_empty());
    }

    #[test]
    fn watcher_entries_take_their_own_keys_and_every_setting() {
        let f = parse(&with_spec(
            "  watchers:\n    sensors:\n      - {name: s, url: \"http://h/\", timeout: 3s, bearerTokenEnv: T}",
        ))
        .unwrap();
        let s = &f.gateway.spec.watchers.sensors[0];
        assert_eq!(s.settings.timeout, Some(Duration::from_secs(3)));
        assert_eq!(s.settings.bearer_token_env.as_deref(), Some("T"));
        // The keys an entry takes besides its own are exactly the settings' fields.
        let schema = schemars::schema_for!(crate::spec::WatcherSettings);
        let mut fields: Vec<&str> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort();
        let mut keys = crate::spec::SETTINGS_KEYS.to_vec();
        keys.sort();
        assert_eq!(fields, keys);
    }

    fn texts(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    }

    const GW_A: &str = "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata: {name: a}\nspec: {type: calendar, configMap: a-cm}\n";
    const CM_A: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a-cm}\ndata: {x: 'interval: 1s'}\n";
    const GW_B: &str = "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata: {name: b}\nspec: {type: calendar, configMap: b-cm}\n";
    const CM_B: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b-cm}\ndata: {y: 'interval: 2s', z: 'interval: 3s'}\n";

    #[test]
    fn a_gateway_and_its_configmap_in_two_files_are_paired() {
        let all =
            GatewayFile::parse_texts(&texts(&[("gw.yaml", GW_A), ("cm.yaml", CM_A)])).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].path, PathBuf::from("gw.yaml"));
        assert_eq!(all[0].config_map.as_deref(), Some("a-cm"));
        assert_eq!(all[0].configurations.len(), 1);
        assert_eq!(all[0].files.len(), 2);
    }

    #[test]
    fn several_gateways_each_get_the_configmap_they_name() {
        let all = GatewayFile::parse_texts(&texts(&[
            ("b.yaml", &format!("{GW_B}---\n{CM_B}")),
            ("a-gw.yaml", GW_A),
            ("a-cm.yaml", CM_A),
        ]))
        .unwrap();
        let sizes: Vec<(String, usize)> = all
            .iter()
            .map(|g| (g.gateway.metadata.name.clone(), g.configurations.len()))
            .collect();
        assert_eq!(sizes, [("b".to_string(), 2), ("a".to_string(), 1)]);
        // Running takes one gateway: several are an error naming them.
        let e = GatewayFile::one_of(all).unwrap_err().to_string();
        assert!(
            e.contains("expected one Gateway, found 2: `b` (b.yaml), `a` (a-gw.yaml)"),
            "{e}"
        );
    }

    #[test]
    fn the_same_gateway_twice_and_a_missing_configmap_are_errors_in_their_files() {
        let e = GatewayFile::parse_texts(&texts(&[("one.yaml", GW_A), ("two.yaml", GW_A)]))
            .unwrap_err();
        assert!(
            e.0[0]
                .message
                .contains("Gateway `a` is given more than once"),
            "{e}"
        );
        assert_eq!(e.0[0].path, PathBuf::from("two.yaml"));
        let e =
            GatewayFile::parse_texts(&texts(&[("gw.yaml", GW_A), ("cm.yaml", CM_B)])).unwrap_err();
        assert!(
            e.0[0]
                .message
                .contains("names ConfigMap `a-cm`, but the ConfigMap given is named b-cm"),
            "{e}"
        );
        assert_eq!(e.0[0].path, PathBuf::from("cm.yaml"));
    }

    #[test]
    fn directories_give_their_yaml_and_json_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("2-cm.yml"), CM_A).unwrap();
        std::fs::write(dir.path().join("1-gw.yaml"), GW_A).unwrap();
        std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let files = expand(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["1-gw.yaml", "2-cm.yml"]);
        let g = GatewayFile::load_one(&[dir.path().to_path_buf()], DEFAULT_MAX_FILE_BYTES).unwrap();
        assert_eq!(g.configurations.len(), 1);
        let empty = tempfile::tempdir().unwrap();
        let e = expand(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(
            e.to_string().contains("holds no .yaml, .yml or .json file"),
            "{e}"
        );
    }
}
