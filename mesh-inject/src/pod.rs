//! The pure part of injection: a pod's metadata and spec in, the same pod with the mesh out.
//!
//! Both `mesh inject` (YAML on the command line) and `mesh injector` (admission reviews) call
//! [`inject_pod`], so the two can never disagree about what an injected pod looks like.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::annotations::Annotations;
use crate::containers::{
    XTABLES_VOLUME, init_container, proxy_container, token_volume, trust_roots_volume,
};

/// The proxy's user; `mesh init` exempts its traffic from the outbound redirect.
pub const PROXY_UID: i64 = 2102;
/// The proxy's inbound listener, where `mesh init` redirects the pod's incoming traffic.
pub const INBOUND_PORT: i32 = 4143;
/// The proxy's admin listener: `/metrics`, `/ready`, `/live`; skipped by the redirect.
pub const ADMIN_PORT: i32 = 4191;
/// The proxy's tap listener (Linkerd's), served over mTLS only; skipped by the redirect.
pub const TAP_PORT: i32 = 4190;
/// The name of the proxy container injection adds.
pub const PROXY_CONTAINER: &str = "mesh-proxy";
/// The name of the init container that sets up the redirect (absent with the CNI plugin).
pub const INIT_CONTAINER: &str = "mesh-init";
/// Linkerd's proxy: a pod that already has one is not ours to touch.
const LINKERD_PROXY_CONTAINER: &str = "linkerd-proxy";

/// Asks for injection (`enabled`) or refuses it (`disabled`), on a pod or its namespace.
pub const INJECT_ANNOTATION: &str = "mesh.io/inject";
/// Linkerd's [`INJECT_ANNOTATION`], honoured after ours.
pub const LINKERD_INJECT_ANNOTATION: &str = "linkerd.io/inject";
/// Written on every injected pod: what tells a container of ours from a user's of the same name.
pub const INJECTED_ANNOTATION: &str = "mesh.io/injected";
/// The proxy version an injected pod runs.
pub const VERSION_ANNOTATION: &str = "mesh.io/proxy-version";
/// How an injected pod runs its proxy: `native` or `legacy` ([`SidecarMode`]).
pub const SIDECAR_ANNOTATION: &str = "mesh.io/sidecar";
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// The ConfigMap, in each meshed namespace, that holds the trust anchors' PEM.
pub const TRUST_ROOTS_CONFIGMAP: &str = "mesh-identity-trust-roots";
/// The key of the PEM in [`TRUST_ROOTS_CONFIGMAP`].
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";

/// How the proxy runs beside the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes ≥ 1.29): started before the
    /// app's containers, stopped after them, and not counted when a Job completes.
    Native,
    /// A regular first container whose postStart hook waits for the proxy, for older clusters.
    Legacy,
}

/// What an injection adds; the same for every pod of one run.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// The image of the proxy and init containers.
    pub image: String,
    /// How the proxy runs beside the application.
    pub sidecar: SidecarMode,
    /// The mesh CNI plugin sets up the redirect, so no privileged init container is added.
    pub cni: bool,
    /// Audience of the projected token the proxy shows the issuer.
    pub identity_audience: String,
    /// Where the issuer listens, `host:port`.
    pub identity_addr: String,
    /// Where `mesh controller` listens, `host:port`: the proxy's source of policy and
    /// endpoints (it needs no RBAC of its own).
    pub controller_addr: String,
    /// `NAMESPACE/NAME` of the controller's service account, which proxies verify.
    pub controller_service_account: String,
    /// The issuer's `namespace/service-account`, which its certificate names.
    pub identity_service_account: String,
    /// The trust domain the issuer signs for; proxies are told only when it is not the
    /// default they assume.
    pub trust_domain: String,
    /// The trust anchors' PEM, handed to each proxy in its environment; without them the
    /// proxy mounts the ConfigMap [`TRUST_ROOTS_CONFIGMAP`] of its own namespace.
    pub trust_anchors: Option<String>,
    /// Inject pods that carry no inject annotation (`mesh inject` does, the webhook does not).
    pub inject_by_default: bool,
    /// Recorded in `mesh.io/proxy-version`.
    pub version: String,
}

/// What became of one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The pod with the mesh added.
    Injected {
        /// The pod's metadata with the mesh's annotations.
        metadata: Box<ObjectMeta>,
        /// The pod's spec with the proxy, the init container and their volumes.
        spec: Box<PodSpec>,
    },
    /// Left as it was, for this reason.
    Skipped(Skip),
}

/// Why a pod was left as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// An inject annotation says `disabled` (on the pod, or on its namespace).
    Disabled {
        /// Which of the inject annotations.
        annotation: &'static str,
        /// Whether it sat on the namespace rather than on the pod.
        on_namespace: bool,
    },
    /// No annotation asks for injection and injection is not on by default.
    NotEnabled,
    /// The pod already has our proxy (and says so in [`INJECTED_ANNOTATION`]).
    AlreadyInjected,
    /// The pod already has Linkerd's proxy.
    LinkerdInjected,
    /// Pods on the host network share the node's iptables; redirecting them would capture
    /// the node's traffic.
    HostNetwork,
}

/// An annotation the pod (or its namespace) carries that cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {value:?} {why}")]
pub struct AnnotationError {
    /// The annotation's key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// What is wrong with the value.
    pub why: &'static str,
}

/// Why a pod cannot be injected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An annotation that cannot be honoured.
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
    NameTaken {
        /// The container's name.
        container: String,
    },
}

/// Adds the mesh to a pod (or a pod template's metadata and spec).
///
/// `namespace` holds the annotations of the pod's namespace, as far as they are known. Pure:
/// the same input always gives the same output, which is what makes injection idempotent and
/// lets the webhook's patch be checked against `mesh inject`.
pub fn inject_pod(
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
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::Container;

    use super::*;

    /// The flags `mesh install` gives the injector, with `sidecar`.
    pub(crate) fn config(sidecar: SidecarMode) -> InjectConfig {
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
}
