//! The admin endpoint: `/metrics` (Prometheus text, Linkerd's names), `/ready` (503 until
//! identity and config are ready), `/live`, and `POST /shutdown` (from loopback) to drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Proxy;

/// Serves the admin endpoint until shutdown.
pub(crate) async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    let mut shutdown = proxy.shutdown.subscribe();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            () = super::stopped(&mut shutdown) => return,
        };
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(Arc::clone(&proxy), peer, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp
}

async fn handle(
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut body = proxy.registry.render();
            body.push_str(&process_metrics());
            let mut rsp = text(StatusCode::OK, body);
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            rsp
        }
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            let missing = proxy.not_ready();
            let degraded = proxy.degraded();
            if missing.is_empty() && degraded.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else if missing.is_empty() {
                // Still ready: the last good snapshot serves while the watches reconnect.
                text(
                    StatusCode::OK,
                    format!(
                        "ready (kubernetes watch failing, serving the last good snapshot: {})\n",
                        degraded.join(", ")
                    ),
                )
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", missing.join(", ")),
                )
            }
        }
        (&Method::POST, "/shutdown") if peer.ip().is_loopback() => {
            tracing::info!("shutdown requested on the admin endpoint");
            proxy.shutdown.send_replace(true);
            text(StatusCode::OK, "shutting down\n")
        }
        (_, "/shutdown") => text(
            StatusCode::FORBIDDEN,
            "POST /shutdown is accepted from loopback only\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /ready, /live, POST /shutdown\n",
        ),
    })
}

/// `process_*` metrics from /proc, as Prometheus clients export them.
fn process_metrics() -> String {
    let mut out = String::new();
    let ticks = 100.0; // USER_HZ on Linux
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            out.push_str("# TYPE process_cpu_seconds_total counter\n");
            out.push_str(&format!(
                "process_cpu_seconds_total {}\n",
                (utime + stime) / ticks
            ));
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for (key, name) in [
            ("VmRSS:", "process_resident_memory_bytes"),
            ("VmHWM:", "process_resident_memory_max_bytes"),
        ] {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                out.push_str(&format!("# TYPE {name} gauge\n{name} {}\n", kb * 1024));
            }
        }
    }
    out
}
