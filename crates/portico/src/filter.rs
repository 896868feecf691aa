//! Filters: which events a watcher gets.
//!
//! A filter is a CEL expression (the Common Expression Language, what Kubernetes writes its
//! validation rules in) over one CloudEvent: its attributes and extensions are variables by
//! their own names (`type`, `source`, `subject`, `id`, `time`, `datacontenttype`, …), and its
//! data is `data` (the JSON value when the data is JSON, a string when it is text, bytes
//! otherwise). An attribute the event does not have is `null`. The event passes when the
//! expression is `true`; anything else, an error at run time included (a field missing from
//! `data`), is "did not pass", and such errors are logged at most once a minute.
//!
//! The CloudEvents Subscriptions API's simple filter dialects are taken too, written as YAML,
//! and compiled to the same thing: `{exact: {type: com.example.a}}`, `{prefix: {source:
//! /orders}}`, `{suffix: {subject: .png}}`, and `{all: [...]}`, `{any: [...]}`, `{not: {...}}`
//! over them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cloudevents::{CloudEvent, Data, ExtensionValue};
use crate::event::Event;
use crate::ratelog::Throttle;

/// A filter as written in a gateway file: a CEL expression, or a Subscriptions API dialect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FilterSpec {
    /// A CEL expression (`type == "order.created" && data.total > 100`).
    Cel(String),
    /// A CloudEvents Subscriptions API filter (`{exact: {type: order.created}}`).
    Dialect(Dialect),
}

/// The CloudEvents Subscriptions API's filter dialects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Dialect {
    /// Every attribute named equals its value.
    Exact(BTreeMap<String, String>),
    /// Every attribute named starts with its value.
    Prefix(BTreeMap<String, String>),
    /// Every attribute named ends with its value.
    Suffix(BTreeMap<String, String>),
    /// Every filter passes.
    All(Vec<Dialect>),
    /// At least one filter passes.
    Any(Vec<Dialect>),
    /// The filter does not pass.
    Not(Box<Dialect>),
}

/// Why a filter cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", column.map(|c| format!("column {c}: ")).unwrap_or_default())]
pub struct FilterError {
    /// The column of the expression where the error is (1 for the first character), when
    /// the parser says.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    /// The expression, as CEL.
    text: String,
    program: cel::Program,
    /// The variables it reads (those the event lacks are bound to `null`).
    variables: Vec<String>,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.text == other.text
    }
}

impl Filter {
    /// Compiles `spec`.
    pub fn compile(spec: &FilterSpec) -> Result<Filter, FilterError> {
        let text = match spec {
            FilterSpec::Cel(text) => text.clone(),
            FilterSpec::Dialect(d) => d.to_cel()?,
        };
        if text.trim().is_empty() {
            return Err(FilterError {
                column: None,
                message: "the expression is empty".to_string(),
            });
        }
        let program = cel::Program::compile(&text).map_err(|e| {
            let first = e.errors.first();
            FilterError {
                // The parser counts columns from 1.
                column: first
                    .and_then(|p| usize::try_from(p.pos.1).ok())
                    .filter(|c| *c > 0),
                message: first
                    .map(|p| p.msg.clone())
                    .unwrap_or_else(|| e.to_string()),
            }
        })?;
        let variables = program
            .references()
            .variables()
            .into_iter()
            .map(String::from)
            .collect();
        Ok(Filter {
            text,
            program,
            variables,
        })
    }

    /// The expression, as CEL.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `event` passes: the expression is `true` for it.
    pub fn passes(&self, event: &CloudEvent) -> bool {
        self.evaluate(&event.id, |bind| {
            bind("specversion", text("1.0"));
            bind("id", text(&event.id));
            bind("source", text(&event.source));
            bind("type", text(&event.ty));
            if let Some(s) = &event.subject {
                bind("subject", text(s));
            }
            if let Some(t) = &event.time {
                bind("time", text(&crate::cloudevents::json::format_time(t)));
            }
            if let Some(ct) = &event.datacontenttype {
                bind("datacontenttype", text(ct));
            }
            if let Some(ds) = &event.dataschema {
                bind("dataschema", text(ds));
            }
            for (name, value) in &event.extensions {
                let value = match value {
                    ExtensionValue::String(s) => text(s),
                    ExtensionValue::Boolean(b) => cel::Value::Bool(*b),
                    ExtensionValue::Integer(i) => cel::Value::Int(*i),
                };
                bind(name.as_ref(), value);
            }
            if self.reads("data") {
                let data = match &event.data {
                    None => cel::Value::Null,
                    Some(Data::Json(bytes)) => json_value(bytes),
                    Some(Data::Text(s)) => text(s),
                    Some(Data::Binary(b)) => cel::Value::Bytes(b.to_vec().into()),
                };
                bind("data", data);
            }
        })
    }

