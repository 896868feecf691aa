//! Reference pages made from the code, so that the docs and the code cannot drift apart: the
//! Gateway resource ([`gateway_resource_page`], from the JSON Schema of the CRD's types), every
//! metric ([`metrics_page`], from the metrics registry), and the field tables of any type's
//! JSON Schema ([`schema_fields`], which the built-in gateways' pages use too). Tests
//! regenerate each page and fail when the file in `docs/reference/` differs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::dispatch::outbox::DEFAULT_MAX_BYTES;
use crate::metrics::{Metrics, PhaseLabels, RejectReason};
use crate::spec::watchers::{Environment, Target, resolve_watchers};
use crate::spec::{
    DeliveryMode, Gateway, GatewayGroup, GatewaySpec, GatewayStatus, GrpcProtocol, ObjectMeta,
    UrlWatcher, Watchers,
};
use crate::status::Phase;

/// The field reference of an object's JSON Schema, as schemars makes it from a type's doc
/// comments: the schema's description, then `lead` (when not empty), then a table of its
/// fields (name, type, whether required, default, meaning), then one section per object type
/// those fields use (headed `heading` and the type's name, `## ` say), each with its table.
///
/// A type whose fields are all another type's too (serde's `flatten`) lists only its own and
/// links to the other's table. A field's `default` is its default; `x-default-text`, when a
/// field has it, is shown instead, as written.
pub fn schema_fields(schema: &Value, lead: &str, heading: &str) -> String {
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&paragraphs(d));
        out.push_str("\n\n");
    }
    if !lead.is_empty() {
        out.push_str(lead);
        out.push_str("\n\n");
    }
    let mut nested = Vec::new();
    table(&mut out, schema, None, &defs, &mut nested);
    let mut done = Vec::new();
    // Depth first, in the order the tables name them.
    nested.reverse();
    while let Some(name) = nested.pop() {
        if done.contains(&name) {
            continue;
        }
        done.push(name.clone());
        let Some(def) = defs.get(&name) else { continue };
        out.push_str(&format!("\n{heading} `{name}`\n\n"));
        if let Some(d) = def.get("description").and_then(Value::as_str) {
            out.push_str(&paragraphs(d));
            out.push_str("\n\n");
        }
        let mut more = Vec::new();
        table(&mut out, def, Some(&name), &defs, &mut more);
        more.reverse();
        nested.extend(more);
    }
    out
}

/// The reference page of the `Gateway` resource (`docs/reference/gateway-resource.md`): its
/// groups, names and columns from the CRD, and every field of its `spec` and `status` from
/// their types' doc comments.
pub fn gateway_resource_page() -> String {
    let mut out = String::from("# The Gateway resource\n\n");
    out.push_str(
        "<!-- Generated from the CRD's types (crates/portico/src/spec/mod.rs) and their doc \
         comments: edit those, then run \
         `PORTICO_BLESS=1 cargo test -p portico --test reference_docs`. -->\n\n",
    );
    let crd = GatewayGroup::Portico.crd();
    let names = &crd.spec.names;
    let version = crd.spec.versions.first();
    let groups: Vec<String> = GatewayGroup::ALL
        .iter()
        .map(|g| format!("`{}`", g.api_version()))
        .collect();
    let _ = writeln!(
        out,
        "A gateway is one `{}` object (plural `{}`, scope {}), the same in a gateway file and \
         in a cluster. Its `apiVersion` is one of {}: both groups take the same fields; how \
         the two differ is in [Running on Kubernetes](../kubernetes.md) and \
         [Coming from Argo Events v0.6](../migrating-from-argo.md). `portico crd` prints the \
         CustomResourceDefinitions, `portico validate FILE` checks a file against them.\n",
        names.kind,
        names.plural,
        crd.spec.scope,
        groups.join(" and "),
    );
    if let Some(v) = version {
        let mut extras = Vec::new();
        if v.subresources.as_ref().is_some_and(|s| s.status.is_some()) {
            extras.push("the `status` subresource".to_string());
        }
        if let Some(cats) = &names.categories {
            let cats: Vec<String> = cats.iter().map(|c| format!("`{c}`")).collect();
            extras.push(format!("the categories {}", cats.join(", ")));
        }
        let columns: Vec<String> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| format!("{} (`{}`)", c.name, c.json_path))
            .collect();
        if !columns.is_empty() {
            extras.push(format!(
                "the columns `kubectl get gateways` prints: {}",
                columns.join(", ")
            ));
        }
        let _ = writeln!(out, "The CRD declares {}.\n", join_words(&extras));
    }
    out.push_str(
        "| field | type | meaning |\n|---|---|---|\n\
         | `apiVersion` | string | the group and version (above) |\n\
         | `kind` | string | `Gateway` |\n\
         | `metadata` | object | Kubernetes object metadata: `name`, `namespace` (default \
         `default`), `labels`, `annotations` |\n\
         | `spec` | [`spec`](#spec) | the desired state: written by you |\n\
         | `status` | [`status`](#status) | the observed state: written by the controller and \
         the gateway, in a cluster only |\n",
    );
    let mut spec = schemars::schema_for!(GatewaySpec).to_value();
    with_effective_defaults(&mut spec);
    out.push_str("\n## `spec`\n\n");
    out.push_str(&schema_fields(
        &spec,
        "Unknown fields are refused at every level, with their line and column in a file.",
        "###",
    ));
    let status = schemars::schema_for!(GatewayStatus);
    out.push_str("\n## `status`\n\n");
    out.push_str(&schema_fields(status.as_value(), "", "###"));
    out
}

