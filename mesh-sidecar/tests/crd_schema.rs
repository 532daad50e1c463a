//! `mesh install --crds | kubectl apply --dry-run=server -f fixtures`, without a cluster:
//! every fixture of a kind we print a CRD for validates against that CRD's `openAPIV3Schema`
//! of the version it names (every served version, for the SMI spec's examples that name
//! none), and what a server refuses (ports out of range, missing required fields, unknown
//! fields under strict field validation) is refused.
//!
//! The validator is the test API server's (`support/apiserver/validate.rs`), small, and follows the API server rather than JSON Schema: a
//! CRD schema is structural OpenAPI (`x-kubernetes-int-or-string`,
//! `x-kubernetes-preserve-unknown-fields`, nulls pruned rather than checked, unknown fields
//! refused as `kubectl apply` does by default since 1.27). A JSON-Schema crate would accept
//! unknown fields (the very failure of issue 10) and brings a large dependency tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

/// The test API server's validator: the same judge for fixtures as for objects written to it.
#[path = "support/apiserver/validate.rs"]
mod validate;

/// CRD name → version → schema, from the binary's own output.
fn crds() -> BTreeMap<(String, String), BTreeMap<String, Value>> {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["install", "--crds"])
        .output()
        .expect("run mesh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = BTreeMap::new();
    for crd in docs(&String::from_utf8(out.stdout).unwrap()) {
        let spec = &crd["spec"];
        let key = (
            spec["group"].as_str().unwrap().to_owned(),
            spec["names"]["kind"].as_str().unwrap().to_owned(),
        );
        let versions = spec["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["served"] == true)
            .map(|v| {
                let name = v["name"].as_str().unwrap().to_owned();
                (name, v["schema"]["openAPIV3Schema"].clone())
            })
            .collect();
        all.insert(key, versions);
    }
    all
}

fn docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is absent under CI",
        dir.display()
    );
    println!(
        "note: {} is absent; skipping the fixture schema tests",
        dir.display()
    );
    None
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

/// What the API server says of an object: `Ok(version)` it was accepted at, or the errors of
/// each version tried. `None`: not a kind we print a CRD for.
fn check(
    crds: &BTreeMap<(String, String), BTreeMap<String, Value>>,
    object: &Value,
) -> Option<Result<Vec<String>, Vec<String>>> {
    let kind = object["kind"].as_str()?;
    let (group, version) = match object["apiVersion"].as_str() {
        Some(av) => match av.split_once('/') {
            Some((g, v)) => (g.to_owned(), Some(v.to_owned())),
            None => (String::new(), Some(av.to_owned())),
        },
        // The SMI spec's examples name no apiVersion: the group the compiler infers.
        None => (mesh_core::kinds::catalog::infer(kind)?.0.to_owned(), None),
    };
    let versions = crds.get(&(group, kind.to_owned()))?;
    let tried: Vec<(&String, Vec<String>)> = versions
        .iter()
        .filter(|(name, _)| version.as_ref().is_none_or(|v| v == *name))
        .map(|(name, schema)| {
            // Unknown fields are refused, as `kubectl apply` asks by default since 1.27.
            let (mut object, mut unknown, mut causes) = (object.clone(), Vec::new(), Vec::new());
            validate::prune(schema, &mut object, "", &mut unknown);
            validate::validate(schema, &object, "", &mut causes);
            let errors = (unknown.iter().map(|f| format!("{f}: unknown field")))
                .chain(causes.iter().map(ToString::to_string))
                .collect::<Vec<_>>();
            (name, errors)
        })
        .collect();
    if tried.is_empty() {
        return Some(Err(vec![format!("{version:?} is not served")]));
    }
    let ok: Vec<String> = tried
        .iter()
        .filter(|(_, e)| e.is_empty())
        .map(|(n, _)| (*n).clone())
        .collect();
    Some(if ok.is_empty() {
        Err(tried
            .into_iter()
            .flat_map(|(n, e)| e.into_iter().map(move |e| format!("{n}: {e}")))
            .collect())
    } else {
        Ok(ok)
    })
}

#[test]
fn every_fixture_validates_in_the_versions_it_is_served_in() {
    let Some(dir) = fixtures() else { return };
    let crds = crds();
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    let mut checked = 0;
    let mut failures = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(dir.join("invalid"))) {
        for doc in docs(&std::fs::read_to_string(f).unwrap()) {
            match check(&crds, &doc) {
                None => {}
                Some(Ok(_)) => checked += 1,
                Some(Err(e)) => failures.push(format!("{}: {}: {e:#?}", f.display(), doc["kind"])),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 30, "only {checked} objects of our CRDs' kinds");
}

#[test]
fn invalid_fixtures_are_refused_where_a_server_refuses_them() {
    let Some(dir) = fixtures() else { return };
    let crds = crds();
    let object = |rel: &str| docs(&std::fs::read_to_string(dir.join(rel)).unwrap()).remove(0);

    let port = check(
        &crds,
        &object("invalid/httproute-backend-port-out-of-range.yaml"),
    );
    let errors = port.unwrap().unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.rules[0].backendRefs[0].port: 800080 is greater than 65535")),
        "{errors:#?}"
    );
    // Linkerd's CRD types a route timeout as any string: the server takes `one-second`, and
    // the compiler (not the schema) refuses it. Our CRD must not be stricter than Linkerd's.
    let timeout = check(&crds, &object("invalid/serviceprofile-bad-timeout.yaml"));
    assert!(timeout.unwrap().is_ok());
}

