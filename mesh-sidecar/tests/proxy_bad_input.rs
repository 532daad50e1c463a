//! Bad input never crashes the proxy: malformed HTTP, oversized headers, slow clients,
//! half-closed TCP and peers that reset mid-body are each answered or closed cleanly, counted,
//! and the next client is served. Explicit mode on loopback: no root needed.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proxy {
    child: Child,
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A plain HTTP/1.1 app that answers "ok" to every request, on its own threads.
fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn start(app: SocketAddr) -> Proxy {
    let (inbound, outbound, admin) = (free_port(), free_port(), free_port());
    let child = Command::new(support::mesh_bin())
        .args([
            "proxy",
            "--mode",
            "explicit",
            "--header-read-timeout",
            "500ms",
            "--detect-timeout",
            "300ms",
        ])
        .args([
            "--inbound-addr",
            &inbound.to_string(),
            "--outbound-addr",
            &outbound.to_string(),
        ])
        .args([
            "--admin-addr",
            &admin.to_string(),
            "--inbound-forward",
            &app.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proxy {
        child,
        inbound,
        outbound,
        admin,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(p.admin, "/ready").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "proxy not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// One request on a fresh connection; the whole response as text.
fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn served(p: &Proxy) {
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