/// Sets, in the spec's schema, the defaults that are not in the doc comments: what a watcher
/// with no settings gets, as the code resolves it (every type that has a field of
/// `WatcherSettings`, it and the watchers that flatten it, gets them), and the gRPC protocol's.
/// A URL watcher's type is said too.
fn with_effective_defaults(schema: &mut Value) {
    let gateway = Gateway {
        api_version: GatewayGroup::Portico.api_version().to_string(),
        kind: "Gateway".to_string(),
        metadata: ObjectMeta::default(),
        spec: GatewaySpec {
            watchers: Watchers {
                urls: vec![UrlWatcher::Url("http://127.0.0.1/".to_string())],
                ..Watchers::default()
            },
            ..GatewaySpec::default()
        },
    };
    let Ok(watchers) = resolve_watchers(&gateway, &Environment::default()) else {
        return;
    };
    let Some(watcher) = watchers.first() else {
        return;
    };
    let mut settings: Vec<(&str, &str, String)> = Vec::new();
    if let Target::Http {
        encoding, timeout, ..
    } = &watcher.target
    {
        settings.push((
            "WatcherSettings",
            "encoding",
            format!(
                "{} ({} in an `argoproj.io` Gateway)",
                word(encoding),
                word(&GatewayGroup::Argo.default_encoding())
            ),
        ));
        settings.push(("WatcherSettings", "timeout", duration(*timeout)));
    }
    let q = &watcher.queue;
    settings.push((
        "WatcherSettings",
        "queueSize",
        format!("`{}`", q.queue_size),
    ));
    settings.push((
        "WatcherSettings",
        "concurrency",
        format!("`{}`", q.concurrency),
    ));
    settings.push(("WatcherSettings", "mode", word(&DeliveryMode::default())));
    settings.push((
        "RetrySettings",
        "maxAttempts",
        format!("`{}`", q.retry.max_attempts),
    ));
    settings.push((
        "RetrySettings",
        "initialBackoff",
        duration(q.retry.initial_backoff),
    ));
    settings.push(("RetrySettings", "maxBackoff", duration(q.retry.max_backoff)));
    settings.push((
        "OutboxSettings",
        "maxBytes",
        format!("`{}` (1 GiB)", DEFAULT_MAX_BYTES),
    ));
    if let Some(f) = schema
        .pointer_mut("/properties/grpcProtocol")
        .and_then(Value::as_object_mut)
    {
        f.insert(
            "x-default-text".to_string(),
            Value::String(word(&GrpcProtocol::default())),
        );
    }
    let Some(defs) = schema.get_mut("$defs").and_then(Value::as_object_mut) else {
        return;
    };
    // A URL watcher is a string or an object, which no structural schema says (the CRD keeps
    // it open): say it on the page.
    if let Some(url) = defs.get_mut("UrlWatcher").and_then(Value::as_object_mut)
        && !url.contains_key("type")
    {
        url.insert("type".to_string(), serde_json::json!(["string", "object"]));
    }
    for (ty, field, text) in settings {
        let original = defs
            .get(ty)
            .and_then(|d| d.pointer(&format!("/properties/{field}")))
            .cloned();
        let Some(original) = original else { continue };
        for def in defs.values_mut() {
            if let Some(f) = def
                .pointer_mut(&format!("/properties/{field}"))
                .filter(|f| **f == original)
                .and_then(Value::as_object_mut)
            {
                f.insert("x-default-text".to_string(), Value::String(text.clone()));
            }
        }
    }
}

