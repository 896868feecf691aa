//! The field reference of every built-in gateway type, made from the JSON Schema of its
//! configuration type, which schemars makes from the type's doc comments: the reference pages
//! in `docs/reference/gateways/` and the code cannot drift apart (a test regenerates the pages
//! and fails when one differs).

use serde_json::{Map, Value};

/// The JSON Schema of the configurations of built-in gateway `gateway_type`.
pub fn schema(gateway_type: &str) -> Option<schemars::Schema> {
    use schemars::schema_for;
    Some(match gateway_type {
        "calendar" => schema_for!(crate::calendar::CalendarConfig),
        "webhook" | "github" => schema_for!(crate::webhook::HookConfig),
        "gitlab" => schema_for!(crate::gitlab::GitLabConfig),
        "file" => schema_for!(crate::file::FileConfig),
        "resource" => schema_for!(crate::resource::ResourceConfig),
        "amqp" => schema_for!(crate::amqp::AmqpConfig),
        "kafka" => schema_for!(crate::kafka::KafkaConfig),
        "mqtt" => schema_for!(crate::mqtt::MqttConfig),
        "nats" => schema_for!(crate::nats::NatsConfig),
        "redis" => schema_for!(crate::redis::RedisConfig),
        "artifact" => schema_for!(crate::artifact::ArtifactConfig),
        "storagegrid" => schema_for!(crate::storagegrid::StorageGridConfig),
        _ => return None,
    })
}

/// The reference page (Markdown) of built-in gateway `gateway_type`'s configuration.
pub fn page(gateway_type: &str) -> Option<String> {
    let schema = schema(gateway_type)?;
    let root = schema.as_value();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = format!("# `{gateway_type}` configurations\n\n");
    out.push_str(
        "<!-- Generated from the configuration type's doc comments: edit those, then run \
         `PORTICO_BLESS=1 cargo test -p portico-gateways --test reference_docs`. -->\n\n",
    );
    if let Some(d) = root.get("description").and_then(Value::as_str) {
        out.push_str(&paragraphs(d));
        out.push_str("\n\n");
    }
    out.push_str(
        "Each value of the gateway's ConfigMap is one configuration: YAML or JSON with these \
         fields. Unknown fields are refused, with their line and column.\n\n",
    );
    let mut nested = Vec::new();
    table(&mut out, root, &defs, &mut nested);
    let mut done = Vec::new();
    while let Some(name) = nested.pop() {
        if done.contains(&name) {
            continue;
        }
        done.push(name.clone());
        let Some(def) = defs.get(&name) else { continue };
        out.push_str(&format!("\n## `{name}`\n\n"));
        if let Some(d) = def.get("description").and_then(Value::as_str) {
            out.push_str(&paragraphs(d));
            out.push_str("\n\n");
        }
        table(&mut out, def, &defs, &mut nested);
    }
    Some(out)
}

/// A field table of the object schema `object`; object types it refers to go to `nested`.
fn table(out: &mut String, object: &Value, defs: &Map<String, Value>, nested: &mut Vec<String>) {
    let Some(props) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| field | type | required | meaning |\n|---|---|---|---|\n");
    // Required fields first, each group in alphabetical order.
    let mut names: Vec<&String> = props.keys().collect();
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
        if let Some(default) = field.get("default").filter(|d| !d.is_null()) {
            meaning.push_str(&format!(" Default: `{default}`."));
        }
        out.push_str(&format!(
            "| `{name}` | {} | {} | {} |\n",
            type_of(field, defs, nested),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                "no"
            },
            meaning.trim().replace('|', "\\|")
        ));
    }
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
