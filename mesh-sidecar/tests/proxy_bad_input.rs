//! Bad input never crashes the proxy: malformed HTTP, oversized headers, slow clients,
//! half-closed TCP and peers that reset mid-body are each answered or closed cleanly, counted,
//! and the next client is served. Explicit mode on loopback: no root needed.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::loopback::{LoopbackProxy, app, exchange, get};

fn start(app: SocketAddr) -> LoopbackProxy {
    LoopbackProxy::start(
        app,
        &[
            "--header-read-timeout",
            "500ms",
            "--detect-timeout",
            "300ms",
        ],
    )
}

fn served(p: &LoopbackProxy) {
    let r = get(p.inbound, "/");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
        "the proxy stopped serving: {r:?}"
    );
}

#[test]
fn bad_clients_are_answered_or_closed_and_the_proxy_keeps_serving() {
    let p = start(app());
    served(&p);

    // Malformed HTTP: a 400, not a crash.
    let r = exchange(p.inbound, b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    served(&p);

    // Oversized headers: refused (431) or the connection closed, never buffered forever.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let r = exchange(p.inbound, big.as_bytes());
    assert!(
        !r.starts_with("HTTP/1.1 200"),
        "{:?}",
        &r[..r.len().min(80)]
    );
    served(&p);

    // A slow client that never finishes its headers is cut off after the header timeout.
    let mut slow = TcpStream::connect(p.inbound).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow client was never cut off"
    );
    served(&p);

    // Half-closed: the client sends its request and shuts its side; the answer still comes.
    let mut half = TcpStream::connect(p.inbound).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = half.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");

    // A peer that vanishes mid-body: reset, and the proxy carries on.
    {
        let s = TcpStream::connect(p.inbound).unwrap();
        (&s).write_all(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n\r\npartial")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // SO_LINGER 0 turns the close into a reset.
        let sock = socket2::SockRef::from(&s);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
    }
    // Opaque bytes on the outbound side with no destination to send them to: closed.
    let r = exchange(p.outbound, b"\x00\x01\x02 not http");
    assert!(r.is_empty(), "{r:?}");
    served(&p);

    // And each of those was counted.
    let metrics = get(p.admin, "/metrics");
    let errors: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("tcp_connection_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(errors >= 3, "connection errors not counted:\n{metrics}");
    assert!(
        metrics.contains("tcp_open_total{direction=\"inbound\""),
        "{metrics}"
    );
}