/// A duration as a manifest writes it (`100ms`, `5s`).
fn duration(d: std::time::Duration) -> String {
    format!("`{}`", humantime::format_duration(d))
}

/// A value as the word a manifest writes for it (`structured`, `atLeastOnce`), in code.
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => format!("`{s}`"),
        Ok(other) => format!("`{other}`"),
        Err(_) => String::new(),
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join_words(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// One metric family as the registry encodes it.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    /// The names its samples are exposed under (`…_total`, `…_bucket`, …).
    samples: BTreeSet<String>,
    /// Its labels, `le` aside.
    labels: BTreeSet<String>,
    /// The upper bounds of a histogram's buckets.
    buckets: Vec<String>,
}

/// Every metric family of a gateway, by name, read from the registry's encoding with one
/// sample of every label set: an error names a family that shows no sample (a labelled family
/// this module does not fill yet).
fn families() -> Result<BTreeMap<String, Family>, String> {
    let m = Metrics::new();
    // One sample of every labelled family, so that the encoding shows its labels.
    let src = m.for_src("src");
    let _ = m.for_watcher("watcher");
    for reason in RejectReason::ALL {
        m.reject(&src, reason);
    }
    m.count_limited(&src, 0.0);
    for phase in Phase::ALL {
        let _ = m.nodes.get_or_create(&PhaseLabels {
            phase: phase.as_str().to_string(),
        });
    }
    let text = m.encode();
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().help = help.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().kind = kind.to_string();
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let sample = &line[..end];
            // The longest family name the sample starts with.
            let Some(family) = out
                .keys()
                .filter(|f| sample.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned()
            else {
                return Err(format!("a sample of no family: {line}"));
            };
            let f = out.get_mut(&family).expect("found above");
            f.samples.insert(sample.to_string());
            if let Some(labels) = line[end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
                .map(|(l, _)| l)
            {
                for pair in split_labels(labels) {
                    let Some((k, v)) = pair.split_once('=') else {
                        continue;
                    };
                    if k == "le" {
                        let v = v.trim_matches('"').to_string();
                        if !f.buckets.contains(&v) {
                            f.buckets.push(v);
                        }
                    } else {
                        f.labels.insert(k.to_string());
                    }
                }
            }
        }
    }
    let silent: Vec<&String> = out
        .iter()
        .filter(|(_, f)| f.samples.is_empty())
        .map(|(n, _)| n)
        .collect();
    if !silent.is_empty() {
        return Err(format!(
            "metric families with no sample, whose labels cannot be shown: {silent:?}; give \
             each one a sample in `families` (crates/portico/src/reference.rs)"
        ));
    }
    Ok(out)
}

