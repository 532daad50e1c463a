//! The HTTP side of the test API server: discovery, the REST verbs, watch and TokenReview.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::install::access_review;
use super::{ApiResource, Body, FieldValidation, Part, State, api_version};

// === HTTP ===

pub(super) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub(super) fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut rsp = Response::new(full(v.to_string()));
    *rsp.status_mut() = code;
    rsp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    rsp
}

pub(super) fn status_value(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

pub(super) fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_value(code, reason, message))
}

pub(super) fn not_found(what: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{what} not found"),
    )
}

/// What a request path names.
pub(super) struct Target {
    resource: ApiResource,
    namespace: Option<String>,
    name: Option<String>,
    /// `status` for the `/status` subresource.
    subresource: Option<String>,
}

pub(super) async fn handle(
    state: Arc<parking_lot::Mutex<State>>,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    state.lock().requests.push(format!(
        "{method} {path}?{}",
        req.uri().query().unwrap_or("")
    ));
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rsp = match (&method, segs.as_slice()) {
        (&Method::GET, ["version"]) => json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-mesh-test",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                "platform": "linux/amd64"
            }),
        ),
        (&Method::GET, ["api"]) => json_response(
            StatusCode::OK,
            &json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]
            }),
        ),
        (&Method::GET, ["apis"]) => json_response(StatusCode::OK, &group_list(&state.lock())),
        (&Method::GET, ["api", "v1"]) => resource_list(&state.lock(), "", "v1"),
        (&Method::GET, ["apis", g, v]) => resource_list(&state.lock(), g, v),
        (_, ["api", "v1", rest @ ..]) => {
            let t = target(&state.lock(), "", "v1", rest);
            resource_request(&state, stop, &method, t, &query, &content_type, &body).await
        }
        (_, ["apis", g, v, rest @ ..]) if !rest.is_empty() => {
            let t = target(&state.lock(), g, v, rest);
            resource_request(&state, stop, &method, t, &query, &content_type, &body).await
        }
        _ => not_found(&format!("path {path}")),
    };
    Ok(rsp)
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn group_list(s: &State) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in s.resources.iter().filter(|r| !r.group.is_empty()) {
        let vs = groups.entry(r.group).or_default();
        if !vs.contains(&r.version) {
            vs.push(r.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(super) fn resource_list(s: &State, group: &str, version: &str) -> Response<Body> {
    let resources: Vec<Value> = s
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let verbs = if matches!(r.kind, "TokenReview" | "SelfSubjectAccessReview") {
                json!(["create"])
            } else {
                json!([
                    "create", "delete", "get", "list", "patch", "update", "watch"
                ])
            };
            json!({
                "name": r.plural,
                "singularName": r.kind.to_lowercase(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            })
        })
        .collect();
    if resources.is_empty() {
        let gv = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        return not_found(&format!("group version {gv}"));
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

pub(super) fn target(
    s: &State,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, Box<Response<Body>>> {
    let (namespace, plural, more) = match rest {
        ["namespaces", ns, plural, more @ ..] => (Some((*ns).to_owned()), *plural, more),
        [plural, more @ ..] => (None, *plural, more),
        [] => return Err(Box::new(not_found("resource"))),
    };
    let resource = s
        .resources
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .cloned()
        .ok_or_else(|| {
            Box::new(not_found(&format!(
                "the server could not find the requested resource ({group}/{version} {plural})"
            )))
        })?;
    Ok(Target {
        resource,
        namespace,
        name: more.first().map(|n| (*n).to_owned()),
        subresource: more.get(1).map(|s| (*s).to_owned()),
    })
}

pub(super) async fn resource_request(
    state: &Arc<parking_lot::Mutex<State>>,
    stop: watch::Receiver<bool>,
    method: &Method,
    t: Result<Target, Box<Response<Body>>>,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &Bytes,
) -> Response<Body> {
    let t = match t {
        Ok(t) => t,
        Err(rsp) => return *rsp,
    };
    let r = t.resource.clone();
    let watching = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    let key_of = |name: &str| {
        let ns = t.namespace.clone().unwrap_or_default();
        (r.group.to_owned(), r.plural.to_owned(), ns, name.to_owned())
    };
    let part = match t.subresource.as_deref() {
        None => Part::Main,
        Some("status") if state.lock().has_status(&r) => Part::Status,
        Some(other) => return not_found(&format!("the subresource {other} of {}", r.plural)),
    };
    let fv = match FieldValidation::parse(query.get("fieldValidation").map(String::as_str)) {
        Ok(fv) => fv,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    match (method, &t.name) {
        (&Method::POST, None) if r.kind == "TokenReview" => token_review(&state.lock(), body),
        (&Method::POST, None) if r.kind == "SelfSubjectAccessReview" => {
            access_review(&state.lock(), body)
        }
        (&Method::GET, None) if watching => watch(state, stop, &t, query),
        (&Method::GET, None) => list(&state.lock(), &t),
        (&Method::GET, Some(name)) => {
            let key = key_of(name);
            match state.lock().objects.get(&key) {
                Some(v) => json_response(StatusCode::OK, v),
                None => not_found(&format!("{} \"{name}\"", r.plural)),
            }
        }
        (&Method::POST, None) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON",
                );
            };
            let Some(name) = v["metadata"]["name"].as_str() else {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name is required",
                );
            };
            let key = key_of(name);
            let written = state.lock().write(&r, key, v, true, Part::Main, fv);
            written_response(StatusCode::CREATED, written)
        }
        (&Method::PUT, Some(name)) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON",
                );
            };
            let key = key_of(name);
            let mut s = state.lock();
            let Some(current) = s.objects.get(&key) else {
                return not_found(&format!("{} \"{name}\"", r.plural));
            };
            if let Some(want) = v["metadata"]["resourceVersion"].as_str()
                && current["metadata"]["resourceVersion"].as_str() != Some(want)
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            written_response(StatusCode::OK, s.write(&r, key, v, false, part, fv))
        }
        (&Method::PATCH, Some(name)) => {
            let key = key_of(name);
            let mut s = state.lock();
            let Some(mut current) = s.objects.get(&key).cloned() else {
                return not_found(&format!("{} \"{name}\"", r.plural));
            };
            let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the patch is not JSON",
                );
            };
            if content_type.starts_with("application/json-patch+json") {
                let ops: Result<json_patch::Patch, _> = serde_json::from_value(patch);
                match ops.map_err(|e| e.to_string()).and_then(|ops| {
                    json_patch::patch(&mut current, &ops).map_err(|e| e.to_string())
                }) {
                    Ok(()) => {}
                    Err(e) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e),
                }
            } else {
                // Merge patch; a strategic merge patch is read as one, which is exact for the
                // maps and scalars tests change.
                json_patch::merge(&mut current, &patch);
            }
            written_response(StatusCode::OK, s.write(&r, key, current, false, part, fv))
        }
        (&Method::DELETE, Some(name)) => {
            let key = key_of(name);
            match state.lock().remove(&r, &key) {
                Some(v) => json_response(StatusCode::OK, &v),
                None => not_found(&format!("{} \"{name}\"", r.plural)),
            }
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not supported here"),
        ),
    }
}

