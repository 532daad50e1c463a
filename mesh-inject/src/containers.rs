//! The containers and volumes injection adds to a pod, built from the run's [`InjectConfig`]
//! and what the pod's annotations asked for.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pod::{
    ADMIN_PORT, INBOUND_PORT, INIT_CONTAINER, InjectConfig, PROXY_CONTAINER, PROXY_UID,
    SidecarMode, TAP_PORT, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY,
};

const TRUST_ROOTS_VOLUME: &str = "mesh-identity-trust-roots";
const TRUST_ROOTS_DIR: &str = "/var/run/mesh/identity/trust-roots";
const TOKEN_VOLUME: &str = "mesh-identity-token";
const TOKEN_DIR: &str = "/var/run/secrets/mesh/identity";
/// The volume iptables keeps its lock in (see [`init_container`]).
pub(crate) const XTABLES_VOLUME: &str = "mesh-init-xtables-lock";
/// Projected tokens are renewed by the kubelet at 80 % of this; a day is Kubernetes' default.
const TOKEN_EXPIRATION_SECONDS: i64 = 86_400;

pub(crate) fn init_container(
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

pub(crate) fn proxy_container(
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

pub(crate) fn token_volume(config: &InjectConfig) -> Volume {
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

pub(crate) fn trust_roots_volume() -> Volume {
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
