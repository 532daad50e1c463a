//! `mesh install` and `mesh uninstall`: every printed document parses as its Kubernetes type.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize as _;
use serde_norway::Value;

mod support;

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .output()
        .expect("run mesh")
}

fn ok(args: &[&str]) -> String {
    let out = mesh(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docs(stream: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(stream)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_norway::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:?}"))
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-install-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn crds_parse_and_cover_every_kind_mesh_reads() {
    let out = ok(&["install", "--crds"]);
    let crds: Vec<CustomResourceDefinition> = docs(&out).iter().map(parse).collect();
    let names: BTreeSet<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let want: BTreeSet<_> = [
        "trafficsplits.split.smi-spec.io",
        "httproutegroups.specs.smi-spec.io",
        "serviceprofiles.linkerd.io",
        "servers.policy.linkerd.io",
        "serverauthorizations.policy.linkerd.io",
        "authorizationpolicies.policy.linkerd.io",
        "meshtlsauthentications.policy.linkerd.io",
        "networkauthentications.policy.linkerd.io",
        "httplocalratelimitpolicies.policy.linkerd.io",
        "httproutes.policy.linkerd.io",
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
        "canaries.policy.mesh.io",
        "faultinjections.policy.mesh.io",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, want);
    for crd in &crds {
        let storage: Vec<_> = crd.spec.versions.iter().filter(|v| v.storage).collect();
        assert_eq!(storage.len(), 1, "{:?}", crd.metadata.name);
        assert_eq!(crd.spec.scope, "Namespaced");
        for v in &crd.spec.versions {
            let schema = v
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            // A real schema, not "keep anything": the API server validates specs. (This
            // asserted preserve-unknown-fields before issue 10, which is what let servers
            // accept anything.)
            let props = schema.properties.as_ref().unwrap();
            let body = props.get("spec").or_else(|| props.get("matches")).unwrap();
            assert_eq!(body.x_kubernetes_preserve_unknown_fields, None);
            assert!(body.type_.is_some(), "{:?} {}", crd.metadata.name, v.name);
        }
    }
    // The versions the fixtures use are served; the deprecated ones say so.
    let server = crds.iter().find(|c| c.spec.names.kind == "Server").unwrap();
    let versions: Vec<_> = server
        .spec
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.storage, v.deprecated))
        .collect();
    assert_eq!(
        versions,
        [
            ("v1alpha1", false, Some(true)),
            ("v1beta1", false, Some(true)),
            ("v1beta2", false, None),
            ("v1beta3", true, None)
        ]
    );
    // Published field names, camelCase and Linkerd's odd spellings included.
    for field in [
        "podSelector",
        "proxyProtocol",
        "x-kubernetes-int-or-string",
        "meshTLS",
        "unauthenticatedTLS",
        "requiredAuthenticationRefs",
        "backendRefs",
        "backendRequest",
        "responseClasses",
        "isRetryable",
        "requestsPerSecond",
        "pathRegex",
    ] {
        assert!(out.contains(&format!("{field}:")), "{field}");
    }
}

