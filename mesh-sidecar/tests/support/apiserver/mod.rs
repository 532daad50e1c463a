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
//! - custom objects are judged against their CRD's `openAPIV3Schema` on create, replace,
//!   patch and status writes, as the real server does (`validate`): unknown fields are pruned
//!   and, by the `fieldValidation` query parameter, refused (`Strict`: 400 `BadRequest`
//!   naming them), named in `Warning` headers (`Warn`, the default) or ignored (`Ignore`);
//!   an invalid object is refused with 422 `Invalid` and `details.causes[]` (`field`,
//!   `message`). The schema is that of the installed CRD, or, for a kind served without one
//!   ([`STANDARD`]'s Gateway API routes, [`ApiServer::serve_resource`]), the one
//!   `mesh install --crds` prints for it (`mesh_core`'s catalog);
//! - the `/status` subresource (get, replace, merge patch) only where the CRD declares
//!   `subresources.status` (and for Deployments, PodDisruptionBudgets and CRDs), else 404:
//!   there a write to the main resource keeps the stored status, a status write changes the
//!   status only; `metadata.generation` of a custom object counts changes of everything but
//!   status and metadata. A custom kind without the subresource keeps its status with the
//!   object, pruned unless its schema lists it; core kinds keep what they are given;
//! - Events, `core/v1` and `events.k8s.io/v1`, stored like any object;
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`, answered from a token table the test
//!   fills with [`ApiServer::set_token`];
//! - `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: every request is allowed
//!   (the kubeconfig's user is an admin) unless [`ApiServer::allow_only`] names what is;
//! - with `install::INSTALL`, the kinds `mesh install` writes: a Secret's `stringData` is merged into
//!   its base64 `data` as the API server does; Deployments have the `/status` subresource; a
//!   CustomResourceDefinition is established on write (its status conditions, and its kinds
//!   served from then on) and, when deleted, takes its kinds and their objects with it.
//!
//! Objects are JSON values stored by group, resource, namespace and name; every write takes
//! the next value of one global resourceVersion counter, as etcd's revision does. The store outlives [`ApiServer::stop`], so a [`ApiServer::start_again`] on
//! the same port looks like an API server restart to its clients.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

mod admission;
mod install;
mod rest;
mod validate;

use admission::{Served, custom_main_write, refusal};
use install::secret_write;
use rest::{handle, status};
pub(crate) use validate::FieldValidation;

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

/// Core kinds, EndpointSlices, Gateway API routes, Leases and TokenReview; not Linkerd's policy
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
    res("", "v1", "Event", "events", true),
    res("events.k8s.io", "v1", "Event", "events", true),
    res("coordination.k8s.io", "v1", "Lease", "leases", true),
    res(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        false,
    ),
];

pub(super) const fn res(
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

/// Which part of an object a write replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The object; the stored status of a custom resource stays.
    Main,
    /// The `/status` subresource: the status only.
    Status,
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
    /// Schema and `/status` of each custom kind's versions, by (group, plural, version).
    served: HashMap<(String, String, String), Served>,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    log: Vec<Change>,
    compacted: u64,
    tokens: HashMap<String, (String, Vec<String>)>,
    changes: broadcast::Sender<Change>,
    gone_served: u64,
    requests: Vec<String>,
    /// What SelfSubjectAccessReviews allow, as (group, resource, verb); `None`: everything.
    allowed: Option<Vec<(String, String, String)>>,
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
        let mut state = State {
            resources: Vec::new(),
            served: HashMap::new(),
            objects: BTreeMap::new(),
            rv: 1,
            log: Vec::new(),
            compacted: 0,
            tokens: HashMap::new(),
            changes,
            gone_served: 0,
            requests: Vec::new(),
            allowed: None,
        };
        for r in resources {
            state.serve(r.clone());
        }
        let state = Arc::new(parking_lot::Mutex::new(state));
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

    /// Starts serving another kind, as installing its CRD does (the CRD `mesh install --crds`
    /// prints for it, when it is a kind of the mesh's catalog).
    pub(crate) fn serve_resource(&self, r: ApiResource) {
        self.state.lock().serve(r);
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
    /// going through HTTP (so it works while the server is stopped). As `kubectl apply`, with
    /// strict field validation: a test that feeds an object a real server refuses panics.
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
            if let Err(rsp) = s.write(&r, key, v, false, Part::Main, FieldValidation::Strict) {
                panic!("the server refuses the object: {}", refusal(*rsp));
            }
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

    /// The stored objects of a resource in a namespace.
    pub(crate) fn list(&self, group: &str, plural: &str, namespace: &str) -> Vec<Value> {
        (self.state.lock().objects.iter())
            .filter(|((g, p, ns, _), _)| g == group && p == plural && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
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

// === impl ApiResource ===

impl ApiResource {
    /// A kind whose objects count `metadata.generation` of what is not status: a CRD's kind,
    /// and the built-in ones here outside the core groups (Deployment, PodDisruptionBudget,
    /// CustomResourceDefinition), which also serve `/status`.
    fn is_custom(&self) -> bool {
        !matches!(
            self.group,
            "" | "discovery.k8s.io"
                | "authentication.k8s.io"
                | "authorization.k8s.io"
                | "events.k8s.io"
                | "rbac.authorization.k8s.io"
                | "admissionregistration.k8s.io"
        )
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

    /// Stores `v` under `key` (creating or replacing), pruned and validated against the
    /// kind's schema, and records the change. `Ok` holds the stored object and the warnings.
    fn write(
        &mut self,
        r: &ApiResource,
        key: Key,
        mut v: Value,
        create_only: bool,
        part: Part,
        fv: FieldValidation,
    ) -> Result<(Value, Vec<String>), Box<Response<Body>>> {
        let warnings = self.prune(r, &mut v, fv)?;
        let existing = self.objects.get(&key).cloned();
        if create_only && existing.is_some() {
            return Err(Box::new(status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{}\" already exists", r.plural, key.3),
            )));
        }
        let mut v = match (part, &existing) {
            (Part::Status, None) => {
                return Err(Box::new(status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{} \"{}\" not found", r.plural, key.3),
                )));
            }
            (Part::Status, Some(old)) => {
                let mut whole = old.clone();
                whole["status"] = v.get("status").cloned().unwrap_or(Value::Null);
                whole
            }
            (Part::Main, _) if r.is_custom() => {
                custom_main_write(v, existing.as_ref(), self.has_status(r))
            }
            (Part::Main, _) if r.kind == "Secret" => secret_write(v),
            (Part::Main, _) => v,
        };
        self.validate(r, &key.3, &v)?;
        if r.kind == "CustomResourceDefinition" {
            self.establish(&mut v);
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
        Ok((v, warnings))
    }

    fn remove(&mut self, r: &ApiResource, key: &Key) -> Option<Value> {
        let mut v = self.objects.remove(key)?;
        if r.kind == "CustomResourceDefinition" {
            self.unestablish(&v);
        }
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
