//! The tap listener (Linkerd's port 4190): `POST /tap` with a JSON [`TapRequest`] answers a
//! stream of newline-delimited JSON [`TapEvent`](mesh_tower::tap::TapEvent)s, until the
//! client goes away or its maximum is reached.
//!
//! Served only over mesh mTLS, with the proxy's own certificate and the inbound server config
//! (one TLS setup), and only to a client whose certificate carries an identity
//! `--tap-allow` admits (default: the `mesh-tap` service account of the control namespace).
//! A plaintext client, a failed handshake (no client certificate, another trust root) and an
//! identity not allowed are refused, logged and counted in `tap_refused_total{reason}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use mesh_core::authz::IdentityMatch;
use mesh_core::{Identity, authz::InvalidIdentityMatch};
use mesh_identity::PeerIdentity;
use mesh_tower::BoxError;
use mesh_tower::metrics::Registry;
use mesh_tower::tap::{Subscription, Tap, TapConfig, TapRequest};
use metrics::Label;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::Proxy;

/// The largest request body (a filter) read.
const MAX_REQUEST: usize = 16 * 1024;
/// How long a client may take to say its first bytes and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the tap listener holds open at once (past the subscriber cap, the rest are
/// refused with 429 before they cost more than a connection).
const MAX_CONNECTIONS: usize = 64;

/// The tap flags of `mesh proxy`.
#[derive(Debug, Args)]
pub(crate) struct TapArgs {
    /// Serve tap here over mTLS (Linkerd's port is 4190; injected pods listen on
    /// 0.0.0.0:4190). Off when not given, or without an identity.
    #[arg(long, env = "MESH_PROXY_TAP_ADDR", value_name = "ADDR")]
    pub(crate) tap_addr: Option<SocketAddr>,
    /// Identities allowed to tap (either form, `*.<suffix>` patterns), repeated or
    /// comma-separated. Default: the `mesh-tap` service account of the control namespace.
    #[arg(
        long,
        env = "MESH_PROXY_TAP_ALLOW",
        value_delimiter = ',',
        value_name = "IDENTITY"
    )]
    tap_allow: Vec<String>,
    /// Request headers whose values tap events carry (default: none; headers hold secrets).
    #[arg(
        long,
        env = "MESH_PROXY_TAP_HEADERS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    tap_header: Vec<http::HeaderName>,
    /// Tap subscribers served at once.
    #[arg(long, env = "MESH_PROXY_TAP_MAX_SUBSCRIBERS", default_value_t = mesh_tower::tap::DEFAULT_MAX_SUBSCRIBERS)]
    tap_max_subscribers: usize,
}

/// Why a tap client was turned away: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// It did not open with TLS.
    Plaintext,
    /// The mTLS handshake failed (no client certificate, another trust root, too slow).
    Handshake,
    /// Its identity is not allowed to tap.
    Unauthorized,
}

/// What each tap connection needs.
struct TapServer {
    proxy: Arc<Proxy>,
    allow: Vec<IdentityMatch>,
}

/// A subscription's events as newline-delimited JSON.
struct EventBody(Subscription);

// === impl TapArgs ===

impl TapArgs {
    /// The hub the stacks publish to, naming this proxy's namespace and workload.
    pub(crate) fn hub(&self, namespace: &str, workload: Option<&str>, registry: &Registry) -> Tap {
        let config = TapConfig {
            max_subscribers: self.tap_max_subscribers,
            headers: self.tap_header.clone(),
            namespace: Some(namespace.to_owned()),
            // `deployment/web` names the workload `web`.
            workload: workload.map(|w| w.rsplit('/').next().unwrap_or(w).to_owned()),
            ..TapConfig::default()
        };
        Tap::new(config, registry)
    }

    /// The identities allowed to tap.
    fn allow(
        &self,
        trust_domain: &str,
        control_ns: &str,
    ) -> Result<Vec<IdentityMatch>, InvalidIdentityMatch> {
        if self.tap_allow.is_empty() {
            let id = Identity::new(trust_domain, control_ns, "mesh-tap")?;
            return Ok(vec![IdentityMatch::Exact(id)]);
        }
        self.tap_allow
            .iter()
            .map(|s| IdentityMatch::parse(s))
            .collect()
    }
}

// === impl Refusal ===

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Handshake => "tls_handshake",
            Self::Unauthorized => "unauthorized",
        }
    }

    fn count(self, registry: &Registry, peer: SocketAddr, identity: Option<&Identity>) {
        registry
            .counter(
                "tap_refused_total",
                vec![Label::new("reason", self.as_str())],
            )
            .increment(1);
        tracing::info!(%peer, identity = ?identity.map(ToString::to_string), reason = self.as_str(), "tap client refused");
    }
}

