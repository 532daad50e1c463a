//! `POST /validate` on `mesh injector`: the validating admission webhook for the policy kinds.
//!
//! An object of a kind mesh reads is checked alone, by the same per-object check `mesh policy
//! check` runs on each document of a file (a fresh [`PolicyIndex`]), so `kubectl apply`
//! refuses what CI would: `allowed: false`, `status.code` 422, `status.reason` `Invalid`, and
//! a message naming every error by field path and why, worded as `mesh policy check` words
//! it. A valid object is allowed, its notes sent as warnings (kubectl prints them).
//!
//! A Gateway API route whose parents are all Gateways is left to that Gateway's controller.
//! Only what the object says about itself is checked: a route whose parent Service does not
//! exist yet is allowed, since the cluster's order of creation is not the user's mistake.
//! DELETE is always allowed, and so is a kind mesh does not read. A body that is not a review
//! gets 400 from the injector, and `mesh install` registers the webhook with
//! `failurePolicy: Ignore`: a bug or an outage of ours never blocks a policy change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use mesh_core::kinds::{self, catalog};
use mesh_core::{ApplyError, LoadError, ObjectRef, ObjectStatus, PolicyConfig, PolicyIndex};
use serde_json::Value;

use mesh_inject::review::{BadReview, RequestIn, ResponseOut, encode, request_of};

/// What the webhook says about one request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Allowed, with notes for the user.
    Allowed { warnings: Vec<String> },
    /// Refused: the object and every error in it.
    Refused {
        object: ObjectRef,
        errors: Vec<LoadError>,
    },
}

/// Answers one AdmissionReview (JSON in, JSON out). `Err` is a body that is not a review at
/// all, for a 400.
pub(crate) fn review(body: &[u8]) -> Result<Vec<u8>, BadReview> {
    let request: RequestIn = request_of(body)?;
    let response = match verdict(&request) {
        Verdict::Allowed { warnings } => ResponseOut::allowed(request.uid, warnings),
        Verdict::Refused { object, errors } => {
            ResponseOut::refused(request.uid, invalid(&object, &errors))
        }
    };
    encode(response)
}