/// Our own cases: each version's real shape, and what a server refuses.
#[test]
fn hand_written_objects_are_judged_as_a_server_would() {
    let crds = crds();
    let cases: &[(&str, Result<(), &str>)] = &[
        // SMI HTTPRouteGroup: `matches` beside metadata before v1alpha3, under spec after.
        (
            "apiVersion: specs.smi-spec.io/v1alpha2\nkind: HTTPRouteGroup\nmetadata: {name: r}\n\
             matches: [{name: m, pathRegex: /api, methods: [GET], headers: [{host: x}]}]",
            Ok(()),
        ),
        (
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: r}\n\
             spec: {matches: [{name: m, pathRegex: /api}]}",
            Ok(()),
        ),
        (
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: r}\n\
             matches: [{name: m}]",
            Err("matches: unknown field"),
        ),
        (
            "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: s}\n\
             spec: {service: web, backends: [{service: a, weight: 900m}, {service: b, weight: 100m}]}",
            Ok(()),
        ),
        (
            "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: s}\n\
             spec: {service: web, backends: [{service: a, weight: 900m}]}",
            Err("weight: \"900m\" is not of type integer"),
        ),
        (
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s}\n\
             spec: {backends: [{service: a, weight: 1}]}",
            Err("spec.service: Required value"),
        ),
        (
            "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: s}\n\
             spec: {podSelector: {matchLabels: {app: web}}, port: http, proxyProtocol: HTTP/2, accessPolicy: deny}",
            Ok(()),
        ),
        (
            "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: s}\n\
             spec: {podSelector: {matchLabels: {app: web}}, port: 8080, proxyProtocol: HTTP/3}",
            Err("spec.proxyProtocol: \"HTTP/3\" is not one of"),
        ),
        (
            "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: s}\n\
             spec: {podSelector: {matchLabels: {app: web}}}",
            Err("spec.port: Required value"),
        ),
        (
            "apiVersion: policy.linkerd.io/v1beta1\nkind: Server\nmetadata: {name: s}\n\
             spec: {port: 80, accessPolicy: deny, podSelector: {}}",
            Err("spec.accessPolicy: unknown field"),
        ),
        (
            "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n\
             spec: {targetRef: {kind: Server, name: web}}",
            Err("spec.requiredAuthenticationRefs: Required value"),
        ),
        (
            "apiVersion: policy.linkerd.io/v1beta2\nkind: HTTPRoute\nmetadata: {name: r}\n\
             spec: {rules: [{timeouts: {request: 1s}}]}",
            Err("spec.rules[0].timeouts: unknown field"),
        ),
        (
            "apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute\nmetadata: {name: r}\n\
             spec: {parentRefs: [{name: web, kind: Service, group: core, port: 80}],\n\
             rules: [{timeouts: {request: 1s}, backendRefs: [{name: web, port: 80, weight: 1}]}]}",
            Ok(()),
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n\
             spec: {parentRefs: [{name: web, kind: Service, group: '', port: 0}]}",
            Err("spec.parentRefs[0].port: 0 is less than 1"),
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: r}\n\
             spec: {rules: [{matches: [{method: {type: Prefix, service: a.B}}]}]}",
            Err("spec.rules[0].matches[0].method.type: \"Prefix\" is not one of"),
        ),
    ];
    for (yaml, want) in cases {
        let object = docs(yaml).remove(0);
        let got = check(&crds, &object).expect("a kind with a CRD");
        match (want, &got) {
            (Ok(()), Ok(_)) => {}
            (Err(needle), Err(errors)) if errors.iter().any(|e| e.contains(needle)) => {}
            _ => panic!("{yaml}\nwant {want:?}, got {got:#?}"),
        }
    }
}

/// A structural schema, as the API server requires of a CRD: every node typed, no `$ref`,
/// logical junctors only over required lists, and "keep anything" only where the upstream
/// CRD has it, never on a whole spec.
#[test]
fn generated_crds_are_structural() {
    fn walk(schema: &Value, path: &str, open: &mut Vec<String>) {
        let typed = schema.get("type").is_some()
            || schema["x-kubernetes-int-or-string"] == true
            || schema["x-kubernetes-preserve-unknown-fields"] == true;
        assert!(typed, "{path} has no type: {schema}");
        assert!(schema.get("$ref").is_none(), "{path}");
        for junctor in ["oneOf", "anyOf", "allOf"] {
            for branch in schema[junctor].as_array().into_iter().flatten() {
                let keys: Vec<_> = branch.as_object().unwrap().keys().collect();
                assert_eq!(keys, ["required"], "{path}.{junctor}");
            }
        }
        assert!(schema.get("not").is_none(), "{path}");
        if schema["x-kubernetes-preserve-unknown-fields"] == true {
            open.push(path.to_owned());
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), open);
            }
        }
        for child in ["items", "additionalProperties"] {
            if let Some(s) = schema.get(child).filter(|s| s.is_object()) {
                walk(s, &format!("{path}[]"), open);
            }
        }
    }
    let crds = crds();
    assert_eq!(crds.len(), 14);
    for ((group, kind), versions) in &crds {
        for (version, schema) in versions {
            let mut open = Vec::new();
            walk(schema, "", &mut open);
            for path in &open {
                let upstream = [".condition.all[]", ".condition.any[]", ".condition.not"];
                assert!(
                    upstream.iter().any(|u| path.ends_with(u)) || path.ends_with(".headers"),
                    "{group}/{version} {kind}: {path} keeps unknown fields"
                );
            }
        }
    }
}