/// The stored object with a `Warning` header per warning (RFC 7234's form, code 299, as the
/// API server sends them), or the refusal.
fn written_response(
    code: StatusCode,
    written: Result<(Value, Vec<String>), Box<Response<Body>>>,
) -> Response<Body> {
    let (v, warnings) = match written {
        Ok(w) => w,
        Err(rsp) => return *rsp,
    };
    let mut rsp = json_response(code, &v);
    for w in warnings {
        let quoted = serde_json::to_string(&w).unwrap_or_default();
        if let Ok(h) = hyper::header::HeaderValue::from_str(&format!("299 - {quoted}")) {
            rsp.headers_mut().append(hyper::header::WARNING, h);
        }
    }
    rsp
}

pub(super) fn matches(t: &Target, group: &str, plural: &str, namespace: &str) -> bool {
    t.resource.group == group
        && t.resource.plural == plural
        && t.namespace.as_deref().is_none_or(|ns| ns == namespace)
}

pub(super) fn list(s: &State, t: &Target) -> Response<Body> {
    let items: Vec<Value> = s
        .objects
        .iter()
        .filter(|((g, p, ns, _), _)| matches(t, g, p, ns))
        .map(|(_, v)| {
            // Items of a list carry no apiVersion or kind, as with the real API server.
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            v
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.resource.kind),
            "apiVersion": api_version(&t.resource),
            "metadata": {"resourceVersion": s.rv.to_string()},
            "items": items,
        }),
    )
}

