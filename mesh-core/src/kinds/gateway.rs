//! Gateway API HTTPRoute and GRPCRoute, and Linkerd's policy.linkerd.io HTTPRoute (the same shape).

use serde::Deserialize;

use super::*;
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
    /// Experimental channel, not applied: read only to say so.
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub(crate) retry: Option<serde_norway::Value>,
    /// Experimental channel, not applied: read only to say so.
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub(crate) session_persistence: Option<serde_norway::Value>,
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
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [301, 302, 303, 307, 308])))]
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
    /// Experimental channel, not applied: read only to say so.
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub(crate) retry: Option<serde_norway::Value>,
    /// Experimental channel, not applied: read only to say so.
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub(crate) session_persistence: Option<serde_norway::Value>,
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

/// The experimental-channel rule fields a route rule carries but a mesh proxy does not apply.
pub(crate) trait ExperimentalRule {
    /// Whether `retry` and `sessionPersistence` are set.
    fn unapplied(&self) -> (bool, bool);
}

impl ExperimentalRule for HttpRouteRule {
    fn unapplied(&self) -> (bool, bool) {
        (self.retry.is_some(), self.session_persistence.is_some())
    }
}

impl ExperimentalRule for GrpcRouteRule {
    fn unapplied(&self) -> (bool, bool) {
        (self.retry.is_some(), self.session_persistence.is_some())
    }
}
