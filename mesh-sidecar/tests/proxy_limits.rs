//! What a hostile client can make the proxy hold stays bounded: metrics series whatever the
//! Hosts and paths, admin connections however slow or idle, and `/live` answers before identity
//! does. Explicit mode on loopback: no root needed.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::loopback::{LoopbackProxy, app, exchange, get};

/// Requests per keep-alive connection, and how many are written before reading answers.
const PER_CONNECTION: usize = 25_000;
const BATCH: usize = 250;

/// Sends `count` requests on one keep-alive connection, each with its own Host and path from
/// `request(i)`, pipelined `BATCH` at a time; returns the status codes' counts (200s, others).
fn flood(
    addr: SocketAddr,
    range: std::ops::Range<usize>,
    request: impl Fn(usize) -> String,
) -> (usize, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = Responses::default();
    let (mut ok, mut other) = (0, 0);
    let ids: Vec<usize> = range.collect();
    for batch in ids.chunks(BATCH) {
        let bytes: String = batch.iter().map(|&i| request(i)).collect();
        s.write_all(bytes.as_bytes()).unwrap();
        for _ in batch {
            if reader.next_status(&mut s) == 200 {
                ok += 1;
            } else {
                other += 1;
            }
        }
    }
    (ok, other)
}

/// Reads HTTP/1.1 responses (with Content-Length bodies) one after another off a stream.
#[derive(Default)]
struct Responses {
    buf: Vec<u8>,
}

impl Responses {
    fn next_status(&mut self, s: &mut TcpStream) -> u16 {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if self.buf.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap();
                    self.buf.drain(..end + 4 + len);
                    return status;
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = s
                .read(&mut chunk)
                .expect("a response before the read timeout");
            assert!(n > 0, "the proxy closed a keep-alive connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The value of every sample of `name` whose labels include `part`, summed.
fn sum(metrics: &str, name: &str, part: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(part))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn series(metrics: &str, name: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .count()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn distinct_hosts_and_paths_do_not_grow_metrics_or_memory() {
    const LIMIT: usize = 20;
    let p = LoopbackProxy::start(app(), &["--metrics-series-limit", &LIMIT.to_string()]);

    // 100,000 inbound requests, each with a Host and path of its own, on four connections.
    let inbound = p.inbound;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let start = w * PER_CONNECTION;
                flood(inbound, start..start + PER_CONNECTION, |i| {
                    format!("GET /p{i} HTTP/1.1\r\nHost: h{i}.example\r\n\r\n")
                })
            })
        })
        .collect();
    let mut ok = 0;
    for w in workers {
        let (good, bad) = w.join().unwrap();
        assert_eq!(bad, 0, "inbound requests failed");
        ok += good;
    }
    assert_eq!(ok, 4 * PER_CONNECTION);

    // 2,000 outbound requests to as many destinations nobody configured (closed ports on
    // loopback addresses): each is answered with an error, and each is a new authority.
    let (good, bad) = flood(p.outbound, 0..2_000, |i| {
        let host = format!("127.1.{}.{}:9", i / 250, i % 250 + 1);
        format!("GET /x{i} HTTP/1.1\r\nHost: {host}\r\n\r\n")
    });
    assert_eq!((good, bad), (0, 2_000));

    let metrics = get(p.admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    // Every inbound request is counted, in one series: the Host is not a label.
    assert_eq!(
        sum(&metrics, "request_total", "direction=\"inbound\""),
        100_000.0
    );
    assert_eq!(
        series(&metrics, "request_total")
            - metrics
                .lines()
                .filter(|l| l.starts_with("request_total{direction=\"outbound\""))
                .count(),
        1,
        "{metrics}"
    );
    assert!(!metrics.contains("h99999.example"), "a Host became a label");
    // Outbound: at most LIMIT authorities, then one `other` series, and the drop counted.
    assert!(
        series(&metrics, "request_total") <= LIMIT + 1,
        "{} request_total series",
        series(&metrics, "request_total")
    );
    assert!(metrics.contains("authority=\"other\""), "{metrics}");
    assert!(
        sum(
            &metrics,
            "metrics_series_dropped_total",
            "family=\"request_total\""
        ) > 0.0,
        "{metrics}"
    );
    // The whole scrape: a few hundred series, not millions (histograms count each bucket).
    let samples = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(' '))
        .count();
    assert!(samples < 2_000, "{samples} samples in /metrics");
    // The old proxy held ~300 MB after 100,000 hosts; bounded tables keep it near its start.
    let rss = rss_bytes(p.pid());
    assert!(rss < 96 << 20, "proxy RSS {} MiB", rss >> 20);
}

#[test]
fn the_admin_server_closes_idle_and_slow_clients() {
    let p = LoopbackProxy::start(
        app(),
        &[
            "--admin-header-read-timeout",
            "300ms",
            "--admin-idle-timeout",
            "1s",
        ],
    );

    // Connected, silent: closed by the header-read timeout (the read would fail at 5 s).
    let closed = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).map(|_| out)
    };
    let mut idle = TcpStream::connect(p.admin).unwrap();
    let out = closed(&mut idle).expect("an idle admin connection is closed");
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));

    // Headers that never finish: closed too, never answered.
    let mut slow = TcpStream::connect(p.admin).unwrap();
    slow.write_all(b"GET /live HTTP/1.1\r\nHo").unwrap();
    let out = closed(&mut slow).expect("a slow-header admin connection is closed");
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));

    // Kept alive after an answer, then silent: closed as well.
    let mut kept = TcpStream::connect(p.admin).unwrap();
    kept.write_all(b"GET /live HTTP/1.1\r\nHost: admin\r\n\r\n")
        .unwrap();
    let out = closed(&mut kept).expect("an idle keep-alive admin connection is closed");
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));

    // And the admin server still serves.
    assert!(get(p.admin, "/live").starts_with("HTTP/1.1 200"));
}

#[test]
fn admin_connections_past_the_limit_are_refused_and_counted() {
    let p = LoopbackProxy::start(app(), &["--admin-max-connections", "4"]);
    // Four held open (the accept loop takes connections in order), the fifth turned away.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(p.admin).unwrap())
        .collect();
    let r = exchange(p.admin, b"GET /live HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert!(r.is_empty(), "a fifth admin connection was served: {r:?}");
    drop(held);

    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = get(p.admin, "/metrics");
        if m.starts_with("HTTP/1.1 200") {
            break m;
        }
        assert!(Instant::now() < deadline, "admin never served again: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        sum(
            &metrics,
            "tcp_connections_refused_total",
            "direction=\"admin\""
        ) >= 1.0,
        "{metrics}"
    );
}

#[test]
fn live_answers_while_identity_is_unavailable() {
    let trust = support::pods::Trust::new();
    let token = trust.dir.join("proxy.token");
    std::fs::write(&token, "tok").unwrap();
    let closed = support::loopback::free_port();
    let anchors = trust.dir.join("ca/ca.crt");
    let p = LoopbackProxy::start_live(
        app(),
        &[
            "--identity-issuer",
            &closed.to_string(),
            "--identity-token-file",
            token.to_str().unwrap(),
            "--trust-anchors",
            anchors.to_str().unwrap(),
        ],
    );
    // start_live() returned: /live is 200 with the issuer unreachable.
    let ready = get(p.admin, "/ready");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("identity not issued yet"), "{ready}");
    assert!(get(p.admin, "/metrics").starts_with("HTTP/1.1 200"));
}
