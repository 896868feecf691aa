//! What Portico itself reads in every configuration, whatever its gateway: `filter`, which of
//! the configuration's raw events go on, and `rateLimit`, how fast they may come.
//!
//! ```yaml
//! orders: |
//!   port: "12000"
//!   endpoint: /orders
//!   filter: 'body.body.total > 100'
//!   rateLimit: {perSecond: 50, burst: 10}
//! ```
//!
//! Both act where a raw event enters the pipeline, before it becomes a CloudEvent:
//! - an event the filter does not pass is counted (`portico_events_rejected_total{reason=
//!   "filtered"}`) and never stored, and its source is told it was taken;
//! - an event past the rate limit waits for it, so the source is slowed rather than its events
//!   dropped: an HTTP caller waits up to the admission wait and then gets 429 with
//!   `Retry-After`; every other source waits until the limit lets it through (a broker's
//!   message stays unacknowledged meanwhile, a poll waits).
//!
//! The gateway's own parsing ([`crate::ConfigContext::parse`]) skips these two keys at the top
//! of the value, so a gateway type that refuses unknown fields still takes them; a gRPC or
//! HTTP style server is handed the value without them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use tokio_util::sync::CancellationToken;

use crate::configuration::ConfigId;
use crate::error::{ConfigError, DispatchError};
use crate::event::Event;
use crate::filter::{Filter, FilterSpec};
use crate::spec::{ConfigMapData, RateLimitSettings};

/// The keys of a configuration's value that Portico reads itself.
pub(crate) const RESERVED_KEYS: [&str; 2] = ["filter", "rateLimit"];

/// The reserved keys of one configuration, as written.
#[derive(Debug, Default)]
struct Reserved {
    /// As written: a gateway may read a `filter` of its own ([`ConfigPolicy::read`]).
    filter: Option<serde_json::Value>,
    rate_limit: Option<RateLimitSettings>,
}

impl<'de> serde::Deserialize<'de> for Reserved {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Reserved, D::Error> {
        d.deserialize_any(ReservedVisitor)
    }
}

/// Reads the reserved keys of a mapping; any other value (a scalar, a list) has none.
struct ReservedVisitor;

impl<'de> Visitor<'de> for ReservedVisitor {
    type Value = Reserved;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a configuration")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reserved, A::Error> {
        let mut r = Reserved::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "filter" => r.filter = Some(map.next_value()?),
                "rateLimit" => r.rate_limit = Some(map.next_value()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Reserved, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Reserved::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Reserved, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Reserved, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Reserved, E> {
        Ok(Reserved::default())
    }
}

/// A configuration's filter and rate limit, ready to use.
pub(crate) struct ConfigPolicy {
    filter: Option<Filter>,
    limiter: Option<governor::DefaultDirectRateLimiter>,
}

impl fmt::Debug for ConfigPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigPolicy")
            .field("filter", &self.filter.as_ref().map(Filter::text))
            .field("rate_limited", &self.limiter.is_some())
            .finish()
    }
}

impl ConfigPolicy {
    /// The filter and rate limit of configuration value `value`, `None` when it has neither;
    /// the error names the key, and for a filter the column of the expression. `own` are the
    /// reserved keys the gateway reads itself (an `artifact` configuration's `filter` is its
    /// S3 key filter): Portico leaves them alone.
    pub(crate) fn read(value: &str, own: &[&str]) -> Result<Option<ConfigPolicy>, ConfigError> {
        // Most values have neither key: they are not parsed a second time.
        if !RESERVED_KEYS.iter().any(|k| value.contains(k)) {
            return Ok(None);
        }
        let reserved: Reserved = crate::spec::parse_value_as_written(value)?;
        let filter = match reserved.filter.filter(|_| !own.contains(&"filter")) {
            None => None,
            Some(written) => {
                let spec: FilterSpec = serde_json::from_value(written).map_err(|_| {
                    ConfigError::invalid(
                        "filter: expected a CEL expression (a string) or a Subscriptions API filter (`{exact: {type: …}}`, `prefix`, `suffix`, `all`, `any`, `not`)",
                    )
                })?;
                Some(
                    Filter::compile(&spec)
                        .map_err(|e| ConfigError::invalid(format!("filter: {e}")))?,
                )
            }
        };
        let reserved = Reserved {
            filter: None,
            ..reserved
        };
        let limiter = match &reserved.rate_limit {
            None => None,
            Some(limit) => {
                if let Some(problem) = limit.problem() {
                    return Err(ConfigError::invalid(problem));
                }
                Some(limit.limiter())
            }
        };
        Ok((filter.is_some() || limiter.is_some()).then_some(ConfigPolicy { filter, limiter }))
    }
}

/// What became of an event at its configuration's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// It goes on.
    Pass,
    /// The filter did not pass it: taken, not stored.
    Filtered,
}

