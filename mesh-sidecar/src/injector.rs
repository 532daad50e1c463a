//! `mesh injector`: the mutating admission webhook that adds the mesh to pods as they are
//! created, with the same [`inject_pod`] as `mesh inject`.
//!
//! Routes (HTTPS only, HTTP/1.1):
//! - `POST /inject`: inject pods annotated `mesh.io/inject: enabled` (or `linkerd.io/inject`),
//!   and, with `--default-inject`, every pod not annotated disabled.
//! - `POST /inject/enabled`: for namespaces `mesh install`'s webhook selects by the label
//!   `mesh.io/inject=enabled`: inject every pod not annotated disabled. An AdmissionReview
//!   carries no namespace metadata, so the namespace's choice arrives as the path.
//! - `POST /validate`: the validating webhook for the policy kinds ([`crate::validate`]).
//! - `GET /ready`, `GET /live`: probes.
//!
//! Malformed input: a body that is not an `admission.k8s.io/v1` AdmissionReview with a
//! request uid gets HTTP 400 and a plain-text message (there is no uid to answer to; the API
//! server then applies the webhook's failurePolicy, `Ignore`). A well-formed review whose
//! object cannot be injected (not a Pod, an unreadable spec, a bad annotation) is answered
//! `allowed: true` with no patch and a warning: the mesh never stops a pod from being created.
//!
//! Bounds (flags, with defaults): a review over `--max-review-bytes` gets 413 (before it is
//! read when it declares its length, else as soon as it passes the limit), a body not whole
//! within `--body-read-timeout` gets 408, headers slower than `--header-read-timeout` close
//! the connection, and past `--max-connections` new connections are closed on accept. Each
//! refusal closes its connection: the unread rest of a body is not a next request.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::inject::items::ListItems;
use crate::inject::{InjectConfig, Outcome, inject_pod};

mod server;

pub(crate) use server::{InjectorArgs, run};

/// The API server refuses requests over 3 MiB, so no honest review is larger; a larger body
/// is refused before it is parsed, since parsing costs a hundred times its size in memory.
pub(crate) const DEFAULT_MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
const ADMISSION_V1: &str = "admission.k8s.io/v1";
/// The most list items (containers, env vars, volumes, ports… counted together, at any
/// depth) of a pod spec the injector types and patches. Typed, an item costs up to kilobytes
/// whatever its JSON costs (k8s-openapi's `Container` and `EnvVar` hold every field inline):
/// 3 MiB of `{"name":"cN"}` items took 300-550 MiB per review, where the install gives the
/// injector 256 Mi. No real pod comes near this; one past it is let through unpatched with a
/// warning, not an OOM that would let every pod through unmeshed (`failurePolicy: Ignore`).
const MAX_SPEC_ITEMS: usize = 10_000;
/// The part of an AdmissionReview the injector reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<R> {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<R>,
}

/// A first, allocation-light look at a review: how large its pod's spec is.
#[derive(Debug, Deserialize)]
struct SizeIn {
    uid: String,
    object: Option<ObjectSizeIn>,
}