#[test]
fn control_plane_parses_as_kubernetes_types() {
    let out = ok(&["install", "--image", "example.com/mesh:test"]);
    let mut kinds = Vec::new();
    let mut deployments = Vec::new();
    let mut secrets = Vec::new();
    let mut webhook = None;
    let mut trust_roots = None;
    for d in docs(&out) {
        let kind = d["kind"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "Namespace" => {
                let ns: Namespace = parse(&d);
                assert_eq!(ns.metadata.name.as_deref(), Some("mesh"));
                assert_eq!(ns.metadata.labels.unwrap()["mesh.io/inject"], "disabled");
            }
            "ConfigMap" => trust_roots = Some(parse::<ConfigMap>(&d)),
            "Secret" => secrets.push(parse::<Secret>(&d)),
            "ServiceAccount" => drop(parse::<ServiceAccount>(&d)),
            "ClusterRole" => {
                let r: ClusterRole = parse(&d);
                let rules = r.rules.unwrap();
                match r.metadata.name.as_deref() {
                    // The controller is the only reader of the cluster; it writes the status
                    // of objects, Events, and the weights of the routes canaries move.
                    Some("mesh-controller-mesh") => {
                        let can = |verb: &str, resource: &str| {
                            rules.iter().any(|r| {
                                r.verbs.iter().any(|v| v == verb)
                                    && r.resources.iter().flatten().any(|x| x == resource)
                            })
                        };
                        for read in [
                            "services",
                            "pods",
                            "endpointslices",
                            "httproutes",
                            "servers",
                        ] {
                            assert!(can("watch", read), "{read}");
                        }
                        assert!(can("patch", "httproutes/status"));
                        assert!(can("create", "events"));
                        assert!(!can("patch", "httproutes") && !can("patch", "services"));
                        for moved in ["httproutes", "grpcroutes", "trafficsplits"] {
                            assert!(can("update", moved), "{moved}");
                        }
                        assert!(can("update", "canaries/status"));
                        assert!(!can("update", "services") && !can("update", "canaries"));
                    }
                    Some("mesh-identity-mesh") => {
                        assert_eq!(rules[0].resources.as_deref().unwrap(), ["tokenreviews"]);
                        assert_eq!(rules[0].verbs, ["create"]);
                    }
                    // Proxies need no RBAC at all.
                    other => panic!("unexpected ClusterRole {other:?}"),
                }
            }
            "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(&d)),
            // The controller's replicas elect a canary driver with a Lease in its namespace
            // only: a namespaced grant, not a cluster-wide one.
            "Role" => {
                let role = parse::<Role>(&d);
                assert_eq!(role.metadata.namespace.as_deref(), Some("mesh"));
                let rules = role.rules.unwrap_or_default();
                assert_eq!(rules.len(), 1, "{rules:?}");
                assert_eq!(rules[0].resources.as_deref().unwrap(), ["leases"]);
                assert_eq!(rules[0].verbs, ["get", "create", "update"]);
            }
            "RoleBinding" => {
                let binding = parse::<RoleBinding>(&d);
                assert_eq!(binding.role_ref.kind, "Role");
                let subject = &binding.subjects.unwrap()[0];
                assert_eq!(subject.name, "mesh-controller");
            }
            "Deployment" => deployments.push(parse::<Deployment>(&d)),
            "Service" => drop(parse::<Service>(&d)),
            "PodDisruptionBudget" => drop(parse::<PodDisruptionBudget>(&d)),
            "MutatingWebhookConfiguration" => {
                webhook = Some(parse::<MutatingWebhookConfiguration>(&d));
            }
            "ValidatingWebhookConfiguration" => drop(parse::<ValidatingWebhookConfiguration>(&d)),
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "PodDisruptionBudget").count(),
        3
    );

    let roots = trust_roots.unwrap();
    assert_eq!(
        roots.metadata.name.as_deref(),
        Some("mesh-identity-trust-roots")
    );
    let anchors = &roots.data.unwrap()["ca-bundle.crt"];
    assert!(anchors.starts_with("-----BEGIN CERTIFICATE-----"));

    let issuer = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("mesh-identity-issuer"))
        .unwrap();
    let data = issuer.string_data.as_ref().unwrap();
    assert!(data["issuer.key"].contains("PRIVATE KEY"));
    assert_eq!(&data["ca.crt"], anchors);
    let tls = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("mesh-injector-tls"))
        .unwrap();
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));

    assert_eq!(deployments.len(), 3);
    let controller = (deployments.iter())
        .find(|d| d.metadata.name.as_deref() == Some("mesh-controller"))
        .unwrap();
    assert_eq!(controller.spec.replicas, Some(2));
    let pod = controller.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("mesh-controller"));
    let c = &pod.containers[0];
    assert_eq!(c.args.as_ref().unwrap()[0], "controller");
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/ready"));
    for d in &deployments {
        let pod = d.spec.template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        for c in &pod.containers {
            assert_eq!(c.image.as_deref(), Some("example.com/mesh:test"));
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
                ["ALL"]
            );
            assert!(c.resources.as_ref().unwrap().requests.is_some());
            assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        }
        // The control plane is kept out of the mesh by label.
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels["mesh.io/inject"], "disabled");
    }

    let webhook = webhook.unwrap();
    let hooks = webhook.webhooks.unwrap();
    assert_eq!(hooks.len(), 2);
    for h in &hooks {
        assert_eq!(h.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(h.side_effects, "None");
        let ca = h.client_config.ca_bundle.as_ref().unwrap();
        let ca = String::from_utf8(ca.0.clone()).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(Some(&ca), tls.string_data.as_ref().unwrap().get("tls.crt"));
        let obj = h.object_selector.as_ref().unwrap();
        assert_eq!(
            obj.match_expressions.as_ref().unwrap()[0].key,
            "mesh.io/inject"
        );
        let svc = h.client_config.service.as_ref().unwrap();
        assert_eq!(svc.name, "mesh-injector");
    }
    let paths: Vec<_> = hooks
        .iter()
        .map(|h| {
            h.client_config
                .service
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        })
        .collect();
    assert_eq!(paths, ["/inject/enabled", "/inject"]);
}

