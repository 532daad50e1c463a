//! CustomResourceDefinitions of the kinds mesh reads that a cluster may lack, made from the
//! kinds catalog (group, names, scope, versions) and the schemas of the serde types the
//! compiler reads (`mesh_core::kinds`): one description of every kind.
//!
//! Every version is served in its own shape (SMI HTTPRouteGroup v1alpha1/v1alpha2 keep
//! `matches` beside `metadata`) with a structural schema, so the API server validates what
//! the compiler would refuse (ports, enums, required fields) and prunes nothing the
//! upstream CRDs keep. Versions share no conversion webhook (strategy `None`, as SMI's and
//! Linkerd's own CRDs): only `apiVersion` changes between them.
//!
//! Kinds whose upstream CRD has `subresources.status` (the catalog's `status`) get it here
//! too, with the status schema, so the controller's status writes land on a real cluster
//! and are validated there as upstream's are.
//!
//! Gateway API's HTTPRoute and GRPCRoute are included unless the cluster already has
//! Gateway API (`--skip-gateway-api`), as Linkerd's install does: without them a cluster
//! cannot hold the routes the mesh reads first.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceSubresourceStatus;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceSubresources, CustomResourceValidation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_core::kinds::catalog::{self, Definition, KindInfo, Scope};
use mesh_core::kinds::schema::open_api_schema;

/// Which CRDs to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GatewayApi {
    /// Print Gateway API's HTTPRoute and GRPCRoute too.
    Include,
    /// The cluster has Gateway API's own CRDs; leave them alone.
    Skip,
}

/// Every CRD `mesh install --crds` prints, in the catalog's order.
pub(crate) fn all(
    gateway_api: GatewayApi,
) -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    catalog::iter()
        .filter(|k| match k.definition {
            Definition::BuiltIn => false,
            Definition::Crd => true,
            Definition::GatewayApiCrd => gateway_api == GatewayApi::Include,
        })
        .map(crd)
        .collect()
}

/// The CRD of one kind, serving every version the catalog says a cluster serves.
fn crd(kind: &KindInfo) -> Result<CustomResourceDefinition, serde_json::Error> {
    let versions = kind
        .served()
        .map(|v| {
            let schema = open_api_schema(kind, v)
                .map(serde_json::from_value)
                .transpose()?;
            Ok(CustomResourceDefinitionVersion {
                name: v.name.to_owned(),
                served: true,
                storage: v.storage,
                deprecated: v.deprecated.then_some(true),
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: schema,
                }),
                // `/status` where upstream serves it; the schema's `status` comes with it.
                subresources: kind.status.map(|_| CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                    scale: None,
                }),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    let singular = kind.kind.to_ascii_lowercase();
    Ok(CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(kind.crd_name()),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: kind.group.to_owned(),
            names: CustomResourceDefinitionNames {
                kind: kind.kind.to_owned(),
                list_kind: Some(format!("{}List", kind.kind)),
                plural: kind.plural.to_owned(),
                singular: Some(singular),
                short_names: (!kind.short_names.is_empty())
                    .then(|| kind.short_names.iter().map(|s| (*s).to_owned()).collect()),
                categories: None,
            },
            scope: match kind.scope {
                Scope::Namespaced => "Namespaced",
                Scope::Cluster => "Cluster",
            }
            .to_owned(),
            versions,
            ..Default::default()
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

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

    /// Our field names are the published ones, and we drop none of them (a structural
    /// schema prunes what it does not list): the property paths of our storage version are
    /// those of the CRD Linkerd publishes for that version.
    #[test]
    fn fields_are_linkerds_published_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/linkerd/crds");
        if !dir.is_dir() {
            println!("note: {} is absent; skipping", dir.display());
            return;
        }
        let crds: Vec<Value> = all(GatewayApi::Skip)
            .unwrap()
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        let ours = |name: &str| {
            crds.iter()
                .find(|c| c["metadata"]["name"] == name)
                .unwrap()
                .clone()
        };
        let cases = [
            ("server.yaml", "servers.policy.linkerd.io"),
            ("serviceprofile.yaml", "serviceprofiles.linkerd.io"),
            (
                "authorization-policy.yaml",
                "authorizationpolicies.policy.linkerd.io",
            ),
            ("httproute.yaml", "httproutes.policy.linkerd.io"),
        ];
        for (file, name) in cases {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let published: Value = serde_norway::from_str(
                text.trim_start_matches(|c| c != '\n')
                    .trim_start()
                    .trim_start_matches("---"),
            )
            .unwrap();
            let (mut want, mut have) = (Vec::new(), Vec::new());
            paths(&storage_schema(&ours(name)), "", &mut want);
            paths(&storage_schema(&published), "", &mut have);
            let envelope = ["apiVersion", "kind", "metadata"];
            have.retain(|p| !envelope.iter().any(|e| p.starts_with(e)));
            want.retain(|p| !envelope.iter().any(|e| p.starts_with(e)));
            let extra: Vec<_> = want.iter().filter(|p| !have.contains(p)).collect();
            let missing: Vec<_> = have.iter().filter(|p| !want.contains(p)).collect();
            assert!(
                extra.is_empty() && missing.is_empty(),
                "{file}: not published {extra:?}; not ours {missing:?}"
            );
            let subresources = |crd: &Value| {
                let versions = crd["spec"]["versions"].as_array().cloned();
                (versions.into_iter().flatten())
                    .map(|v| (v["name"].clone(), v["subresources"].clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                subresources(&ours(name)),
                subresources(&published),
                "{file}: subresources"
            );
        }
    }
}
