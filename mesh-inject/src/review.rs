//! Answering a mutating AdmissionReview for a pod: JSON in, JSON out, with [`inject_pod`]'s
//! changes as a JSONPatch. Pure (no I/O), so `mesh injector` serves it and a fuzz target
//! feeds it whatever bytes it likes.
//!
//! Malformed input: a body that is not an `admission.k8s.io/v1` AdmissionReview with a
//! request uid is an `Err` ([`BadReview`], for a 400: there is no uid to answer to). A
//! well-formed review whose object cannot be injected (not a Pod, an unreadable spec, a bad
//! annotation) is answered `allowed: true` with no patch and a warning: the mesh never stops a
//! pod from being created.
//!
//! # Examples
//!
//! ```
//! use mesh_inject::review::review;
//! # let config = mesh_inject::InjectConfig {
//! #     image: "mesh:test".into(), sidecar: mesh_inject::SidecarMode::Native, cni: false,
//! #     identity_audience: "identity.mesh.io".into(),
//! #     identity_addr: "mesh-identity.mesh.svc.cluster.local:8443".into(),
//! #     controller_addr: "mesh-controller.mesh.svc.cluster.local:8090".into(),
//! #     controller_service_account: "mesh/mesh-controller".into(),
//! #     identity_service_account: "mesh/mesh-identity".into(),
//! #     trust_domain: "cluster.local".into(), trust_anchors: None,
//! #     inject_by_default: true, version: "0.0.0".into(),
//! # };
//! let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
//!   "request": {"uid": "u1", "object": {"spec": {"containers": [{"name": "app"}]}}}}"#;
//! let answer: serde_json::Value = serde_json::from_slice(&review(body, &config)?)?;
//! assert_eq!(answer["response"]["uid"], "u1");
//! assert_eq!(answer["response"]["patchType"], "JSONPatch");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::items::ListItems;
use crate::pod::{InjectConfig, Outcome, inject_pod};

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

/// The request of an AdmissionReview, as far as the webhooks read it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn {
    /// What the answer must carry back.
    pub uid: String,
    /// The kind of the object under review.
    pub kind: Option<GroupVersionKind>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: Option<String>,
    /// The namespace of the object, if it has one.
    pub namespace: Option<String>,
    /// The object as the client sent it (absent for DELETE).
    pub object: Option<Value>,
}

/// Which kind of object a review is about.
#[derive(Debug, Deserialize)]
pub struct GroupVersionKind {
    /// The API group, empty for core kinds such as Pod.
    #[serde(default)]
    pub group: String,
    /// The kind.
    pub kind: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut,
}

/// The answer to one AdmissionReview, before it is encoded ([`encode`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut {
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
    pub fn allowed(uid: String, warnings: Vec<String>) -> Self {
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
    pub fn refused(uid: String, status: Status) -> Self {
        Self {
            allowed: false,
            status: Some(status),
            ..Self::allowed(uid, Vec::new())
        }
    }
}

/// A request body the webhook cannot answer with a review, answered 400.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    /// Not UTF-8, so not JSON.
    #[error("not an AdmissionReview: not UTF-8 ({0})")]
    NotUtf8(std::str::Utf8Error),
    /// Not JSON of the review's shape.
    #[error("not an AdmissionReview: {0}")]
    Json(serde_json::Error),
    /// Another kind, or another version of it.
    #[error("not an AdmissionReview {ADMISSION_V1}: apiVersion {api_version:?}, kind {kind:?}")]
    Version {
        /// The body's `apiVersion`.
        api_version: String,
        /// The body's `kind`.
        kind: String,
    },
    /// A review with nothing to review.
    #[error("an AdmissionReview without a request")]
    NoRequest,
    /// The answer could not be encoded.
    #[error(transparent)]
    Encode(serde_json::Error),
}

