//! A hash map split into shards behind `Arc`s: cloning it (a snapshot) copies the shard
//! pointers, and a change copies only the shard it touches (when a snapshot shares it).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Enough shards that one copied on write is small next to the whole, few enough that a
/// snapshot's pointer copies stay cheap.
const SHARDS: usize = 64;

/// A hash map in `Arc`-shared shards.
pub(crate) struct Sharded<K, V> {
    shards: Vec<Arc<HashMap<K, V>>>,
}

// === impl Sharded ===

impl<K: Hash + Eq + Clone, V: Clone> Sharded<K, V> {
    fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
        // A fixed hasher: the shard of a key must not change between calls.
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % SHARDS as u64) as usize
    }

    /// The value of a key.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[Self::shard_of(key)].get(key)
    }

    /// Sets a key, copying its shard first if a snapshot shares it.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = &mut self.shards[Self::shard_of(&key)];
        Arc::make_mut(shard).insert(key, value)
    }

    /// Removes a key, copying its shard first if a snapshot shares it.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = &mut self.shards[Self::shard_of(key)];
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).remove(key)
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }
}

impl<K, V> Clone for Sharded<K, V> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Sharded<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.shards.iter().flat_map(|s| s.iter()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_keeps_its_values_when_the_original_changes() {
        let mut m: Sharded<String, u32> = Sharded::default();
        for i in 0..200 {
            m.insert(format!("k{i}"), i);
        }
        let snapshot = m.clone();
        m.insert("k1".to_owned(), 1000);
        m.remove("k2");
        assert_eq!(snapshot.get("k1"), Some(&1));
        assert_eq!(snapshot.get("k2"), Some(&2));
        assert_eq!(m.get("k1"), Some(&1000));
        assert_eq!(m.get("k2"), None);
        assert_eq!(m.values().count(), 199);
    }
}
