//! A Kubernetes API server for tests: in process, plain HTTP on 127.0.0.1, speaking the parts
//! of the real API that the mesh and kubectl use.
//!
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`;
//! - per resource, namespaced or cluster-wide: list (with `metadata.resourceVersion`), get,
//!   create (POST), replace (PUT, honouring `metadata.resourceVersion` as a precondition),
//!   merge patch (PATCH), delete;
//! - watch (`?watch=1&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`):
//!   chunked, newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`
//!   events; from a version older than the last [`ApiServer::compact`] the stream is one
//!   `ERROR` event holding a `Status` with code 410 and reason `Expired`, as the real API
//!   server answers a watch whose version was compacted away;
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`, answered from a token table the test
//!   fills with [`ApiServer::set_token`].
//!
//! Objects are JSON values stored by group, resource, namespace and name; every write takes
//! the next value of one global resourceVersion counter, as etcd's revision does. Schemas are
//! not validated. The store outlives [`ApiServer::stop`], so a [`ApiServer::start_again`] on
//! the same port looks like an API server restart to its clients.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

type Body = BoxBody<Bytes, Infallible>;

/// A kind the server serves.
#[derive(Clone, Debug)]
pub(crate) struct ApiResource {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) namespaced: bool,
}

/// Core kinds, EndpointSlices, Gateway API routes and TokenReview; not Linkerd's policy
/// CRDs, so that clients meet kinds that are not installed.
pub(crate) const STANDARD: &[ApiResource] = &[
    res("", "v1", "Namespace", "namespaces", false),
    res("", "v1", "Service", "services", true),
    res("", "v1", "Pod", "pods", true),
    res("", "v1", "ConfigMap", "configmaps", true),
    res(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    res(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        true,
    ),
    res(
        "gateway.networking.k8s.io",
        "v1",
        "GRPCRoute",
        "grpcroutes",
        true,
    ),
    res(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        false,
    ),
];

const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> ApiResource {
    ApiResource {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

/// Store key: group, plural, namespace ("" when cluster-scoped), name.
type Key = (String, String, String, String);

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    group: String,
    plural: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug)]
struct State {
    resources: Vec<ApiResource>,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    log: Vec<Change>,
    compacted: u64,
    tokens: HashMap<String, (String, Vec<String>)>,
    changes: broadcast::Sender<Change>,
    gone_served: u64,
    requests: Vec<String>,
}

/// The running server, stopped on drop.
#[derive(Debug)]
pub(crate) struct ApiServer {
    rt: tokio::runtime::Runtime,
    state: Arc<parking_lot::Mutex<State>>,
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
}

// === impl ApiServer ===

impl ApiServer {
    /// Serves [`STANDARD`] on a free loopback port.
    pub(crate) fn start() -> Self {
        Self::with_resources(STANDARD)
    }

    /// Serves `resources` on a free loopback port.
    pub(crate) fn with_resources(resources: &[ApiResource]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (changes, _) = broadcast::channel(1024);
        let state = Arc::new(parking_lot::Mutex::new(State {
            resources: resources.to_vec(),
            objects: BTreeMap::new(),
            rv: 1,
            log: Vec::new(),
            compacted: 0,
            tokens: HashMap::new(),
            changes,
            gone_served: 0,
            requests: Vec::new(),
        }));
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut server = Self {
            rt,
            state,
            addr,
            stop: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::clone(&self.state);
        let addr = self.addr;
        self.rt.spawn(async move {
            let mut stop_accept = stop_rx.clone();
            loop {
                let tcp = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                    _ = stop_accept.wait_for(|s| *s) => return,
                };
                let state = Arc::clone(&state);
                let mut stop_conn = stop_rx.clone();
                let stop_watch = stop_rx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        handle(Arc::clone(&state), addr, stop_watch.clone(), req)
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc);
                    // Stopping drops the connection mid-stream, as a crashed server would.
                    tokio::select! {
                        _ = conn => {}
                        _ = stop_conn.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        self.stop = Some(stop);
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and cuts every open connection (watches included). The store stays.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        // Let the tasks see it before the port is bound again.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Serves again on the same port, with the same store.
    pub(crate) fn start_again(&mut self) {
        let addr = self.addr;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match self.rt.block_on(TcpListener::bind(addr)) {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("rebinding {addr}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        self.serve(listener);
    }

    /// Starts serving another kind, as installing its CRD does.
    pub(crate) fn serve_resource(&self, r: ApiResource) {
        self.state.lock().resources.push(r);
    }

    /// Forgets the change history: watches from any version before now get 410 Gone.
    pub(crate) fn compact(&self) {
        let mut s = self.state.lock();
        s.compacted = s.rv;
        s.log.clear();
    }

    /// How many watches were answered 410 Gone.
    pub(crate) fn gone_served(&self) -> u64 {
        self.state.lock().gone_served
    }

    /// Request lines seen so far (`GET /api/v1/services?watch=1…`), for diagnostics.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.state.lock().requests.clone()
    }

    /// TokenReview authenticates `token` as `system:serviceaccount:<ns>:<sa>` for `audiences`.
    pub(crate) fn set_token(&self, token: &str, namespace: &str, sa: &str, audiences: &[&str]) {
        self.state.lock().tokens.insert(
            token.to_owned(),
            (
                format!("system:serviceaccount:{namespace}:{sa}"),
                audiences.iter().map(|a| (*a).to_owned()).collect(),
            ),
        );
    }

    /// Creates or replaces each document of a YAML stream, as `kubectl apply` would, without
    /// going through HTTP (so it works while the server is stopped).
    pub(crate) fn apply(&self, yaml: &str) {
        for doc in serde_norway::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("a YAML document");
            if v.is_null() {
                continue;
            }
            let mut s = self.state.lock();
            let r = s
                .resource_of(&v)
                .unwrap_or_else(|| panic!("the server does not serve {v}"));
            let ns = if r.namespaced {
                v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned()
            } else {
                String::new()
            };
            let name = v["metadata"]["name"].as_str().expect("a name").to_owned();
            let key = (r.group.to_owned(), r.plural.to_owned(), ns, name);
            s.write(&r, key, v, false)
                .expect("a replace cannot conflict");
        }
    }

    /// Deletes an object, if it exists.
    pub(crate) fn delete(&self, group: &str, plural: &str, namespace: &str, name: &str) {
        let mut s = self.state.lock();
        let key = (
            group.to_owned(),
            plural.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        );
        if let Some(r) = s.resource(group, plural) {
            s.remove(&r, &key);
        }
    }

    /// The stored object, if any.
    pub(crate) fn get(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let key = (
            group.to_owned(),
            plural.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        );
        self.state.lock().objects.get(&key).cloned()
    }

    /// A kubeconfig for this server in `dir`, with a bearer token the server ignores.
    pub(crate) fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {}
users:
- name: test
  user:
    token: test-admin-token
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: default
current-context: test
",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

// === impl State ===

impl State {
    fn resource(&self, group: &str, plural: &str) -> Option<ApiResource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    fn resource_of(&self, v: &Value) -> Option<ApiResource> {
        let av = v["apiVersion"].as_str()?;
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
        let kind = v["kind"].as_str()?;
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `v` under `key` (creating or replacing) and records the change.
    fn write(
        &mut self,
        r: &ApiResource,
        key: Key,
        mut v: Value,
        create_only: bool,
    ) -> Result<Value, Box<Response<Body>>> {
        let existing = self.objects.get(&key).cloned();
        if create_only && existing.is_some() {
            return Err(Box::new(status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{}\" already exists", r.plural, key.3),
            )));
        }
        let rv = self.next_rv();
        v["apiVersion"] = json!(api_version(r));
        v["kind"] = json!(r.kind);
        let meta = &mut v["metadata"];
        meta["name"] = json!(key.3);
        if r.namespaced {
            meta["namespace"] = json!(key.2);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        match &existing {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
        }
        self.objects.insert(key.clone(), v.clone());
        let kind = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(rv, &key, kind, v.clone());
        Ok(v)
    }

    fn remove(&mut self, _r: &ApiResource, key: &Key) -> Option<Value> {
        let mut v = self.objects.remove(key)?;
        let rv = self.next_rv();
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(rv, key, "DELETED", v.clone());
        Some(v)
    }

    fn record(&mut self, rv: u64, key: &Key, kind: &'static str, object: Value) {
        let change = Change {
            rv,
            group: key.0.clone(),
            plural: key.1.clone(),
            namespace: key.2.clone(),
            kind,
            object,
        };
        self.log.push(change.clone());
        let _ = self.changes.send(change);
    }
}

fn api_version(r: &ApiResource) -> String {
    if r.group.is_empty() {
        r.version.to_owned()
    } else {
        format!("{}/{}", r.group, r.version)
    }
}

// === HTTP ===

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut rsp = Response::new(full(v.to_string()));
    *rsp.status_mut() = code;
    rsp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    rsp
}

fn status_value(code: StatusCode, reason: &str, message: &str) -> Value {
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

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_value(code, reason, message))
}

fn not_found(what: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{what} not found"),
    )
}

/// What a request path names.
struct Target {
    resource: ApiResource,
    namespace: Option<String>,
    name: Option<String>,
}

async fn handle(
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

fn percent_decode(s: &str) -> String {
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

fn group_list(s: &State) -> Value {
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

fn resource_list(s: &State, group: &str, version: &str) -> Response<Body> {
    let resources: Vec<Value> = s
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let verbs = if r.kind == "TokenReview" {
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

fn target(
    s: &State,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, Box<Response<Body>>> {
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural, more @ ..] => (Some((*ns).to_owned()), *plural, more.first()),
        [plural, more @ ..] => (None, *plural, more.first()),
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
        name: name.map(|n| (*n).to_owned()),
    })
}

async fn resource_request(
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
    let ns_key = |t: &Target| t.namespace.clone().unwrap_or_default();
    match (method, &t.name) {
        (&Method::POST, None) if r.kind == "TokenReview" => token_review(&state.lock(), body),
        (&Method::GET, None) if watching => watch(state, stop, &t, query),
        (&Method::GET, None) => list(&state.lock(), &t),
        (&Method::GET, Some(name)) => {
            let key = (
                r.group.to_owned(),
                r.plural.to_owned(),
                ns_key(&t),
                name.clone(),
            );
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
            let key = (
                r.group.to_owned(),
                r.plural.to_owned(),
                ns_key(&t),
                name.to_owned(),
            );
            match state.lock().write(&r, key, v, true) {
                Ok(v) => json_response(StatusCode::CREATED, &v),
                Err(rsp) => *rsp,
            }
        }
        (&Method::PUT, Some(name)) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON",
                );
            };
            let key = (
                r.group.to_owned(),
                r.plural.to_owned(),
                ns_key(&t),
                name.clone(),
            );
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
            match s.write(&r, key, v, false) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(rsp) => *rsp,
            }
        }
        (&Method::PATCH, Some(name)) => {
            let key = (
                r.group.to_owned(),
                r.plural.to_owned(),
                ns_key(&t),
                name.clone(),
            );
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
            match s.write(&r, key, current, false) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(rsp) => *rsp,
            }
        }
        (&Method::DELETE, Some(name)) => {
            let key = (
                r.group.to_owned(),
                r.plural.to_owned(),
                ns_key(&t),
                name.clone(),
            );
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

fn matches(t: &Target, group: &str, plural: &str, namespace: &str) -> bool {
    t.resource.group == group
        && t.resource.plural == plural
        && t.namespace.as_deref().is_none_or(|ns| ns == namespace)
}

fn list(s: &State, t: &Target) -> Response<Body> {
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

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(
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

fn token_review(s: &State, body: &Bytes) -> Response<Body> {
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
