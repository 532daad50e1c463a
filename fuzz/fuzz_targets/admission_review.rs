//! An AdmissionReview arrives from whoever reaches the injector's port. Answering it must
//! never panic, and any answer is one the API server can use: a JSON AdmissionReview v1 for
//! the same uid that allows the pod, and whose JSONPatch, if any, applies to the pod that was
//! sent (a patch that does not apply fails the pod's creation in the API server).
#![no_main]

use k8s_openapi::ByteString;
use libfuzzer_sys::fuzz_target;
use mesh_inject::review::review;
use mesh_inject::{InjectConfig, SidecarMode};
use serde_json::Value;

fn config(flags: u8) -> InjectConfig {
    InjectConfig {
        image: "mesh:fuzz".to_owned(),
        sidecar: if flags & 1 == 0 {
            SidecarMode::Native
        } else {
            SidecarMode::Legacy
        },
        cni: flags & 2 != 0,
        identity_audience: "identity.mesh.io".to_owned(),
        identity_addr: "mesh-identity.mesh.svc.cluster.local:8443".to_owned(),
        controller_addr: "mesh-controller.mesh.svc.cluster.local:8090".to_owned(),
        controller_service_account: "mesh/mesh-controller".to_owned(),
        identity_service_account: "mesh/mesh-identity".to_owned(),
        trust_domain: "cluster.local".to_owned(),
        trust_anchors: (flags & 4 != 0).then(|| "-----BEGIN CERTIFICATE-----\n".to_owned()),
        inject_by_default: flags & 8 != 0,
        version: "0.0.0".to_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the injector's flags, the rest is the request body.
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let Ok(out) = review(body, &config(flags)) else {
        return;
    };
    let out: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let input: Value = serde_json::from_slice(body).expect("an answered body is JSON");
    let response = &out["response"];
    assert_eq!(response["uid"], input["request"]["uid"]);
    assert_eq!(response["allowed"], true, "the injector never refuses a pod");
    if response.get("patch").is_none() {
        return;
    }
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: ByteString = serde_json::from_value(response["patch"].clone()).expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch.0).expect("a JSONPatch");
    let mut pod = input["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut pod, &patch.0) {
        panic!("the patch does not apply to the pod sent: {e}\npatch: {patch:?}");
    }
});
