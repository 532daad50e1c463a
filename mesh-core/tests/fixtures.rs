//! Real-world manifests from ../shared/fixtures (skipped with a note where that is absent).

use std::path::{Path, PathBuf};

use mesh_core::{MeshPolicy, Request};

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "note: {} is absent; skipping the shared fixture tests",
            dir.display()
        );
        None
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

fn load(dir: &Path, rel: &str) -> Result<MeshPolicy, mesh_core::LoadErrors> {
    MeshPolicy::from_yaml(&std::fs::read_to_string(dir.join(rel)).unwrap())
}

#[test]
fn every_valid_fixture_compiles_on_its_own() {
    let Some(dir) = fixtures() else { return };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    let mut checked = 0;
    for f in files.iter().filter(|f| !f.starts_with(dir.join("invalid"))) {
        let text = std::fs::read_to_string(f).unwrap();
        if let Err(e) = MeshPolicy::from_yaml(&text) {
            panic!("{}: {e}", f.display());
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} fixtures found");
}

#[test]
fn invalid_fixtures_behave_as_linkerd_and_the_api_server_do() {
    let Some(dir) = fixtures() else { return };

    let e = load(&dir, "invalid/deployment-bad-indentation.yaml").unwrap_err();
    let yaml_err = e
        .errors()
        .iter()
        .find(|e| e.message.contains("not valid YAML"))
        .expect("a YAML error");
    assert_eq!(yaml_err.origin.document, 2);
    assert!(yaml_err.line.is_some());

    let e = load(&dir, "invalid/serviceprofile-bad-timeout.yaml").unwrap_err();
    assert_eq!(e.errors().len(), 1, "{e}");
    assert_eq!(
        e.errors()[0].field.as_deref(),
        Some("spec.routes[0].timeout")
    );
    assert!(e.to_string().contains("one-second"), "{e}");

    let e = load(&dir, "invalid/httproute-backend-port-out-of-range.yaml").unwrap_err();
    assert_eq!(
        e.errors()[0].to_string(),
        "document 1 (starting at line 1), HTTPRoute/default/invalid-backend-port: \
         spec.rules[0].backendRefs[0].port: 800080 is not a port (1–65535)"
    );

    let p = load(&dir, "invalid/list-with-null-items.yaml").unwrap();
    assert_eq!(p.resource_counts().get("Deployment"), Some(&2));

    let p = load(&dir, "invalid/pod-wrong-apiversion.yaml").unwrap();
    assert!(
        p.notes()
            .iter()
            .any(|n| n.message.contains("wrong for a Pod")),
        "{:?}",
        p.notes()
    );
}

#[test]
fn traffic_shifting_fixtures_split_90_10() {
    let Some(dir) = fixtures() else { return };
    let cases = [
        (
            "linkerd/httproute-v1beta2-weighted.yaml",
            "http://bb.traffic-shift-demo:8080/",
            "bb",
            "bb-v2",
        ),
        (
            "smi/linkerd-fault-injection-900m-100m.yaml",
            "http://books.booksapp:7000/",
            "books",
            "error-injector",
        ),
        (
            "smi/smi-spec-v1alpha4.yaml",
            "http://website/",
            "website-v1",
            "website-v2",
        ),
    ];
    for (file, url, main, canary) in cases {
        let p = load(&dir, file).unwrap();
        let s = p.sample_backends(&Request::new("GET", url).unwrap(), 10_000, 42);
        assert!((8_800..=9_200).contains(&s.count(main)), "{file}: {s}");
        assert!((800..=1_200).contains(&s.count(canary)), "{file}: {s}");
    }
    // A zero-weight backend is never chosen.
    let p = load(&dir, "smi/linkerd-failover-1-0.yaml").unwrap();
    let s = p.sample_backends(
        &Request::new("GET", "http://web-svc.emojivoto/").unwrap(),
        10_000,
        1,
    );
    assert_eq!(s.count("web-svc-east"), 0);
    let p = load(&dir, "gateway-api/gamma-grpcroute-weight.yaml").unwrap();
    let s = p.sample_backends(
        &Request::new("POST", "http://echo.gateway-conformance-mesh:7070/svc/M").unwrap(),
        10_000,
        1,
    );
    assert_eq!(s.count("echo-v3"), 0);
    assert!((6_700..=7_300).contains(&s.count("echo-v1")), "{s}");
}

#[test]
fn linkerd_retry_and_timeout_annotation_fixtures() {
    let Some(dir) = fixtures() else { return };
    let r = Request::new("GET", "http://schlep.schlep/").unwrap();
    let p = load(&dir, "linkerd/httproute-retry-annotations.yaml").unwrap();
    let d = p.outbound(&r);
    let retry = d.retry().expect("retry policy");
    assert_eq!(retry.limit, 2);
    assert_eq!(
        retry.per_try_timeout,
        Some(std::time::Duration::from_millis(300))
    );
    let p = load(&dir, "linkerd/httproute-timeout-annotations.yaml").unwrap();
    let t = p.outbound(&r).timeouts();
    assert_eq!(t.request, Some(std::time::Duration::from_secs(2)));
    assert_eq!(t.backend_request, Some(std::time::Duration::from_secs(1)));
}

#[test]
fn emojivoto_policy_with_the_app_manifests() {
    let Some(dir) = fixtures() else { return };
    let text = ["linkerd/emojivoto-policy.yml", "apps/emojivoto.yml"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let p = MeshPolicy::from_yaml(&text).unwrap();
    let (target, why) = p.inbound_target("voting-svc.emojivoto", 8080);
    assert!(why.is_empty(), "{why:?}");
    assert_eq!(target.port_name.as_deref(), Some("grpc"));
    let r = Request::new(
        "POST",
        "http://voting-svc.emojivoto:8080/emojivoto.v1.VotingService/VoteDoughnut",
    )
    .unwrap();
    let web = mesh_core::Peer {
        identity: Some(
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
                .parse()
                .unwrap(),
        ),
        ip: None,
    };
    let d = p.authorize(&target, &web, &r);
    assert!(d.allowed, "{}", d.reason);
    let nobody = mesh_core::Peer::default();
    assert!(!p.authorize(&target, &nobody, &r).allowed);
    // The web front end is public.
    let (target, _) = p.inbound_target("web-svc.emojivoto", 80);
    let anyone = mesh_core::Peer {
        identity: None,
        ip: Some("203.0.113.1".parse().unwrap()),
    };
    let get = Request::new("GET", "http://web-svc.emojivoto/").unwrap();
    let d = p.authorize(&target, &anyone, &get);
    assert_eq!(
        (d.allowed, d.by.to_string().as_str()),
        (true, "ServerAuthorization/emojivoto/web-public")
    );
}
