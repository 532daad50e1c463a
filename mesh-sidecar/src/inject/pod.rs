//! The pure part of injection: a pod's metadata and spec in, the same pod with the mesh out.
//!
//! Both `mesh inject` (YAML on the command line) and `mesh injector` (admission reviews) call
//! [`inject_pod`], so the two can never disagree about what an injected pod looks like.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The proxy's user; `mesh init` exempts its traffic from the outbound redirect.
pub(crate) const PROXY_UID: i64 = 2102;
pub(crate) const INBOUND_PORT: i32 = 4143;
pub(crate) const ADMIN_PORT: i32 = 4191;
/// The proxy's tap listener (Linkerd's), served over mTLS only; skipped by the redirect.
pub(crate) const TAP_PORT: i32 = 4190;
pub(crate) const PROXY_CONTAINER: &str = "mesh-proxy";
pub(crate) const INIT_CONTAINER: &str = "mesh-init";
/// Linkerd's proxy: a pod that already has one is not ours to touch.
const LINKERD_PROXY_CONTAINER: &str = "linkerd-proxy";

pub(crate) const INJECT_ANNOTATION: &str = "mesh.io/inject";
pub(crate) const LINKERD_INJECT_ANNOTATION: &str = "linkerd.io/inject";
pub(crate) const INJECTED_ANNOTATION: &str = "mesh.io/injected";
pub(crate) const VERSION_ANNOTATION: &str = "mesh.io/proxy-version";
pub(crate) const SIDECAR_ANNOTATION: &str = "mesh.io/sidecar";
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

pub(crate) const TRUST_ROOTS_CONFIGMAP: &str = "mesh-identity-trust-roots";
pub(crate) const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
const TRUST_ROOTS_VOLUME: &str = "mesh-identity-trust-roots";
const TRUST_ROOTS_DIR: &str = "/var/run/mesh/identity/trust-roots";
const TOKEN_VOLUME: &str = "mesh-identity-token";
const TOKEN_DIR: &str = "/var/run/secrets/mesh/identity";
const XTABLES_VOLUME: &str = "mesh-init-xtables-lock";
/// Projected tokens are renewed by the kubelet at 80 % of this; a day is Kubernetes' default.
const TOKEN_EXPIRATION_SECONDS: i64 = 86_400;

/// How the proxy runs beside the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes ≥ 1.29): started before the
    /// app's containers, stopped after them, and not counted when a Job completes.
    Native,
    /// A regular first container whose postStart hook waits for the proxy, for older clusters.
    Legacy,
}

/// What an injection adds; the same for every pod of one run.
#[derive(Clone, Debug)]
pub(crate) struct InjectConfig {
    pub(crate) image: String,
    pub(crate) sidecar: SidecarMode,
    /// The mesh CNI plugin sets up the redirect, so no privileged init container is added.
    pub(crate) cni: bool,
    /// Audience of the projected token the proxy shows the issuer.
    pub(crate) identity_audience: String,
    /// Where the issuer listens, `host:port`.
    pub(crate) identity_addr: String,
    /// Where `mesh controller` listens, `host:port`: the proxy's source of policy and
    /// endpoints (it needs no RBAC of its own).
    pub(crate) controller_addr: String,
    /// `NAMESPACE/NAME` of the controller's service account, which proxies verify.
    pub(crate) controller_service_account: String,
    /// The issuer's `namespace/service-account`, which its certificate names.
    pub(crate) identity_service_account: String,
    /// The trust domain the issuer signs for; proxies are told only when it is not the
    /// default they assume.
    pub(crate) trust_domain: String,
    /// The trust anchors' PEM, handed to each proxy in its environment; without them the
    /// proxy mounts the ConfigMap [`TRUST_ROOTS_CONFIGMAP`] of its own namespace.
    pub(crate) trust_anchors: Option<String>,
    /// Inject pods that carry no inject annotation (`mesh inject` does, the webhook does not).
    pub(crate) inject_by_default: bool,
    /// Recorded in `mesh.io/proxy-version`.
    pub(crate) version: String,
}

