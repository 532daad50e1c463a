//! SMI: TrafficSplit and HTTPRouteGroup.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["service", "backends"])))]
pub(crate) struct TrafficSplitSpec {
    pub(crate) service: String,
    #[serde(default)]
    pub(crate) backends: Vec<TrafficSplitBackend>,
    #[serde(default)]
    pub(crate) matches: Vec<TypedLocalRef>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["service", "weight"])))]
pub(crate) struct TrafficSplitBackend {
    pub(crate) service: String,
    /// A quantity such as `900m` in v1alpha1, an integer after.
    pub(crate) weight: Option<IntOrString>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct TypedLocalRef {
    pub(crate) kind: Option<String>,
    pub(crate) name: String,
    pub(crate) api_group: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct HttpRouteGroupSpec {
    #[serde(default)]
    pub(crate) matches: Vec<HttpRouteGroupMatch>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteGroupMatch {
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub(crate) name: String,
    pub(crate) path_regex: Option<String>,
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    /// A map in v1alpha1–v1alpha3, a list of one-entry maps in some v1alpha4 examples.
    pub(crate) headers: Option<SmiHeaders>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SmiHeaders {
    Map(BTreeMap<String, String>),
    List(Vec<BTreeMap<String, String>>),
}