/// `a="x",b="y, z"` → `a="x"`, `b="y, z"`.
fn split_labels(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// What a label of the metrics means, and the values it takes when they are a closed set.
fn label_meaning(label: &str) -> Option<String> {
    Some(match label {
        "src" => "the configuration key (`src`) of the event, or the source a caller of \
                  the ingest API named; at most 4,096 configuration keys and 256 names from \
                  callers get a label of their own, the rest count under `_other`; ingest \
                  calls refused for want of the bearer token count under `_unauthenticated`"
            .to_string(),
        "watcher" => "the watcher's name: `url:<url>`, `sensor:<name>`, `gateway:<name>`, \
                      `k_sink:<url>`, `nats:<subject>`, `kafka:<topic>` or `stdout` (URLs \
                      without their passwords)"
            .to_string(),
        "reason" => {
            let values: Vec<String> = RejectReason::ALL
                .iter()
                .map(|r| format!("`{}` ({})", r.as_str(), reject_reason_meaning(*r)))
                .collect();
            format!("why the event was refused: {}", values.join("; "))
        }
        "phase" => {
            let values: Vec<String> = Phase::ALL
                .iter()
                .map(|p| format!("`{}`", p.as_str()))
                .collect();
            format!("a node phase: {}", values.join(", "))
        }
        _ => return None,
    })
}

/// What a `reason` label value means.
fn reject_reason_meaning(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Full => {
            "the gateway was full: the source was answered 503 or not acknowledged, or, in \
             `atMostOnce`, the event was dropped"
        }
        RejectReason::Disk => "the durable outbox could not write to its disk",
        RejectReason::Invalid => "the event cannot become a valid CloudEvent",
        RejectReason::Stopped => "the configuration or the gateway was stopping",
        RejectReason::Missed => "calendar ticks that fell due while the gateway was full",
        RejectReason::Unauthorized => {
            "refused with 401: a bad or missing webhook signature or token, or an ingest call \
             without the bearer token"
        }
        RejectReason::Filtered => {
            "the configuration's `filter` did not pass the event: taken from the source, never stored"
        }
        RejectReason::Limited => {
            "the configuration's `rateLimit` had no room within an HTTP caller's wait: answered 429 with `Retry-After`"
        }
    }
}

/// The metrics reference page (`docs/reference/metrics.md`): every metric of the registry
/// `GET /metrics` encodes, with its type, labels and help text.
pub fn metrics_page() -> Result<String, String> {
    let families = families()?;
    let mut out = String::from("# Metrics\n\n");
    out.push_str(
        "<!-- Generated from the metrics registry (crates/portico/src/metrics.rs): edit that, \
         then run `PORTICO_BLESS=1 cargo test -p portico --test reference_docs`. -->\n\n",
    );
    let _ = writeln!(
        out,
        "Every metric a gateway exposes on `GET /metrics` of the transformer's port, as the \
         registry declares it ({} families). Counters are exposed with `_total` at the end of \
         their name, histograms as `_bucket`, `_sum` and `_count` series. Where they fit in \
         running a gateway: [Delivery](../delivery.md) and [Operations](../operations.md).\n",
        families.len()
    );
    out.push_str("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    let mut all_labels = BTreeSet::new();
    for (name, f) in &families {
        let exposed: Vec<String> = f.samples.iter().map(|s| format!("`{s}`")).collect();
        let labels: Vec<String> = f.labels.iter().map(|l| format!("`{l}`")).collect();
        all_labels.extend(f.labels.iter().cloned());
        let mut help = f.help.clone();
        if !help.ends_with('.') {
            help.push('.');
        }
        let bounds: Vec<&String> = f.buckets.iter().filter(|b| *b != "+Inf").collect();
        if let (Some(first), Some(last)) = (bounds.first(), bounds.last()) {
            let _ = write!(
                help,
                " Buckets (`le`): {} upper bounds from {first} to {last}, and `+Inf`.",
                bounds.len()
            );
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            exposed.join("<br>"),
            if f.kind.is_empty() { "?" } else { &f.kind },
            if labels.is_empty() {
                "—".to_string()
            } else {
                labels.join(", ")
            },
            help.replace('|', "\\|")
        );
        let _ = name;
    }
    out.push_str("\n## Labels\n\n| label | meaning |\n|---|---|\n");
    for label in &all_labels {
        let meaning = label_meaning(label).ok_or_else(|| {
            format!(
                "label `{label}` has no meaning in `label_meaning` \
                 (crates/portico/src/reference.rs): say what it is"
            )
        })?;
        let _ = writeln!(out, "| `{label}` | {} |", meaning.replace('|', "\\|"));
    }
    Ok(out)
}

/// The type of `defs` whose fields `props` all has too, the same (serde's `flatten`): the
/// one with the most fields, at least two, `own` (the type of `props`) aside.
fn flattened<'a>(
    props: &Map<String, Value>,
    own: Option<&str>,
    defs: &'a Map<String, Value>,
) -> Option<(&'a str, &'a Map<String, Value>)> {
    defs.iter()
        .filter(|(name, _)| Some(name.as_str()) != own)
        .filter_map(|(name, def)| {
            let theirs = def.get("properties").and_then(Value::as_object)?;
            let all = theirs.iter().all(|(k, v)| props.get(k) == Some(v));
            (theirs.len() >= 2 && theirs.len() < props.len() && all)
                .then_some((name.as_str(), theirs))
        })
        .max_by_key(|(_, theirs)| theirs.len())
}

