//! `mesh install` and `mesh uninstall`: the control plane as manifests for `kubectl apply -f -`.
//!
//! The control plane is the identity issuer and the injector webhook, in namespace `mesh`,
//! with the trust anchors every proxy mounts. The trust anchor and issuer are the ones
//! `mesh identity init` makes (made now by the same code, or read from `--identity-dir`); the
//! injector's serving certificate is always made here with rcgen, by a CA whose certificate
//! becomes the webhook's caBundle (and whose key is then dropped: nothing else is ever signed
//! with it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    Namespace, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_identity::ca;
use serde::Serialize;
use serde_norway::Value;

use mesh_core::kinds::catalog::{self, Definition};

use crate::crds;
use crate::inject::DEFAULT_IMAGE;
use crate::inject::pod::{INJECT_ANNOTATION, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY};

mod controller;
mod identity;
mod injector;
mod pki;
mod webhooks;

pub(crate) use pki::Pki;

const IDENTITY: &str = "mesh-identity";
const INJECTOR: &str = "mesh-injector";
const ISSUER_SECRET: &str = "mesh-identity-issuer";
const INJECTOR_TLS_SECRET: &str = "mesh-injector-tls";
/// Where the issuer finds issuer.crt/issuer.key, as `mesh identity serve --dir` reads them.
const ISSUER_DIR: &str = "/var/run/mesh/identity";
const INJECTOR_TLS_DIR: &str = "/var/run/mesh/injector-tls";
/// Where the injector reads the trust anchors it hands to every proxy it adds.
const TRUST_ROOTS_DIR: &str = "/var/run/mesh/trust-roots";
const IDENTITY_PORT: i32 = 8443;
const INJECTOR_PORT: i32 = 8443;
/// Control-plane containers run as a user of their own, never root.
const CONTROL_PLANE_UID: i64 = 2103;

/// Print the mesh control plane (or its CRDs) for `kubectl apply -f -`.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// Print only the CustomResourceDefinitions of the kinds mesh reads (apply them first):
    /// SMI's, Linkerd's, and Gateway API's HTTPRoute and GRPCRoute, each with a structural
    /// schema of every version it serves.
    #[arg(long)]
    crds: bool,
    /// With --crds: leave out Gateway API's HTTPRoute and GRPCRoute, for clusters that
    /// already have Gateway API installed (its own release then owns those CRDs).
    #[arg(long, requires = "crds")]
    skip_gateway_api: bool,
    /// The mesh image the control plane runs (and the injector adds to pods).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// The control-plane namespace.
    #[arg(long, default_value = "mesh")]
    namespace: String,
    /// A directory from `mesh identity init` (ca.crt, issuer.crt, issuer.key) to use instead
    /// of a trust anchor and issuer made now.
    #[arg(long, value_name = "DIR")]
    identity_dir: Option<PathBuf>,
    /// The trust domain of the anchor made when no --identity-dir is given.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