/// The policies of a gateway's configurations, by key, kept in line with its configuration
/// map.
#[derive(Default)]
pub(crate) struct Policies {
    by_src: RwLock<HashMap<String, Entry>>,
    /// Whether any configuration has a policy: the hot path reads this, not the map.
    any: AtomicBool,
}

struct Entry {
    id: ConfigId,
    policy: Result<Option<Arc<ConfigPolicy>>, String>,
}

/// Reads the policy of configuration `src` → `value` (whose id is `id`) into `by_src`,
/// unless it is there at this value already; logs what is wrong with it.
fn read_into(
    by_src: &mut HashMap<String, Entry>,
    (src, value, id): (&str, &str, ConfigId),
    own: &[&str],
) {
    if by_src.get(src).is_some_and(|e| e.id == id) {
        return;
    }
    let policy = ConfigPolicy::read(value, own)
        .map(|p| p.map(Arc::new))
        .map_err(|e| e.message().to_string());
    if let Err(problem) = &policy {
        tracing::error!(src = %src, id = %id, "{problem}");
    }
    // Configurations with neither key are not kept.
    if matches!(policy, Ok(None)) {
        by_src.remove(src);
    } else {
        by_src.insert(src.to_string(), Entry { id, policy });
    }
}

impl Policies {
    /// Reads the policies of `map`, again only for the values that changed; `own` are the
    /// reserved keys the gateway reads itself.
    pub(crate) fn apply(&self, map: &ConfigMapData, own: &[&str]) {
        let mut by_src = self.by_src.write().unwrap_or_else(|e| e.into_inner());
        by_src.retain(|src, _| map.contains_key(src));
        for (src, value) in map {
            read_into(&mut by_src, (src, value, ConfigId::of(src, value)), own);
        }
        self.any.store(!by_src.is_empty(), Ordering::Release);
    }

    /// [`Policies::apply`] for a change already found: the keys `gone` left the map, `changed`
    /// are its new and changed entries (with their ids), and every other key has the value it
    /// had.
    pub(crate) fn update(
        &self,
        gone: &[&str],
        changed: &[(&String, &String, ConfigId)],
        own: &[&str],
    ) {
        let mut by_src = self.by_src.write().unwrap_or_else(|e| e.into_inner());
        for src in gone {
            by_src.remove(*src);
        }
        for &(src, value, id) in changed {
            read_into(&mut by_src, (src, value, id), own);
        }
        self.any.store(!by_src.is_empty(), Ordering::Release);
    }

    /// What is wrong with the filter or rate limit of configuration `src` at `id`, if
    /// anything: such a configuration is not started.
    pub(crate) fn problem(&self, src: &str, id: ConfigId) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let by_src = self.by_src.read().unwrap_or_else(|e| e.into_inner());
        match by_src.get(src) {
            Some(Entry {
                id: at,
                policy: Err(problem),
            }) if *at == id => Some(problem.clone()),
            _ => None,
        }
    }

    fn get(&self, src: &str) -> Option<Arc<ConfigPolicy>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let by_src = self.by_src.read().unwrap_or_else(|e| e.into_inner());
        by_src
            .get(src)
            .and_then(|e| e.policy.as_ref().ok().cloned().flatten())
    }

    /// Applies the policy of configuration `src` to `event`: the filter, then the rate limit,
    /// waiting for it at most `at_most` (an HTTP caller's admission wait; `None`: until the
    /// limit lets it through, or `stop` is cancelled). Returns how long it waited.
    pub(crate) async fn gate(
        &self,
        src: &str,
        event: &Event,
        at_most: Option<std::time::Duration>,
        stop: Option<&CancellationToken>,
    ) -> Result<(Gate, std::time::Duration), DispatchError> {
        let none = std::time::Duration::ZERO;
        let Some(policy) = self.get(src) else {
            return Ok((Gate::Pass, none));
        };
        if let Some(filter) = &policy.filter
            && !filter.passes_raw(event)
        {
            return Ok((Gate::Filtered, none));
        }
        let Some(limiter) = &policy.limiter else {
            return Ok((Gate::Pass, none));
        };
        let Err(not_until) = limiter.check() else {
            return Ok((Gate::Pass, none));
        };
        let clock = governor::clock::DefaultClock::default();
        let needed = not_until.wait_time_from(governor::clock::Clock::now(&clock));
        if at_most.is_some_and(|max| needed > max) {
            return Err(DispatchError::Limited {
                retry_after: needed,
            });
        }
        let started = tokio::time::Instant::now();
        let never = CancellationToken::new();
        let stop = stop.unwrap_or(&never);
        // An HTTP caller waits at most the admission wait, however many others wait too.
        let give_up = async {
            match at_most {
                Some(max) => tokio::time::sleep(max).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = limiter.until_ready() => Ok((Gate::Pass, started.elapsed())),
            _ = stop.cancelled() => Err(DispatchError::Stopped),
            _ = give_up => Err(DispatchError::Limited { retry_after: needed }),
        }
    }
}