/// What became of one pod.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Injected {
        metadata: Box<ObjectMeta>,
        spec: Box<PodSpec>,
    },
    Skipped(Skip),
}

/// Why a pod was left as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// An inject annotation says `disabled` (on the pod, or on its namespace).
    Disabled {
        annotation: &'static str,
        on_namespace: bool,
    },
    /// No annotation asks for injection and injection is not on by default.
    NotEnabled,
    AlreadyInjected,
    LinkerdInjected,
    /// Pods on the host network share the node's iptables; redirecting them would capture
    /// the node's traffic.
    HostNetwork,
}

/// An annotation the pod (or its namespace) carries that cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {value:?} {why}")]
pub(crate) struct AnnotationError {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) why: &'static str,
}

/// Why a pod cannot be injected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InjectError {
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// A container carries the name of one the mesh adds, yet the pod lacks the annotation
    /// the mesh writes with it: it is the user's own. Skipping it as "already injected"
    /// would leave the pod silently unmeshed; injecting would give it two containers of
    /// one name.
    #[error(
        "container {container:?} has the name of a container the mesh adds, but the pod is \
         not annotated {INJECTED_ANNOTATION}: rename the container"
    )]
    NameTaken { container: String },
}

/// Annotations of the pod and of its namespace, pod first: Linkerd reads its `config.*`
/// annotations from both, and the pod's win.
struct Annotations<'a> {
    pod: Option<&'a BTreeMap<String, String>>,
    namespace: &'a BTreeMap<String, String>,
}

