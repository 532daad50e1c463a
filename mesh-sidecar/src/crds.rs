//! CustomResourceDefinitions of the kinds mesh reads that a cluster may lack, generated from
//! these Rust types with kube's `CustomResource` derive.
//!
//! The types mirror the published schemas (SMI, Linkerd) field for field, with their camelCase
//! names, for the fields mesh reads. Each spec keeps fields it does not model
//! (`x-kubernetes-preserve-unknown-fields`): the API server must not prune what other tools,
//! or a later mesh, read from the same objects.
//!
//! Gateway API's own kinds (HTTPRoute, GRPCRoute, Gateway…) are not here: they are installed
//! from Gateway API's release manifests, which own their schemas and versions.
//!
//! Each kind is derived once, at its storage version; the older versions Linkerd and SMI still
//! serve are listed with the same schema (the fields mesh reads did not change between them),
//! so manifests written against them keep applying.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every CRD `mesh install --crds` prints, in a stable order.
pub(crate) fn all() -> Vec<CustomResourceDefinition> {
    const SMI: &[&str] = &["v1alpha1", "v1alpha2", "v1alpha3"];
    vec![
        served(smi::TrafficSplit::crd(), SMI, &[]),
        served(smi::HTTPRouteGroup::crd(), SMI, &[]),
        served(linkerd::ServiceProfile::crd(), &["v1alpha1"], &[]),
        served(
            policy::Server::crd(),
            &["v1alpha1", "v1beta1", "v1beta2"],
            &["v1alpha1", "v1beta1"],
        ),
        served(policy::ServerAuthorization::crd(), &["v1alpha1"], &[]),
        policy::AuthorizationPolicy::crd(),
        policy::MeshTLSAuthentication::crd(),
        policy::NetworkAuthentication::crd(),
        policy::HTTPLocalRateLimitPolicy::crd(),
        served(
            policy::HTTPRoute::crd(),
            &["v1alpha1", "v1beta1", "v1beta2"],
            &[],
        ),
    ]
}

/// Adds older served versions with the storage version's schema; `deprecated` ones warn.
fn served(
    mut crd: CustomResourceDefinition,
    older: &[&str],
    deprecated: &[&str],
) -> CustomResourceDefinition {
    let Some(storage) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    let mut versions: Vec<CustomResourceDefinitionVersion> = older
        .iter()
        .map(|v| CustomResourceDefinitionVersion {
            name: (*v).to_owned(),
            storage: false,
            served: true,
            deprecated: deprecated.contains(v).then_some(true),
            ..storage.clone()
        })
        .collect();
    versions.push(storage);
    crd.spec.versions = versions;
    crd
}

/// `x-kubernetes-int-or-string`: ports by number or name, SMI weights as `900m` or `1`.
fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-int-or-string": true })
}

fn optional_int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-int-or-string": true, "nullable": true })
}

/// Free-form objects: recursive matchers and filters mesh validates itself.
fn objects(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "nullable": true,
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Anything: a value whose shape changed between versions (no `type`, which a structural
/// schema allows only together with preserve-unknown-fields).
fn any(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "nullable": true, "x-kubernetes-preserve-unknown-fields": true })
}

fn object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// metav1.LabelSelector (k8s-openapi's has no JsonSchema).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LabelSelector {
    pub(crate) match_labels: Option<BTreeMap<String, String>>,
    pub(crate) match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub(crate) struct LabelSelectorRequirement {
    pub(crate) key: String,
    pub(crate) operator: String,
    pub(crate) values: Option<Vec<String>>,
}

pub(crate) mod smi {
    use super::*;

