//! `mesh check` against the in-repo API server holding what `mesh install` printed, with the
//! Deployments marked ready through their status subresource as the Deployment controller
//! would, and endpoints as the EndpointSlice controller would; and `mesh check --proxy` in a
//! pod's network namespace.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

mod support;

use support::apiserver::ApiServer;
use support::pods::{Trust, start_pod, write_config};
use support::{mesh_bin, skip_unless_root_and_netns};

const NS: &str = "mesh";
const DEPLOYMENTS: [&str; 3] = ["mesh-identity", "mesh-controller", "mesh-injector"];

fn mesh(args: &[&str]) -> Output {
    Command::new(mesh_bin())
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run mesh")
}

fn stdout_of(args: &[&str]) -> String {
    let out = mesh(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-check-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A cluster after `mesh install --crds` and `mesh install [extra]` were applied and the
/// control plane came up; one injected pod in `shop`.
struct Cluster {
    api: ApiServer,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn installed(name: &str, extra: &[&str]) -> Self {
        let api = ApiServer::for_install();
        api.apply(&stdout_of(&["install", "--crds"]));
        api.apply(&stdout_of(&[&["install"], extra].concat()));
        let dir = tmp_dir(name);
        let kubeconfig = api.kubeconfig(&dir);
        let cluster = Self {
            api,
            dir,
            kubeconfig,
        };
        cluster.control_plane_up();
        cluster.injected_pod();
        cluster
    }

    fn empty(name: &str) -> Self {
        let api = ApiServer::for_install();
        let dir = tmp_dir(name);
        let kubeconfig = api.kubeconfig(&dir);
        Self {
            api,
            dir,
            kubeconfig,
        }
    }

    /// Every Deployment rolled out, every Service with a ready endpoint.
    fn control_plane_up(&self) {
        for (i, name) in DEPLOYMENTS.iter().enumerate() {
            let d = self.api.get("apps", "deployments", NS, name).unwrap();
            let replicas = d["spec"]["replicas"].clone();
            self.api.set_status(
                ("apps", "deployments"),
                NS,
                name,
                json!({
                    "observedGeneration": d["metadata"]["generation"],
                    "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [{"type": "Available", "status": "True"}],
                }),
            );
            self.api.apply(&format!(
                "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: {name}-abcde, namespace: {NS}, labels: {{ kubernetes.io/service-name: {name} }} }}
addressType: IPv4
endpoints: [{{ addresses: [10.213.9.{}], conditions: {{ ready: true }} }}]
",
                i + 1
            ));
        }
    }

    /// A pod the injector meshed: the proxy mounts its namespace's trust-roots ConfigMap.
    fn injected_pod(&self) {
        let roots = self
            .api
            .get("", "configmaps", NS, "mesh-identity-trust-roots")
            .unwrap();
        let mut copy = roots.clone();
        copy["metadata"] = json!({"name": "mesh-identity-trust-roots", "namespace": "shop"});
        self.api.apply(&copy.to_string());
        self.api.apply(
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"},
                "spec": {"containers": [{"name": "web", "image": "web"}],
                         "initContainers": [{"name": "mesh-proxy", "image": "mesh", "restartPolicy": "Always",
                           "env": [{"name": "MESH_TRUST_ANCHORS_FILE", "value": "/var/run/mesh/identity/trust-roots/ca-bundle.crt"}]}]}}"#,
        );
        self.api.set_status(
            ("", "pods"),
            "shop",
            "web-1",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
    }

    fn check(&self, args: &[&str]) -> (Option<i32>, String) {
        let kc = self.kubeconfig.to_str().unwrap();
        let out = mesh(&[&["check", "--kubeconfig", kc], args].concat());
        let text = String::from_utf8(out.stdout).unwrap();
        println!("{text}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The document of `kind` from a new `mesh install` (new certificates). Documents are split
/// on separator lines only: PEM lines end in dashes too.
fn another_install(kind: &str) -> String {
    let stream = stdout_of(&["install"]);
    (stream.split("\n---\n"))
        .find(|d| d.contains(&format!("kind: {kind}\n")))
        .unwrap_or_else(|| panic!("no {kind} in the install"))
        .to_owned()
}

/// The check lines of a report: (symbol, description).
fn lines(text: &str) -> Vec<(char, String)> {
    text.lines()
        .filter_map(|l| {
            let mut chars = l.chars();
            let symbol = chars.next()?;
            let rest = chars.as_str().strip_prefix(' ')?;
            "✓‼×".contains(symbol).then(|| (symbol, rest.to_owned()))
        })
        .collect()
}

/// The text under the failed check whose description starts with `what`.
fn failure<'a>(text: &'a str, what: &str) -> &'a str {
    let start = text
        .find(&format!("× {what}"))
        .unwrap_or_else(|| panic!("no failed check {what:?} in\n{text}"));
    let rest = &text[start..];
    let end = rest[2..]
        .find(['✓', '‼', '×'])
        .map_or(rest.len(), |i| i + 2);
    &rest[..end]
}

#[test]
fn a_healthy_install_passes_every_check() {
    let cluster = Cluster::installed("healthy", &[]);
    let (code, text) = cluster.check(&[]);
    assert_eq!(code, Some(0), "{text}");
    let lines = lines(&text);
    for heading in [
        "kubernetes-api",
        "kubernetes-version",
        "mesh-existence",
        "mesh-config",
        "mesh-identity",
        "mesh-webhooks",
        "mesh-data-plane",
    ] {
        assert!(text.contains(&format!("{heading}\n")), "{heading}");
    }
    for (symbol, description) in &lines {
        assert_eq!(*symbol, '✓', "{description}");
    }
    for want in [
        "mesh-injector is ready",
        "the CRDs exist and serve the versions mesh reads",
        "issuer certificate is signed by the trust anchors",
        "the injector webhook's caBundle verifies the injector's certificate",
        "data plane proxies trust the current anchors",
    ] {
        assert!(lines.iter().any(|(_, d)| d == want), "{want}");
    }
    assert!(text.ends_with("Status check results are ✓\n"));
}

#[test]
fn an_expired_issuer_fails_with_a_rotation_hint() {
    let dir = tmp_dir("expired-identity");
    let id = dir.join("id");
    let id = id.to_str().unwrap();
    stdout_of(&["identity", "init", "--out", id, "--issuer-lifetime", "1s"]);
    let cluster = Cluster::installed("expired", &["--identity-dir", id]);
    // Let it expire (certificate times have a resolution of a second).
    std::thread::sleep(Duration::from_millis(2100));
    let (code, text) = cluster.check(&[]);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "issuer certificate is within its validity period");
    assert!(f.contains("the issuer certificate expired on"), "{f}");
    assert!(
        f.contains("hint:") && f.contains("mesh install --identity-dir"),
        "{f}"
    );
    assert!(text.ends_with("Status check results are ×\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_issuer_of_other_anchors_fails() {
    let dir = tmp_dir("mixed-identity");
    let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
    for d in [&ours, &theirs] {
        stdout_of(&["identity", "init", "--out", d.to_str().unwrap()]);
    }
    // Anchors of one `identity init`, issuer of another: proxies would refuse every peer.
    std::fs::copy(theirs.join("ca.crt"), ours.join("ca.crt")).unwrap();
    let cluster = Cluster::installed("mixed", &["--identity-dir", ours.to_str().unwrap()]);
    let (code, text) = cluster.check(&[]);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "issuer certificate is signed by the trust anchors");
    assert!(f.contains("not signed by the trust anchors"), "{f}");
    assert!(f.contains("mesh install --identity-dir DIR"), "{f}");
    assert!(text.contains("✓ issuer certificate is within its validity period"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_crd_fails_naming_it_and_the_install_command() {
    let cluster = Cluster::installed("missing-crd", &[]);
    let crd = "servers.policy.linkerd.io";
    cluster
        .api
        .delete("apiextensions.k8s.io", "customresourcedefinitions", "", crd);
    let (code, text) = cluster.check(&[]);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "the CRDs exist");
    assert!(f.contains(&format!("{crd} is missing")), "{f}");
    assert!(
        f.contains("mesh install --crds | kubectl apply -f -"),
        "{f}"
    );

    // The same for scripts.
    let (code, json) = cluster.check(&["-o", "json"]);
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["success"], false);
    let config = (v["categories"].as_array().unwrap().iter())
        .find(|c| c["categoryName"] == "mesh-config")
        .unwrap();
    let check = &config["checks"][0];
    assert_eq!(check["result"], "error");
    assert!(check["error"].as_str().unwrap().contains(crd));
    assert!(check["hint"].as_str().unwrap().contains("--crds"));
}

#[test]
fn a_cabundle_of_another_install_fails() {
    let cluster = Cluster::installed("wrong-cabundle", &[]);
    // The webhook configuration of another install (another webhook CA), as when one of two
    // installs was applied only in part.
    cluster
        .api
        .apply(&another_install("MutatingWebhookConfiguration"));
    let (code, text) = cluster.check(&[]);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "the injector webhook's caBundle verifies");
    assert!(
        f.contains("does not verify the injector's certificate for mesh-injector.mesh.svc"),
        "{f}"
    );
    assert!(
        f.contains("from one `mesh install | kubectl apply -f -`"),
        "{f}"
    );
}

#[test]
fn an_unready_injector_and_a_proxy_on_old_anchors_fail() {
    let cluster = Cluster::installed("unready", &[]);
    // A rollout in progress: the Deployment controller has not seen generation 2 yet.
    let mut d = cluster
        .api
        .get("apps", "deployments", NS, "mesh-injector")
        .unwrap();
    d["spec"]["template"]["metadata"]["annotations"] = json!({"restartedAt": "now"});
    cluster.api.apply(&d.to_string());
    // The pod's namespace still holds the anchors of another install.
    let roots = another_install("ConfigMap").replace("namespace: mesh", "namespace: shop");
    cluster.api.apply(&roots);
    let (code, text) = cluster.check(&[]);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "mesh-injector is ready");
    assert!(
        f.contains("kubectl -n mesh describe deploy/mesh-injector"),
        "{f}"
    );
    let f = failure(&text, "data plane proxies trust the current anchors");
    assert!(
        f.contains("shop/web-1") && f.contains("rollout restart"),
        "{f}"
    );
    assert!(text.contains("✓ data plane proxies are ready"), "{text}");
}

#[test]
fn json_output_matches_the_table() {
    let cluster = Cluster::installed("json", &[]);
    let (_, text) = cluster.check(&[]);
    let (code, json) = cluster.check(&["-o", "json"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["success"], true);
    let from_json: Vec<(char, String)> = (v["categories"].as_array().unwrap().iter())
        .flat_map(|c| c["checks"].as_array().unwrap().iter())
        .map(|c| {
            assert_eq!(c["result"], "success", "{c}");
            ('✓', c["description"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(from_json, lines(&text));
}

#[test]
fn pre_passes_with_the_rights_and_names_a_missing_one() {
    let cluster = Cluster::empty("pre");
    let (code, text) = cluster.check(&["--pre"]);
    assert_eq!(code, Some(0), "{text}");
    for want in [
        "the API server serves admissionregistration.k8s.io/v1",
        "the API server serves apps/v1",
        "can create customresourcedefinitions",
        "can create clusterrolebindings",
        "can create deployments",
        "supports native sidecar containers",
    ] {
        assert!(text.contains(&format!("✓ {want}\n")), "{want}");
    }

    // Everything but binding ClusterRoles.
    let mut rights: Vec<(&str, &str, &str)> = vec![];
    for (group, resource) in [
        ("", "namespaces"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("", "services"),
        ("apps", "deployments"),
        ("policy", "poddisruptionbudgets"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("admissionregistration.k8s.io", "*"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    ] {
        rights.push((group, resource, "create"));
    }
    cluster.api.allow_only(&rights);
    let (code, text) = cluster.check(&["--pre"]);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "can create clusterrolebindings");
    assert!(
        f.contains("not allowed to create clusterrolebindings.rbac.authorization.k8s.io"),
        "{f}"
    );
    assert!(
        f.contains("kubectl auth can-i create clusterrolebindings"),
        "{f}"
    );
    assert_eq!(lines(&text).iter().filter(|(s, _)| *s == '×').count(), 1);
}

#[test]
fn no_api_server_fails_at_the_first_category() {
    let dir = tmp_dir("unreachable");
    let api = ApiServer::for_install();
    let kubeconfig = api.kubeconfig(&dir);
    drop(api);
    let out = mesh(&["check", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("× can query the Kubernetes API"), "{text}");
    assert!(!text.contains("mesh-existence"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_context_fails_to_make_the_client() {
    let cluster = Cluster::empty("context");
    let (code, text) = cluster.check(&["--context", "nope"]);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "can initialize the client");
    assert!(f.contains("nope") && f.contains("--context"), "{f}");
}

#[test]
fn proxy_passes_in_a_pod_and_fails_without_the_redirect() {
    if !skip_unless_root_and_netns() {
        return;
    }
    let trust = Trust::new();
    trust.issue(&["web"]);
    let config = trust.dir.join("web.yaml");
    write_config(
        &config,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n",
    );
    let ns = support::Netns::new();
    let pod = start_pod(
        ns,
        "10.213.0.1".to_owned(),
        &trust.certs("web"),
        &config,
        None,
    );
    let check = |pod: &support::pods::Pod| {
        let out = pod
            .ns
            .command(mesh_bin())
            .args(["check", "--proxy"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        println!("{text}");
        (out.status.code(), text)
    };
    let (code, text) = check(&pod);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("✓ the iptables redirect is installed"),
        "{text}"
    );
    assert!(
        text.contains("✓ the proxy's UID 2102 is not redirected"),
        "{text}"
    );
    assert!(
        text.contains("✓ the proxy's admin server on 127.0.0.1:4191 is ready"),
        "{text}"
    );

    let bin = mesh_bin();
    pod.ns
        .run_ok(bin.to_str().unwrap(), &["init", "--uninstall"]);
    let (code, text) = check(&pod);
    assert_eq!(code, Some(1), "{text}");
    let f = failure(&text, "the iptables redirect is installed");
    assert!(f.contains("mesh-init"), "{f}");
}
