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
#[cfg(feature = "schema")]
pub mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};

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
    pub(crate) creation_timestamp: Option<String>,
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

// === SMI ===

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

// === Gateway API and policy.linkerd.io routes ===
//
// List lengths are capped where the Gateway API CRDs cap them (`maxItems`: rules 16, HTTP
// matches 64, gRPC matches 8, filters, backendRefs and hostnames 16), so a route the API
// server would refuse is refused here too, before it costs anything to compile.

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteSpec {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub(crate) parent_refs: Vec<ParentRef>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(max = 16),
            inner(length(min = 1, max = 253), pattern(schema::HOSTNAME))
        )
    )]
    pub(crate) hostnames: Vec<String>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentRef {
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 253), pattern(schema::GROUP))
    )]
    pub(crate) group: Option<String>,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 63), pattern(schema::KIND))
    )]
    pub(crate) kind: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub(crate) name: String,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 63), pattern(schema::LABEL))
    )]
    pub(crate) namespace: Option<String>,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), pattern(schema::SUBDOMAIN))
    )]
    pub(crate) section_name: Option<String>,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535), extend("format" = "int32")))]
    pub(crate) port: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteRule {
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), pattern(schema::SUBDOMAIN))
    )]
    pub(crate) name: Option<String>,
    #[serde(default, deserialize_with = "at_most::<64, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 64)))]
    pub(crate) matches: Vec<HttpRouteMatch>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) filters: Vec<HttpRouteFilter>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) backend_refs: Vec<BackendRef>,
    pub(crate) timeouts: Option<HttpRouteTimeouts>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteMatch {
    pub(crate) path: Option<PathMatch>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) headers: Vec<ValueMatch>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) query_params: Vec<ValueMatch>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"])))]
    pub(crate) method: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct PathMatch {
    #[serde(rename = "type")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["Exact", "PathPrefix", "RegularExpression"])))]
    pub(crate) kind: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub(crate) value: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct ValueMatch {
    #[serde(rename = "type")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["Exact", "RegularExpression"])))]
    pub(crate) kind: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub(crate) name: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 4096)))]
    pub(crate) value: String,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendRef {
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 253), pattern(schema::GROUP))
    )]
    pub(crate) group: Option<String>,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 63), pattern(schema::KIND))
    )]
    pub(crate) kind: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub(crate) name: String,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 63), pattern(schema::LABEL))
    )]
    pub(crate) namespace: Option<String>,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535), extend("format" = "int32")))]
    pub(crate) port: Option<i64>,
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1_000_000), extend("format" = "int32")))]
    pub(crate) weight: Option<i64>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) filters: Vec<HttpRouteFilter>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteTimeouts {
    #[cfg_attr(feature = "schema", schemars(pattern(schema::DURATION)))]
    pub(crate) request: Option<String>,
    #[cfg_attr(feature = "schema", schemars(pattern(schema::DURATION)))]
    pub(crate) backend_request: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteFilter {
    /// GRPCRoute takes the header modifiers, RequestMirror and ExtensionRef of these.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect", "URLRewrite", "ExtensionRef"])))]
    pub(crate) kind: String,
    pub(crate) request_header_modifier: Option<HeaderModifier>,
    pub(crate) response_header_modifier: Option<HeaderModifier>,
    pub(crate) request_redirect: Option<RequestRedirect>,
    pub(crate) request_mirror: Option<RequestMirror>,
    #[serde(rename = "urlRewrite")]
    pub(crate) url_rewrite: Option<UrlRewrite>,
    pub(crate) extension_ref: Option<LocalRef>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct UrlRewrite {
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), pattern(schema::HOSTNAME))
    )]
    pub(crate) hostname: Option<String>,
    pub(crate) path: Option<PathModifier>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathModifier {
    #[serde(rename = "type")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["ReplaceFullPath", "ReplacePrefixMatch"])))]
    pub(crate) kind: String,
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub(crate) replace_full_path: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub(crate) replace_prefix_match: Option<String>,
}

/// A local object by group, kind and name (Gateway API's LocalObjectReference).
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct LocalRef {
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 253), pattern(schema::GROUP))
    )]
    pub(crate) group: String,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 63), pattern(schema::KIND))
    )]
    pub(crate) kind: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub(crate) name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct HeaderModifier {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) set: Vec<HeaderValue>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) add: Vec<HeaderValue>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) remove: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct HeaderValue {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub(crate) name: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 4096)))]
    pub(crate) value: String,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestRedirect {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["http", "https"])))]
    pub(crate) scheme: Option<String>,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), pattern(schema::HOSTNAME))
    )]
    pub(crate) hostname: Option<String>,
    pub(crate) path: Option<PathModifier>,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535), extend("format" = "int32")))]
    pub(crate) port: Option<i64>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [301, 302])))]
    pub(crate) status_code: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestMirror {
    /// Read as a backendRef; its schema is Gateway API's BackendObjectReference (no weight,
    /// no filters), which also keeps the schema from recursing through filters.
    #[cfg_attr(feature = "schema", schemars(with = "BackendObjectRef"))]
    pub(crate) backend_ref: BackendRef,
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100), extend("format" = "int32")))]
    pub(crate) percent: Option<i64>,
    pub(crate) fraction: Option<Fraction>,
}

