//! Linkerd's linkerd.io ServiceProfile.

use serde::Deserialize;

use super::*;

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceProfileSpec {
    #[serde(default)]
    pub(crate) routes: Vec<SpRoute>,
    pub(crate) retry_budget: Option<SpRetryBudget>,
    #[serde(default)]
    pub(crate) dst_overrides: Vec<SpDstOverride>,
    /// Numbers or names; Linkerd's CRD lists strings, its Go type reads numbers.
    #[serde(default)]
    pub(crate) opaque_ports: Vec<IntOrString>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpRoute {
    pub(crate) name: String,
    pub(crate) condition: SpRequestMatch,
    #[serde(default)]
    pub(crate) response_classes: Vec<SpResponseClass>,
    #[serde(default)]
    pub(crate) is_retryable: bool,
    pub(crate) timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpRequestMatch {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::free_form_list"))]
    pub(crate) all: Vec<Self>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::free_form_list"))]
    pub(crate) any: Vec<Self>,
    // `default` keeps it optional in the schema, which cannot see through `schema_with`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::free_form"))]
    pub(crate) not: Option<Box<Self>>,
    pub(crate) path_regex: Option<String>,
    pub(crate) method: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpResponseClass {
    pub(crate) condition: SpResponseMatch,
    #[serde(default)]
    pub(crate) is_failure: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct SpResponseMatch {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::free_form_list"))]
    pub(crate) all: Vec<Self>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::free_form_list"))]
    pub(crate) any: Vec<Self>,
    // `default` keeps it optional in the schema, which cannot see through `schema_with`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::free_form"))]
    pub(crate) not: Option<Box<Self>>,
    pub(crate) status: Option<SpRange>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct SpRange {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "int32")))]
    pub(crate) min: Option<i64>,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "int32")))]
    pub(crate) max: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpRetryBudget {
    #[cfg_attr(feature = "schema", schemars(extend("format" = "float")))]
    pub(crate) retry_ratio: f64,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "int32")))]
    pub(crate) min_retries_per_second: i64,
    pub(crate) ttl: String,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct SpDstOverride {
    pub(crate) authority: String,
    pub(crate) weight: IntOrString,
}