pub(super) fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

pub(super) fn watch(
    state: &Arc<parking_lot::Mutex<State>>,
    mut stop: watch::Receiver<bool>,
    t: &Target,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse::<u64>());
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut s = state.lock();
    let r = t.resource.clone();
    let mut backlog = Vec::new();
    let mut live;
    match from {
        Some(Err(_)) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "resourceVersion is not a number",
            );
        }
        Some(Ok(from)) if from < s.compacted => {
            s.gone_served += 1;
            let gone = status_value(
                StatusCode::GONE,
                "Expired",
                &format!("too old resource version: {from} ({})", s.compacted),
            );
            backlog.push(event_line("ERROR", &gone));
            live = None;
        }
        Some(Ok(from)) => {
            for c in s.log.iter().filter(|c| c.rv > from) {
                if matches(t, &c.group, &c.plural, &c.namespace) {
                    backlog.push(event_line(c.kind, &c.object));
                }
            }
            live = Some(s.changes.subscribe());
        }
        None => {
            // No version: the current state as ADDED events, then changes.
            for ((g, p, ns, _), v) in &s.objects {
                if matches(t, g, p, ns) {
                    backlog.push(event_line("ADDED", v));
                }
            }
            live = Some(s.changes.subscribe());
        }
    }
    drop(s);
    let state = Arc::clone(state);
    let filter = Target {
        resource: r.clone(),
        namespace: t.namespace.clone(),
        name: None,
        subresource: None,
    };
    tokio::spawn(async move {
        for line in backlog {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(mut live) = live.take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let line = tokio::select! {
                c = live.recv() => match c {
                    Ok(c) if matches(&filter, &c.group, &c.plural, &c.namespace) => event_line(c.kind, &c.object),
                    Ok(_) => continue,
                    // Too slow a reader: end the watch; the client resumes from its version.
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = state.lock().rv;
                    event_line("BOOKMARK", &json!({
                        "kind": r.kind, "apiVersion": api_version(&r),
                        "metadata": {"resourceVersion": rv.to_string()}
                    }))
                },
                () = tokio::time::sleep_until(deadline) => return,
                _ = stop.wait_for(|s| *s) => return,
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut rsp = Response::new(StreamBody::new(stream).boxed());
    rsp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    rsp
}

pub(super) fn token_review(s: &State, body: &Bytes) -> Response<Body> {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    let token = review["spec"]["token"].as_str().unwrap_or("");
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let status_v = match s.tokens.get(token) {
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
        Some((user, auds)) => {
            let both: Vec<&String> = if wanted.is_empty() {
                auds.iter().collect()
            } else {
                wanted.iter().filter(|a| auds.contains(a)).collect()
            };
            if both.is_empty() {
                json!({"authenticated": false, "error": "token audiences are invalid for the target audiences"})
            } else {
                let ns = user.split(':').nth(2).unwrap_or("");
                json!({
                    "authenticated": true,
                    "user": {
                        "username": user,
                        "uid": format!("uid-{user}"),
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                    },
                    "audiences": both,
                })
            }
        }
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": review["spec"],
            "status": status_v,
        }),
    )
}
