//! `mesh inject`, run as a user runs it, over the shared fixtures and hand-written cases.
//! Every injected workload is read back through k8s-openapi's types.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize as _;
use serde_norway::Value;

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .output()
        .expect("run mesh")
}

fn mesh_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mesh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("note: {} is absent; skipping", dir.display());
        None
    }
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

fn s(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Runs `mesh inject`, insisting on success.
fn inject(args: &[&str]) -> (String, String) {
    let mut all = vec!["inject"];
    all.extend_from_slice(args);
    let out = mesh(&all);
    let (stdout, stderr) = (s(&out.stdout), s(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (stdout, stderr)
}

fn docs(stream: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(stream)
        .map(|d| Value::deserialize(d).expect("output parses as YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Reads `v` as `T` (with `T`'s apiVersion, for the deprecated ones k8s-openapi lacks).
fn typed<T: k8s_openapi::Resource + serde::de::DeserializeOwned>(v: &Value) -> T {
    let mut v = v.clone();
    v["apiVersion"] = Value::from(T::API_VERSION);
    serde_norway::from_value(v).unwrap_or_else(|e| panic!("not a {}: {e}", T::KIND))
}

/// The pod template of a workload, through k8s-openapi's types; None for other kinds.
fn template(v: &Value) -> Option<(ObjectMeta, PodSpec)> {
    let t = |t: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| {
        let t = t.expect("a pod template");
        (t.metadata.unwrap_or_default(), t.spec.expect("a pod spec"))
    };
    let kind = v.get("kind")?.as_str()?;
    let (meta, spec) = match kind {
        "Pod" => {
            let p: Pod = typed(v);
            (p.metadata, p.spec.expect("a pod spec"))
        }
        "Deployment" => t(Some(typed::<Deployment>(v).spec.template)),
        "StatefulSet" => t(Some(typed::<StatefulSet>(v).spec.template)),
        "DaemonSet" => t(Some(typed::<DaemonSet>(v).spec.template)),
        "ReplicaSet" => t(typed::<ReplicaSet>(v).spec.template),
        "ReplicationController" => t(typed::<ReplicationController>(v).spec?.template),
        "Job" => t(Some(typed::<Job>(v).spec?.template)),
        "CronJob" => t(typed::<CronJob>(v)
            .spec
            .job_template
            .spec
            .map(|s| s.template)),
        _ => return None,
    };
    // The spec we wrote is exactly what k8s-openapi writes for the spec it read: no field
    // was lost or invented on the way. (Skipped workloads are the input, untouched.)
    let injected = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("mesh.io/injected"));
    if !injected {
        return Some((meta, spec));
    }
    let written = match kind {
        "Pod" => v.get("spec"),
        "CronJob" => v["spec"]["jobTemplate"]["spec"]["template"].get("spec"),
        _ => v["spec"]["template"].get("spec"),
    };
    assert_eq!(
        Some(&serde_norway::to_value(&spec).unwrap()),
        written,
        "{kind}: the written spec round-trips"
    );
    Some((meta, spec))
}

/// Every workload of a stream, List items included.
fn workloads(stream: &str) -> Vec<(String, ObjectMeta, PodSpec)> {
    let mut out = Vec::new();
    for d in docs(stream) {
        let items = match d.get("items") {
            Some(Value::Sequence(items)) => items.clone(),
            _ => vec![d],
        };
        for item in items.iter().filter(|i| !i.is_null()) {
            if let Some((m, spec)) = template(item) {
                out.push((item["kind"].as_str().unwrap().to_owned(), m, spec));
            }
        }
    }
    out
}

fn names(cs: &[Container]) -> Vec<&str> {
    cs.iter().map(|c| c.name.as_str()).collect()
}

fn proxy(spec: &PodSpec) -> &Container {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == "mesh-proxy")
        .expect("a mesh-proxy container")
}

/// What every injected pod carries, whatever the mode.
fn assert_injected(kind: &str, meta: &ObjectMeta, spec: &PodSpec) {
    let ann = meta.annotations.as_ref().expect("annotations");
    assert_eq!(ann["mesh.io/injected"], "true", "{kind}");
    assert_eq!(ann["mesh.io/proxy-version"], env!("CARGO_PKG_VERSION"));

    let init = spec.init_containers.as_deref().expect("init containers");
    assert_eq!(init[0].name, "mesh-init", "{kind}");
    let caps = init[0]
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .unwrap();
    assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(caps.drop.as_deref().unwrap(), ["ALL"]);
    let args = init[0].args.as_deref().unwrap();
    assert_eq!(args[..3], ["init", "--proxy-uid", "2102"]);
    assert!(args.contains(&"--skip-inbound-ports".to_owned()));

    let p = proxy(spec);
    // Policy and endpoints come from the controller: the proxy watches no API server.
    assert_eq!(p.args.as_deref().unwrap(), ["proxy"]);
    let controller = (p.env.iter().flatten())
        .find(|e| e.name == "MESH_CONTROLLER_ADDR")
        .and_then(|e| e.value.clone());
    assert_eq!(
        controller.as_deref(),
        Some("mesh-controller.mesh.svc.cluster.local:8090")
    );
    // ...and it checks the controller's identity, not the address it dialled.
    let controller_id = (p.env.iter().flatten())
        .find(|e| e.name == "MESH_CONTROLLER_IDENTITY")
        .and_then(|e| e.value.clone());
    assert_eq!(controller_id.as_deref(), Some("mesh/mesh-controller"));
    let sc = p.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(2102));
    let ports: Vec<_> = p
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("mesh-proxy", 4143),
            ("mesh-admin", 4191),
            ("mesh-tap", 4190)
        ]
    );
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let h = p.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            h.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(4191)
        );
        h.path.clone().unwrap()
    };
    assert_eq!(probe_path(&p.readiness_probe), "/ready");
    assert_eq!(probe_path(&p.liveness_probe), "/live");

    let volumes = spec.volumes.as_deref().unwrap();
    let token = volumes
        .iter()
        .find_map(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref()?[0].service_account_token.clone())
        .expect("a projected token");
    assert_eq!(token.audience.as_deref(), Some("identity.mesh.io"));
    let roots = volumes
        .iter()
        .find_map(|v| v.config_map.as_ref())
        .expect("trust roots");
    assert_eq!(roots.name, "mesh-identity-trust-roots");
    assert_eq!(roots.items.as_ref().unwrap()[0].key, "ca-bundle.crt");
    let mounts: Vec<_> = p
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/var/run/secrets/mesh/identity"));
}

