//! Truth in metrics through a real `mesh proxy` (explicit mode, loopback): responses are
//! classified at the end of their stream, as Linkerd does. A gRPC error in the trailers, a
//! trailers-only gRPC error, an HTTP/2 stream the backend resets mid-body and an HTTP/1 body
//! the backend cuts short are failures on the proxy's `/metrics`; a gRPC OK is a success.
//!
//! The gRPC backend is hyper's HTTP/2 server (h2c) sending what a gRPC server puts on the wire
//! (a length-prefixed message, then `grpc-status` trailers): the wire is what the proxy sees.
//! Every wait is bounded; proxies and backends die with the test, also on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::loopback::{ConfiguredProxy, LoopbackProxy, get, service};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Frames = Vec<Result<Frame<Bytes>, BoxError>>;
type FrameStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>>;
type GrpcBody = StreamBody<FrameStream>;

/// A gRPC message on the wire: uncompressed flag, length, payload.
fn message(payload: &[u8]) -> Bytes {
    let mut b = vec![0u8];
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

fn status_trailers(code: u32) -> Frame<Bytes> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.into());
    Frame::trailers(t)
}

/// Answers by method: `Ok` (a message, then status 0), `Unavailable` (a message, then status
/// 14 in the trailers), `TrailersOnly` (status 14 in the headers, no body), `Reset` (a
/// message, then, once the proxy has passed the headers on, the stream is reset).
async fn grpc_answer(req: Request<Incoming>) -> Result<Response<GrpcBody>, Infallible> {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut frames: Frames = match method.as_str() {
        "Ok" => vec![Ok(Frame::data(message(b"hi"))), Ok(status_trailers(0))],
        "Unavailable" => vec![Ok(Frame::data(message(b"hi"))), Ok(status_trailers(14))],
        "Reset" => vec![
            Ok(Frame::data(message(b"partial"))),
            Err("the backend gives up mid-body".into()),
        ],
        _ => vec![],
    };
    frames.reverse();
    let body = futures_util::stream::unfold(frames, |mut frames| async move {
        let frame = frames.pop()?;
        if frame.is_err() {
            // The headers and first message reach the client before the reset does.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Some((frame, frames))
    });
    let mut rsp = Response::new(StreamBody::new(Box::pin(body) as FrameStream));
    rsp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    if method == "TrailersOnly" {
        rsp.headers_mut().insert("grpc-status", 14.into());
    }
    Ok(rsp)
}

/// An h2c gRPC backend on loopback, served until the test's runtime ends.
async fn grpc_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(grpc_answer)),
            );
        }
    });
    addr
}

/// An HTTP/1.1 backend that promises 100 bytes, sends 10 and closes.
fn short_backend() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        }
    });
    addr
}

/// What a gRPC client saw of one call: the data it read, its trailers, or the error that
/// ended the stream.
struct Call {
    status: u16,
    data: usize,
    trailers: Option<HeaderMap>,
    error: Option<String>,
}

/// One gRPC call to `grpc.shop` through the proxy's outbound listener, over h2c.
async fn grpc_call(outbound: SocketAddr, method: &str) -> Call {
    let tcp = TcpStream::connect(outbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://grpc.shop/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(message(b"ping")))
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let mut body = rsp.into_body();
    let mut call = Call {
        status,
        data: 0,
        trailers: None,
        error: None,
    };
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => call.data += d.len(),
                Err(f) => call.trailers = f.into_trailers().ok(),
            },
            Err(e) => {
                call.error = Some(e.to_string());
                break;
            }
        }
    }
    call
}

/// The sum of `name` over the series on `text` whose labels include every one of `labels`
/// (`key="value"`).
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The proxy's `/metrics`, once `response_total` has counted `n` outbound responses (the
/// last one is recorded when the proxy is done with its stream, just after the client).
fn metrics_after(p: &LoopbackProxy, n: f64) -> String {
    let mut text = String::new();
    support::loopback::wait_for(Duration::from_secs(10), || {
        text = get(p.admin, "/metrics");
        sum(&text, "response_total", &["direction=\"outbound\""]) >= n
    });
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_are_classified_when_they_end() {
    let backend = grpc_backend().await;
    let f = ConfiguredProxy::start("grpc-metrics", &service("grpc", backend));
    let outbound = f.proxy.outbound;

    let ok = grpc_call(outbound, "Ok").await;
    assert_eq!((ok.status, ok.error.as_deref()), (200, None));
    let unavailable = grpc_call(outbound, "Unavailable").await;
    let code = unavailable
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"));
    assert_eq!(code.map(|c| c.to_str().unwrap()), Some("14"));
    let trailers_only = grpc_call(outbound, "TrailersOnly").await;
    assert_eq!((trailers_only.status, trailers_only.data), (200, 0));
    let reset = grpc_call(outbound, "Reset").await;
    // The client learns the stream failed; it is not handed a clean, truncated end.
    assert_eq!(reset.status, 200);
    assert!(reset.data > 0, "the first message did not arrive");
    assert!(
        reset.error.is_some(),
        "a stream reset mid-body ended cleanly for the client"
    );

    let text = metrics_after(&f.proxy, 4.0);
    let outbound = "direction=\"outbound\"";
    let series =
        |labels: &[&str]| sum(&text, "response_total", &[&[outbound][..], labels].concat());
    assert_eq!(
        series(&["classification=\"success\"", "grpc_status=\"0\""]),
        1.0,
        "{text}"
    );
    // Status 14 in the trailers, and in the headers of a trailers-only response.
    assert_eq!(
        series(&["classification=\"failure\"", "grpc_status=\"14\""]),
        2.0,
        "{text}"
    );
    assert_eq!(
        series(&[
            "status_code=\"200\"",
            "classification=\"failure\"",
            "error=\"h2("
        ]),
        1.0,
        "{text}"
    );
    assert_eq!(series(&["classification=\"success\""]), 1.0, "{text}");
    assert_eq!(sum(&text, "request_total", &[outbound]), 4.0, "{text}");
}

#[test]
fn an_http1_body_cut_short_is_a_failure() {
    let f = ConfiguredProxy::start("http1-cut", &service("web", short_backend()));
    let rsp = support::loopback::exchange(
        f.proxy.outbound,
        b"GET / HTTP/1.1\r\nHost: web.shop\r\nConnection: close\r\n\r\n",
    );
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    let body = rsp.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.len() < 100, "the client was sent a whole body: {rsp}");

    let text = metrics_after(&f.proxy, 1.0);
    let failed = sum(
        &text,
        "response_total",
        &[
            "direction=\"outbound\"",
            "status_code=\"200\"",
            "classification=\"failure\"",
            "error=\"unclassified\"",
        ],
    );
    assert_eq!(failed, 1.0, "{text}");
    assert_eq!(
        sum(&text, "response_total", &["classification=\"success\""]),
        0.0,
        "{text}"
    );
}