/// Answers one AdmissionReview (JSON in, JSON out). `Err` is a body that is not a review
/// at all, for a 400.
pub fn review(body: &[u8], config: &InjectConfig) -> Result<Vec<u8>, BadReview> {
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
///
/// The body must be UTF-8 throughout, as JSON is (RFC 8259): serde_json checks only the
/// strings it keeps, so a byte that is not UTF-8 in a field nobody reads would otherwise pass.
pub fn request_of<R: DeserializeOwned>(body: &[u8]) -> Result<R, BadReview> {
    let text = std::str::from_utf8(body).map_err(BadReview::NotUtf8)?;
    let review: ReviewIn<R> = serde_json::from_str(text).map_err(BadReview::Json)?;
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
pub fn encode(response: ResponseOut) -> Result<Vec<u8>, BadReview> {
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
    // What the pod itself holds, before k8s-openapi fills in defaults (see `diff_typed`).
    let sent_meta = sent_keys(pod.get("metadata"));
    let sent_spec = sent_keys(pod.get("spec"));
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
    diff_typed(
        json(serde_json::to_value(&metadata))?,
        &json(serde_json::to_value(&*new_meta))?,
        sent_meta.as_ref(),
        "/metadata",
        &mut ops,
    );
    let old = json(serde_json::to_value(&spec))?;
    drop(spec);
    let new = json(serde_json::to_value(&*new_spec))?;
    drop(new_spec);
    diff_typed(old, &new, sent_spec.as_ref(), "/spec", &mut ops);
    Ok(Some(Value::Array(ops)))
}

/// The keys an object of the pod holds with a value, or None when it is not an object.
fn sent_keys(v: Option<&Value>) -> Option<BTreeSet<String>> {
    let map = v?.as_object()?;
    Some(
        map.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.clone())
            .collect(),
    )
}

/// [`diff`] of a typed object against its injected form, as a patch for the object as sent.
/// k8s-openapi gives a required field the pod left out its default (`containers: []`), and a
/// missing `metadata` an empty one; the patch must not address inside what the pod does not
/// hold, or the API server fails to apply it and the pod is not created. So fields the pod
/// did not send are added whole, and so is an object it did not send at all.
fn diff_typed(
    mut old: Value,
    new: &Value,
    sent: Option<&BTreeSet<String>>,
    path: &str,
    ops: &mut Vec<Value>,
) {
    let Some(sent) = sent else {
        ops.push(json!({"op": "add", "path": path, "value": new}));
        return;
    };
    if let Value::Object(map) = &mut old {
        map.retain(|k, _| sent.contains(k));
    }
    diff(&old, new, path, ops);
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
    use crate::pod::SidecarMode;

    fn config(by_default: bool) -> InjectConfig {
        InjectConfig {
            inject_by_default: by_default,
            ..crate::pod::tests::config(SidecarMode::Native)
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
            // Found by the admission_review fuzz target: bytes that are not UTF-8 in a string
            // the injector does not read passed serde_json, so the review was answered.
            b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\", \"request\": {\"uid\": \"u\", \"kind\": {\"group\": \"\", \"version\": \"\xf3\xf3v1\", \"kind\": \"Pod\"}, \"object\": {}}}",
        ] {
            assert!(review(body, &config(true)).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    /// The pod of `body` with the answer's patch applied.
    fn patched(body: &[u8], config: &InjectConfig) -> Value {
        let out: Value = serde_json::from_slice(&review(body, config).unwrap()).unwrap();
        let patch: ByteString = serde_json::from_value(out["response"]["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch.0).unwrap();
        let input: Value = serde_json::from_slice(body).unwrap();
        let mut pod = input["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch.0).unwrap();
        pod
    }

    #[test]
    fn the_patch_applies_to_a_pod_without_metadata() {
        for metadata in [None, Some(Value::Null)] {
            let mut pod = json!({"spec": {"containers": [{"name": "app"}]}});
            if let Some(m) = metadata {
                pod["metadata"] = m;
            }
            let pod = patched(&review_of(pod), &config(true));
            assert_eq!(pod["metadata"]["annotations"]["mesh.io/injected"], "true");
        }
    }

    #[test]
    fn the_patch_applies_to_a_spec_without_containers() {
        let legacy = InjectConfig {
            sidecar: SidecarMode::Legacy,
            ..config(true)
        };
        for spec in [json!({}), json!({"containers": null})] {
            let pod = json!({"metadata": {}, "spec": spec});
            let pod = patched(&review_of(pod), &legacy);
            assert_eq!(pod["spec"]["containers"][0]["name"], "mesh-proxy");
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
