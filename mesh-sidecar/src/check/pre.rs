//! `mesh check --pre`: what `mesh install` needs before there is anything installed: the API
//! versions it writes are served, and the caller may create every kind it writes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::control_plane::{Install, api_failed};
use super::kube::Kube;
use super::report::{Category, Outcome};

/// Where the served resource of a kind was found by discovery.
struct Served {
    plural: String,
    namespaced: bool,
}

/// The served API versions, then the rights to create each kind.
pub(crate) async fn checks(kube: &Kube, install: &Install) -> Vec<Category> {
    let mut setup = Category::new("pre-kubernetes-setup");
    let ns = &install.namespace;
    let outcome = match kube.get(&format!("/api/v1/namespaces/{ns}")).await {
        Ok(None) => Outcome::Success,
        // `kubectl apply` of the install over an existing one upgrades it in place, so this
        // only warns (Linkerd fails here, as its install is not re-applied so).
        Ok(Some(_)) => Outcome::warning(
            format!("the namespace {ns} already exists"),
            "`mesh check` (without --pre) checks an existing install; or pick --namespace",
        ),
        Err(e) => api_failed(&e),
    };
    setup.push(
        format!("control plane namespace {ns} does not already exist"),
        outcome,
    );

    let mut capability = Category::new("pre-kubernetes-capability");
    let mut discovered: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for (av, kind) in install.kinds() {
        if !discovered.contains_key(&av) {
            let path = group_version_path(&av);
            let list = kube.get(&path).await;
            let outcome = match &list {
                Ok(Some(_)) => Outcome::Success,
                Ok(None) => Outcome::error(
                    format!("the API server does not serve {av}"),
                    "mesh needs Kubernetes 1.22 or newer with this API enabled",
                ),
                Err(e) => api_failed(e),
            };
            capability.push(format!("the API server serves {av}"), outcome);
            discovered.insert(av.clone(), list.ok().flatten());
        }
        let served = discovered.get(&av).and_then(|l| served(l.as_ref()?, &kind));
        if let Some(served) = served {
            let outcome = can_create(kube, &av, &served, ns).await;
            setup.push(format!("can create {}", served.plural), outcome);
        }
    }
    vec![capability, setup]
}

fn group_version_path(api_version: &str) -> String {
    match api_version.contains('/') {
        true => format!("/apis/{api_version}"),
        false => format!("/api/{api_version}"),
    }
}

/// The resource serving `kind` in an APIResourceList (not a subresource).
fn served(list: &Value, kind: &str) -> Option<Served> {
    (list["resources"].as_array().into_iter().flatten())
        .filter(|r| r["kind"] == kind)
        .filter_map(|r| Some((r["name"].as_str()?, r)))
        .find(|(name, _)| !name.contains('/'))
        .map(|(name, r)| Served {
            plural: name.to_owned(),
            namespaced: r["namespaced"] == true,
        })
}

/// Asks the API server whether the caller may create `kind`, as `kubectl auth can-i` does.
async fn can_create(kube: &Kube, api_version: &str, served: &Served, ns: &str) -> Outcome {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let mut attributes = json!({"group": group, "resource": served.plural, "verb": "create"});
    if served.namespaced {
        attributes["namespace"] = json!(ns);
    }
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    });
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    match kube.create(path, &review).await {
        Ok(answer) if answer["status"]["allowed"] == true => Outcome::Success,
        Ok(answer) => {
            let reason = answer["status"]["reason"].as_str().unwrap_or("");
            let resource = match group {
                "" => served.plural.clone(),
                g => format!("{}.{g}", served.plural),
            };
            Outcome::error(
                format!("not allowed to create {resource} {reason}")
                    .trim_end()
                    .to_owned(),
                format!("install as a user who may: `kubectl auth can-i create {resource}`"),
            )
        }
        Err(e) => api_failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_finds_the_resource_not_its_subresources() {
        let list = json!({"resources": [
            {"name": "deployments/status", "kind": "Deployment", "namespaced": true},
            {"name": "deployments", "kind": "Deployment", "namespaced": true},
        ]});
        let s = served(&list, "Deployment").unwrap();
        assert_eq!((s.plural.as_str(), s.namespaced), ("deployments", true));
        assert!(served(&list, "Secret").is_none());
        assert_eq!(group_version_path("v1"), "/api/v1");
        assert_eq!(group_version_path("apps/v1"), "/apis/apps/v1");
    }
}