#[derive(Debug, Deserialize)]
struct ObjectSizeIn {
    spec: Option<ListItems>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestIn {
    pub(crate) uid: String,
    pub(crate) kind: Option<GroupVersionKind>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub(crate) operation: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) object: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GroupVersionKind {
    #[serde(default)]
    pub(crate) group: String,
    pub(crate) kind: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResponseOut {
    uid: String,
    allowed: bool,
    /// Why a request is refused; the API server shows its message to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// k8s-openapi's ByteString serialises as base64, as the API server expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<ByteString>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

// === impl ResponseOut ===

impl ResponseOut {
    /// Allowed, with warnings (kubectl prints them).
    pub(crate) fn allowed(uid: String, warnings: Vec<String>) -> Self {
        Self {
            uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings,
        }
    }

    /// Refused, for the reason `status` gives.
    pub(crate) fn refused(uid: String, status: Status) -> Self {
        Self {
            allowed: false,
            status: Some(status),
            ..Self::allowed(uid, Vec::new())
        }
    }
}

/// A request body the webhook cannot answer with a review, answered 400.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadReview {
    /// Not JSON of the review's shape.
    #[error("not an AdmissionReview: {0}")]
    Json(serde_json::Error),
    /// Another kind, or another version of it.
    #[error("not an AdmissionReview {ADMISSION_V1}: apiVersion {api_version:?}, kind {kind:?}")]
    Version { api_version: String, kind: String },
    /// A review with nothing to review.
    #[error("an AdmissionReview without a request")]
    NoRequest,
    /// The answer could not be encoded.
    #[error(transparent)]
    Encode(serde_json::Error),
}

/// Answers one AdmissionReview (JSON in, JSON out). `Err` is a body that is not a review
/// at all, for a 400.
pub(crate) fn review(body: &[u8], config: &InjectConfig) -> Result<Vec<u8>, BadReview> {
    // Counted before anything is built: a pod past the cap never becomes a tree.
    let size: SizeIn = request_of(body)?;
    let items = size.object.and_then(|o| o.spec).unwrap_or_default().0;
    if items > MAX_SPEC_ITEMS {
        let why = format!(
            "mesh: not injected: its spec holds {items} list items, more than the \
             {MAX_SPEC_ITEMS} the injector reads"
        );
        return encode(ResponseOut::allowed(size.uid, vec![why]));
    }
    let mut request: RequestIn = request_of(body)?;
    let mut response = ResponseOut::allowed(std::mem::take(&mut request.uid), Vec::new());
    match patch_for(request, config) {
        Ok(Some(patch)) => {
            let bytes = serde_json::to_vec(&patch).map_err(BadReview::Encode)?;
            response.patch_type = Some("JSONPatch");
            response.patch = Some(ByteString(bytes));
        }
        Ok(None) => {}
        Err(why) => response.warnings.push(format!("mesh: not injected: {why}")),
    }
    encode(response)
}

/// The request of an `admission.k8s.io/v1` AdmissionReview.
pub(crate) fn request_of<R: DeserializeOwned>(body: &[u8]) -> Result<R, BadReview> {
    let review: ReviewIn<R> = serde_json::from_slice(body).map_err(BadReview::Json)?;
    if review.kind.as_deref() != Some("AdmissionReview")
        || review.api_version.as_deref() != Some(ADMISSION_V1)
    {
        return Err(BadReview::Version {
            api_version: review.api_version.unwrap_or_default(),
            kind: review.kind.unwrap_or_default(),
        });
    }
    review.request.ok_or(BadReview::NoRequest)
}

/// The AdmissionReview that answers with `response`.
pub(crate) fn encode(response: ResponseOut) -> Result<Vec<u8>, BadReview> {
    serde_json::to_vec(&ReviewOut {
        api_version: ADMISSION_V1,
        kind: "AdmissionReview",
        response,
    })
    .map_err(BadReview::Encode)
}

/// The JSONPatch that injects the review's pod, None when it is to be left alone.
///
/// Memory: a review at the size limit holds tens of thousands of containers, so each form of
/// the pod is dropped as soon as the next is built (the JSON tree once typed, the typed
/// specs once turned back into trees to diff) instead of all living until the end.
fn patch_for(request: RequestIn, config: &InjectConfig) -> Result<Option<Value>, String> {
    if let Some(k) = &request.kind
        && !(k.group.is_empty() && k.kind == "Pod")
    {
        return Err(format!("a {} is not a Pod", k.kind));
    }
    let mut pod = request.object.ok_or("the request has no object")?;
    let metadata: ObjectMeta = match pod.get_mut("metadata").map(Value::take) {
        None | Some(Value::Null) => ObjectMeta::default(),
        Some(m) => serde_json::from_value(m).map_err(|e| format!("metadata: {e}"))?,
    };
    let spec: PodSpec = match pod.get_mut("spec").map(Value::take) {
        Some(s) => serde_json::from_value(s).map_err(|e| format!("spec: {e}"))?,
        None => return Err("the pod has no spec".to_owned()),
    };
    drop(pod);
    // The namespace's annotations are not in the review; its choice came as the path.
    let outcome =
        inject_pod(&metadata, &spec, &BTreeMap::new(), config).map_err(|e| e.to_string())?;
    let Outcome::Injected {
        metadata: new_meta,
        spec: new_spec,
    } = outcome
    else {
        return Ok(None);
    };
    // Diff what k8s-openapi read against what injection wrote, not against the raw object:
    // fields this build does not model appear in neither, so no operation touches them.
    let json = |r: serde_json::Result<Value>| r.map_err(|e| e.to_string());
    let mut ops = Vec::new();
    diff(
        &json(serde_json::to_value(&metadata))?,
        &json(serde_json::to_value(&*new_meta))?,
        "/metadata",
        &mut ops,
    );
    let old = json(serde_json::to_value(&spec))?;
    drop(spec);
    let new = json(serde_json::to_value(&*new_spec))?;
    drop(new_spec);
    diff(&old, &new, "/spec", &mut ops);
    Ok(Some(Value::Array(ops)))
}

/// JSONPatch operations turning `left` into `right`. Arrays that only grew get `add`s at the
/// front or the end, so the elements already there are never rewritten in place (a
/// positional diff would rewrite every element after an insertion at the front).
fn diff(left: &Value, right: &Value, path: &str, ops: &mut Vec<Value>) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (k, rv) in r {
                let p = format!("{path}/{}", escape(k));
                match l.get(k) {
                    Some(lv) => diff(lv, rv, &p, ops),
                    None => ops.push(json!({"op": "add", "path": p, "value": rv})),
                }
            }
            for k in l.keys().filter(|k| !r.contains_key(*k)) {
                ops.push(json!({"op": "remove", "path": format!("{path}/{}", escape(k))}));
            }
        }
        (Value::Array(l), Value::Array(r)) if l == r => {}
        (Value::Array(l), Value::Array(r)) if r.len() > l.len() && r.ends_with(l) => {
            for (i, v) in r[..r.len() - l.len()].iter().enumerate() {
                ops.push(json!({"op": "add", "path": format!("{path}/{i}"), "value": v}));
            }
        }
        (Value::Array(l), Value::Array(r)) if r.len() > l.len() && r.starts_with(l) => {
            for v in &r[l.len()..] {
                ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": v}));
            }
        }
        (l, r) if l == r => {}
        (_, r) => ops.push(json!({"op": "replace", "path": path, "value": r})),
    }
}