#[test]
fn identity_dir_supplies_anchor_and_issuer() {
    let dir = tmp_dir("identity");
    let d = dir.to_str().unwrap();
    let init = mesh(&[
        "identity",
        "init",
        "--out",
        d,
        "--trust-domain",
        "example.org",
    ]);
    assert_eq!(init.status.code(), Some(0), "{init:?}");
    let file = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let out = ok(&["install", "--identity-dir", d]);
    assert!(
        !out.contains(file("ca.key").trim()),
        "the anchor's key is never installed"
    );
    let ds = docs(&out);
    let cm: ConfigMap = parse(ds.iter().find(|d| d["kind"] == "ConfigMap").unwrap());
    assert_eq!(cm.data.unwrap()["ca-bundle.crt"], file("ca.crt"));
    let secret: Secret = parse(
        ds.iter()
            .find(|d| d["metadata"]["name"] == "mesh-identity-issuer")
            .unwrap(),
    );
    let data = secret.string_data.unwrap();
    assert_eq!(data["issuer.crt"], file("issuer.crt"));
    assert_eq!(data["issuer.key"], file("issuer.key"));
    // Proxies are told the trust domain of the issuer they are given.
    let injector: Deployment = parse(
        ds.iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "mesh-injector")
            .unwrap(),
    );
    let args = injector.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(arg_after(&args, "--trust-domain"), "example.org");

    // An issuer the issuer could not use is refused now, not by a crash loop later.
    std::fs::write(dir.join("issuer.crt"), "ISSUER PEM\n").unwrap();
    let out = mesh(&["install", "--identity-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an issuer"), "{err}");

    std::fs::remove_file(dir.join("issuer.key")).unwrap();
    let out = mesh(&["install", "--identity-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("issuer.key"));
}

#[test]
fn uninstall_lists_what_install_created() {
    let installed = docs(&ok(&["install"]));
    let removed = docs(&ok(&["uninstall"]));
    assert_eq!(removed.len(), installed.len());
    for d in &removed {
        let keys: Vec<_> = d
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata"]);
        let found = installed.iter().any(|i| {
            i["kind"] == d["kind"]
                && i["apiVersion"] == d["apiVersion"]
                && i["metadata"]["name"] == d["metadata"]["name"]
        });
        assert!(found, "{d:?}");
    }
    // Newest first: the webhooks go before the injector they call, the namespace last.
    assert_eq!(removed[0]["kind"], "ValidatingWebhookConfiguration");
    assert_eq!(removed[1]["kind"], "MutatingWebhookConfiguration");
    assert_eq!(removed.last().unwrap()["kind"], "Namespace");
    assert!(
        !removed
            .iter()
            .any(|d| d["kind"] == "CustomResourceDefinition")
    );

    let with_crds = docs(&ok(&["uninstall", "--crds"]));
    let crds = with_crds
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, 14);
    let kept = docs(&ok(&["uninstall", "--crds", "--skip-gateway-api"]));
    assert!(!kept.iter().any(|d| {
        d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("gateway.networking.k8s.io"))
    }));
}

