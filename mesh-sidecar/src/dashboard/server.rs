//! The dashboard's HTTP server: the embedded page, the JSON API and the tap stream, on the
//! accept loop the `mesh` binary's other servers use (connection cap, back-off, shutdown).
//!
//! Only GETs are served and no request body is ever read, so a body cannot be made to grow
//! the server; headers are bounded in size and in the time a client may take to send them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::tap::{self, Tap, TapFilter};
use super::{Shared, api};

/// Connections at once: a few browsers (each holds about six, one of them the tap stream).
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request's headers may take.
const MAX_HEADERS: usize = 16 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The page and its assets, compiled in: the dashboard works offline and from any directory.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

/// Serves until SIGTERM or Ctrl-C.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // The dashboard has no metrics endpoint: its refusals are seen in its throttled log line.
    let registry = mesh_tower::metrics::Registry::new();
    crate::server_limits::serve(
        listener,
        "dashboard",
        MAX_CONNECTIONS,
        registry,
        move |tcp, peer| connection(Arc::clone(&shared), tcp, peer),
    )
    .await;
}

async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    _peer: SocketAddr,
) -> Result<(), mesh_tower::BoxError> {
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, &req)) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADERS)
        .serve_connection(TokioIo::new(tcp), svc)
        .await?;
    Ok(())
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut rsp = Response::new(Full::new(body.into()).boxed_unsync());
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    // Nothing but our own assets and API: the page cannot be made to load anything else.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'self'; img-src 'self' data:"),
    );
    rsp
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return full(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "the dashboard serves GET only\n",
        );
    }
    let path = req.uri().path();
    if let Some((_, ty, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) {
        return full(StatusCode::OK, ty, *body);
    }
    let latest = shared.latest.load();
    let answer = match path {
        "/api/workloads" => &latest.workloads,
        "/api/edges" => &latest.edges,
        "/api/routes" => &latest.routes,
        "/api/certs" => &latest.certs,
        "/api/status" => &latest.status,
        "/api/tap" => return tap_stream(&shared.tap, req.uri().query().unwrap_or("")),
        // Read at each request, not per refresh: a canary's move shows at the next poll.
        "/api/canaries" => return json(StatusCode::OK, &api::canaries(shared.canaries.as_deref())),
        _ => {
            return full(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /, /api/workloads, /api/edges, /api/routes, /api/certs, /api/canaries, /api/tap\n",
            );
        }
    };
    json(StatusCode::OK, answer)
}

/// `/api/tap`: the feed's events as Server-Sent Events, or 503 with why there is no tap.
fn tap_stream(tap: &Tap, query: &str) -> Response<Body> {
    let feed = match tap {
        Tap::Feed(f) => f,
        Tap::Unavailable(why) => {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "error": why }),
            );
        }
    };
    let events = feed.open(&TapFilter::from_query(query));
    let (tx, rx) = mpsc::channel(tap::QUEUE);
    tokio::spawn(async move {
        let dropped = tap::forward(events, tx).await;
        if dropped > 0 {
            tracing::info!(dropped, "a tap view ended; a slow browser missed events");
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut rsp = full(StatusCode::OK, "text/event-stream", Bytes::new());
    *rsp.body_mut() = StreamBody::new(frames).boxed_unsync();
    rsp
}