/// A configuration value without the reserved keys, for a gRPC or HTTP style server: `None`
/// when it has none of them at its top (the value goes as written). JSON stays JSON; YAML is
/// written again as YAML (its comments and anchors are not kept).
pub(crate) fn without_reserved(value: &str) -> Option<String> {
    if !RESERVED_KEYS.iter().any(|k| value.contains(k)) {
        return None;
    }
    let mut doc: serde_json::Value = serde_saphyr::from_str(value).ok()?;
    let map = doc.as_object_mut()?;
    let before = map.len();
    for k in RESERVED_KEYS {
        map.remove(k);
    }
    if map.len() == before {
        return None;
    }
    if value.trim_start().starts_with('{') {
        serde_json::to_string(&doc).ok()
    } else {
        serde_saphyr::to_string(&doc).ok()
    }
}

/// A deserializer that skips the reserved keys of the mapping at its top, so that a gateway's
/// configuration type that refuses unknown fields still takes them.
pub(crate) struct SkipReserved<D>(pub D);

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
                self.0.$method(v)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipReserved<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(SkipVisitor(v, &[]))
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(SkipVisitor(v, &[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        // A field of the gateway's own type by a reserved name is the gateway's.
        self.0
            .deserialize_struct(name, fields, SkipVisitor(v, fields))
    }

    forward!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, v)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The visitor of the top value: a mapping is read without its reserved keys, but for the
/// fields of the type it is read into.
struct SkipVisitor<V>(V, &'static [&'static str]);

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, value: $ty) -> Result<V::Value, E> {
                self.0.$method(value)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SkipVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(SkipMap(map, self.1))
    }

    forward_visit!(
        visit_bool(bool),
        visit_i64(i64),
        visit_i128(i128),
        visit_u64(u64),
        visit_u128(u128),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.0.visit_some(d)
    }

    fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.0.visit_newtype_struct(d)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(seq)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(data)
    }
}