/// Native mode: mesh-init, then the proxy as a sidecar, then the app's own init containers.
fn assert_native(kind: &str, spec: &PodSpec, app_init: &[&str]) {
    let init = spec.init_containers.as_deref().unwrap();
    let mut want = vec!["mesh-init", "mesh-proxy"];
    want.extend_from_slice(app_init);
    assert_eq!(names(init), want, "{kind}");
    assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
    let startup = init[1].startup_probe.as_ref().expect("a startup probe");
    assert_eq!(
        startup.http_get.as_ref().unwrap().path.as_deref(),
        Some("/ready")
    );
    assert!(spec.containers.iter().all(|c| c.name != "mesh-proxy"));
}

#[test]
fn every_app_fixture_is_injected_and_round_trips() {
    let Some(dir) = fixtures() else { return };
    let mut kinds = std::collections::BTreeSet::new();
    for f in std::fs::read_dir(dir.join("apps")).unwrap() {
        let f = f.unwrap().path();
        let (stdout, stderr) = inject(&[f.to_str().unwrap()]);
        let ws = workloads(&stdout);
        assert!(!ws.is_empty(), "{}: no workloads", f.display());
        for (kind, meta, spec) in &ws {
            assert_injected(kind, meta, spec);
            assert_native(kind, spec, &[]);
            kinds.insert(kind.clone());
        }
        let injected = stderr.lines().filter(|l| l.ends_with(" injected")).count();
        assert_eq!(injected, ws.len(), "{stderr}");
    }
    let kinds: Vec<_> = kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "CronJob",
            "DaemonSet",
            "Deployment",
            "Job",
            "Pod",
            "StatefulSet"
        ]
    );
}