    /// split.smi-spec.io TrafficSplit: weighted backends of an apex service.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha4",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts"
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct TrafficSplitSpec {
        pub(crate) service: String,
        pub(crate) backends: Vec<TrafficSplitBackend>,
        pub(crate) matches: Option<Vec<TypedLocalRef>>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct TrafficSplitBackend {
        pub(crate) service: String,
        /// An integer, or a quantity such as `900m` (v1alpha1).
        #[schemars(schema_with = "optional_int_or_string")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) weight: Option<Value>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct TypedLocalRef {
        pub(crate) kind: Option<String>,
        pub(crate) name: String,
        pub(crate) api_group: Option<String>,
    }

    /// specs.smi-spec.io HTTPRouteGroup: named HTTP matches a TrafficSplit may name.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "HTTPRouteGroup",
        namespaced,
        shortname = "htr"
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct HTTPRouteGroupSpec {
        pub(crate) matches: Option<Vec<HTTPMatch>>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct HTTPMatch {
        pub(crate) name: String,
        pub(crate) path_regex: Option<String>,
        pub(crate) methods: Option<Vec<String>>,
        /// A map of header to regex (v1alpha3+) or a list of such maps (older versions).
        #[schemars(schema_with = "any")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) headers: Option<Value>,
    }
}

pub(crate) mod linkerd {
    use super::*;

    /// linkerd.io ServiceProfile: per-route conditions, failure classes, retries, timeouts.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "linkerd.io",
        version = "v1alpha2",
        kind = "ServiceProfile",
        namespaced,
        shortname = "sp"
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct ServiceProfileSpec {
        pub(crate) routes: Option<Vec<Route>>,
        pub(crate) retry_budget: Option<RetryBudget>,
        pub(crate) dst_overrides: Option<Vec<WeightedDst>>,
        pub(crate) opaque_ports: Option<Vec<i64>>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct Route {
        pub(crate) name: String,
        pub(crate) condition: RequestMatch,
        pub(crate) response_classes: Option<Vec<ResponseClass>>,
        pub(crate) is_retryable: Option<bool>,
        pub(crate) timeout: Option<String>,
    }

    /// `all`, `any` and `not` nest matches; their schema stays free-form because a CRD schema
    /// cannot be recursive.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct RequestMatch {
        #[schemars(schema_with = "objects")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) all: Option<Value>,
        #[schemars(schema_with = "objects")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) any: Option<Value>,
        #[schemars(schema_with = "object")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) not: Option<Value>,
        pub(crate) path_regex: Option<String>,
        pub(crate) method: Option<String>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct ResponseClass {
        pub(crate) condition: ResponseMatch,
        pub(crate) is_failure: Option<bool>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct ResponseMatch {
        #[schemars(schema_with = "objects")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) all: Option<Value>,
        #[schemars(schema_with = "objects")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) any: Option<Value>,
        #[schemars(schema_with = "object")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) not: Option<Value>,
        pub(crate) status: Option<Range>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct Range {
        pub(crate) min: Option<i64>,
        pub(crate) max: Option<i64>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct RetryBudget {
        pub(crate) retry_ratio: f64,
        pub(crate) min_retries_per_second: i64,
        pub(crate) ttl: String,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct WeightedDst {
        pub(crate) authority: String,
        #[schemars(schema_with = "int_or_string")]
        pub(crate) weight: Value,
    }
}

pub(crate) mod policy {
    use super::*;

    /// A port of some pods, and how its traffic is spoken.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "policy.linkerd.io",
        version = "v1beta3",
        kind = "Server",
        namespaced,
        shortname = "srv"
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct ServerSpec {
        pub(crate) pod_selector: Option<LabelSelector>,
        pub(crate) external_workload_selector: Option<LabelSelector>,
        #[schemars(schema_with = "int_or_string")]
        pub(crate) port: Value,
        pub(crate) proxy_protocol: Option<String>,
        pub(crate) access_policy: Option<String>,
    }

    /// Who may call a Server (the older API, still read).
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "policy.linkerd.io",
        version = "v1beta1",
        kind = "ServerAuthorization",
        namespaced,
        shortname = "saz"
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct ServerAuthorizationSpec {
        pub(crate) server: ServerRef,
        pub(crate) client: Client,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct ServerRef {
        pub(crate) name: Option<String>,
        pub(crate) selector: Option<LabelSelector>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct Client {
        pub(crate) networks: Option<Vec<Network>>,
        pub(crate) unauthenticated: Option<bool>,
        #[serde(rename = "meshTLS")]
        pub(crate) mesh_tls: Option<MeshTls>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct MeshTls {
        #[serde(rename = "unauthenticatedTLS")]
        pub(crate) unauthenticated_tls: Option<bool>,
        pub(crate) identities: Option<Vec<String>>,
        pub(crate) service_accounts: Option<Vec<ServiceAccountRef>>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct ServiceAccountRef {
        pub(crate) name: String,
        pub(crate) namespace: Option<String>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct Network {
        pub(crate) cidr: String,
        pub(crate) except: Option<Vec<String>>,
    }

    /// A reference to a policy target or authentication (Gateway API's PolicyTargetReference).
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct PolicyRef {
        pub(crate) group: Option<String>,
        pub(crate) kind: String,
        pub(crate) name: Option<String>,
        pub(crate) namespace: Option<String>,
    }

    /// The local object a policy applies to (Gateway API's LocalPolicyTargetReference).
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct TargetRef {
        pub(crate) group: Option<String>,
        pub(crate) kind: String,
        pub(crate) name: String,
    }

    /// Authorizes the clients that pass every required authentication to a target.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "policy.linkerd.io",
        version = "v1alpha1",
        kind = "AuthorizationPolicy",
        namespaced
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct AuthorizationPolicySpec {
        pub(crate) target_ref: TargetRef,
        pub(crate) required_authentication_refs: Vec<PolicyRef>,
    }

    /// Clients authenticated by mesh identity.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "policy.linkerd.io",
        version = "v1alpha1",
        kind = "MeshTLSAuthentication",
        namespaced
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct MeshTLSAuthenticationSpec {
        pub(crate) identities: Option<Vec<String>>,
        pub(crate) identity_refs: Option<Vec<PolicyRef>>,
    }

    /// Clients authenticated by source network.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "policy.linkerd.io",
        version = "v1alpha1",
        kind = "NetworkAuthentication",
        namespaced
    )]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct NetworkAuthenticationSpec {
        pub(crate) networks: Vec<Network>,
    }

    /// Inbound rate limits of a Server.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "policy.linkerd.io",
        version = "v1alpha1",
        kind = "HTTPLocalRateLimitPolicy",
        namespaced
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct HTTPLocalRateLimitPolicySpec {
        pub(crate) target_ref: TargetRef,
        pub(crate) total: Option<Limit>,
        pub(crate) identity: Option<Limit>,
        pub(crate) overrides: Option<Vec<Override>>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct Limit {
        pub(crate) requests_per_second: i64,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct Override {
        pub(crate) requests_per_second: i64,
        pub(crate) client_refs: Vec<PolicyRef>,
    }

    /// Linkerd's HTTPRoute: Gateway API's shape, parented by Services or Servers.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, CustomResource)]
    #[kube(
        group = "policy.linkerd.io",
        version = "v1beta3",
        kind = "HTTPRoute",
        namespaced
    )]
    #[serde(rename_all = "camelCase")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub(crate) struct HTTPRouteSpec {
        pub(crate) parent_refs: Option<Vec<ParentRef>>,
        pub(crate) hostnames: Option<Vec<String>>,
        pub(crate) rules: Option<Vec<HTTPRouteRule>>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct ParentRef {
        pub(crate) group: Option<String>,
        pub(crate) kind: Option<String>,
        pub(crate) name: String,
        pub(crate) namespace: Option<String>,
        pub(crate) section_name: Option<String>,
        pub(crate) port: Option<i32>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct HTTPRouteRule {
        pub(crate) matches: Option<Vec<HTTPRouteMatch>>,
        /// Filters are validated by mesh itself, per type.
        #[schemars(schema_with = "objects")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) filters: Option<Value>,
        pub(crate) backend_refs: Option<Vec<BackendRef>>,
        pub(crate) timeouts: Option<Timeouts>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct HTTPRouteMatch {
        pub(crate) path: Option<PathMatch>,
        pub(crate) headers: Option<Vec<ValueMatch>>,
        pub(crate) query_params: Option<Vec<ValueMatch>>,
        pub(crate) method: Option<String>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct PathMatch {
        #[serde(rename = "type")]
        pub(crate) kind: Option<String>,
        pub(crate) value: Option<String>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct ValueMatch {
        #[serde(rename = "type")]
        pub(crate) kind: Option<String>,
        pub(crate) name: String,
        pub(crate) value: String,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub(crate) struct BackendRef {
        pub(crate) group: Option<String>,
        pub(crate) kind: Option<String>,
        pub(crate) name: String,
        pub(crate) namespace: Option<String>,
        pub(crate) port: Option<i32>,
        pub(crate) weight: Option<i32>,
        #[schemars(schema_with = "objects")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) filters: Option<Value>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct Timeouts {
        pub(crate) request: Option<String>,
        pub(crate) backend_request: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The storage version's schema of a CRD, as JSON.
    fn storage_schema(crd: &Value) -> Value {
        crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["storage"] == true)
            .unwrap()["schema"]["openAPIV3Schema"]
            .clone()
    }

    /// Every property path of a schema: `spec.rules[].backendRefs[].weight`.
    fn paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(p.clone());
                paths(v, &p, out);
            }
        }
        if let Some(items) = schema.get("items") {
            paths(items, &format!("{prefix}[]"), out);
        }
    }

    /// Our field names are the published ones: every property path of our storage version
    /// exists in the CRD Linkerd publishes for that version.
    #[test]
    fn field_names_mirror_linkerds_published_crds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/linkerd/crds");
        if !dir.is_dir() {
            println!("note: {} is absent; skipping", dir.display());
            return;
        }
        let cases = [
            ("server.yaml", policy::Server::crd()),
            ("serviceprofile.yaml", linkerd::ServiceProfile::crd()),
            (
                "authorization-policy.yaml",
                policy::AuthorizationPolicy::crd(),
            ),
            ("httproute.yaml", policy::HTTPRoute::crd()),
        ];
        for (file, ours) in cases {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let published: Value = serde_norway::from_str(
                text.trim_start_matches(|c| c != '\n')
                    .trim_start()
                    .trim_start_matches("---"),
            )
            .unwrap();
            let ours = serde_json::to_value(&ours).unwrap();
            let (mut want, mut have) = (Vec::new(), Vec::new());
            paths(&storage_schema(&ours), "", &mut want);
            paths(&storage_schema(&published), "", &mut have);
            assert!(want.len() > 3, "{file}: {want:?}");
            for p in &want {
                assert!(
                    have.contains(p),
                    "{file}: {p} is not in the published schema"
                );
            }
        }
    }

    #[test]
    fn every_crd_has_one_storage_version_and_a_structural_spec() {
        for crd in all() {
            let crd = serde_json::to_value(&crd).unwrap();
            let versions = crd["spec"]["versions"].as_array().unwrap();
            assert_eq!(versions.iter().filter(|v| v["storage"] == true).count(), 1);
            let schema = storage_schema(&crd);
            assert_eq!(schema["type"], "object");
            // Structural schemas forbid $ref: kube inlines every subschema.
            assert!(!schema.to_string().contains("$ref"), "{schema}");
        }
    }

    /// Every fixture of a kind we define reads as our type: required fields and their types
    /// agree with what people actually write.
    #[test]
    fn policy_fixtures_read_as_our_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
        if !dir.is_dir() {
            println!("note: {} is absent; skipping", dir.display());
            return;
        }
        fn read<T: serde::de::DeserializeOwned>(v: Value) -> Result<(), String> {
            serde_json::from_value::<T>(v)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        let mut seen = 0;
        for sub in ["linkerd", "smi"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_norway::Deserializer::from_str(&text) {
                    let v: Value = serde::Deserialize::deserialize(doc).unwrap();
                    let group = v["apiVersion"].as_str().unwrap_or("").split('/').next();
                    let res = match (group, v["kind"].as_str()) {
                        (_, Some("TrafficSplit")) => read::<smi::TrafficSplit>(v),
                        (_, Some("HTTPRouteGroup")) => read::<smi::HTTPRouteGroup>(v),
                        (_, Some("ServiceProfile")) => read::<linkerd::ServiceProfile>(v),
                        (_, Some("Server")) => read::<policy::Server>(v),
                        (_, Some("ServerAuthorization")) => read::<policy::ServerAuthorization>(v),
                        (_, Some("AuthorizationPolicy")) => read::<policy::AuthorizationPolicy>(v),
                        (_, Some("MeshTLSAuthentication")) => {
                            read::<policy::MeshTLSAuthentication>(v)
                        }
                        (_, Some("NetworkAuthentication")) => {
                            read::<policy::NetworkAuthentication>(v)
                        }
                        (_, Some("HTTPLocalRateLimitPolicy")) => {
                            read::<policy::HTTPLocalRateLimitPolicy>(v)
                        }
                        (Some("policy.linkerd.io"), Some("HTTPRoute")) => {
                            read::<policy::HTTPRoute>(v)
                        }
                        _ => continue,
                    };
                    // The SMI spec text's HTTPRouteGroup keeps `matches` outside `spec`.
                    if let Err(e) = res {
                        assert!(
                            path.ends_with("smi-spec-v1alpha3-matches.yaml") && e.contains("spec"),
                            "{}: {e}",
                            path.display()
                        );
                    }
                    seen += 1;
                }
            }
        }
        assert!(seen > 20, "{seen}");
    }
}