/// Print what `mesh install` created, for `kubectl delete -f -`.
#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    /// Also delete the CRDs, and with them every policy object of those kinds (Gateway
    /// API's HTTPRoute and GRPCRoute too, unless --skip-gateway-api).
    #[arg(long)]
    crds: bool,
    /// With --crds: keep Gateway API's CRDs (pass it if the cluster had Gateway API before
    /// mesh, or it was installed with --skip-gateway-api).
    #[arg(long, requires = "crds")]
    skip_gateway_api: bool,
    /// The control-plane namespace.
    #[arg(long, default_value = "mesh")]
    namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum InstallError {
    #[error("making certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("making the trust anchor and issuer: {0}")]
    Ca(#[from] ca::CaError),
    #[error("{}: issuer.crt and issuer.key are not an issuer `mesh identity serve` can use: {source}", dir.display())]
    Issuer { dir: PathBuf, source: ca::CaError },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("a CRD schema is not a JSONSchemaProps: {0}")]
    Schema(#[from] serde_json::Error),
}

pub(crate) fn run_install(args: InstallArgs) -> ExitCode {
    let docs = if args.crds {
        crd_docs(gateway_api(args.skip_gateway_api))
    } else {
        Pki::new(
            args.identity_dir.as_deref(),
            &args.trust_domain,
            &args.namespace,
        )
        .and_then(|pki| control_plane(&args.namespace, &args.image, &pki))
    };
    print(docs)
}

pub(crate) fn run_uninstall(args: UninstallArgs) -> ExitCode {
    let crds = args.crds.then(|| gateway_api(args.skip_gateway_api));
    print(uninstall(&args.namespace, crds))
}

fn gateway_api(skip: bool) -> crds::GatewayApi {
    if skip {
        crds::GatewayApi::Skip
    } else {
        crds::GatewayApi::Include
    }
}

fn crd_docs(gateway_api: crds::GatewayApi) -> Result<Vec<Value>, InstallError> {
    crds::all(gateway_api)?.iter().map(to_value).collect()
}

fn print(docs: Result<Vec<Value>, InstallError>) -> ExitCode {
    let text = docs.and_then(|docs| {
        docs.iter()
            .map(|d| serde_norway::to_string(d).map_err(InstallError::from))
            .collect::<Result<Vec<_>, _>>()
    });
    match text {
        Ok(docs) => {
            print!("---\n{}", docs.join("---\n"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The objects to delete, newest first, as bare apiVersion/kind/metadata.
/// `crds`: also the CRDs, with or without Gateway API's.
pub(crate) fn uninstall(
    namespace: &str,
    crds: Option<crds::GatewayApi>,
) -> Result<Vec<Value>, InstallError> {
    let mut docs = control_plane(namespace, DEFAULT_IMAGE, &Pki::default())?;
    if let Some(gateway_api) = crds {
        docs.extend(crd_docs(gateway_api)?);
    }
    docs.reverse();
    let mut out = Vec::new();
    for d in docs {
        let mut meta = serde_norway::Mapping::new();
        for key in ["name", "namespace"] {
            if let Some(v) = d.get("metadata").and_then(|m| m.get(key)) {
                meta.insert(Value::from(key), v.clone());
            }
        }
        let mut m = serde_norway::Mapping::new();
        for key in ["apiVersion", "kind"] {
            if let Some(v) = d.get(key) {
                m.insert(Value::from(key), v.clone());
            }
        }
        m.insert(Value::from("metadata"), Value::Mapping(meta));
        out.push(Value::Mapping(m));
    }
    Ok(out)
}

/// Every object of the control plane, in the order `kubectl apply` should create them.
pub(crate) fn control_plane(
    namespace: &str,
    image: &str,
    pki: &Pki,
) -> Result<Vec<Value>, InstallError> {
    let meta = |name: &str| object_meta(namespace, name);
    let mut docs = vec![to_value(&Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_owned()),
            // The control plane is not meshed: the injector must not wait on the issuer it
            // serves beside, nor inject itself.
            labels: Some(
                [(INJECT_ANNOTATION.to_owned(), "disabled".to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    })?];

    // Identity: the trust anchors (the injector hands them to every proxy it adds), the
    // issuer and what it may do.
    docs.push(to_value(&ConfigMap {
        metadata: meta(TRUST_ROOTS_CONFIGMAP),
        data: Some(
            [(TRUST_ROOTS_KEY.to_owned(), pki.trust_anchors.clone())]
                .into_iter()
                .collect(),
        ),
        ..ConfigMap::default()
    })?);
    docs.extend(identity::docs(namespace, image, pki)?);

    // The controller: proxies' only source of policy and endpoints. Proxies need no RBAC.
    docs.extend(controller::docs(namespace, image, pki)?);

    // The injector: its serving certificate, the webhook and the configuration pointing at it.
    docs.extend(injector::docs(namespace, image, pki)?);
    Ok(docs)
}

/// Grants the ClusterRole named like `meta` to service account `account` of `namespace`.
fn binding(meta: &ObjectMeta, namespace: &str, account: &str) -> ClusterRoleBinding {
    let (role_ref, subjects) = grant("ClusterRole", meta, namespace, account);
    ClusterRoleBinding {
        metadata: meta.clone(),
        role_ref,
        subjects,
    }
}

/// What a (Cluster)RoleBinding says: the `kind` of role named like `meta`, granted to service
/// account `account` of `namespace`.
fn grant(
    kind: &str,
    meta: &ObjectMeta,
    namespace: &str,
    account: &str,
) -> (RoleRef, Option<Vec<Subject>>) {
    let role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        kind: kind.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
    };
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: account.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    };
    (role_ref, Some(vec![subject]))
}

/// The metadata of the control-plane object `name` in `namespace`.
fn object_meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(name)),
        ..ObjectMeta::default()
    }
}

/// A probe asking a control-plane admin endpoint on `port` for `path` (`/ready`, `/live`).
fn admin_probe(port: i32, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

fn labels(name: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/part-of", "mesh"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn selector(name: &str) -> BTreeMap<String, String> {
    [("app.kubernetes.io/name".to_owned(), name.to_owned())]
        .into_iter()
        .collect()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

fn control_plane_container() -> Container {
    let q = |s: &str| Quantity(s.to_owned());
    Container {
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), q("100m")),
                    ("memory".to_owned(), q("64Mi")),
                ]
                .into(),
            ),
            limits: Some([("memory".to_owned(), q("256Mi"))].into()),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(CONTROL_PLANE_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(strings(&["ALL"])),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn deployment(
    metadata: ObjectMeta,
    name: &str,
    container: Container,
    volumes: Vec<Volume>,
) -> Deployment {
    let mut pod_labels = labels(name);
    // Kept out of the mesh by label, so the webhook is not even asked.
    pod_labels.insert(INJECT_ANNOTATION.to_owned(), "disabled".to_owned());
    Deployment {
        metadata,
        spec: DeploymentSpec {
            // Two, so a drain or a rollout never leaves the cluster without one.
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(selector(name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.to_owned()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn service(metadata: ObjectMeta, port: i32, target: i32) -> Service {
    let name = metadata.name.clone().unwrap_or_default();
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some("https".to_owned()),
                port,
                target_port: Some(IntOrString::Int(target)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pdb(metadata: ObjectMeta, name: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn secret_volume(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.to_owned()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn configmap_volume(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.to_owned(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn to_value<T: Serialize>(o: &T) -> Result<Value, InstallError> {
    Ok(serde_norway::to_value(o)?)
}
