//! What the test API server does for the kinds `mesh install` writes, as the real one does:
//! CRDs are established (and their kinds served), Secrets' `stringData` is stored as `data`,
//! and SelfSubjectAccessReviews are answered from an allow-list.

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::rest::{json_response, status};
use super::{ApiResource, ApiServer, Body, FieldValidation, Part, STANDARD, State, res};

/// The kinds `mesh install` (and `--crds`) writes, and SelfSubjectAccessReview, beside
/// [`STANDARD`] in [`ApiServer::for_install`].
pub(crate) const INSTALL: &[ApiResource] = &[
    res("", "v1", "Secret", "secrets", true),
    res("", "v1", "ServiceAccount", "serviceaccounts", true),
    res("apps", "v1", "Deployment", "deployments", true),
    res(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    res("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    res(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    res(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
    res(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    res(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    ),
];

// === impl ApiServer ===

impl ApiServer {
    /// Replaces an object's status through its `/status` subresource, as the controller that
    /// owns it (or the kubelet) does; through the object itself for a kind without one.
    pub(crate) fn set_status(
        &self,
        (group, plural): (&str, &str),
        namespace: &str,
        name: &str,
        status: Value,
    ) {
        let mut s = self.state.lock();
        let r = s.resource(group, plural).expect("a served kind");
        let key = (
            group.to_owned(),
            plural.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        );
        let part = if s.has_status(&r) {
            Part::Status
        } else {
            Part::Main
        };
        let mut v = match part {
            Part::Status => json!({}),
            Part::Main => s.objects.get(&key).cloned().expect("the object exists"),
        };
        v["status"] = status;
        if let Err(rsp) = s.write(&r, key, v, false, part, FieldValidation::Strict) {
            panic!(
                "the server refuses the status: {}",
                super::admission::refusal(*rsp)
            );
        }
    }

    /// Serves [`STANDARD`] and [`INSTALL`]: a cluster `mesh install` can be applied to.
    pub(crate) fn for_install() -> Self {
        Self::with_resources(&[STANDARD, INSTALL].concat())
    }

    /// SelfSubjectAccessReviews allow only these (group, resource, verb), `*` matching any.
    pub(crate) fn allow_only(&self, rights: &[(&str, &str, &str)]) {
        self.state.lock().allowed = Some(
            (rights.iter())
                .map(|(g, r, v)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
                .collect(),
        );
    }
}

/// Serves a CRD's kinds from now on, at each served version, and says so in its status, as
/// the API server's CRD controllers do. Names are leaked: they live as long as the test.
impl State {
    pub(super) fn establish(&mut self, crd: &mut Value) {
        let spec = &crd["spec"];
        let leak = |v: &Value| -> &'static str { v.as_str().unwrap_or("").to_owned().leak() };
        let (group, kind, plural) = (
            leak(&spec["group"]),
            leak(&spec["names"]["kind"]),
            leak(&spec["names"]["plural"]),
        );
        let namespaced = spec["scope"] == "Namespaced";
        self.declare(crd);
        let mut stored = Vec::new();
        for v in spec["versions"].as_array().into_iter().flatten() {
            if v["storage"] == true {
                stored.push(v["name"].clone());
            }
            let version = leak(&v["name"]);
            let served = v["served"] == true;
            let known = (self.resources.iter())
                .any(|r| r.group == group && r.version == version && r.plural == plural);
            if served && !known {
                self.resources
                    .push(res(group, version, kind, plural, namespaced));
            }
        }
        let condition = |t: &str, reason: &str| {
            json!({"type": t, "status": "True", "reason": reason,
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""})
        };
        crd["status"] = json!({
            "acceptedNames": spec["names"].clone(),
            "conditions": [
                condition("NamesAccepted", "NoConflicts"),
                condition("Established", "InitialNamesAccepted"),
            ],
            "storedVersions": stored,
        });
    }

    /// Stops serving a deleted CRD's kinds and deletes their objects.
    pub(super) fn unestablish(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or("").to_owned();
        let plural = crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        self.resources
            .retain(|r| !(r.group == group && r.plural == plural));
        self.undeclare(&group, &plural);
        self.objects
            .retain(|(g, p, _, _), _| !(*g == group && *p == plural));
    }
}

/// A Secret as stored: `stringData` merged into `data`, base64, as the API server does.
pub(super) fn secret_write(mut v: Value) -> Value {
    let Some(strings) = v.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return v;
    };
    if !v["data"].is_object() {
        v["data"] = json!({});
    }
    for (k, s) in strings.as_object().into_iter().flatten() {
        let bytes = k8s_openapi::ByteString(s.as_str().unwrap_or("").as_bytes().to_vec());
        v["data"][k] = serde_json::to_value(bytes).expect("base64 is a JSON string");
    }
    v
}

/// Answers a SelfSubjectAccessReview from the allow-list (everything when there is none), as
/// the RBAC authorizer would for the kubeconfig's user.
pub(super) fn access_review(s: &State, body: &Bytes) -> Response<Body> {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    let attrs = &review["spec"]["resourceAttributes"];
    if !attrs.is_object() && !review["spec"]["nonResourceAttributes"].is_object() {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.resourceAttributes: Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        );
    }
    let field = |k: &str| attrs[k].as_str().unwrap_or("").to_owned();
    let (group, resource, verb) = (field("group"), field("resource"), field("verb"));
    let allowed = match &s.allowed {
        None => true,
        Some(rights) => rights.iter().any(|(g, r, v)| {
            let m = |want: &str, have: &str| want == "*" || want == have;
            m(g, &group) && m(r, &resource) && m(v, &verb)
        }),
    };
    let mut st = json!({"allowed": allowed});
    if !allowed {
        st["reason"] = json!(format!("no rule grants {verb} on {resource}.{group}"));
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": review["spec"],
            "status": st,
        }),
    )
}
