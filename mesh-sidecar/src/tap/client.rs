//! The tap client: opens the tap streams of several proxies over mesh mTLS and yields their
//! typed events. `mesh tap`, `mesh top` and the dashboard read through [`open`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh_core::Identity;
use mesh_tower::tap::{TapEvent, TapRequest};
use tokio::sync::mpsc;

/// How long connecting, the handshake and the answer's headers may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest line read from a proxy: an event is far smaller, a longer line is refused.
const MAX_LINE: usize = 256 * 1024;
/// Events buffered between the proxies' readers and the consumer.
const QUEUE: usize = 1_024;

/// Why tapping a proxy failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TapClientError {
    #[error("--identity-dir {dir}: {reason}")]
    Identity { dir: String, reason: String },
    #[error("{proxy}: {source}")]
    Connect {
        proxy: String,
        source: mesh_tower::BoxError,
    },
    #[error("{proxy}: the proxy refused to be tapped ({status}): {reason}")]
    Refused {
        proxy: String,
        status: StatusCode,
        reason: String,
    },
    #[error("{proxy}: a line of its stream is not an event: {reason}")]
    BadEvent { proxy: String, reason: String },
}

/// A proxy to tap: its tap address and the mesh identity it must prove.
#[derive(Clone, Debug)]
pub(crate) struct TapTarget {
    /// `namespace/name`, for messages and `src`/`dst` columns.
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) identity: Identity,
}

/// The client's own mesh certificate.
#[derive(Clone)]
pub(crate) struct TapClient {
    tls: Arc<rustls::ClientConfig>,
}

/// An event and the proxy (its index in the targets) that saw it.
#[derive(Clone, Debug)]
pub(crate) struct Tapped {
    pub(crate) proxy: usize,
    pub(crate) event: TapEvent,
}

/// The merged streams; ends when every proxy's stream has ended.
pub(crate) type TapStream = mpsc::Receiver<Result<Tapped, TapClientError>>;

// === impl TapClient ===

impl TapClient {
    /// A client with the certificate, key and trust anchors of `dir` (`tls.crt`, `tls.key`,
    /// `ca.crt`, as `mesh identity issue` writes them).
    pub(crate) fn from_dir(dir: &Path) -> Result<Self, TapClientError> {
        let bad = |reason: String| TapClientError::Identity {
            dir: dir.display().to_string(),
            reason,
        };
        let (certs, trust, _) = crate::workload_identity::load_dir(dir).map_err(bad)?;
        let tls =
            mesh_identity::tls::client_config(certs, trust).map_err(|e| bad(e.to_string()))?;
        Ok(Self { tls: Arc::new(tls) })
    }
}

/// Opens every target's stream with `request`; fails if any proxy cannot be reached or
/// refuses (so a wrong identity is told at once), then yields their events as they come.
pub(crate) async fn open(
    client: &TapClient,
    targets: &[TapTarget],
    request: &TapRequest,
) -> Result<TapStream, TapClientError> {
    let body = Bytes::from(serde_json::to_vec(request).unwrap_or_default());
    let mut opened = Vec::with_capacity(targets.len());
    for t in targets {
        let rsp = tokio::time::timeout(CONNECT_TIMEOUT, subscribe(client, t, body.clone()))
            .await
            .map_err(|e| connect_error(t, e.into()))??;
        opened.push(rsp);
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    for (proxy, (rsp, t)) in opened.into_iter().zip(targets).enumerate() {
        tokio::spawn(read_events(proxy, t.name.clone(), rsp, tx.clone()));
    }
    Ok(rx)
}

fn connect_error(t: &TapTarget, source: mesh_tower::BoxError) -> TapClientError {
    TapClientError::Connect {
        proxy: t.name.clone(),
        source,
    }
}

/// `POST /tap` on one proxy; its streaming answer.
async fn subscribe(
    client: &TapClient,
    t: &TapTarget,
    body: Bytes,
) -> Result<http::Response<hyper::body::Incoming>, TapClientError> {
    let err = |e: mesh_tower::BoxError| connect_error(t, e);
    let name = mesh_identity::tls::server_name(&t.identity).map_err(|e| err(e.into()))?;
    let tcp = tokio::net::TcpStream::connect(t.addr)
        .await
        .map_err(|e| err(e.into()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&client.tls))
        .connect(name, tcp)
        .await
        .map_err(|e| err(e.into()))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| err(e.into()))?;
    tokio::spawn(conn);
    let req = Request::post("/tap")
        .header(http::header::HOST, t.addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| err(e.into()))?;
    let rsp = send.send_request(req).await.map_err(|e| err(e.into()))?;
    if rsp.status() != StatusCode::OK {
        let status = rsp.status();
        let text = rsp.into_body().collect().await.map(|b| b.to_bytes());
        let reason = text.map_or_else(
            |e| e.to_string(),
            |b| String::from_utf8_lossy(&b).trim().to_owned(),
        );
        return Err(TapClientError::Refused {
            proxy: t.name.clone(),
            status,
            reason,
        });
    }
    Ok(rsp)
}

/// Splits one proxy's stream into events until it ends or the consumer goes away.
async fn read_events(
    proxy: usize,
    name: String,
    rsp: http::Response<hyper::body::Incoming>,
    tx: mpsc::Sender<Result<Tapped, TapClientError>>,
) {
    let mut body = rsp.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map(|f| f.into_data()) else {
            // The proxy went away: its stream ends here.
            return;
        };
        let Ok(data) = data else { continue };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(end + 1);
            let parsed = serde_json::from_slice::<TapEvent>(&line[..end])
                .map(|event| Tapped { proxy, event })
                .map_err(|e| TapClientError::BadEvent {
                    proxy: name.clone(),
                    reason: e.to_string(),
                });
            if tx.send(parsed).await.is_err() {
                return;
            }
        }
        if buf.len() > MAX_LINE {
            let reason = format!("a line longer than {MAX_LINE} bytes");
            let _ = tx
                .send(Err(TapClientError::BadEvent {
                    proxy: name,
                    reason,
                }))
                .await;
            return;
        }
    }
}
