//! A 1 GiB request body through a real `mesh proxy` (explicit mode, loopback, no root): it
//! reaches the app whole and in order while the proxy's memory stays flat, because bodies are
//! streamed, never buffered. See tests/HOSTILE.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::loopback::LoopbackProxy;
use support::procfs::rss_kib;

const GIB: u64 = 1 << 30;
/// What the last bytes of the body say, so the app can tell the end arrived, and in order.
const TAIL: &[u8; 16] = b"<end of 1 GiB!>\n";

/// An app that reads each request body to its end and answers with how many bytes it read
/// and the last 16 of them. Ends with its runtime, on drop.
struct Sink {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl Sink {
    fn start() -> Self {
        let (rt, listener) = support::loopback::app_runtime();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, _rt: rt }
    }
}

async fn answer(
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let mut body = req.into_body();
    let (mut read, mut tail) = (0u64, Vec::<u8>::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            read += data.len() as u64;
            tail.extend_from_slice(&data[data.len().saturating_sub(TAIL.len())..]);
            let excess = tail.len().saturating_sub(TAIL.len());
            tail.drain(..excess);
        }
    }
    let text = format!("read {read} ending {}", String::from_utf8_lossy(&tail));
    Ok(hyper::Response::new(Full::new(Bytes::from(text))))
}

/// Sends a `len`-byte body (zeros, then [`TAIL`]) to `addr` and returns the whole answer.
fn upload(addr: SocketAddr, len: u64) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    let mut left = len - TAIL.len() as u64;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    s.write_all(TAIL).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_one_gib_body_reaches_the_app_whole_with_the_proxys_memory_flat() {
    let sink = Sink::start();
    let proxy = LoopbackProxy::start(sink.addr, &[]);
    // Warm up: the first request builds the proxy's per-connection state.
    assert!(upload(proxy.inbound, 1 << 20).contains(&format!("read {}", 1 << 20)));
    let before = rss_kib(proxy.pid());

    // Sample the proxy's RSS while the body streams through.
    let (done, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let pid = proxy.pid();
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let answer = upload(proxy.inbound, GIB);
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let tail = String::from_utf8_lossy(TAIL);
    assert!(
        answer.ends_with(&format!("read {GIB} ending {tail}")),
        "{answer}"
    );
    let grew = peak.load(Ordering::SeqCst).saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "the proxy grew by {grew} KiB while 1 GiB passed"
    );
}
