//! The test API server stands in for a real kube-apiserver, so it must refuse what a real one
//! refuses. These tests hold it to the Kubernetes API docs ("CustomResourceDefinition
//! validation", "Field validation", "Status subresource") with the CRDs `mesh install --crds`
//! prints, written over plain HTTP/1.1 as any client would.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::apiserver::ApiServer;

/// A server with our CRDs installed, as `mesh install --crds | kubectl apply -f -` leaves it.
fn with_our_crds() -> ApiServer {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["install", "--crds"])
        .output()
        .expect("run mesh");
    assert!(out.status.success(), "{out:?}");
    let api = ApiServer::for_install();
    api.apply(&String::from_utf8(out.stdout).unwrap());
    api
}

/// What the server answered: code, `Warning` headers, body.
#[derive(Debug)]
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

/// One request on a fresh connection, closed after the answer.
fn call(api: &ApiServer, method: &str, path: &str, content_type: &str, body: &Value) -> Answer {
    let mut tcp = TcpStream::connect(api.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.to_string();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let code = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let warnings = lines
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.eq_ignore_ascii_case("warning"))
        .map(|(_, v)| v.to_owned())
        .collect();
    Answer {
        code,
        warnings,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn post(api: &ApiServer, path: &str, body: &Value) -> Answer {
    call(api, "POST", path, "application/json", body)
}

fn merge_patch(api: &ApiServer, path: &str, body: &Value) -> Answer {
    call(api, "PATCH", path, "application/merge-patch+json", body)
}

const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes";

fn route(name: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "web", "kind": "Service", "group": "", "port": 80}],
            "rules": [{"backendRefs": [{"name": "web-v2", "port": 80}]}],
        },
    })
}

fn causes(a: &Answer) -> Vec<(String, String)> {
    let causes = a.body["details"]["causes"].as_array().cloned();
    (causes.into_iter().flatten())
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
            (s("field"), s("reason"))
        })
        .collect()
}

#[test]
fn an_invalid_custom_object_is_refused_with_422_naming_each_field() {
    let api = with_our_crds();
    let mut bad = route("bad");
    bad["spec"]["parentRefs"][0]["port"] = json!(0);
    bad["spec"]["rules"][0]["matches"] = json!([{"path": {"type": "Fuzzy", "value": "/"}}]);
    bad["spec"]["rules"][0]["backendRefs"][0]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let a = post(&api, ROUTES, &bad);
    assert_eq!(a.code, 422, "{a:?}");
    assert_eq!(a.body["kind"], "Status");
    assert_eq!(a.body["reason"], "Invalid");
    assert_eq!(a.body["details"]["name"], "bad");
    let causes = causes(&a);
    for want in [
        ("spec.parentRefs[0].port", "FieldValueInvalid"),
        ("spec.rules[0].matches[0].path.type", "FieldValueInvalid"),
        ("spec.rules[0].backendRefs[0].name", "FieldValueRequired"),
    ] {
        let want = (want.0.to_owned(), want.1.to_owned());
        assert!(causes.contains(&want), "{want:?} not in {causes:?}");
    }
    let message = a.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("HTTPRoute.gateway.networking.k8s.io \"bad\" is invalid: ["),
        "{message}"
    );
    assert!(
        api.get("gateway.networking.k8s.io", "httproutes", "default", "bad")
            .is_none()
    );

    // A patch that makes a stored object invalid is refused too, and changes nothing.
    assert_eq!(post(&api, ROUTES, &route("good")).code, 201);
    let patch = json!({"spec": {"parentRefs": [{"name": "web", "port": 70000}]}});
    let a = merge_patch(&api, &format!("{ROUTES}/good"), &patch);
    assert_eq!(a.code, 422, "{a:?}");
    let stored = api.get("gateway.networking.k8s.io", "httproutes", "default", "good");
    assert_eq!(stored.unwrap()["spec"]["parentRefs"][0]["port"], 80);
}

