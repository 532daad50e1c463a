//! The kinds the mesh reads: [`catalog`] describes each kind (group, versions, plural,
//! scope, layout of each version), and the serde types here read every one of them.
//!
//! The types follow the published schemas field for field (SMI, Gateway API, Linkerd),
//! including fields the mesh does not act on, because with the `schema` feature they also
//! generate the CRDs of `mesh install --crds` (`schema`): a structural schema prunes what it
//! does not list, so a field missing here would vanish from users' objects. Unknown fields are
//! ignored when read, as the API server's non-strict decoding does; values are checked when
//! compiled, where the error can name the field and say why, so numbers are read wide (`i64`)
//! and ranges are left to the compiler and to the schema.

#![allow(dead_code)] // Fields mirror the schemas; not all of them steer traffic yet.

pub mod catalog;
mod delivery;
mod gateway;
mod policy;
mod profile;
#[cfg(feature = "schema")]
pub mod schema;
mod smi;
mod status;

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};

pub(crate) use delivery::*;
pub(crate) use gateway::*;
pub(crate) use policy::*;
pub(crate) use profile::*;
pub(crate) use smi::*;

/// An int-or-string, as Kubernetes uses for ports and quantities.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectMeta {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub(crate) creation_timestamp: Option<crate::values::Timestamp>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct LabelSelector {
    #[serde(default)]
    pub(crate) match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct LabelSelectorRequirement {
    pub(crate) key: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["In", "NotIn", "Exists", "DoesNotExist"])))]
    pub(crate) operator: String,
    #[serde(default)]
    pub(crate) values: Vec<String>,
}

/// A list the schema caps at `N` items, refused at item `N + 1` without reading the rest.
fn at_most<'de, const N: usize, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct AtMost<const N: usize, T>(PhantomData<T>);

    impl<'de, const N: usize, T: Deserialize<'de>> Visitor<'de> for AtMost<N, T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {N} items")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                if items.len() == N {
                    return Err(A::Error::custom(format!(
                        "more than {N} items (the schema's maxItems)"
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    d.deserialize_seq(AtMost::<N, T>(PhantomData))
}

/// What a route's `parentRef` attaches it to, as the mesh reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteParent {
    /// A Service: the route steers outbound traffic to it (GAMMA).
    Service,
    /// A Linkerd `Server`: the route is inbound policy.
    Server,
    /// Anything else (a Gateway): another implementation's, steering no mesh traffic.
    Other,
}

/// Reads a `parentRef`'s `group` and `kind` as given (either may be omitted). An omitted group
/// defaults to Gateway API's own, which has no Service kind: a user who wrote `kind: Service`
/// means the core one.
pub fn route_parent(group: Option<&str>, kind: Option<&str>) -> RouteParent {
    match (group, kind.unwrap_or("Gateway")) {
        (None | Some("" | "core"), "Service") => RouteParent::Service,
        (Some("policy.linkerd.io"), "Server") => RouteParent::Server,
        _ => RouteParent::Other,
    }
}