    /// Whether a raw event of a configuration passes (a configuration's own `filter`, before
    /// the event becomes a CloudEvent): its payload is `body` (the JSON value when it is JSON,
    /// a string when it is UTF-8 text, bytes otherwise), its content type `contenttype`, and
    /// its extensions are variables by their own names and the map `extensions`.
    pub(crate) fn passes_raw(&self, event: &Event) -> bool {
        self.evaluate("(a raw event)", |bind| {
            if let Some(ct) = &event.content_type {
                bind("contenttype", text(ct));
            }
            if self.reads("extensions") {
                let map: std::collections::HashMap<cel::objects::Key, cel::Value> = event
                    .extensions
                    .iter()
                    .map(|(k, v)| (cel::objects::Key::from(k.as_str()), text(v)))
                    .collect();
                bind("extensions", cel::Value::Map(map.into()));
            }
            for (name, value) in &event.extensions {
                bind(name, text(value));
            }
            if self.reads("body") {
                let json = event
                    .content_type
                    .as_deref()
                    .is_some_and(crate::cloudevents::is_json_content_type);
                let body = if json {
                    json_value(&event.payload)
                } else {
                    match std::str::from_utf8(&event.payload) {
                        Ok(s) => text(s),
                        Err(_) => cel::Value::Bytes(event.payload.to_vec().into()),
                    }
                };
                bind("body", body);
            }
        })
    }

    /// Whether the expression reads variable `name`.
    fn reads(&self, name: &str) -> bool {
        self.variables.iter().any(|v| v == name)
    }

    /// Runs the expression with the variables `fill` binds (those it reads and `fill` does
    /// not bind are `null`); `what` names the event in a log line.
    fn evaluate(&self, what: &str, fill: impl FnOnce(&mut dyn FnMut(&str, cel::Value))) -> bool {
        let mut ctx = cel::Context::default();
        // Which of the variables it reads are bound, by their place in `variables`.
        let mut bound = vec![false; self.variables.len()];
        fill(&mut |name: &str, value: cel::Value| {
            if let Some(i) = self.variables.iter().position(|v| v == name)
                && !bound[i]
            {
                ctx.add_variable_from_value(name.to_string(), value);
                bound[i] = true;
            }
        });
        for (name, bound) in self.variables.iter().zip(bound) {
            if !bound {
                ctx.add_variable_from_value(name.clone(), cel::Value::Null);
            }
        }
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => b,
            Ok(other) => {
                self.failed(what, &format!("it gave {other:?}, not a boolean"));
                false
            }
            Err(e) => {
                self.failed(what, &e.to_string());
                false
            }
        }
    }

    fn failed(&self, what: &str, why: &str) {
        // Once a minute: a filter over a field some events lack fails on each of them.
        static FAILED: Throttle = Throttle::every(std::time::Duration::from_secs(60));
        if let Some(suppressed) = FAILED.check() {
            tracing::warn!(
                filter = %self.text, id = %what, suppressed,
                "a filter could not be evaluated on an event, which did not pass: {why} (suppressed: how many such failures were not logged since the last line)"
            );
        }
    }
}

/// A CEL string.
fn text(s: &str) -> cel::Value {
    cel::Value::String(s.to_string().into())
}

/// A JSON document as a CEL value (`null` when it is not JSON).
fn json_value(bytes: &[u8]) -> cel::Value {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| cel::to_value(v).ok())
        .unwrap_or(cel::Value::Null)
}

impl Dialect {
    /// The same filter as a CEL expression.
    fn to_cel(&self) -> Result<String, FilterError> {
        let mut out = String::new();
        self.write_cel(&mut out)?;
        Ok(out)
    }

