//! The issuer (`mesh identity serve --kube`): its signing key, what it may do (TokenReview)
//! and its Deployment, with `/metrics`, `/ready` and `/live` on an admin port as Linkerd's
//! identity has.

use k8s_openapi::api::core::v1::{Container, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_norway::Value;

use super::{
    IDENTITY, IDENTITY_PORT, ISSUER_DIR, ISSUER_SECRET, InstallError, Pki, admin_probe, binding,
    container_port, control_plane_container, deployment, labels, mount, object_meta, pdb,
    secret_volume, service, strings, to_value,
};
use crate::identity::IssuerAccount;

/// Where the issuer serves its admin endpoint (Linkerd's identity uses the same port).
const ADMIN_PORT: i32 = 9990;

pub(super) fn docs(namespace: &str, image: &str, pki: &Pki) -> Result<Vec<Value>, InstallError> {
    let meta = |name: &str| object_meta(namespace, name);
    let mut docs = Vec::new();
    docs.push(to_value(&Secret {
        metadata: meta(ISSUER_SECRET),
        type_: Some("Opaque".to_owned()),
        string_data: Some(
            [
                ("ca.crt", &pki.trust_anchors),
                ("issuer.crt", &pki.issuer_crt),
                ("issuer.key", &pki.issuer_key),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect(),
        ),
        ..Secret::default()
    })?);
    docs.push(to_value(&ServiceAccount {
        metadata: meta(IDENTITY),
        ..ServiceAccount::default()
    })?);
    let cluster_meta = ObjectMeta {
        name: Some(format!("{IDENTITY}-{namespace}")),
        labels: Some(labels(IDENTITY)),
        ..ObjectMeta::default()
    };
    docs.push(to_value(&ClusterRole {
        metadata: cluster_meta.clone(),
        // The issuer authenticates a CSR by reviewing the pod's projected token.
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["authentication.k8s.io".to_owned()]),
            resources: Some(vec!["tokenreviews".to_owned()]),
            verbs: vec!["create".to_owned()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    })?);
    docs.push(to_value(&binding(&cluster_meta, namespace, IDENTITY))?);
    // The issuer's Deployment runs as the service account IDENTITY (see `deployment`).
    let issuer_account = IssuerAccount::new(namespace, IDENTITY);
    let issuer = Container {
        name: "identity".to_owned(),
        image: Some(image.to_owned()),
        // `--kube`: authenticate CSRs with TokenReview. The issuer names itself after the
        // namespace and service account it runs as; the DNS names of issued certificates keep
        // the default control namespace, which Linkerd-style policies already name.
        args: Some(strings(&[
            "identity",
            "serve",
            "--dir",
            ISSUER_DIR,
            "--listen",
            &format!("0.0.0.0:{IDENTITY_PORT}"),
            "--kube",
            "--service-account",
            &issuer_account.to_string(),
            "--admin-addr",
            &format!("0.0.0.0:{ADMIN_PORT}"),
        ])),
        ports: Some(vec![
            container_port("https", IDENTITY_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        readiness_probe: Some(admin_probe(ADMIN_PORT, "/ready")),
        liveness_probe: Some(admin_probe(ADMIN_PORT, "/live")),
        volume_mounts: Some(vec![mount(ISSUER_SECRET, ISSUER_DIR)]),
        ..control_plane_container()
    };
    docs.push(to_value(&deployment(
        meta(IDENTITY),
        IDENTITY,
        issuer,
        vec![secret_volume(ISSUER_SECRET)],
    ))?);
    docs.push(to_value(&service(
        meta(IDENTITY),
        IDENTITY_PORT,
        IDENTITY_PORT,
    ))?);
    docs.push(to_value(&pdb(meta(IDENTITY), IDENTITY))?);
    Ok(docs)
}