#[test]
fn stderr_names_each_resource() {
    let Some(dir) = fixtures() else { return };
    let (_, stderr) = inject(&[dir.join("apps/emojivoto.yml").to_str().unwrap()]);
    assert!(stderr.contains("deployment \"web\" injected\n"), "{stderr}");
    assert!(
        stderr.contains("service \"web-svc\" passed through\n"),
        "{stderr}"
    );
}

#[test]
fn v1beta1_cronjob_keeps_its_api_version() {
    let Some(dir) = fixtures() else { return };
    let (stdout, _) = inject(&[dir.join("apps/cronjob-hello.yaml").to_str().unwrap()]);
    let d = &docs(&stdout)[0];
    assert_eq!(d["apiVersion"].as_str(), Some("batch/v1beta1"));
    let (_, meta, _) = &workloads(&stdout)[0];
    // The template's own labels survive.
    assert_eq!(meta.labels.as_ref().unwrap()["foo"], "bar");
}

#[test]
fn hand_written_kinds_and_app_init_containers() {
    let (stdout, stderr) = inject(&[&data("workloads.yaml")]);
    let ws = workloads(&stdout);
    let kinds: Vec<_> = ws.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(kinds, ["ReplicaSet", "CronJob", "ReplicationController"]);
    for (kind, meta, spec) in &ws {
        assert_injected(kind, meta, spec);
    }
    assert_native("ReplicaSet", &ws[0].2, &["migrate"]);
    // The app's numeric quantity is still a quantity.
    let res = ws[0].2.containers[0].resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "1");
    // The Service is passed on byte for byte, comments included.
    let input = std::fs::read_to_string(data("workloads.yaml")).unwrap();
    let service = &input[input.find("# A comment that belongs").unwrap()..];
    assert!(stdout.ends_with(service), "{stdout}");
    assert!(stdout.starts_with("# Hand-written workloads"), "{stdout}");
    assert!(
        stderr.contains("service \"shop\" passed through"),
        "{stderr}"
    );
}

#[test]
fn legacy_sidecar_is_a_first_container_that_awaits_readiness() {
    let Some(dir) = fixtures() else { return };
    let f = dir.join("apps/emojivoto.yml");
    let (stdout, _) = inject(&["--legacy-sidecar", f.to_str().unwrap()]);
    let ws = workloads(&stdout);
    assert_eq!(ws.len(), 4);
    for (kind, meta, spec) in &ws {
        assert_injected(kind, meta, spec);
        assert_eq!(
            names(spec.init_containers.as_deref().unwrap()),
            ["mesh-init"]
        );
        let p = &spec.containers[0];
        assert_eq!(p.name, "mesh-proxy");
        assert_eq!(p.restart_policy, None);
        let hook = p.lifecycle.as_ref().unwrap().post_start.as_ref().unwrap();
        assert_eq!(
            hook.exec.as_ref().unwrap().command.as_deref().unwrap(),
            ["mesh", "proxy", "await"]
        );
        assert_eq!(
            meta.annotations.as_ref().unwrap()["mesh.io/sidecar"],
            "legacy"
        );
    }
}

#[test]
fn cni_mode_adds_no_init_step() {
    let (stdout, _) = inject(&["--cni", &data("workloads.yaml")]);
    for (_, _, spec) in workloads(&stdout) {
        let init = names(spec.init_containers.as_deref().unwrap())
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert!(!init.contains(&"mesh-init".to_owned()), "{init:?}");
        assert_eq!(init[0], "mesh-proxy");
    }
}

