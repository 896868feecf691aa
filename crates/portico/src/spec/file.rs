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

use super::{ConfigMapData, GATEWAY_API_VERSIONS, Gateway, GatewaySpec, GrpcProtocol, ObjectMeta};

/// A gateway file, read and checked: the gateway and its configurations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatewayFile {
    /// Where it was read from.
    pub path: PathBuf,
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

impl GatewayFile {
    /// Reads and checks a gateway file.
    pub(crate) fn load(path: &Path, max_bytes: u64) -> Result<GatewayFile, SpecErrors> {
        let text = read_text(path, max_bytes).map_err(|message| {
            SpecErrors(vec![SpecError {
                path: path.to_path_buf(),
                line: None,
                column: None,
                message,
                snippet: None,
            }])
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks the text of a gateway file; `path` is only used in messages.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<GatewayFile, SpecErrors> {
        let docs: Vec<Document> = serde_saphyr::from_multiple(text).map_err(|e| {
            let loc = e.location();
            let rendered = e.to_string();
            // The first line repeats "line L column C: message"; keep the message alone and
            // the rendered lines around the place as the snippet.
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
            SpecErrors(vec![SpecError {
                path: path.to_path_buf(),
                line: loc.map(|l| l.line()),
                column: loc.map(|l| l.column()),
                message,
                snippet: (!snippet.is_empty()).then(|| {
                    snippet
                        .join("\n")
                        .replace("<input>", &path.display().to_string())
                }),
            }])
        })?;
        Checker::new(path).check(docs)
    }
}

struct Checker<'a> {
    path: &'a Path,
    errors: Vec<SpecError>,
}

impl<'a> Checker<'a> {
    fn new(path: &'a Path) -> Self {
        Checker {
            path,
            errors: Vec::new(),
        }
    }

    fn err(&mut self, at: Option<serde_saphyr::Location>, message: impl Into<String>) {
        self.errors.push(SpecError {
            path: self.path.to_path_buf(),
            line: at.map(|l| l.line()),
            column: at.map(|l| l.column()),
            message: message.into(),
            snippet: None,
        });
    }

    fn check(mut self, docs: Vec<Document>) -> Result<GatewayFile, SpecErrors> {
        let mut gateways = Vec::new();
        let mut config_maps: Vec<(String, Option<serde_saphyr::Location>, ConfigMapData)> =
            Vec::new();
        let mut seen_docs = 0;
        for (index, doc) in docs.into_iter().enumerate() {
            let n = index + 1;
            let (Some(kind), Some(api_version)) = (doc.kind.as_ref(), doc.api_version.as_ref())
            else {
                if doc.kind.is_none() && doc.api_version.is_none() && doc.spec.is_none() {
                    // An empty document (a stray `---`) is harmless.
                    if doc.metadata.is_none() && doc.data.is_none() {
                        continue;
                    }
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
            seen_docs += 1;
            let meta = doc.metadata.as_ref().map(|m| m.value.clone());
            match kind.value.as_str() {
                "Gateway" => {
                    if !GATEWAY_API_VERSIONS.contains(&api_version.value.as_str()) {
                        self.err(
                            Some(api_version.referenced),
                            format!(
                                "apiVersion `{}` is not a Gateway version: expected one of {}",
                                api_version.value,
                                GATEWAY_API_VERSIONS.join(", ")
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
                    let Some(spec) = doc.spec else {
                        self.err(
                            Some(kind.referenced),
                            format!("Gateway `{}`: expected a `spec`", meta.name),
                        );
                        continue;
                    };
                    gateways.push((
                        Gateway {
                            api_version: api_version.value.clone(),
                            kind: kind.value.clone(),
                            metadata: meta,
                            spec: spec.value,
                        },
                        spec.referenced,
                    ));
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
                    config_maps.push((
                        meta.name,
                        Some(kind.referenced),
                        doc.data.unwrap_or_default(),
                    ));
                }
                other => self.err(
                    Some(kind.referenced),
                    format!("kind `{other}` is not expected here: expected Gateway or ConfigMap"),
                ),
            }
        }
        if gateways.len() > 1 {
            let at = gateways.get(1).map(|(_, at)| *at);
            self.err(at, "expected one Gateway in the file, found more");
        }
        let Some((gateway, spec_at)) = gateways.into_iter().next() else {
            if self.errors.is_empty() {
                let what = if seen_docs == 0 {
                    "the file holds no document"
                } else {
                    "the file holds no Gateway"
                };
                self.err(None, format!("{what}: expected a `kind: Gateway` document"));
            }
            return Err(SpecErrors(self.errors));
        };
        self.check_spec(&gateway, spec_at);
        let (config_map, configurations) = match &gateway.spec.config_map {
            Some(name) => match config_maps.iter().find(|(n, _, _)| n == name) {
                Some((_, _, data)) => (Some(name.clone()), data.clone()),
                None if config_maps.is_empty() => (None, ConfigMapData::new()),
                None => {
                    let found: Vec<&str> = config_maps.iter().map(|(n, _, _)| n.as_str()).collect();
                    let at = config_maps.first().and_then(|(_, at, _)| *at);
                    self.err(
                        at,
                        format!(
                            "Gateway `{}` names ConfigMap `{name}`, but the file's ConfigMap is named {}",
                            gateway.metadata.name,
                            found.join(", ")
                        ),
                    );
                    (None, ConfigMapData::new())
                }
            },
            None => match config_maps.len() {
                0 => (None, ConfigMapData::new()),
                1 => {
                    let (name, _, data) = config_maps.swap_remove(0);
                    (Some(name), data)
                }
                _ => {
                    self.err(
                        Some(spec_at),
                        "the file has several ConfigMaps: name the gateway's with `spec.configMap`",
                    );
                    (None, ConfigMapData::new())
                }
            },
        };
        if self.errors.is_empty() {
            Ok(GatewayFile {
                path: self.path.to_path_buf(),
                gateway,
                configurations,
                config_map,
            })
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
        let problems = super::watchers::problems(spec);
        for p in problems {
            self.err(Some(at), format!("Gateway `{name}`: {p}"));
        }
    }
}

/// Parses one configuration's value (YAML or JSON text) into `T`; the error names the field
/// (its path, when it is not at the top), the line and the column:
/// `exchangeType: line 3 column 15: unknown variant …`.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
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
    fn a_sensor_needs_a_url_outside_a_cluster() {
        let text = GOOD.replace("    urls:", "    sensors: [{name: s1}]\n    urls:");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("watchers.sensors[0] `s1`"), "{e}");
        assert!(e.contains("url"), "{e}");
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
}
