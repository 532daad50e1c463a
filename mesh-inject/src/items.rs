//! Counting a JSON value's list items without building it: the injector's guard against a
//! review whose pod would take hundreds of MiB once typed (see `injector::MAX_SPEC_ITEMS`).

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The number of array elements at any depth of a JSON value, counted as it streams by.
/// Depth is bounded by serde_json's own recursion limit (128).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ListItems(pub(crate) usize);

impl<'de> Deserialize<'de> for ListItems {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Counter)
    }
}

struct Counter;

impl<'de> Visitor<'de> for Counter {
    type Value = ListItems;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<ListItems, E> {
        Ok(ListItems(0))
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<ListItems, E> {
        Ok(ListItems(0))
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<ListItems, E> {
        Ok(ListItems(0))
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<ListItems, E> {
        Ok(ListItems(0))
    }

    fn visit_str<E: Error>(self, _: &str) -> Result<ListItems, E> {
        Ok(ListItems(0))
    }

    fn visit_unit<E: Error>(self) -> Result<ListItems, E> {
        Ok(ListItems(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListItems, A::Error> {
        let mut n = 0usize;
        while let Some(ListItems(inner)) = seq.next_element()? {
            n = n.saturating_add(1).saturating_add(inner);
        }
        Ok(ListItems(n))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListItems, A::Error> {
        let mut n = 0usize;
        while let Some((IgnoredAny, ListItems(inner))) = map.next_entry()? {
            n = n.saturating_add(inner);
        }
        Ok(ListItems(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_array_elements_at_every_depth() {
        let count = |s: &str| serde_json::from_str::<ListItems>(s).unwrap().0;
        assert_eq!(count("null"), 0);
        assert_eq!(count(r#"{"a": 1, "b": "x"}"#), 0);
        assert_eq!(count("[1, 2, 3]"), 3);
        assert_eq!(
            count(r#"{"containers": [{"env": [{}, {}]}, {"ports": [1]}], "x": [[]]}"#),
            6
        );
        assert!(serde_json::from_str::<ListItems>("[1,").is_err());
    }
}