/// Adds the mesh to a pod (or a pod template's metadata and spec).
///
/// `namespace` holds the annotations of the pod's namespace, as far as they are known. Pure:
/// the same input always gives the same output, which is what makes injection idempotent and
/// lets the webhook's patch be checked against `mesh inject`.
pub(crate) fn inject_pod(
    metadata: &ObjectMeta,
    spec: &PodSpec,
    namespace: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Outcome, InjectError> {
    let ann = Annotations {
        pod: metadata.annotations.as_ref(),
        namespace,
    };
    if let Some(skip) = should_skip(&ann, spec, config)? {
        return Ok(Outcome::Skipped(skip));
    }

    let skip_inbound = ann.ports("skip-inbound-ports")?;
    let skip_outbound = ann.ports("skip-outbound-ports")?;
    let opaque = ann.ports("opaque-ports")?;
    let resources = ann.resources()?;

    let mut spec = spec.clone();
    let mut metadata = metadata.clone();
    let app_container = spec.containers.first().map(|c| c.name.clone());

    let proxy = proxy_container(config, opaque.as_deref(), resources);
    let mut init = Vec::new();
    if !config.cni {
        init.push(init_container(
            config,
            skip_inbound.as_deref(),
            skip_outbound.as_deref(),
        ));
    }
    match config.sidecar {
        SidecarMode::Native => init.push(proxy),
        SidecarMode::Legacy => spec.containers.insert(0, proxy),
    }
    // mesh-init first (the redirect must exist before anything talks), then the native proxy
    // (so the app's own init containers already run meshed), then the app's init containers.
    init.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init);

    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(token_volume(config));
    if config.trust_anchors.is_none() {
        volumes.push(trust_roots_volume());
    }
    if !config.cni {
        volumes.push(Volume {
            name: XTABLES_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }

    let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(INJECTED_ANNOTATION.to_owned(), "true".to_owned());
    annotations.insert(VERSION_ANNOTATION.to_owned(), config.version.clone());
    let mode = match config.sidecar {
        SidecarMode::Native => "native",
        SidecarMode::Legacy => "legacy",
    };
    annotations.insert(SIDECAR_ANNOTATION.to_owned(), mode.to_owned());
    // `kubectl logs` and `exec` should land in the app, not in the proxy we put first.
    if let Some(app) = app_container {
        annotations
            .entry(DEFAULT_CONTAINER_ANNOTATION.to_owned())
            .or_insert(app);
    }

    Ok(Outcome::Injected {
        metadata: Box::new(metadata),
        spec: Box::new(spec),
    })
}

fn should_skip(
    ann: &Annotations<'_>,
    spec: &PodSpec,
    config: &InjectConfig,
) -> Result<Option<Skip>, InjectError> {
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    let marked = ann
        .pod
        .is_some_and(|a| a.get(INJECTED_ANNOTATION).is_some_and(|v| v == "true"));
    for c in all {
        if c.name == PROXY_CONTAINER || c.name == INIT_CONTAINER {
            if !marked {
                return Err(InjectError::NameTaken {
                    container: c.name.clone(),
                });
            }
            return Ok(Some(Skip::AlreadyInjected));
        }
        if c.name == LINKERD_PROXY_CONTAINER {
            return Ok(Some(Skip::LinkerdInjected));
        }
    }
    match ann.inject_decision()? {
        Some((true, _, _)) => {}
        Some((false, annotation, on_namespace)) => {
            return Ok(Some(Skip::Disabled {
                annotation,
                on_namespace,
            }));
        }
        None if config.inject_by_default => {}
        None => return Ok(Some(Skip::NotEnabled)),
    }
    if spec.host_network == Some(true) {
        return Ok(Some(Skip::HostNetwork));
    }
    Ok(None)
}

fn init_container(
    config: &InjectConfig,
    skip_inbound: Option<&str>,
    skip_outbound: Option<&str>,
) -> Container {
    // The admin port must stay reachable by the kubelet's probes without the proxy in the way;
    // the tap port is the proxy's own (Linkerd's control port), as in Linkerd.
    let mut inbound = format!("{TAP_PORT},{ADMIN_PORT}");
    if let Some(extra) = skip_inbound {
        inbound.push(',');
        inbound.push_str(extra);
    }
    let mut args = vec![
        "init".to_owned(),
        "--proxy-uid".to_owned(),
        PROXY_UID.to_string(),
        "--skip-inbound-ports".to_owned(),
        inbound,
    ];
    if let Some(outbound) = skip_outbound {
        args.push("--skip-outbound-ports".to_owned());
        args.push(outbound.to_owned());
    }
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(config.image.clone()),
        args: Some(args),
        security_context: Some(SecurityContext {
            // iptables needs root and exactly these two capabilities, nothing more.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..SecurityContext::default()
        }),
        // iptables takes its lock under /run, which a read-only root cannot offer.
        volume_mounts: Some(vec![VolumeMount {
            name: XTABLES_VOLUME.to_owned(),
            mount_path: "/run".to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

fn proxy_container(
    config: &InjectConfig,
    opaque_ports: Option<&str>,
    resources: Option<ResourceRequirements>,
) -> Container {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    };
    let mut vars = vec![
        env_from("MESH_POD_NAME", field("metadata.name")),
        env_from("MESH_POD_NAMESPACE", field("metadata.namespace")),
        env_from("MESH_POD_IP", field("status.podIP")),
        env_from("MESH_SERVICE_ACCOUNT", field("spec.serviceAccountName")),
        env("MESH_IDENTITY_ADDR", &config.identity_addr),
        env(
            "MESH_IDENTITY_SERVICE_ACCOUNT",
            &config.identity_service_account,
        ),
        env("MESH_IDENTITY_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
        env("MESH_CONTROLLER_ADDR", &config.controller_addr),
        env(
            "MESH_CONTROLLER_IDENTITY",
            &config.controller_service_account,
        ),
        env("MESH_PROXY_TAP_ADDR", &format!("0.0.0.0:{TAP_PORT}")),
    ];
    if config.trust_domain != mesh_core::identity::DEFAULT_TRUST_DOMAIN {
        vars.push(env("MESH_TRUST_DOMAIN", &config.trust_domain));
    }
    let mut mounts = vec![VolumeMount {
        name: TOKEN_VOLUME.to_owned(),
        mount_path: TOKEN_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    // Anchors are public and small (a few KiB): in the environment they reach a pod in any
    // namespace, as Linkerd's do, with no per-namespace copy to keep in step.
    match &config.trust_anchors {
        Some(pem) => vars.push(env("MESH_TRUST_ANCHORS", pem)),
        None => {
            vars.push(env(
                "MESH_TRUST_ANCHORS_FILE",
                &format!("{TRUST_ROOTS_DIR}/{TRUST_ROOTS_KEY}"),
            ));
            mounts.push(VolumeMount {
                name: TRUST_ROOTS_VOLUME.to_owned(),
                mount_path: TRUST_ROOTS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    }
    if let Some(ports) = opaque_ports {
        vars.push(env("MESH_OPAQUE_PORTS", ports));
    }
    let http = |path: &str| HTTPGetAction {
        path: Some(path.to_owned()),
        port: IntOrString::Int(ADMIN_PORT),
        ..HTTPGetAction::default()
    };
    let mut c = Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(config.image.clone()),
        // Policy and endpoints from `mesh controller` (MESH_CONTROLLER_ADDR).
        args: Some(vec!["proxy".to_owned()]),
        env: Some(vars),
        ports: Some(vec![
            port("mesh-proxy", INBOUND_PORT),
            port("mesh-admin", ADMIN_PORT),
            port("mesh-tap", TAP_PORT),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(http("/ready")),
            initial_delay_seconds: Some(2),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(http("/live")),
            initial_delay_seconds: Some(10),
            ..Probe::default()
        }),
        resources,
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    match config.sidecar {
        SidecarMode::Native => {
            c.restart_policy = Some("Always".to_owned());
            // The kubelet starts the next container only once a sidecar's startup probe
            // passes: the app never runs before the proxy is ready.
            c.startup_probe = Some(Probe {
                http_get: Some(http("/ready")),
                period_seconds: Some(1),
                failure_threshold: Some(120),
                ..Probe::default()
            });
        }
        SidecarMode::Legacy => {
            // The kubelet runs the next container only after this hook returns.
            // `mesh proxy await` (from the proxy work) polls /ready on the admin port.
            c.lifecycle = Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec![
                            "mesh".to_owned(),
                            "proxy".to_owned(),
                            "await".to_owned(),
                        ]),
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            });
        }
    }
    c
}

fn token_volume(config: &InjectConfig) -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(config.identity_audience.clone()),
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
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

fn trust_roots_volume() -> Volume {
    Volume {
        name: TRUST_ROOTS_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: TRUST_ROOTS_CONFIGMAP.to_owned(),
            items: Some(vec![KeyToPath {
                key: TRUST_ROOTS_KEY.to_owned(),
                path: TRUST_ROOTS_KEY.to_owned(),
                ..KeyToPath::default()
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn env_from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(source),
        ..EnvVar::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

// === impl Annotations ===

impl Annotations<'_> {
    /// Whether an inject annotation decides, which one, and whether it sat on the namespace.
    /// Ours wins over Linkerd's; the pod's over its namespace's.
    fn inject_decision(&self) -> Result<Option<(bool, &'static str, bool)>, AnnotationError> {
        let scopes = [(self.pod, false), (Some(self.namespace), true)];
        for (scope, on_namespace) in scopes {
            let Some(scope) = scope else { continue };
            for key in [INJECT_ANNOTATION, LINKERD_INJECT_ANNOTATION] {
                let Some(value) = scope.get(key) else {
                    continue;
                };
                // Linkerd's `ingress` mode is a proxy configuration we do not have; the
                // workload still asked for the mesh, so it gets the ordinary proxy.
                return match value.as_str() {
                    "enabled" | "ingress" => Ok(Some((true, key, on_namespace))),
                    "disabled" => Ok(Some((false, key, on_namespace))),
                    _ => Err(AnnotationError {
                        key: key.to_owned(),
                        value: value.clone(),
                        why: "is neither enabled nor disabled",
                    }),
                };
            }
        }
        Ok(None)
    }

    /// `config.mesh.io/<name>`, else Linkerd's `config.linkerd.io/<name>`; pod, then namespace.
    fn config(&self, name: &str) -> Option<(String, &str)> {
        let keys = [
            format!("config.mesh.io/{name}"),
            format!("config.linkerd.io/{name}"),
        ];
        for scope in [self.pod, Some(self.namespace)].into_iter().flatten() {
            for key in &keys {
                if let Some(v) = scope.get(key) {
                    return Some((key.clone(), v.as_str()));
                }
            }
        }
        None
    }

    /// A port list as Linkerd writes it: `25,443,4000-5000`. Normalised (spaces dropped).
    fn ports(&self, name: &str) -> Result<Option<String>, AnnotationError> {
        let Some((key, value)) = self.config(name) else {
            return Ok(None);
        };
        let err = |why| AnnotationError {
            key: key.clone(),
            value: value.to_owned(),
            why,
        };
        let mut out = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (lo, hi) = item.split_once('-').unwrap_or((item, item));
            let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
            match (parse(lo), parse(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => out.push(item.replace(' ', "")),
                _ => return Err(err("is not a list of ports and port ranges (1–65535)")),
            }
        }
        Ok((!out.is_empty()).then(|| out.join(",")))
    }

    fn resources(&self) -> Result<Option<ResourceRequirements>, AnnotationError> {
        let mut requests = BTreeMap::new();
        let mut limits = BTreeMap::new();
        for (resource, which) in [("cpu", "request"), ("cpu", "limit")]
            .into_iter()
            .chain([("memory", "request"), ("memory", "limit")])
        {
            let Some((key, value)) = self.config(&format!("proxy-{resource}-{which}")) else {
                continue;
            };
            if !is_quantity(value) {
                return Err(AnnotationError {
                    key,
                    value: value.to_owned(),
                    why: "is not a Kubernetes quantity",
                });
            }
            let map = if which == "request" {
                &mut requests
            } else {
                &mut limits
            };
            map.insert(resource.to_owned(), Quantity(value.trim().to_owned()));
        }
        if requests.is_empty() && limits.is_empty() {
            return Ok(None);
        }
        Ok(Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..ResourceRequirements::default()
        }))
    }
}

/// `<signed number><suffix>` as Kubernetes' Quantity grammar has it: `100m`, `1.5`, `64Mi`, `1e3`.
fn is_quantity(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok =
        !number.is_empty() && number != "." && number.chars().filter(|c| *c == '.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

// === impl Skip ===

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled {
                annotation,
                on_namespace: false,
            } => write!(f, "{annotation}: disabled"),
            Self::Disabled {
                annotation,
                on_namespace: true,
            } => write!(f, "{annotation}: disabled on its namespace"),
            Self::NotEnabled => {
                write!(f, "no {INJECT_ANNOTATION}: enabled on the pod or namespace")
            }
            Self::AlreadyInjected => write!(f, "already injected"),
            Self::LinkerdInjected => write!(f, "already has a linkerd-proxy"),
            Self::HostNetwork => write!(f, "hostNetwork: true"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sidecar: SidecarMode) -> InjectConfig {
        InjectConfig {
            image: "mesh:test".to_owned(),
            sidecar,
            cni: false,
            identity_audience: "identity.mesh.io".to_owned(),
            controller_addr: "mesh-controller.mesh.svc.cluster.local:8090".to_owned(),
            controller_service_account: "mesh/mesh-controller".to_owned(),
            identity_addr: "mesh-identity.mesh.svc.cluster.local:8443".to_owned(),
            identity_service_account: "mesh/mesh-identity".to_owned(),
            trust_domain: mesh_core::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            trust_anchors: None,
            inject_by_default: true,
            version: "0.0.0".to_owned(),
        }
    }

    fn pod(annotations: &[(&str, &str)]) -> (ObjectMeta, PodSpec) {
        let meta = ObjectMeta {
            annotations: (!annotations.is_empty()).then(|| {
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            ..ObjectMeta::default()
        };
        let spec = PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                ..Container::default()
            }],
            init_containers: Some(vec![Container {
                name: "migrate".to_owned(),
                ..Container::default()
            }]),
            ..PodSpec::default()
        };
        (meta, spec)
    }

    fn injected(outcome: Outcome) -> (ObjectMeta, PodSpec) {
        match outcome {
            Outcome::Injected { metadata, spec } => (*metadata, *spec),
            Outcome::Skipped(s) => panic!("skipped: {s}"),
        }
    }

    fn names(cs: &[Container]) -> Vec<&str> {
        cs.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn native_sidecar_sits_between_init_and_app_init_containers() {
        let (m, s) = pod(&[]);
        let (m, s) =
            injected(inject_pod(&m, &s, &BTreeMap::new(), &config(SidecarMode::Native)).unwrap());
        let init = s.init_containers.as_deref().unwrap();
        assert_eq!(names(init), ["mesh-init", "mesh-proxy", "migrate"]);
        assert_eq!(names(&s.containers), ["app"]);
        assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
        assert!(init[1].startup_probe.is_some());
        let ann = m.annotations.unwrap();
        assert_eq!(ann["mesh.io/injected"], "true");
        assert_eq!(ann["kubectl.kubernetes.io/default-container"], "app");
    }

    #[test]
    fn proxies_learn_a_trust_domain_other_than_the_default() {
        let env_of = |cfg: &InjectConfig| {
            let (m, s) = pod(&[]);
            let (_, s) = injected(inject_pod(&m, &s, &BTreeMap::new(), cfg).unwrap());
            let proxy = s.init_containers.unwrap().remove(1);
            proxy
                .env
                .unwrap()
                .into_iter()
                .find(|e| e.name == "MESH_TRUST_DOMAIN")
                .and_then(|e| e.value)
        };
        let mut cfg = config(SidecarMode::Native);
        assert_eq!(env_of(&cfg), None, "the default needs no telling");
        cfg.trust_domain = "example.org".to_owned();
        assert_eq!(env_of(&cfg).as_deref(), Some("example.org"));
    }

    #[test]
    fn legacy_sidecar_is_the_first_container_with_an_await_hook() {
        let (m, s) = pod(&[]);
        let (_, s) =
            injected(inject_pod(&m, &s, &BTreeMap::new(), &config(SidecarMode::Legacy)).unwrap());
        assert_eq!(names(&s.containers), ["mesh-proxy", "app"]);
        assert_eq!(
            names(s.init_containers.as_deref().unwrap()),
            ["mesh-init", "migrate"]
        );
        let hook = s.containers[0].lifecycle.as_ref().unwrap();
        let cmd = hook.post_start.as_ref().unwrap().exec.as_ref().unwrap();
        assert_eq!(cmd.command.as_deref().unwrap(), ["mesh", "proxy", "await"]);
        assert_eq!(s.containers[0].restart_policy, None);
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let (m, s) = pod(&[]);
        let cfg = config(SidecarMode::Native);
        let (m, s) = injected(inject_pod(&m, &s, &BTreeMap::new(), &cfg).unwrap());
        assert_eq!(
            inject_pod(&m, &s, &BTreeMap::new(), &cfg).unwrap(),
            Outcome::Skipped(Skip::AlreadyInjected)
        );
    }

    /// Pod annotations, namespace annotations, inject by default, expected skip.
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a BTreeMap<String, String>,
        bool,
        Option<Skip>,
    );

    #[test]
    fn inject_annotations_decide() {
        let cfg = config(SidecarMode::Native);
        let ns_disabled: BTreeMap<_, _> = [("mesh.io/inject".to_owned(), "disabled".to_owned())]
            .into_iter()
            .collect();
        let cases: &[Case<'_>] = &[
            (&[], &BTreeMap::new(), true, None),
            (&[], &BTreeMap::new(), false, Some(Skip::NotEnabled)),
            (
                &[("mesh.io/inject", "enabled")],
                &BTreeMap::new(),
                false,
                None,
            ),
            (
                &[("linkerd.io/inject", "enabled")],
                &BTreeMap::new(),
                false,
                None,
            ),
            (
                &[("linkerd.io/inject", "disabled")],
                &BTreeMap::new(),
                true,
                Some(Skip::Disabled {
                    annotation: "linkerd.io/inject",
                    on_namespace: false,
                }),
            ),
            (
                &[],
                &ns_disabled,
                true,
                Some(Skip::Disabled {
                    annotation: "mesh.io/inject",
                    on_namespace: true,
                }),
            ),
            // The pod's own annotation beats its namespace's.
            (&[("mesh.io/inject", "enabled")], &ns_disabled, true, None),
            // Ours beats Linkerd's.
            (
                &[
                    ("mesh.io/inject", "enabled"),
                    ("linkerd.io/inject", "disabled"),
                ],
                &BTreeMap::new(),
                true,
                None,
            ),
        ];
        for (i, (ann, ns, by_default, want)) in cases.iter().enumerate() {
            let (m, s) = pod(ann);
            let cfg = InjectConfig {
                inject_by_default: *by_default,
                ..cfg.clone()
            };
            let got = match inject_pod(&m, &s, ns, &cfg).unwrap() {
                Outcome::Injected { .. } => None,
                Outcome::Skipped(s) => Some(s),
            };
            assert_eq!(&got, want, "case {i}");
        }
    }

    #[test]
    fn config_annotations_reach_init_args_env_and_resources() {
        let (m, s) = pod(&[
            ("config.mesh.io/skip-inbound-ports", "25, 8000-8100"),
            ("config.linkerd.io/skip-outbound-ports", "3306"),
            ("config.linkerd.io/opaque-ports", "5432"),
            ("config.mesh.io/proxy-cpu-request", "100m"),
            ("config.linkerd.io/proxy-memory-limit", "64Mi"),
        ]);
        let (_, s) =
            injected(inject_pod(&m, &s, &BTreeMap::new(), &config(SidecarMode::Native)).unwrap());
        let init = s.init_containers.unwrap();
        assert_eq!(
            init[0].args.as_deref().unwrap(),
            [
                "init",
                "--proxy-uid",
                "2102",
                "--skip-inbound-ports",
                "4190,4191,25,8000-8100",
                "--skip-outbound-ports",
                "3306"
            ]
        );
        let proxy = &init[1];
        let env = proxy.env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "MESH_OPAQUE_PORTS" && e.value.as_deref() == Some("5432"))
        );
        let res = proxy.resources.as_ref().unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "100m");
        assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "64Mi");
    }

    #[test]
    fn bad_annotations_are_errors_that_name_them() {
        for (k, v) in [
            ("config.mesh.io/skip-inbound-ports", "http"),
            ("config.mesh.io/skip-outbound-ports", "70000"),
            ("config.mesh.io/proxy-cpu-limit", "lots"),
            ("mesh.io/inject", "yes"),
        ] {
            let (m, s) = pod(&[(k, v)]);
            let err =
                inject_pod(&m, &s, &BTreeMap::new(), &config(SidecarMode::Native)).unwrap_err();
            let InjectError::Annotation(err) = err else {
                panic!("{k}: {err}")
            };
            assert_eq!(err.key, k);
        }
    }

    #[test]
    fn cni_mode_adds_no_privileged_init_container() {
        let (m, s) = pod(&[]);
        let cfg = InjectConfig {
            cni: true,
            ..config(SidecarMode::Native)
        };
        let (_, s) = injected(inject_pod(&m, &s, &BTreeMap::new(), &cfg).unwrap());
        assert_eq!(
            names(s.init_containers.as_deref().unwrap()),
            ["mesh-proxy", "migrate"]
        );
    }

    #[test]
    fn quantities() {
        for ok in ["1", "100m", "1.5", "64Mi", "1e3", "+2", ".5", "2E-2"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "lots", "1.2.3", "64MB", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