/// RFC 6901: `~` and `/` in a key are escaped (annotation keys are full of `/`).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::SidecarMode;

    fn config(by_default: bool) -> InjectConfig {
        InjectConfig {
            image: "mesh:test".to_owned(),
            sidecar: SidecarMode::Native,
            cni: false,
            identity_audience: "identity.mesh.io".to_owned(),
            controller_addr: "mesh-controller.mesh.svc.cluster.local:8090".to_owned(),
            controller_service_account: "mesh/mesh-controller".to_owned(),
            identity_addr: "mesh-identity.mesh.svc.cluster.local:8443".to_owned(),
            identity_service_account: "mesh/mesh-identity".to_owned(),
            trust_domain: mesh_core::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            trust_anchors: None,
            inject_by_default: by_default,
            version: "0.0.0".to_owned(),
        }
    }

    fn review_of(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "object": object,
            }
        }))
        .unwrap()
    }

    fn answer(body: &[u8], by_default: bool) -> Value {
        serde_json::from_slice(&review(body, &config(by_default)).unwrap()).unwrap()
    }

    #[test]
    fn answers_with_the_uid_and_a_base64_json_patch() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
            "annotations": {"mesh.io/inject": "enabled"}},
            "spec": {"containers": [{"name": "app"}]}});
        let out = answer(&review_of(pod), false);
        let r = &out["response"];
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        // Base64 of a JSON array.
        let patch: ByteString = serde_json::from_value(r["patch"].clone()).unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch.0).unwrap();
        assert!(
            ops.iter()
                .any(|o| o["path"] == "/metadata/annotations/mesh.io~1injected")
        );
        assert!(ops.iter().any(|o| o["path"] == "/spec/initContainers"));
    }

    #[test]
    fn pods_without_an_annotation_follow_the_default() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        assert!(answer(&review_of(pod.clone()), false)["response"]["patch"].is_null());
        assert!(answer(&review_of(pod), true)["response"]["patch"].is_string());
        let off = json!({"metadata": {"annotations": {"linkerd.io/inject": "disabled"}},
            "spec": {"containers": [{"name": "app"}]}});
        assert!(answer(&review_of(off), true)["response"]["patch"].is_null());
    }

    #[test]
    fn unreadable_objects_are_allowed_with_a_warning() {
        for object in [
            json!({"metadata": {}, "spec": {"containers": "nope"}}),
            json!({"metadata": {"annotations": {"mesh.io/inject": "maybe"}},
                "spec": {"containers": []}}),
            json!({"metadata": {}}),
        ] {
            let r = &answer(&review_of(object), true)["response"];
            assert_eq!(r["allowed"], true);
            assert!(r["patch"].is_null());
            assert!(
                r["warnings"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("mesh: not injected")
            );
        }
    }

    #[test]
    fn malformed_reviews_are_errors() {
        for body in [
            &b"not json"[..],
            br#"{"apiVersion": "v1", "kind": "Pod"}"#,
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}"#,
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}"#,
        ] {
            assert!(review(body, &config(true)).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn growing_arrays_become_inserts_not_rewrites() {
        let mut ops = Vec::new();
        diff(
            &json!({"a": [1, 2], "b": [1], "c": {"x/y": 1}}),
            &json!({"a": [0, 1, 2], "b": [1, 2], "c": {"x/y": 2}}),
            "",
            &mut ops,
        );
        assert_eq!(
            ops,
            [
                json!({"op": "add", "path": "/a/0", "value": 0}),
                json!({"op": "add", "path": "/b/-", "value": 2}),
                json!({"op": "replace", "path": "/c/x~1y", "value": 2}),
            ]
        );
    }
}