/// A field table of the object schema `object` (of type `own`, when it is one of `defs`);
/// object types it refers to go to `nested`.
fn table(
    out: &mut String,
    object: &Value,
    own: Option<&str>,
    defs: &Map<String, Value>,
    nested: &mut Vec<String>,
) {
    let Some(props) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    let inherited = flattened(props, own, defs);
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| field | type | required | default | meaning |\n|---|---|---|---|---|\n");
    // Required fields first, each group in alphabetical order.
    let mut names: Vec<&String> = props
        .keys()
        .filter(|n| !inherited.is_some_and(|(_, theirs)| theirs.contains_key(n.as_str())))
        .collect();
    names.sort_by_key(|n| (!required.contains(&n.as_str()), n.as_str()));
    for name in names {
        let field = &props[name];
        let mut meaning = field
            .get("description")
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        if let Some(values) = enum_values(field, defs) {
            meaning.push_str(&format!(" {values}"));
        }
        let default = match field.get("x-default-text").and_then(Value::as_str) {
            Some(text) => text.to_string(),
            None => field
                .get("default")
                .and_then(default_text)
                .unwrap_or_default(),
        };
        out.push_str(&format!(
            "| `{name}` | {} | {} | {} | {} |\n",
            type_of(field, defs, nested),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                "no"
            },
            default.replace('|', "\\|"),
            meaning.trim().replace('|', "\\|")
        ));
    }
    if let Some((name, _)) = inherited {
        nested.push(name.to_string());
        out.push_str(&format!(
            "\nAnd every field of [`{name}`](#{}).\n",
            name.to_ascii_lowercase()
        ));
    }
}

/// A field's default as a table cell; none for a default that says nothing (null, an empty
/// string, list or map, an object of such).
fn default_text(value: &Value) -> Option<String> {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.values().all(empty),
            Value::Bool(_) | Value::Number(_) => false,
        }
    }
    if empty(value) {
        return None;
    }
    Some(match value {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    })
}