#[test]
fn crds_can_leave_gateway_api_to_its_own_release() {
    let out = ok(&["install", "--crds", "--skip-gateway-api"]);
    let names: Vec<String> = docs(&out)
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 12, "{names:?}");
    assert!(names.contains(&"httproutes.policy.linkerd.io".to_owned()));
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("gateway.networking.k8s.io"))
    );
    // Only meaningful with --crds.
    assert_ne!(
        mesh(&["install", "--skip-gateway-api"]).status.code(),
        Some(0)
    );
}

/// The validating webhook covers every kind `install --crds` defines, at every version the
/// CRD serves, and calls the same injector Service with the same caBundle as the mutating one;
/// it fails open, so a down injector never blocks a policy change.
#[test]
fn validating_webhook_lists_every_crd_kind() {
    let crds: Vec<CustomResourceDefinition> = docs(&ok(&["install", "--crds"]))
        .iter()
        .map(parse)
        .collect();
    let want: BTreeSet<(String, String, Vec<String>)> = crds
        .iter()
        .map(|c| {
            let versions = c.spec.versions.iter().filter(|v| v.served);
            let versions = versions.map(|v| v.name.clone()).collect();
            (c.spec.group.clone(), c.spec.names.plural.clone(), versions)
        })
        .collect();

    let installed = docs(&ok(&["install"]));
    let find = |kind: &str| installed.iter().find(|d| d["kind"] == kind).unwrap();
    let validating: ValidatingWebhookConfiguration = parse(find("ValidatingWebhookConfiguration"));
    let mutating: MutatingWebhookConfiguration = parse(find("MutatingWebhookConfiguration"));
    let [hook] = validating.webhooks.unwrap().try_into().unwrap();
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert!(hook.timeout_seconds.unwrap() <= 5);
    assert_eq!(hook.side_effects, "None");
    let rules = hook.rules.unwrap();
    let got: BTreeSet<(String, String, Vec<String>)> = rules
        .iter()
        .map(|r| {
            assert_eq!(r.operations.as_deref().unwrap(), ["CREATE", "UPDATE"]);
            let [group] = r.api_groups.clone().unwrap().try_into().unwrap();
            let [plural] = r.resources.clone().unwrap().try_into().unwrap();
            (group, plural, r.api_versions.clone().unwrap())
        })
        .collect();
    assert_eq!(got, want);

    let mutating_client = &mutating.webhooks.unwrap()[0].client_config;
    let service = hook.client_config.service.as_ref().unwrap();
    assert_eq!(service.path.as_deref(), Some("/validate"));
    assert_eq!((&service.name, &service.namespace, service.port), {
        let m = mutating_client.service.as_ref().unwrap();
        (&m.name, &m.namespace, m.port)
    });
    assert_eq!(hook.client_config.ca_bundle, mutating_client.ca_bundle);
}

/// The value after `flag` in a container's args.
fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    &args[i + 1]
}

/// The injector hands every proxy the trust domain of the issuer the install made, so their
/// expected identities match the certificates it issues.
#[test]
fn the_injector_hands_proxies_the_issuers_trust_domain() {
    let injector_args = |args: &[&str]| -> Vec<String> {
        let ds = docs(&ok(args));
        let d = ds
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "mesh-injector")
            .unwrap();
        let deploy: Deployment = parse(d);
        deploy.spec.template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap()
    };
    let default = injector_args(&["install"]);
    assert_eq!(arg_after(&default, "--trust-domain"), "cluster.local");
    let custom = injector_args(&["install", "--trust-domain", "example.org"]);
    assert_eq!(arg_after(&custom, "--trust-domain"), "example.org");
}

/// A child process killed on drop, so a failing test leaves nothing running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `mesh` with a bound on time, as a user would run it.
fn mesh_bounded(args: &[String]) -> Output {
    support::output_within(
        Command::new(env!("CARGO_BIN_EXE_mesh")).args(args),
        Duration::from_secs(30),
    )
}