/// Binds the tap listener when `--tap-addr` asks for one and the proxy has an identity to
/// serve mTLS with; returns its address.
pub(crate) async fn start(proxy: &Arc<Proxy>) -> Result<Option<SocketAddr>, String> {
    let args = &proxy.args;
    let Some(addr) = args.tap.tap_addr else {
        return Ok(None);
    };
    if proxy.tls_server.is_none() {
        tracing::warn!(%addr, "tap is served only over mTLS and this proxy has no identity: tap is off");
        return Ok(None);
    }
    let ids = &args.identity;
    let allow = (args.tap)
        .allow(&ids.trust_domain, &ids.control_namespace)
        .map_err(|e| format!("--tap-allow: {e}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("tap {addr}: {e}"))?;
    let server = Arc::new(TapServer {
        proxy: Arc::clone(proxy),
        allow,
    });
    proxy.registry.describe(
        "tap_refused_total",
        "Tap clients refused: plaintext, failed handshake, identity not allowed.",
    );
    let config = super::accept::Config {
        direction: "tap",
        max_connections: MAX_CONNECTIONS,
        registry: proxy.registry.clone(),
        shutdown: proxy.shutdown.subscribe(),
    };
    tokio::spawn(super::accept::serve(listener, config, move |tcp, peer| {
        Arc::clone(&server).connection(tcp, peer)
    }));
    Ok(Some(addr))
}

// === impl TapServer ===

impl TapServer {
    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) -> Result<(), BoxError> {
        let registry = &self.proxy.registry;
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await??;
        // A TLS record of type handshake; anything else is plaintext, told why if it speaks
        // HTTP/1 and closed.
        if n == 0 || first[0] != 0x16 {
            Refusal::Plaintext.count(registry, peer, None);
            return plaintext_refused(tcp).await;
        }
        let Some(tls_config) = self.proxy.tls_server.clone() else {
            return Ok(());
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
        else {
            Refusal::Handshake.count(registry, peer, None);
            return Ok(());
        };
        let identity = tls.get_ref().1.peer_identity();
        let control_ns = &self.proxy.args.identity.control_namespace;
        let allowed = identity
            .as_ref()
            .is_some_and(|id| self.allow.iter().any(|m| m.admits(id, control_ns)));
        if !allowed {
            Refusal::Unauthorized.count(registry, peer, identity.as_ref());
        }
        let server = Arc::clone(&self);
        let svc = hyper::service::service_fn(move |req| {
            let server = Arc::clone(&server);
            async move { Ok::<_, Infallible>(server.answer(req, allowed).await) }
        });
        super::http_server(&self.proxy.args)
            .serve_connection(TokioIo::new(tls), svc)
            .await
    }

    async fn answer(&self, req: Request<Incoming>, allowed: bool) -> Response<TapBody> {
        if !allowed {
            return text(StatusCode::FORBIDDEN, "this identity may not tap\n");
        }
        if req.uri().path() != "/tap" {
            return text(StatusCode::NOT_FOUND, "POST /tap\n");
        }
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST /tap\n");
        }
        let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("{e}\n")),
        };
        let tap_req: TapRequest = if body.is_empty() {
            TapRequest::default()
        } else {
            match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            }
        };
        match self
            .proxy
            .tap
            .subscribe(tap_req.filter.clone(), tap_req.limits())
        {
            Ok(sub) => {
                tracing::info!(filter = ?tap_req.filter, "tap subscriber");
                let mut rsp = Response::new(EventBody(sub).boxed_unsync());
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-ndjson"),
                );
                rsp
            }
            Err(e) => text(StatusCode::TOO_MANY_REQUESTS, &format!("{e}\n")),
        }
    }
}

/// A tap answer's body: a short text, or the event stream.
type TapBody = UnsyncBoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: &str) -> Response<TapBody> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_owned())).boxed_unsync());
    *rsp.status_mut() = status;
    rsp
}

/// Tells an HTTP/1 client without TLS why it is refused, then closes.
async fn plaintext_refused(mut tcp: TcpStream) -> Result<(), BoxError> {
    let msg = "tap is served over mesh mTLS only\n";
    let rsp = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
        msg.len()
    );
    tcp.write_all(rsp.as_bytes()).await?;
    tcp.shutdown().await?;
    Ok(())
}

// === impl EventBody ===

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            let Some(ev) = ready!(this.0.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            // An event always serializes (plain fields); skip one that would not rather than
            // end the stream.
            if let Ok(mut line) = serde_json::to_vec(&*ev) {
                line.push(b'\n');
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))));
            }
        }
    }
}
