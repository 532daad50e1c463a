//! Linkerd's policy.linkerd.io inbound policy: Server, ServerAuthorization,
//! AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication, HTTPLocalRateLimitPolicy.

use serde::Deserialize;

use super::*;

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
