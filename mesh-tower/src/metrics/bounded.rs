//! An intern table that stops growing at a limit.
//!
//! The layers keep shared copies of label values (authorities, identities, route names) and of
//! whole series, so that a request that has been seen before allocates nothing. Those values
//! come partly from the network, so each table is bounded: once full, a new value is made for
//! the caller and not kept. The caller still works, it only pays the allocation again.

use std::borrow::Borrow;
use std::hash::Hash;

use parking_lot::RwLock;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    /// foldhash rather than SipHash: a series lookup is on every request, and the table is
    /// bounded, so what a client sends cannot make it degrade without limit.
    map: RwLock<foldhash::HashMap<K, V>>,
    limit: usize,
}

impl<K: Hash + Eq, V: Clone> BoundedMap<K, V> {
    /// A table that keeps at most `limit` entries.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            map: RwLock::default(),
            limit,
        }
    }

    /// The value kept for `q`, or a new one from `make`, kept under `key()` while there is
    /// room.
    pub(crate) fn get_or_insert_with<Q>(
        &self,
        q: &Q,
        key: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.map.read().get(q) {
            return v.clone();
        }
        let mut map = self.map.write();
        if let Some(v) = map.get(q) {
            return v.clone();
        }
        let v = make();
        if map.len() < self.limit {
            map.insert(key(), v.clone());
        }
        v
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_keeping_at_the_limit_but_still_answers() {
        let t: BoundedMap<String, usize> = BoundedMap::new(2);
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert_eq!(t.get_or_insert_with(k, || k.to_owned(), || i), i);
        }
        assert_eq!(t.len(), 2);
        // Kept values are shared; values past the limit are made again.
        assert_eq!(t.get_or_insert_with("a", || "a".to_owned(), || 99), 0);
        assert_eq!(t.get_or_insert_with("c", || "c".to_owned(), || 99), 99);
    }
}