    fn write_cel(&self, out: &mut String) -> Result<(), FilterError> {
        let bad = |message: String| FilterError {
            column: None,
            message,
        };
        match self {
            Dialect::Exact(m) | Dialect::Prefix(m) | Dialect::Suffix(m) => {
                if m.is_empty() {
                    return Err(bad("a dialect filter names at least one attribute".into()));
                }
                let op = match self {
                    Dialect::Exact(_) => "==",
                    Dialect::Prefix(_) => "startsWith",
                    _ => "endsWith",
                };
                for (i, (attr, value)) in m.iter().enumerate() {
                    if attr.is_empty()
                        || !attr
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    {
                        return Err(bad(format!(
                            "`{attr}` is not a CloudEvents attribute name (lowercase letters and digits)"
                        )));
                    }
                    // A JSON string is a CEL string literal.
                    let literal = serde_json::Value::String(value.clone()).to_string();
                    if i > 0 {
                        out.push_str(" && ");
                    }
                    match op {
                        "==" => write!(out, "({attr} != null && {attr} == {literal})"),
                        f => write!(out, "({attr} != null && {attr}.{f}({literal}))"),
                    }
                    .expect("writing to a String");
                }
            }
            Dialect::All(list) | Dialect::Any(list) => {
                if list.is_empty() {
                    return Err(bad("`all` and `any` take at least one filter".into()));
                }
                let join = if matches!(self, Dialect::All(_)) {
                    " && "
                } else {
                    " || "
                };
                for (i, d) in list.iter().enumerate() {
                    if i > 0 {
                        out.push_str(join);
                    }
                    out.push('(');
                    d.write_cel(out)?;
                    out.push(')');
                }
            }
            Dialect::Not(d) => {
                out.push_str("!(");
                d.write_cel(out)?;
                out.push(')');
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudevents::ExtensionName;

    fn event() -> CloudEvent {
        let mut e = CloudEvent::new("id-1", "/orders", "order.created");
        e.subject = Some("eu/42".into());
        e.datacontenttype = Some("application/json".into());
        e.data = Some(Data::Json(r#"{"total": 120, "items": ["a", "b"]}"#.into()));
        e.extensions.insert(
            ExtensionName::new("region").unwrap(),
            ExtensionValue::String("eu".into()),
        );
        e
    }

    fn cel(text: &str) -> Filter {
        Filter::compile(&FilterSpec::Cel(text.into())).unwrap()
    }

    fn dialect(yaml: &str) -> Filter {
        let spec: FilterSpec = serde_saphyr::from_str(yaml).unwrap();
        Filter::compile(&spec).unwrap()
    }

    #[test]
    fn cel_sees_attributes_extensions_and_data() {
        let e = event();
        assert!(cel(r#"type == "order.created""#).passes(&e));
        assert!(cel(r#"subject.startsWith("eu/") && region == "eu""#).passes(&e));
        assert!(cel("data.total > 100 && size(data.items) == 2").passes(&e));
        assert!(!cel("data.total > 200").passes(&e));
        assert!(!cel(r#"type == "order.deleted""#).passes(&e));
    }

    #[test]
    fn a_missing_attribute_is_null_and_a_failure_does_not_pass() {
        let e = event();
        assert!(cel("dataschema == null").passes(&e));
        assert!(!cel("data.missing.deeper == 1").passes(&e));
        assert!(!cel("nosuchext.startsWith(\"x\")").passes(&e));
        // Not a boolean: does not pass.
        assert!(!cel("data.total").passes(&e));
    }

    #[test]
    fn the_simple_dialects_compile_to_the_same_thing() {
        let e = event();
        assert!(dialect("exact: {type: order.created}").passes(&e));
        assert!(!dialect("exact: {type: order}").passes(&e));
        assert!(dialect("prefix: {source: /ord}").passes(&e));
        assert!(dialect("suffix: {subject: /42}").passes(&e));
        assert!(dialect("all: [{exact: {region: eu}}, {prefix: {type: order.}}]").passes(&e));
        assert!(!dialect("all: [{exact: {region: us}}, {prefix: {type: order.}}]").passes(&e));
        assert!(dialect("any: [{exact: {region: us}}, {prefix: {type: order.}}]").passes(&e));
        assert!(dialect("not: {exact: {region: us}}").passes(&e));
        // An attribute the event lacks: `exact` fails, so `not` passes.
        assert!(dialect("not: {exact: {dataschema: x}}").passes(&e));
        assert!(!dialect("prefix: {dataschema: x}").passes(&e));
        // Quotes in values stay values.
        let quoted = dialect(r#"exact: {subject: 'a" || true || "'}"#);
        assert!(!quoted.passes(&e), "{}", quoted.text());
    }

    #[test]
    fn errors_say_where() {
        let e = Filter::compile(&FilterSpec::Cel("type == == \"a\"".into())).unwrap_err();
        assert_eq!(e.column, Some(9), "{e:?}");
        let e = Filter::compile(&FilterSpec::Cel("#".into())).unwrap_err();
        assert_eq!(e.column, Some(1), "{e:?}");
        let e = Filter::compile(&FilterSpec::Cel("  ".into())).unwrap_err();
        assert!(e.message.contains("empty"));
        let spec: FilterSpec = serde_saphyr::from_str("exact: {Type: x}").unwrap();
        let e = Filter::compile(&spec).unwrap_err();
        assert!(
            e.message
                .contains("`Type` is not a CloudEvents attribute name"),
            "{e}"
        );
        let spec: FilterSpec = serde_saphyr::from_str("all: []").unwrap();
        assert!(Filter::compile(&spec).is_err());
    }
}