fn verdict(request: &RequestIn) -> Verdict {
    let allowed = Verdict::Allowed {
        warnings: Vec::new(),
    };
    // Deleting a policy object is never ours to stop, however wrong the object is.
    if request.operation.as_deref() == Some("DELETE") {
        return allowed;
    }
    let Some(object) = &request.object else {
        return allowed;
    };
    let Some(kind) = kind_of(request, object) else {
        return allowed;
    };
    if !for_the_mesh(kind, object) {
        return allowed;
    }
    // The API server sets the namespace before admission; a review built by hand may not.
    let mut object = object.clone();
    if let (Some(ns), Some(meta)) = (&request.namespace, object.get_mut("metadata"))
        && let Some(meta) = meta.as_object_mut()
    {
        meta.entry("namespace")
            .or_insert_with(|| Value::String(ns.clone()));
    }
    let object_ref = ObjectRef {
        group: kind.group.to_owned(),
        kind: kind.kind.to_owned(),
        namespace: metadata_str(&object, "namespace"),
        name: metadata_str(&object, "name"),
    };
    // Objects are checked alone, so a fresh index holds nothing else to link against.
    let mut index = PolicyIndex::new(PolicyConfig::default());
    match index.apply(&object) {
        Ok(_) => {
            let warnings = match index.status(&object_ref) {
                Some(ObjectStatus::Accepted { notes }) => notes
                    .iter()
                    .map(|n| match &n.resource {
                        Some(r) => format!("mesh: {r}: {}", n.message),
                        None => format!("mesh: {}", n.message),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Verdict::Allowed { warnings }
        }
        Err(ApplyError::Refused { object, errors }) => Verdict::Refused { object, errors },
        // A kind mesh reads, but not an object it can name (no name, a version it does not
        // read): `mesh policy check` refuses it too.
        Err(ApplyError::Unidentified(e)) => Verdict::Refused {
            object: object_ref,
            errors: vec![e],
        },
    }
}

/// The catalog's row for the object's kind, from the review (or the object itself, for a
/// review that does not say); `None` for a kind mesh does not read.
fn kind_of(request: &RequestIn, object: &Value) -> Option<&'static catalog::KindInfo> {
    if let Some(k) = &request.kind {
        return catalog::by_group_kind(&k.group, &k.kind);
    }
    let api_version = object.get("apiVersion").and_then(Value::as_str)?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    catalog::by_group_kind(group, object.get("kind").and_then(Value::as_str)?)
}

/// Whether the mesh is the implementation that reads this object. A Gateway API route whose
/// parents are all Gateways belongs to that Gateway's controller, whose rules (its regex
/// dialect, its filters) may differ from ours: refusing it would block another team's ingress.
fn for_the_mesh(kind: &catalog::KindInfo, object: &Value) -> bool {
    if kind.group != "gateway.networking.k8s.io" {
        return true;
    }
    let parents = object
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    parents.iter().any(|p| {
        let field = |k: &str| p.get(k).and_then(Value::as_str);
        kinds::route_parent(field("group"), field("kind")) != kinds::RouteParent::Other
    })
}

fn metadata_str(object: &Value, key: &str) -> String {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// An error as `mesh policy check` prints it, less its place in a file: one object in a
/// review has no documents or lines.
fn describe(e: &LoadError) -> String {
    let mut out = String::new();
    if let Some(r) = &e.resource {
        out.push_str(r);
        out.push_str(": ");
    }
    if let Some(field) = &e.field {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(&e.message);
    out
}

/// The Status of a refusal: kubectl prints its message; the causes carry each field path for
/// tools that read them.
fn invalid(object: &ObjectRef, errors: &[LoadError]) -> Status {
    let n = errors.len();
    let mut message = format!(
        "mesh policy check: {n} error{} in {} {}/{}",
        if n == 1 { "" } else { "s" },
        object.kind,
        object.namespace,
        object.name
    );
    for e in errors {
        message.push_str("\n  error: ");
        message.push_str(&describe(e));
    }
    let causes = errors
        .iter()
        .map(|e| StatusCause {
            field: e.field.clone(),
            message: Some(e.message.clone()),
            reason: Some("FieldValueInvalid".to_owned()),
        })
        .collect();
    Status {
        code: Some(422),
        reason: Some("Invalid".to_owned()),
        status: Some("Failure".to_owned()),
        message: Some(message),
        details: Some(StatusDetails {
            group: Some(object.group.clone()),
            kind: Some(object.kind.clone()),
            name: Some(object.name.clone()),
            causes: Some(causes),
            ..StatusDetails::default()
        }),
        ..Status::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn review_of(operation: &str, kind: (&str, &str), object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "b0b5b1a4-0000-4000-8000-000000000001",
                "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
                "namespace": "shop",
                "operation": operation,
                "object": object,
            }
        }))
        .unwrap()
    }

    fn answer(body: &[u8]) -> Value {
        serde_json::from_slice(&review(body).unwrap()).unwrap()
    }

    fn route(regex: &str) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "api", "uid": "1", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "spec": {
                "parentRefs": [{"name": "web", "kind": "Service", "group": ""}],
                "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": regex}}]}],
            },
            "status": {"parents": []},
        })
    }

    const GATEWAY: (&str, &str) = ("gateway.networking.k8s.io", "HTTPRoute");

    #[test]
    fn an_invalid_route_is_refused_with_every_field_and_why() {
        let out = answer(&review_of("CREATE", GATEWAY, route("/api/([")));
        let r = &out["response"];
        assert_eq!(r["uid"], "b0b5b1a4-0000-4000-8000-000000000001");
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 422);
        assert_eq!(r["status"]["reason"], "Invalid");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.contains("HTTPRoute shop/api"), "{message}");
        assert!(
            message.contains("spec.rules[0].matches[0].path"),
            "{message}"
        );
        assert!(r["status"]["details"]["causes"][0]["field"].is_string());
    }

    #[test]
    fn a_valid_route_on_update_is_allowed_with_server_fields_present() {
        let r = &answer(&review_of("UPDATE", GATEWAY, route("/api/.*")))["response"];
        assert_eq!(r["allowed"], true, "{r}");
        assert!(r.get("status").is_none());
    }

    #[test]
    fn deletes_and_kinds_mesh_does_not_read_are_allowed() {
        let r = &answer(&review_of("DELETE", GATEWAY, Value::Null))["response"];
        assert_eq!(r["allowed"], true);
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": {"anything": [1, 2]}});
        let r = &answer(&review_of("CREATE", ("example.com", "Widget"), widget))["response"];
        assert_eq!(r["allowed"], true);
        assert!(r.get("warnings").is_none(), "{r}");
    }

    #[test]
    fn routes_for_a_gateway_are_left_to_its_controller() {
        let mut gateway_route = route("/api/([");
        gateway_route["spec"]["parentRefs"] = serde_json::json!([{ "name": "ingress" }]);
        let r = &answer(&review_of("CREATE", GATEWAY, gateway_route))["response"];
        assert_eq!(r["allowed"], true, "{r}");
        // `kind: Service` without a group is the core Service to the mesh, so it is checked.
        let mut mesh_route = route("/api/([");
        mesh_route["spec"]["parentRefs"] =
            serde_json::json!([{ "name": "web", "kind": "Service" }]);
        let r = &answer(&review_of("CREATE", GATEWAY, mesh_route))["response"];
        assert_eq!(r["allowed"], false, "{r}");
    }

    #[test]
    fn malformed_reviews_are_errors() {
        assert!(review(b"{not json").is_err());
        assert!(
            review(br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#).is_err()
        );
    }
}
