//! The demo's applications, in the demo's own process: emojivoto's `web` (which calls `emoji`
//! and `voting-svc` through its outbound proxy), the others answering `ok`, `voting-v2` failing
//! a share of its answers; and vote-bot's traffic generator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The share of voting-v2's answers that fail with 500, changed while the demo runs.
#[derive(Debug, Default)]
pub(super) struct Fault(AtomicU64);

#[derive(Debug, Default)]
pub(super) struct AppStats {
    pub(super) sent: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) faults: AtomicU64,
}

// === impl Fault ===

impl Fault {
    pub(super) fn new(rate: f64) -> Self {
        Self(AtomicU64::new(rate.to_bits()))
    }

    pub(super) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub(super) fn set(&self, rate: f64) {
        self.0.store(rate.to_bits(), Ordering::Relaxed);
    }
}

pub(super) async fn serve_app(
    listener: TcpListener,
    name: &'static str,
    web_out: Option<SocketAddr>,
    fault: Arc<Fault>,
    stats: Arc<AppStats>,
) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let client = client.clone();
        let stats = Arc::clone(&stats);
        let fault = Arc::clone(&fault);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let stats = Arc::clone(&stats);
                let fault_rate = fault.get();
                async move {
                    Ok::<_, Infallible>(app(name, req, web_out, fault_rate, client, stats).await)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn call(
    client: &Client<HttpConnector, Empty<Bytes>>,
    out: SocketAddr,
    host: &str,
    path: &str,
) -> StatusCode {
    let req = Request::get(format!("http://{out}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::new());
    let Ok(req) = req else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match client.request(req).await {
        Ok(r) => {
            let status = r.status();
            let _ = r.into_body().collect().await;
            status
        }
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

async fn app(
    name: &str,
    _req: Request<Incoming>,
    web_out: Option<SocketAddr>,
    fault_rate: f64,
    client: Client<HttpConnector, Empty<Bytes>>,
    stats: Arc<AppStats>,
) -> Response<Full<Bytes>> {
    let (status, body) = match name {
        "web" => {
            let Some(out) = web_out else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "no outbound");
            };
            let emoji = call(&client, out, "emoji-svc.emojivoto:8080", "/list").await;
            let vote = call(&client, out, "voting-svc.emojivoto:8080", "/vote/doughnut").await;
            if emoji.is_success() && vote.is_success() {
                (StatusCode::OK, "voted 🍩")
            } else {
                (StatusCode::BAD_GATEWAY, "a backend failed")
            }
        }
        "voting-v2" if fastrand::f64() < fault_rate => {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            (StatusCode::INTERNAL_SERVER_ERROR, "injected fault")
        }
        _ => (StatusCode::OK, "ok"),
    };
    text(status, body)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

pub(super) async fn generate(
    bot_out: SocketAddr,
    rps: u32,
    duration: Duration,
    stats: Arc<AppStats>,
) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tick.tick().await;
        let client = client.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            if call(&client, bot_out, "web-svc.emojivoto:8080", "/api/vote")
                .await
                .is_success()
            {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}