#[test]
fn annotations_are_honoured() {
    let (stdout, stderr) = inject(&[&data("annotations.yaml")]);
    assert!(
        stderr.contains(
            "deployment \"in-quiet\" skipped: mesh.io/inject: disabled on its namespace\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("deployment \"opted-in\" injected\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deployment \"off\" skipped: mesh.io/inject: disabled\n"),
        "{stderr}"
    );
    let ws = workloads(&stdout);
    let by_name = |n: &str| {
        ws.iter()
            .find(|w| w.1.labels.as_ref().unwrap()["app"] == n)
            .unwrap()
    };
    assert!(by_name("q").2.init_containers.is_none());
    assert!(by_name("off").2.init_containers.is_none());
    let (kind, meta, spec) = by_name("tuned");
    assert_injected(kind, meta, spec);
    let init = &spec.init_containers.as_deref().unwrap()[0];
    let args = init.args.as_deref().unwrap();
    assert_eq!(
        args[3..],
        [
            "--skip-inbound-ports",
            "4190,4191,25",
            "--skip-outbound-ports",
            "3306,5432"
        ]
    );
    let p = proxy(spec);
    let res = p.resources.as_ref().unwrap();
    let q = |m: &Option<
        std::collections::BTreeMap<_, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
             k: &str| m.as_ref().unwrap()[k].0.clone();
    assert_eq!(q(&res.requests, "cpu"), "100m");
    assert_eq!(q(&res.limits, "cpu"), "1");
    assert_eq!(q(&res.requests, "memory"), "20Mi");
    assert_eq!(q(&res.limits, "memory"), "250Mi");
    let env = p.env.as_deref().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "MESH_OPAQUE_PORTS" && e.value.as_deref() == Some("6379"))
    );
}

#[test]
fn namespace_annotations_flag_applies_to_namespaces_not_in_the_stream() {
    let (stdout, stderr) = inject(&[
        "--namespace-annotations",
        "mesh.io/inject=disabled",
        &data("workloads.yaml"),
    ]);
    assert!(
        workloads(&stdout).iter().all(|w| w
            .2
            .init_containers
            .as_ref()
            .is_none_or(|i| names(i) == ["migrate"]))
    );
    assert!(
        stderr.contains("replicaset \"rs\" skipped: mesh.io/inject: disabled on its namespace"),
        "{stderr}"
    );
    // Skipping everything changes nothing.
    let input = std::fs::read_to_string(data("workloads.yaml")).unwrap();
    assert_eq!(stdout, input);
}

#[test]
fn injecting_twice_changes_nothing() {
    let Some(dir) = fixtures() else { return };
    let once = inject(&[dir.join("apps").to_str().unwrap(), &data("workloads.yaml")]).0;
    let out = mesh_stdin(&["inject", "-"], &once);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s(&out.stdout), once);
    let stderr = s(&out.stderr);
    assert!(
        !stderr.lines().any(|l| l.ends_with("\" injected")),
        "{stderr}"
    );
    assert!(stderr.contains("skipped: already injected"), "{stderr}");
}

#[test]
fn stdin_is_read_from_dash() {
    let Some(dir) = fixtures() else { return };
    let f = dir.join("apps/pod-vote-bot.yaml");
    let from_file = inject(&[f.to_str().unwrap()]).0;
    let out = mesh_stdin(&["inject", "-"], &std::fs::read_to_string(&f).unwrap());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s(&out.stdout), from_file);
    assert!(s(&out.stderr).contains("pod \"vote-bot\" injected"));
}

#[test]
fn list_with_null_items_keeps_them_and_injects_the_rest() {
    let Some(dir) = fixtures() else { return };
    let f = dir.join("invalid/list-with-null-items.yaml");
    let (stdout, stderr) = inject(&[f.to_str().unwrap()]);
    let d = &docs(&stdout)[0];
    let items = d["items"].as_sequence().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items[2].is_null() && items[3].is_null());
    let ws = workloads(&stdout);
    assert_eq!(ws.len(), 2);
    for (kind, meta, spec) in &ws {
        assert_injected(kind, meta, spec);
    }
    assert_eq!(stderr.matches(" injected\n").count(), 2, "{stderr}");
}

