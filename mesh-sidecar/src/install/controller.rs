//! `mesh controller` in the install: the only component that reads the cluster, so the only
//! one with RBAC on the mesh's kinds; proxies need none.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection, Volume,
    VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_core::canary::TargetKind;
use serde_norway::Value;

use super::{
    IDENTITY, IDENTITY_PORT, InstallError, Pki, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_DIR,
    TRUST_ROOTS_KEY, admin_probe, binding, configmap_volume, container_port,
    control_plane_container, deployment, grant, labels, mount, object_meta, selector, service,
    strings, to_value,
};
use crate::identity::IssuerAccount;
use crate::kube_watch::KINDS;

pub(super) const CONTROLLER: &str = "mesh-controller";
const GRPC_PORT: i32 = 8090;
const ADMIN_PORT: i32 = 9996;
const TOKEN_VOLUME: &str = "mesh-identity-token";
const TOKEN_DIR: &str = "/var/run/secrets/mesh/identity";
/// The audience the issuer accepts (`mesh inject --identity-audience`'s default).
const IDENTITY_AUDIENCE: &str = "identity.mesh.io";

/// The controller's ServiceAccount, ClusterRole and binding, Deployment, Service and PDB.
pub(super) fn docs(namespace: &str, image: &str, pki: &Pki) -> Result<Vec<Value>, InstallError> {
    let meta = |name: &str| object_meta(namespace, name);
    let cluster_meta = ObjectMeta {
        name: Some(format!("{CONTROLLER}-{namespace}")),
        labels: Some(labels(CONTROLLER)),
        ..ObjectMeta::default()
    };
    let mut docs = vec![to_value(&ServiceAccount {
        metadata: meta(CONTROLLER),
        ..ServiceAccount::default()
    })?];
    docs.push(to_value(&ClusterRole {
        metadata: cluster_meta.clone(),
        rules: Some(rules()),
        ..ClusterRole::default()
    })?);
    docs.push(to_value(&binding(&cluster_meta, namespace, CONTROLLER))?);
    docs.extend(lease_rbac(namespace)?);
    let container = container(namespace, image, pki);
    let volumes = vec![token_volume(), configmap_volume(TRUST_ROOTS_CONFIGMAP)];
    docs.push(to_value(&deployment(
        meta(CONTROLLER),
        CONTROLLER,
        container,
        volumes,
    ))?);
    let mut svc = service(meta(CONTROLLER), GRPC_PORT, GRPC_PORT);
    if let Some(port) = svc
        .spec
        .as_mut()
        .and_then(|s| s.ports.as_mut())
        .and_then(|p| p.first_mut())
    {
        port.name = Some("grpc".to_owned());
        // gRPC over mesh mTLS: Kubernetes and meshes that look at appProtocol see HTTP/2.
        port.app_protocol = Some("kubernetes.io/h2c".to_owned());
    }
    docs.push(to_value(&svc)?);
    docs.push(to_value(&PodDisruptionBudget {
        metadata: meta(CONTROLLER),
        spec: Some(PodDisruptionBudgetSpec {
            // One of the two replicas serves proxies through a drain or a rollout.
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(CONTROLLER)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })?);
    Ok(docs)
}

/// Read every kind the controller watches; write the status of the mesh's own and Gateway
/// API kinds; record Events.
fn rules() -> Vec<PolicyRule> {
    let mut read: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    for k in KINDS.iter() {
        read.entry(k.group).or_default().insert(k.plural);
    }
    let rule = |group: &str, resources: Vec<String>, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources),
        verbs: strings(verbs),
        ..PolicyRule::default()
    };
    let mut rules: Vec<PolicyRule> = (read.iter())
        .map(|(group, plurals)| {
            let resources = plurals.iter().map(|p| (*p).to_owned()).collect();
            rule(group, resources, &["get", "list", "watch"])
        })
        .collect();
    for (group, plurals) in read
        .iter()
        .filter(|(g, _)| !matches!(**g, "" | "discovery.k8s.io"))
    {
        let resources = plurals.iter().map(|p| format!("{p}/status")).collect();
        rules.push(rule(group, resources, &["get", "patch", "update"]));
    }
    // Canaries move the weights of the routes and TrafficSplits they target.
    let targets = [
        TargetKind::HttpRoute,
        TargetKind::LinkerdHttpRoute,
        TargetKind::GrpcRoute,
        TargetKind::TrafficSplit,
    ];
    let mut moved: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    for t in targets {
        if let Some(k) = (KINDS.iter()).find(|k| k.group == t.group() && k.kind == t.kind()) {
            moved.entry(k.group).or_default().insert(k.plural);
        }
    }
    for (group, plurals) in moved {
        let resources = plurals.iter().map(|p| (*p).to_owned()).collect();
        rules.push(rule(group, resources, &["update"]));
    }
    for group in ["", "events.k8s.io"] {
        rules.push(rule(group, strings(&["events"]), &["create", "patch"]));
    }
    rules
}

/// The replicas elect the one that drives canaries with a Lease in the control plane's
/// namespace: a Role there, not a cluster-wide grant.
fn lease_rbac(namespace: &str) -> Result<Vec<Value>, InstallError> {
    let meta = object_meta(namespace, &format!("{CONTROLLER}-leader-election"));
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(strings(&["coordination.k8s.io"])),
            resources: Some(strings(&["leases"])),
            verbs: strings(&["get", "create", "update"]),
            ..PolicyRule::default()
        }]),
    };
    let (role_ref, subjects) = grant("Role", &meta, namespace, CONTROLLER);
    let binding = RoleBinding {
        metadata: meta,
        role_ref,
        subjects,
    };
    Ok(vec![to_value(&role)?, to_value(&binding)?])
}

fn container(namespace: &str, image: &str, pki: &Pki) -> Container {
    let issuer_account = IssuerAccount::new(namespace, IDENTITY);
    Container {
        name: "controller".to_owned(),
        image: Some(image.to_owned()),
        args: Some(strings(&[
            "controller",
            "--grpc-addr",
            &format!("0.0.0.0:{GRPC_PORT}"),
            "--admin-addr",
            &format!("0.0.0.0:{ADMIN_PORT}"),
            "--identity-issuer",
            &format!("{IDENTITY}.{namespace}.svc.cluster.local:{IDENTITY_PORT}"),
            "--identity-token-file",
            &format!("{TOKEN_DIR}/token"),
            "--identity-service-account",
            &issuer_account.to_string(),
            "--trust-anchors",
            &format!("{TRUST_ROOTS_DIR}/{TRUST_ROOTS_KEY}"),
            "--trust-domain",
            &pki.trust_domain,
            "--leader-election-namespace",
            namespace,
        ])),
        ports: Some(vec![
            container_port("grpc", GRPC_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        // Ready once every kind is listed: a proxy never gets half a picture.
        readiness_probe: Some(admin_probe(ADMIN_PORT, "/ready")),
        liveness_probe: Some(admin_probe(ADMIN_PORT, "/live")),
        volume_mounts: Some(vec![
            mount(TOKEN_VOLUME, TOKEN_DIR),
            mount(TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_DIR),
        ]),
        ..control_plane_container()
    }
}

/// The token the controller shows the issuer for its certificate.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(IDENTITY_AUDIENCE.to_owned()),
                    expiration_seconds: Some(86_400),
                    path: "token".to_owned(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}
