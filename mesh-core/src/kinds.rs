//! Serde mirrors of the published schemas of the kinds the mesh reads.
//!
//! These follow the CRDs field for field (SMI, Gateway API, Linkerd). Unknown fields are
//! ignored, as the API server's non-strict decoding does; values are checked when compiled,
//! where the error can name the field and say why.

#![allow(dead_code)] // Fields mirror the schemas; not all of them steer traffic yet.

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
#[serde(rename_all = "camelCase")]
pub(crate) struct LabelSelector {
    #[serde(default)]
    pub(crate) match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct LabelSelectorRequirement {
    pub(crate) key: String,
    pub(crate) operator: String,
    #[serde(default)]
    pub(crate) values: Vec<String>,
}

// === SMI ===

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TrafficSplitSpec {
    pub(crate) service: String,
    #[serde(default)]
    pub(crate) backends: Vec<TrafficSplitBackend>,
    #[serde(default)]
    pub(crate) matches: Vec<TypedLocalRef>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TrafficSplitBackend {
    pub(crate) service: String,
    pub(crate) weight: Option<IntOrString>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TypedLocalRef {
    pub(crate) kind: Option<String>,
    pub(crate) name: String,
    pub(crate) api_group: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct HttpRouteGroupSpec {
    #[serde(default)]
    pub(crate) matches: Vec<HttpRouteGroupMatch>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteGroupMatch {
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
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteSpec {
    #[serde(default)]
    pub(crate) parent_refs: Vec<ParentRef>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) hostnames: Vec<String>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentRef {
    pub(crate) group: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) section_name: Option<String>,
    pub(crate) port: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteRule {
    pub(crate) name: Option<String>,
    #[serde(default, deserialize_with = "at_most::<64, _, _>")]
    pub(crate) matches: Vec<HttpRouteMatch>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) filters: Vec<HttpRouteFilter>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) backend_refs: Vec<BackendRef>,
    pub(crate) timeouts: Option<HttpRouteTimeouts>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteMatch {
    pub(crate) path: Option<PathMatch>,
    #[serde(default)]
    pub(crate) headers: Vec<ValueMatch>,
    #[serde(default)]
    pub(crate) query_params: Vec<ValueMatch>,
    pub(crate) method: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct PathMatch {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) value: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ValueMatch {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) name: String,
    pub(crate) value: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendRef {
    pub(crate) group: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) weight: Option<i64>,
    #[serde(default)]
    pub(crate) filters: Vec<HttpRouteFilter>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteTimeouts {
    pub(crate) request: Option<String>,
    pub(crate) backend_request: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) request_header_modifier: Option<HeaderModifier>,
    pub(crate) response_header_modifier: Option<HeaderModifier>,
    pub(crate) request_redirect: Option<RequestRedirect>,
    pub(crate) request_mirror: Option<RequestMirror>,
    pub(crate) url_rewrite: Option<serde_norway::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct HeaderModifier {
    #[serde(default)]
    pub(crate) set: Vec<HeaderValue>,
    #[serde(default)]
    pub(crate) add: Vec<HeaderValue>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct HeaderValue {
    pub(crate) name: String,
    pub(crate) value: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestRedirect {
    pub(crate) scheme: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) status_code: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestMirror {
    pub(crate) backend_ref: BackendRef,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcRouteSpec {
    #[serde(default)]
    pub(crate) parent_refs: Vec<ParentRef>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) hostnames: Vec<String>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) rules: Vec<GrpcRouteRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcRouteRule {
    pub(crate) name: Option<String>,
    #[serde(default, deserialize_with = "at_most::<8, _, _>")]
    pub(crate) matches: Vec<GrpcRouteMatch>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) filters: Vec<HttpRouteFilter>,
    #[serde(default, deserialize_with = "at_most::<16, _, _>")]
    pub(crate) backend_refs: Vec<BackendRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct GrpcRouteMatch {
    pub(crate) method: Option<GrpcMethodMatch>,
    #[serde(default)]
    pub(crate) headers: Vec<ValueMatch>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct GrpcMethodMatch {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) method: Option<String>,
}

// === linkerd.io ServiceProfile ===

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceProfileSpec {
    #[serde(default)]
    pub(crate) routes: Vec<SpRoute>,
    pub(crate) retry_budget: Option<SpRetryBudget>,
    #[serde(default)]
    pub(crate) dst_overrides: Vec<SpDstOverride>,
    #[serde(default)]
    pub(crate) opaque_ports: Vec<i64>,
}

#[derive(Clone, Debug, Deserialize)]
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
#[serde(rename_all = "camelCase")]
pub(crate) struct SpRequestMatch {
    #[serde(default)]
    pub(crate) all: Vec<Self>,
    #[serde(default)]
    pub(crate) any: Vec<Self>,
    pub(crate) not: Option<Box<Self>>,
    pub(crate) path_regex: Option<String>,
    pub(crate) method: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpResponseClass {
    pub(crate) condition: SpResponseMatch,
    #[serde(default)]
    pub(crate) is_failure: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct SpResponseMatch {
    #[serde(default)]
    pub(crate) all: Vec<Self>,
    #[serde(default)]
    pub(crate) any: Vec<Self>,
    pub(crate) not: Option<Box<Self>>,
    pub(crate) status: Option<SpRange>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct SpRange {
    pub(crate) min: Option<i64>,
    pub(crate) max: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpRetryBudget {
    pub(crate) retry_ratio: f64,
    pub(crate) min_retries_per_second: i64,
    pub(crate) ttl: String,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct SpDstOverride {
    pub(crate) authority: String,
    pub(crate) weight: IntOrString,
}

// === policy.linkerd.io inbound policy ===

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerSpec {
    pub(crate) pod_selector: Option<LabelSelector>,
    pub(crate) external_workload_selector: Option<LabelSelector>,
    pub(crate) port: IntOrString,
    pub(crate) proxy_protocol: Option<String>,
    pub(crate) access_policy: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerAuthorizationSpec {
    pub(crate) server: ServerRef,
    pub(crate) client: SaClient,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ServerRef {
    pub(crate) name: Option<String>,
    pub(crate) selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SaClient {
    pub(crate) networks: Option<Vec<Network>>,
    #[serde(default)]
    pub(crate) unauthenticated: bool,
    #[serde(rename = "meshTLS")]
    pub(crate) mesh_tls: Option<SaMeshTls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
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
pub(crate) struct ServiceAccountRef {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Network {
    pub(crate) cidr: String,
    #[serde(default)]
    pub(crate) except: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyRef {
    pub(crate) group: Option<String>,
    pub(crate) kind: String,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthorizationPolicySpec {
    pub(crate) target_ref: PolicyRef,
    #[serde(default)]
    pub(crate) required_authentication_refs: Vec<PolicyRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MeshTlsAuthenticationSpec {
    #[serde(default)]
    pub(crate) identities: Vec<String>,
    #[serde(default)]
    pub(crate) identity_refs: Vec<PolicyRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct NetworkAuthenticationSpec {
    #[serde(default)]
    pub(crate) networks: Vec<Network>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RateLimitPolicySpec {
    pub(crate) target_ref: PolicyRef,
    pub(crate) total: Option<Rps>,
    pub(crate) identity: Option<Rps>,
    #[serde(default)]
    pub(crate) overrides: Vec<RateLimitOverride>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rps {
    pub(crate) requests_per_second: i64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RateLimitOverride {
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