#[test]
fn a_syntax_error_anywhere_writes_nothing_and_names_the_document() {
    let Some(dir) = fixtures() else { return };
    let bad = dir.join("invalid/deployment-bad-indentation.yaml");
    let good = dir.join("apps/pod-vote-bot.yaml");
    let out = mesh(&["inject", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", s(&out.stdout));
    let stderr = s(&out.stderr);
    assert!(
        stderr.contains("deployment-bad-indentation.yaml: document 2 (line 23):"),
        "{stderr}"
    );
    assert!(stderr.contains("at line 37"), "{stderr}");
}

#[test]
fn pod_with_wrong_api_version_is_injected_with_a_warning() {
    let Some(dir) = fixtures() else { return };
    let f = dir.join("invalid/pod-wrong-apiversion.yaml");
    let (stdout, stderr) = inject(&[f.to_str().unwrap()]);
    assert!(stderr.contains("warning: pod \"nginx\""), "{stderr}");
    assert!(stderr.contains("apiVersion \"apps/v1\""), "{stderr}");
    assert!(stderr.contains("pod \"nginx\" injected"), "{stderr}");
    let d = &docs(&stdout)[0];
    assert_eq!(d["apiVersion"].as_str(), Some("apps/v1"));
    let (kind, meta, spec) = &workloads(&stdout)[0];
    assert_injected(kind, meta, spec);
    // The app's readiness probe is untouched.
    let app = spec.containers.iter().find(|c| c.name == "nginx").unwrap();
    assert!(app.readiness_probe.is_some());
}

#[test]
fn other_invalid_fixtures_pass_through_unchanged() {
    let Some(dir) = fixtures() else { return };
    for f in [
        "invalid/serviceprofile-bad-timeout.yaml",
        "invalid/httproute-backend-port-out-of-range.yaml",
    ] {
        let path = dir.join(f);
        let (stdout, _) = inject(&[path.to_str().unwrap()]);
        assert_eq!(stdout, std::fs::read_to_string(&path).unwrap(), "{f}");
    }
}

#[test]
fn bad_annotation_values_fail_the_stream() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    \
                 config.mesh.io/skip-inbound-ports: http\nspec:\n  containers: [{name: a}]\n";
    let out = mesh_stdin(&["inject", "-"], input);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = s(&out.stderr);
    assert!(
        stderr.contains(
            "<stdin>: document 1 (line 1): pod \"p\": annotation config.mesh.io/skip-inbound-ports"
        ),
        "{stderr}"
    );
}

#[test]
fn a_workload_without_a_pod_spec_is_an_error() {
    let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata: {}\n";
    let out = mesh_stdin(&["inject", "-"], input);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        s(&out.stderr).contains("deployment \"d\": spec.template.spec: missing"),
        "{}",
        s(&out.stderr)
    );
    let input = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: 3\n";
    let out = mesh_stdin(&["inject", "-"], input);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        s(&out.stderr).contains("spec.containers:"),
        "{}",
        s(&out.stderr)
    );
}

#[test]
fn legacy_sidecar_warns_that_jobs_will_not_complete() {
    let Some(dir) = fixtures() else { return };
    let f = dir.join("apps/emojivoto-job.yml");
    let (_, stderr) = inject(&["--legacy-sidecar", f.to_str().unwrap()]);
    assert!(
        stderr.contains("warning: job \"web\"") && stderr.contains("keeps it from completing"),
        "{stderr}"
    );
    // Native sidecars do not keep a Job alive: no warning.
    let (_, stderr) = inject(&[f.to_str().unwrap()]);
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn namespace_annotations_flag_values_may_hold_commas() {
    let (stdout, _) = inject(&[
        "--namespace-annotations",
        "config.mesh.io/skip-outbound-ports=3306,5432",
        &data("workloads.yaml"),
    ]);
    let ws = workloads(&stdout);
    let args = ws[0].2.init_containers.as_ref().unwrap()[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[5..], ["--skip-outbound-ports", "3306,5432"]);
}

#[test]
fn a_user_container_named_like_ours_is_refused_not_skipped() {
    let head = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lookalike\n  annotations:\n    \
                mesh.io/inject: enabled\nspec:\n";
    let cases = [
        (
            "mesh-proxy",
            "  containers:\n  - name: app\n  - name: mesh-proxy\n",
        ),
        (
            "mesh-init",
            "  initContainers:\n  - name: mesh-init\n  containers:\n  - name: app\n",
        ),
    ];
    for (name, spec) in cases {
        let out = mesh_stdin(&["inject", "-"], &format!("{head}{spec}"));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", s(&out.stdout));
        assert!(out.stdout.is_empty(), "{}", s(&out.stdout));
        let stderr = s(&out.stderr);
        assert!(stderr.contains("pod \"lookalike\""), "{stderr}");
        assert!(
            stderr.contains(&format!("container \"{name}\"")),
            "{stderr}"
        );
        assert!(stderr.contains("rename the container"), "{stderr}");
    }
}