#[test]
fn the_default_install_starts_a_working_issuer() {
    let ds = docs(&ok(&["install"]));
    let named = |kind: &str, name: &str| {
        ds.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let secret: Secret = parse(named("Secret", "mesh-identity-issuer"));
    let roots: ConfigMap = parse(named("ConfigMap", "mesh-identity-trust-roots"));
    let issuer: Deployment = parse(named("Deployment", "mesh-identity"));
    let injector: Deployment = parse(named("Deployment", "mesh-injector"));

    // The issuer's files, where its Deployment mounts the Secret.
    let dir = tmp_dir("issuer");
    let data = secret.string_data.unwrap();
    for f in ["issuer.crt", "issuer.key", "ca.crt"] {
        std::fs::write(dir.join(f), &data[f]).unwrap();
    }
    let anchors = dir.join("anchors.pem");
    std::fs::write(&anchors, &roots.data.unwrap()["ca-bundle.crt"]).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "web-secret emojivoto/web\n").unwrap();
    let token = dir.join("web.token");
    std::fs::write(&token, "web-secret\n").unwrap();

    // Its container's own arguments, with a token file for the API server's TokenReview and
    // a loopback port: what the kubelet would start, short of a cluster.
    let pod = issuer.spec.template.spec.unwrap();
    let namespace = issuer.metadata.namespace.unwrap();
    let container = &pod.containers[0];
    let mounted = &container.volume_mounts.as_ref().unwrap()[0].mount_path;
    let args: Vec<String> = container.args.clone().unwrap();
    assert_eq!(arg_after(&args, "--dir"), mounted);
    // It names itself after the namespace and service account it runs as.
    let account = arg_after(&args, "--service-account").to_owned();
    assert_eq!(
        account,
        format!("{namespace}/{}", pod.service_account_name.unwrap())
    );
    let args: Vec<String> = args
        .iter()
        .flat_map(|a| match a.as_str() {
            "--kube" => vec!["--tokens".to_owned(), tokens.to_str().unwrap().to_owned()],
            _ if a == mounted => vec![dir.to_str().unwrap().to_owned()],
            _ if a.starts_with("0.0.0.0:") => vec!["127.0.0.1:0".to_owned()],
            _ => vec![a.clone()],
        })
        .collect();
    // Its log goes to a file: a closed pipe would fail its writes once we stop reading.
    let log = dir.join("issuer.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _server = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The address line, or (if it exits first) why it did not start.
        let mut line = String::new();
        let _ = tx.send(stdout.read_line(&mut line).map(|_| line));
        // Keep reading, so the issuer's stdout stays open as long as it runs.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(line)) if !line.is_empty() => line,
        Ok(_) => panic!(
            "the issuer did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
        Err(_) => panic!("the issuer printed no address in 20 s"),
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    assert!(
        line.contains("spiffe://cluster.local/ns/mesh/sa/mesh-identity"),
        "{line}"
    );

    // A workload gets a certificate, verifying the issuer by the name the injector gives
    // every proxy.
    let inj_args = injector.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(arg_after(&inj_args, "--identity-service-account"), account);
    let issue = |account: &str, out: &str| {
        mesh_bounded(&[
            "identity".into(),
            "issue".into(),
            "--issuer".into(),
            url.clone(),
            "--token-file".into(),
            token.to_str().unwrap().into(),
            "--trust-anchors".into(),
            anchors.to_str().unwrap().into(),
            "--issuer-service-account".into(),
            account.into(),
            "--out".into(),
            dir.join(out).to_str().unwrap().into(),
        ])
    };
    let o = issue(&account, "web");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let crt = std::fs::read_to_string(dir.join("web/tls.crt")).unwrap();
    let chain = mesh_identity::cert::certs_from_pem(&crt).unwrap();
    assert_eq!(
        mesh_identity::cert::identity_of(&chain[0])
            .unwrap()
            .to_string(),
        "spiffe://cluster.local/ns/emojivoto/sa/web"
    );
    // A client expecting another issuer (Linkerd's linkerd/identity) refuses this one.
    let o = issue("linkerd/identity", "other");
    assert!(!o.status.success());

    // A proxy given what the injector gives it (the anchors' PEM itself, no file, and the
    // issuer's name) gets its identity: /ready says 200 only once one is issued.
    let anchors_pem = std::fs::read_to_string(&anchors).unwrap();
    let proxy = support::loopback::LoopbackProxy::start(
        support::loopback::app(),
        &[
            "--identity-issuer",
            &url,
            "--identity-token-file",
            token.to_str().unwrap(),
            "--trust-anchors-pem",
            &anchors_pem,
            "--identity-service-account",
            &account,
        ],
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
