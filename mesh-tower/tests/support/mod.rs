//! Shared pieces of the stack tests: an in-process PKI, meshed backends on `127.0.0.1:0` that
//! record what reached them, and helpers to read responses and Prometheus text.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mesh_identity::{CertStore, Identity, TrustBundle, TrustStore, ca, tls};
use mesh_tower::PolicyHandle;
use mesh_tower::client::{MeshClient, MeshResponse};
use mesh_tower::discover::StaticResolver;
use mesh_tower::metrics::Registry;
use mesh_tower::server::{MeshServer, local_target};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::time::Instant;

pub mod controller;

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const NS: &str = "shop";
/// The port the backends' Server resources name (the sockets themselves are ephemeral).
pub const WORKLOAD_PORT: u16 = 8080;

/// One trust anchor and issuer for the whole test.
pub struct Pki {
    issuer: ca::Issuer,
    trust: TrustStore,
}

impl Pki {
    pub fn new() -> Self {
        let day = Duration::from_secs(86_400);
        let anchor = ca::TrustAnchor::generate(TRUST_DOMAIN, day).unwrap();
        let issuer = ca::Issuer::generate(&anchor, day).unwrap();
        let trust = TrustStore::new(TrustBundle::from_pem(&anchor.cert_pem()).unwrap());
        Self { issuer, trust }
    }

    fn certs(&self, id: &Identity) -> CertStore {
        CertStore::with(
            self.issuer
                .issue_local(id, Duration::from_secs(3600))
                .unwrap(),
        )
    }

    pub fn server_tls(&self, id: &Identity) -> rustls::ServerConfig {
        tls::server_config(self.certs(id), self.trust.clone()).unwrap()
    }

    pub fn client_tls(&self, id: &Identity) -> rustls::ClientConfig {
        tls::client_config(self.certs(id), self.trust.clone()).unwrap()
    }
}

/// `<sa>` in the test namespace.
pub fn id(sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, NS, sa).unwrap()
}

/// Linkerd's DNS form of `id(sa)`.
pub fn dns(sa: &str) -> String {
    id(sa).to_dns("linkerd")
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    pub at: Instant,
}

/// A meshed backend: a `MeshServer` with its own identity, serving a recording app.
pub struct Backend {
    pub addr: SocketAddr,
    pub identity: Identity,
    pub registry: Registry,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    /// Serves an app that answers 200 with the backend's service account name.
    pub async fn start(pki: &Pki, sa: &str) -> Self {
        let body = Bytes::from(sa.to_owned());
        Self::start_with(pki, sa, "", move |_| {
            let body = body.clone();
            async move { StatusCode::OK.with_body(body) }
        })
        .await
    }

    /// Serves `handler` behind mesh mTLS and the inbound `policy` (YAML).
    pub async fn start_with<F, Fut>(pki: &Pki, sa: &str, policy: &str, handler: F) -> Self
    where
        F: Fn(http::request::Parts) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let identity = id(sa);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = MeshServer::new(
            Some(pki.server_tls(&identity)),
            PolicyHandle::from_yaml(policy).unwrap(),
            local_target(NS, WORKLOAD_PORT, &[("app", sa)]),
        );
        let registry = server.registry().clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let app = tower::service_fn(move |req: Request<Incoming>| {
            let (parts, _body) = req.into_parts();
            log.lock().push(Seen {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                request_id: header(&parts, "x-request-id"),
                traceparent: header(&parts, "traceparent"),
                at: Instant::now(),
            });
            let fut = handler(parts);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        tokio::spawn(server.serve(listener, app));
        Self {
            addr,
            identity,
            registry,
            seen,
        }
    }

    /// How many requests reached the application.
    pub fn hits(&self) -> usize {
        self.seen.lock().len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn endpoint(&self) -> mesh_tower::discover::Endpoint {
        mesh_tower::discover::Endpoint::meshed(self.addr, self.identity.clone())
    }
}

fn header(parts: &http::request::Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `StatusCode::OK.with_body("...")`.
pub trait WithBody {
    fn with_body(self, body: impl Into<Bytes>) -> Response<Full<Bytes>>;
}

impl WithBody for StatusCode {
    fn with_body(self, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
        let mut rsp = Response::new(Full::new(body.into()));
        *rsp.status_mut() = self;
        rsp
    }
}

/// A client with identity `sa` that routes by `policy` and finds endpoints in `resolver`.
pub fn client(
    pki: &Pki,
    sa: &str,
    policy: PolicyHandle,
    resolver: StaticResolver,
) -> (MeshClient<Full<Bytes>>, Registry) {
    let builder = MeshClient::builder(policy, resolver).mtls(pki.client_tls(&id(sa)));
    let registry = builder.registry().clone();
    (builder.build(), registry)
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

pub fn post(uri: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// The status and body text of a response.
pub async fn read(rsp: MeshResponse) -> (StatusCode, String) {
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An address nothing listens on.
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// The value of the sample `name{...}` whose labels include all of `labels`, from Prometheus
/// text. Panics (with the text) if there is none or more than one.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples(text, name, labels);
    assert_eq!(
        found.len(),
        1,
        "expected one {name} with {labels:?}, found {}:\n{text}",
        found.len()
    );
    found[0]
}

/// Every sample of `name` whose labels include all of `labels`.
pub fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let set = rest.strip_suffix('}')?;
            let all = labels
                .iter()
                .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
        .collect()
}