/// A mapping without its reserved keys (but for these fields).
struct SkipMap<A>(A, &'static [&'static str]);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.0.next_key::<String>()? else {
                return Ok(None);
            };
            if RESERVED_KEYS.contains(&key.as_str()) && !self.1.contains(&key.as_str()) {
                self.0.next_value::<de::IgnoredAny>()?;
                continue;
            }
            return seed
                .deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                .map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Strict {
        port: u16,
        #[serde(default)]
        endpoint: Option<String>,
    }

    #[test]
    fn a_strict_type_takes_the_reserved_keys() {
        let v = "port: 12000\nfilter: 'body.x == 1'\nrateLimit: {perSecond: 5}\nendpoint: /a\n";
        let got: Strict = crate::spec::parse_config(v).unwrap();
        assert_eq!(
            got,
            Strict {
                port: 12000,
                endpoint: Some("/a".into())
            }
        );
        // Other unknown keys are still refused, with their line.
        let e = crate::spec::parse_config::<Strict>("port: 1\nfilterz: x\n").unwrap_err();
        assert!(e.message().contains("filterz"), "{e}");
        assert!(e.message().contains("line 2"), "{e}");
        // JSON too.
        let got: Strict =
            crate::spec::parse_config(r#"{"port": 2, "rateLimit": {"perSecond": 1}}"#).unwrap();
        assert_eq!(got.port, 2);
    }

    fn read(value: &str) -> Result<Option<ConfigPolicy>, ConfigError> {
        ConfigPolicy::read(value, &[])
    }

    #[test]
    fn a_gateway_keeps_a_filter_of_its_own() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct S3 {
            filter: std::collections::BTreeMap<String, String>,
        }
        let v = "filter: {prefix: in/}\nrateLimit: {perSecond: 1}\n";
        let got: S3 = crate::spec::parse_config(v).unwrap();
        assert_eq!(got.filter["prefix"], "in/");
        let p = ConfigPolicy::read(v, &["filter"]).unwrap().unwrap();
        assert!(p.filter.is_none() && p.limiter.is_some());
        // Where the filter is Portico's, it must be one.
        let e = read(v).unwrap_err().to_string();
        assert!(e.starts_with("filter: expected a CEL expression"), "{e}");
    }

    #[test]
    fn policies_are_read_and_their_errors_say_where() {
        assert!(read("port: 1").unwrap().is_none());
        assert!(read("- a\n- b\n").unwrap().is_none());
        assert!(read("just text").unwrap().is_none());
        let p = read("filter: 'body.n > 1'\nrateLimit: {perSecond: 2, burst: 3}")
            .unwrap()
            .unwrap();
        assert!(p.filter.is_some() && p.limiter.is_some());
        let e = read("port: 1\nfilter: 'body.n > > 1'")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("filter: column 10"), "{e}");
        let e = read("rateLimit: {perSecond: 0}").unwrap_err().to_string();
        assert!(e.contains("rateLimit.perSecond"), "{e}");
        let e = read("rateLimit: {perSecnd: 1}").unwrap_err().to_string();
        assert!(e.contains("rateLimit") && e.contains("perSecnd"), "{e}");
        // The dialects too.
        let p = read("filter: {exact: {contenttype: application/json}}")
            .unwrap()
            .unwrap();
        let json = Event::json(&serde_json::json!({"a": 1})).unwrap();
        assert!(p.filter.as_ref().unwrap().passes_raw(&json));
        assert!(
            !p.filter
                .as_ref()
                .unwrap()
                .passes_raw(&Event::new(&b"x"[..]))
        );
    }

    #[test]
    fn a_raw_filter_sees_body_extensions_and_content_type() {
        let f = |text: &str| Filter::compile(&FilterSpec::Cel(text.into())).unwrap();
        let ev = Event::json(&serde_json::json!({"body": {"action": "opened"}, "n": 3}))
            .unwrap()
            .with_extension("topic", "orders");
        assert!(f(r#"body.body.action == "opened" && body.n == 3"#).passes_raw(&ev));
        assert!(f(r#"topic == "orders" && extensions.topic == "orders""#).passes_raw(&ev));
        assert!(f(r#"contenttype == "application/json""#).passes_raw(&ev));
        assert!(!f("body.n == 4").passes_raw(&ev));
        // A field that is not there: did not pass.
        assert!(!f("body.missing.deeper == 1").passes_raw(&ev));
        let text = Event::new(&b"hello"[..]);
        assert!(f(r#"body == "hello""#).passes_raw(&text));
        assert!(f("contenttype == null").passes_raw(&text));
    }

    #[test]
    fn user_servers_get_the_value_without_the_reserved_keys() {
        assert_eq!(without_reserved("port: 1\n"), None);
        let y = without_reserved("port: 1\nfilter: 'true'\n").unwrap();
        let back: serde_json::Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(back, serde_json::json!({"port": 1}));
        let j = without_reserved(r#"{"a": "x", "rateLimit": {"perSecond": 1}}"#).unwrap();
        assert_eq!(j, r#"{"a":"x"}"#);
    }

    #[tokio::test]
    async fn policies_follow_the_map_and_gate_events() {
        let p = Policies::default();
        let map: ConfigMapData = [
            ("a".to_string(), "filter: 'body.n > 1'".to_string()),
            ("b".to_string(), "filter: 'body.n > > 1'".to_string()),
            ("c".to_string(), "port: 1".to_string()),
        ]
        .into_iter()
        .collect();
        p.apply(&map, &[]);
        let id = |k: &str| ConfigId::of(k, &map[k]);
        assert!(p.problem("b", id("b")).unwrap().contains("column"));
        assert_eq!(p.problem("a", id("a")), None);
        let ev = |n: i64| Event::json(&serde_json::json!({ "n": n })).unwrap();
        let gate = |src: &'static str, e: Event| {
            let p = &p;
            async move { p.gate(src, &e, None, None).await.unwrap().0 }
        };
        assert_eq!(gate("a", ev(2)).await, Gate::Pass);
        assert_eq!(gate("a", ev(1)).await, Gate::Filtered);
        assert_eq!(gate("c", ev(1)).await, Gate::Pass);
        // Removed from the map: no policy.
        p.apply(&ConfigMapData::new(), &[]);
        assert_eq!(gate("a", ev(1)).await, Gate::Pass);
    }

    #[tokio::test]
    async fn a_limit_slows_a_source_and_sends_an_http_caller_back() {
        let p = Policies::default();
        let map: ConfigMapData = [("a".to_string(), "rateLimit: {perSecond: 20}".to_string())]
            .into_iter()
            .collect();
        p.apply(&map, &[]);
        let ev = Event::new(&b"x"[..]);
        let brief = Some(std::time::Duration::ZERO);
        assert!(p.gate("a", &ev, brief, None).await.is_ok());
        // The next one is 50 ms away: an HTTP caller that may not wait is sent back.
        let e = p.gate("a", &ev, brief, None).await.unwrap_err();
        assert!(matches!(e, DispatchError::Limited { .. }), "{e:?}");
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(1)));
        // Any other source waits for it.
        let (gate, waited) = p.gate("a", &ev, None, None).await.unwrap();
        assert_eq!(gate, Gate::Pass);
        assert!(waited > std::time::Duration::ZERO);
        // A stopped source stops waiting.
        let stop = CancellationToken::new();
        stop.cancel();
        let e = p.gate("a", &ev, None, Some(&stop)).await.unwrap_err();
        assert_eq!(e, DispatchError::Stopped);
    }
}