/// Gateway API's BackendObjectReference: the schema of a mirror's backend.
#[cfg(feature = "schema")]
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct BackendObjectRef {
    #[schemars(length(max = 253), pattern(schema::GROUP))]
    group: Option<String>,
    #[schemars(length(min = 1, max = 63), pattern(schema::KIND))]
    kind: Option<String>,
    #[schemars(length(min = 1, max = 253))]
    name: String,
    #[schemars(length(min = 1, max = 63), pattern(schema::LABEL))]
    namespace: Option<String>,
    #[schemars(range(min = 1, max = 65535), extend("format" = "int32"))]
    port: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct Fraction {
    #[cfg_attr(feature = "schema", schemars(range(min = 0), extend("format" = "int32")))]
    pub(crate) numerator: i64,
    #[cfg_attr(feature = "schema", schemars(range(min = 1), extend("format" = "int32")))]
    pub(crate) denominator: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcRouteSpec {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub(crate) parent_refs: Vec<ParentRef>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(max = 16),
            inner(length(min = 1, max = 253), pattern(schema::HOSTNAME))
        )
    )]
    pub(crate) hostnames: Vec<String>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) rules: Vec<GrpcRouteRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcRouteRule {
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), pattern(schema::SUBDOMAIN))
    )]
    pub(crate) name: Option<String>,
    #[serde(default, deserialize_with = "at_most::<8, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub(crate) matches: Vec<GrpcRouteMatch>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) filters: Vec<HttpRouteFilter>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) backend_refs: Vec<BackendRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct GrpcRouteMatch {
    pub(crate) method: Option<GrpcMethodMatch>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub(crate) headers: Vec<ValueMatch>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct GrpcMethodMatch {
    #[serde(rename = "type")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["Exact", "RegularExpression"])))]
    pub(crate) kind: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub(crate) service: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub(crate) method: Option<String>,
}

// === linkerd.io ServiceProfile ===

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

// === policy.linkerd.io inbound policy ===

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("oneOf" = [{"required": ["podSelector"]}, {"required": ["externalWorkloadSelector"]}])))]
pub(crate) struct ServerSpec {
    pub(crate) pod_selector: Option<LabelSelector>,
    pub(crate) external_workload_selector: Option<LabelSelector>,
    pub(crate) port: IntOrString,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"])))]
    pub(crate) proxy_protocol: Option<String>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["deny", "all-authenticated", "all-unauthenticated", "cluster-authenticated", "cluster-unauthenticated", "audit"])))]
    pub(crate) access_policy: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerAuthorizationSpec {
    pub(crate) server: ServerRef,
    pub(crate) client: SaClient,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct ServerRef {
    pub(crate) name: Option<String>,
    pub(crate) selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct SaClient {
    pub(crate) networks: Option<Vec<Network>>,
    #[serde(default)]
    pub(crate) unauthenticated: bool,
    #[serde(rename = "meshTLS")]
    pub(crate) mesh_tls: Option<SaMeshTls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct SaMeshTls {
    #[serde(default, rename = "unauthenticatedTLS")]
    pub(crate) unauthenticated_tls: bool,
    #[serde(default)]
    pub(crate) identities: Vec<String>,
    #[serde(default)]
    pub(crate) service_accounts: Vec<ServiceAccountRef>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct ServiceAccountRef {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct Network {
    pub(crate) cidr: String,
    #[serde(default)]
    pub(crate) except: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyRef {
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 253), pattern(schema::GROUP))
    )]
    pub(crate) group: Option<String>,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 63), pattern(schema::KIND))
    )]
    pub(crate) kind: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub(crate) name: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(max = 253)))]
    pub(crate) namespace: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["targetRef", "requiredAuthenticationRefs"])))]
pub(crate) struct AuthorizationPolicySpec {
    pub(crate) target_ref: PolicyRef,
    #[serde(default)]
    pub(crate) required_authentication_refs: Vec<PolicyRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct MeshTlsAuthenticationSpec {
    #[serde(default)]
    pub(crate) identities: Vec<String>,
    #[serde(default)]
    pub(crate) identity_refs: Vec<PolicyRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["networks"])))]
pub(crate) struct NetworkAuthenticationSpec {
    #[serde(default)]
    pub(crate) networks: Vec<Network>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct RateLimitPolicySpec {
    pub(crate) target_ref: PolicyRef,
    pub(crate) total: Option<Rps>,
    pub(crate) identity: Option<Rps>,
    #[serde(default)]
    pub(crate) overrides: Vec<RateLimitOverride>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rps {
    #[cfg_attr(feature = "schema", schemars(range(min = 0), extend("format" = "int32")))]
    pub(crate) requests_per_second: i64,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["requestsPerSecond", "clientRefs"])))]
pub(crate) struct RateLimitOverride {
    #[cfg_attr(feature = "schema", schemars(range(min = 0), extend("format" = "int32")))]
    pub(crate) requests_per_second: i64,
    #[serde(default)]
    pub(crate) client_refs: Vec<PolicyRef>,
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