#[test]
fn unknown_fields_are_pruned_and_field_validation_says_what_that_does() {
    let api = with_our_crds();
    let with_colour = |name: &str| {
        let mut r = route(name);
        r["spec"]["colour"] = json!("blue");
        r["spec"]["rules"][0]["shade"] = json!(3);
        r
    };

    // Strict: refused, naming every unknown field.
    let a = post(
        &api,
        &format!("{ROUTES}?fieldValidation=Strict"),
        &with_colour("s"),
    );
    assert_eq!(a.code, 400, "{a:?}");
    assert_eq!(a.body["reason"], "BadRequest");
    let message = a.body["message"].as_str().unwrap();
    assert!(message.starts_with("strict decoding error: "), "{message}");
    assert!(
        message.contains(r#"unknown field "spec.colour""#),
        "{message}"
    );
    assert!(
        message.contains(r#"unknown field "spec.rules[0].shade""#),
        "{message}"
    );

    // Warn, the default: stored without them, one Warning header per field.
    let a = post(&api, ROUTES, &with_colour("w"));
    assert_eq!(a.code, 201, "{a:?}");
    assert_eq!(a.warnings.len(), 2, "{a:?}");
    assert!(a.warnings[0].starts_with("299 - "), "{a:?}");
    assert!(
        a.warnings.iter().any(|w| w.contains("spec.colour")),
        "{a:?}"
    );
    assert!(a.body["spec"].get("colour").is_none(), "{a:?}");
    let stored = api.get("gateway.networking.k8s.io", "httproutes", "default", "w");
    assert!(stored.unwrap()["spec"].get("colour").is_none());

    // Ignore: stored without them, silently.
    let a = post(
        &api,
        &format!("{ROUTES}?fieldValidation=Ignore"),
        &with_colour("i"),
    );
    assert_eq!((a.code, a.warnings.len()), (201, 0), "{a:?}");
    assert!(a.body["spec"].get("colour").is_none(), "{a:?}");

    let a = post(&api, &format!("{ROUTES}?fieldValidation=Loud"), &route("l"));
    assert_eq!(a.code, 400, "{a:?}");
}

#[test]
fn status_is_served_only_where_the_crd_declares_it() {
    let api = with_our_crds();
    let servers = "/apis/policy.linkerd.io/v1beta3/namespaces/default/servers";
    let server = json!({
        "apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": 8080},
        "status": {"conditions": []},
    });
    // Linkerd's Server has no status subresource: `/status` is not found, and a status
    // written with the object is pruned, as any field the schema does not list.
    let a = post(&api, servers, &server);
    assert_eq!(a.code, 201, "{a:?}");
    assert!(a.body.get("status").is_none(), "{a:?}");
    assert!(
        a.warnings.iter().any(|w| w.contains("\\\"status\\\"")),
        "{a:?}"
    );
    let a = merge_patch(
        &api,
        &format!("{servers}/web/status"),
        &json!({"status": {}}),
    );
    assert_eq!(a.code, 404, "{a:?}");

    // A Canary has one: the object's writes keep the stored status, status writes are
    // validated against the status schema.
    let canaries = "/apis/policy.mesh.io/v1alpha1/namespaces/default/canaries";
    let canary = json!({
        "apiVersion": "policy.mesh.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "web"},
            "stable": {"name": "web-v1", "port": 80}, "canary": {"name": "web-v2", "port": 80},
        },
        "status": {"phase": "Succeeded"},
    });
    let a = post(&api, canaries, &canary);
    assert_eq!(a.code, 201, "{a:?}");
    assert!(
        a.body.get("status").is_none(),
        "a create sets no status: {a:?}"
    );
    let status = format!("{canaries}/web/status");
    let good = json!({"status": {
        "phase": "Progressing", "canaryWeight": 20, "failedChecks": 0,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }});
    let a = merge_patch(&api, &status, &good);
    assert_eq!(a.code, 200, "{a:?}");
    assert_eq!(a.body["status"]["canaryWeight"], 20);
    let bad = json!({"status": {"phase": "Paused", "canaryWeight": 101, "failedChecks": -1,
                                "lastTransitionTime": "yesterday"}});
    let a = merge_patch(&api, &status, &bad);
    assert_eq!(a.code, 422, "{a:?}");
    let fields: Vec<String> = causes(&a).into_iter().map(|(f, _)| f).collect();
    for f in [
        "status.phase",
        "status.canaryWeight",
        "status.failedChecks",
        "status.lastTransitionTime",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
    let mut again = canary.clone();
    again["spec"]["suspend"] = json!(true);
    let a = call(
        &api,
        "PUT",
        &format!("{canaries}/web"),
        "application/json",
        &again,
    );
    assert_eq!(a.code, 200, "{a:?}");
    assert_eq!(a.body["status"]["phase"], "Progressing", "{a:?}");
    assert_eq!(a.body["metadata"]["generation"], 2, "{a:?}");
}
