//! The injector (`mesh injector`): its serving certificate, its Deployment (with `/metrics`,
//! `/ready` and `/live` on an admin port, as Linkerd's proxy injector has) and the webhook
//! configurations that point the API server at it.

use k8s_openapi::api::core::v1::{Container, Secret, ServiceAccount};
use serde_norway::Value;

use super::webhooks::{validating_webhook_configuration, webhook_configuration};
use super::{
    IDENTITY, IDENTITY_PORT, INJECTOR, INJECTOR_PORT, INJECTOR_TLS_DIR, INJECTOR_TLS_SECRET,
    InstallError, Pki, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_DIR, TRUST_ROOTS_KEY, admin_probe,
    configmap_volume, container_port, control_plane_container, controller, deployment, mount,
    object_meta, pdb, secret_volume, service, strings, to_value,
};
use crate::identity::IssuerAccount;

/// Where the injector serves its admin endpoint (Linkerd's proxy injector uses the same port).
const ADMIN_PORT: i32 = 9995;

pub(super) fn docs(namespace: &str, image: &str, pki: &Pki) -> Result<Vec<Value>, InstallError> {
    let meta = |name: &str| object_meta(namespace, name);
    let issuer_account = IssuerAccount::new(namespace, IDENTITY);
    let mut docs = Vec::new();
    docs.push(to_value(&ServiceAccount {
        metadata: meta(INJECTOR),
        // It calls no API: no token is mounted.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })?);
    docs.push(to_value(&Secret {
        metadata: meta(INJECTOR_TLS_SECRET),
        type_: Some("kubernetes.io/tls".to_owned()),
        string_data: Some(
            [("tls.crt", &pki.webhook_crt), ("tls.key", &pki.webhook_key)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect(),
        ),
        ..Secret::default()
    })?);
    let injector = Container {
        name: "injector".to_owned(),
        image: Some(image.to_owned()),
        args: Some(strings(&[
            "injector",
            "--listen",
            &format!("0.0.0.0:{INJECTOR_PORT}"),
            "--tls-dir",
            INJECTOR_TLS_DIR,
            "--image",
            image,
            "--identity-addr",
            &format!("{IDENTITY}.{namespace}.svc.cluster.local:{IDENTITY_PORT}"),
            "--identity-service-account",
            &issuer_account.to_string(),
            "--controller-addr",
            &format!(
                "{}.{namespace}.svc.cluster.local:8090",
                controller::CONTROLLER
            ),
            "--controller-service-account",
            &format!("{namespace}/{}", controller::CONTROLLER),
            "--trust-anchors",
            &format!("{TRUST_ROOTS_DIR}/{TRUST_ROOTS_KEY}"),
            "--trust-domain",
            &pki.trust_domain,
            "--admin-addr",
            &format!("0.0.0.0:{ADMIN_PORT}"),
        ])),
        ports: Some(vec![
            container_port("https", INJECTOR_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        readiness_probe: Some(admin_probe(ADMIN_PORT, "/ready")),
        liveness_probe: Some(admin_probe(ADMIN_PORT, "/live")),
        volume_mounts: Some(vec![
            mount(INJECTOR_TLS_SECRET, INJECTOR_TLS_DIR),
            mount(TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_DIR),
        ]),
        ..control_plane_container()
    };
    let mut injector_deploy = deployment(
        meta(INJECTOR),
        INJECTOR,
        injector,
        vec![
            secret_volume(INJECTOR_TLS_SECRET),
            configmap_volume(TRUST_ROOTS_CONFIGMAP),
        ],
    );
    if let Some(spec) = injector_deploy.spec.template.spec.as_mut() {
        spec.service_account_name = Some(INJECTOR.to_owned());
        spec.automount_service_account_token = Some(false);
    }
    docs.push(to_value(&injector_deploy)?);
    docs.push(to_value(&service(meta(INJECTOR), 443, INJECTOR_PORT))?);
    docs.push(to_value(&pdb(meta(INJECTOR), INJECTOR))?);
    docs.push(to_value(&webhook_configuration(namespace, pki))?);
    docs.push(to_value(&validating_webhook_configuration(namespace, pki))?);
    Ok(docs)
}