/// The type of a field, in words.
fn type_of(field: &Value, defs: &Map<String, Value>, nested: &mut Vec<String>) -> String {
    if let Some(name) = reference(field) {
        let Some(def) = defs.get(name) else {
            return format!("`{name}`");
        };
        if def.get("properties").is_some() {
            nested.push(name.to_string());
            return format!("[`{name}`](#{})", name.to_ascii_lowercase());
        }
        return type_of(def, defs, nested);
    }
    if field
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return "number or string".to_string();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = field.get(key).and_then(Value::as_array) {
            let consts: Vec<String> = options
                .iter()
                .filter_map(|o| o.get("const"))
                .map(|c| format!("`{}`", c.as_str().map_or(c.to_string(), str::to_string)))
                .collect();
            if !consts.is_empty() && consts.len() == options.len() {
                return "string".to_string();
            }
            let mut kinds: Vec<String> = options
                .iter()
                .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .map(|o| type_of(o, defs, nested))
                .collect();
            kinds.dedup();
            return kinds.join(" or ");
        }
    }
    if field.get("enum").is_some() {
        return "string".to_string();
    }
    let kinds: Vec<&str> = match field.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => return "any".to_string(),
    };
    kinds
        .iter()
        .map(|k| match *k {
            "array" => {
                let item = field
                    .get("items")
                    .map(|i| type_of(i, defs, nested))
                    .unwrap_or_else(|| "any".into());
                format!("list of {item}")
            }
            "object" => match field.get("additionalProperties") {
                Some(v) if v.is_object() => {
                    format!("map of string to {}", type_of(v, defs, nested))
                }
                _ => "object".to_string(),
            },
            "integer" | "number" => "number".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The name a `$ref` field points at (directly, or as the one non-null option of `anyOf`).
fn reference(field: &Value) -> Option<&str> {
    if let Some(r) = field.get("$ref").and_then(Value::as_str) {
        return r.strip_prefix("#/$defs/");
    }
    let options = field.get("anyOf").and_then(Value::as_array)?;
    let mut refs = options.iter().filter_map(|o| o.get("$ref"));
    let only = refs.next()?.as_str()?;
    let others = options
        .iter()
        .filter(|o| o.get("$ref").is_none())
        .all(|o| o.get("type").and_then(Value::as_str) == Some("null"));
    (refs.next().is_none() && others).then(|| only.strip_prefix("#/$defs/"))?
}

/// "One of: `a` (what a is), `b` (what b is)." for a field whose values are a closed set.
fn enum_values(field: &Value, defs: &Map<String, Value>) -> Option<String> {
    let def = match reference(field) {
        Some(name) => defs.get(name)?,
        None => field,
    };
    let items = match field.get("items") {
        Some(items) if def.get("oneOf").is_none() && def.get("enum").is_none() => {
            match reference(items) {
                Some(name) => defs.get(name)?,
                None => items,
            }
        }
        _ => def,
    };
    if let Some(options) = items.get("oneOf").and_then(Value::as_array) {
        let values: Vec<String> = options
            .iter()
            .filter_map(|o| {
                let c = o.get("const").or_else(|| {
                    o.get("enum")
                        .and_then(Value::as_array)
                        .and_then(|e| e.first())
                })?;
                let c = c.as_str().map_or(c.to_string(), str::to_string);
                Some(match o.get("description").and_then(Value::as_str) {
                    Some(d) => format!("`{c}` ({})", one_line(d).trim_end_matches('.')),
                    None => format!("`{c}`"),
                })
            })
            .collect();
        return (!values.is_empty()).then(|| format!("One of: {}.", values.join(", ")));
    }
    let values: Vec<String> = items
        .get("enum")
        .and_then(Value::as_array)?
        .iter()
        .map(|c| format!("`{}`", c.as_str().map_or(c.to_string(), str::to_string)))
        .collect();
    Some(format!("One of: {}.", values.join(", ")))
}

/// A doc comment as one line (for a table cell), its links to Rust items as plain code.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(joined.len());
    let mut rest = joined.as_str();
    while let Some(at) = rest.find("[`") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.find("`]") {
            Some(end) if !after[end + 2..].starts_with('(') => {
                out.push_str(&after[..end + 1]);
                rest = &after[end + 2..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A doc comment as Markdown paragraphs (lines of a paragraph joined).
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(one_line)
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_commas_in_values_split_where_they_should() {
        assert_eq!(
            split_labels(r#"a="x",b="y, \"z\"""#),
            vec![r#"a="x""#, r#"b="y, \"z\"""#]
        );
    }

    #[test]
    fn every_metric_family_shows_its_labels_and_every_label_has_a_meaning() {
        let families = families().unwrap();
        assert!(families.len() >= 16, "{families:?}");
        let rejected = &families["portico_events_rejected"];
        assert_eq!(rejected.kind, "counter");
        assert!(rejected.samples.contains("portico_events_rejected_total"));
        assert_eq!(
            rejected.labels.iter().collect::<Vec<_>>(),
            vec!["reason", "src"]
        );
        let latency = &families["portico_delivery_latency_seconds"];
        assert_eq!(latency.kind, "histogram");
        assert!(!latency.buckets.is_empty() && !latency.labels.contains("le"));
        let page = metrics_page().unwrap();
        assert!(page.contains("`full` ("), "{page}");
    }
}
