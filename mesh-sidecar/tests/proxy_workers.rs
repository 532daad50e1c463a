//! `mesh proxy --workers 2`: a second single-threaded runtime on a thread of its own, with
//! its own sockets on the same addresses. Every request over many connections is answered,
//! the second worker serves its share of them, SIGTERM still drains and exits, and a
//! listener's connection limit bounds both workers together. Explicit mode on loopback: no
//! root needed.

mod support;

use std::time::Duration;

use std::net::TcpStream;

use support::loopback::{LoopbackProxy, app, exchange, get, metric, wait_for};

/// CPU ticks (user + system) of the proxy's thread called `name`, if it has one.
fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        // Fields after the parenthesised name: utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        return Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?);
    }
    None
}

#[test]
fn two_workers_share_the_connections_and_drain_on_sigterm() {
    let proxy = LoopbackProxy::start(app(), &["--workers", "2", "--shutdown-grace", "5s"]);
    let before = thread_ticks(proxy.pid(), "mesh-worker-1").expect("a thread mesh-worker-1");

    // 64 connections with 20 pipelined requests each: the kernel spreads connections over
    // both workers' sockets, so both serve some (all landing on one: odds of 2^-63).
    let mut request = "GET / HTTP/1.1\r\nHost: app\r\n\r\n".repeat(19);
    request.push_str("GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (addr, request) = (proxy.inbound, request.clone());
            std::thread::spawn(move || exchange(addr, request.as_bytes()))
        })
        .collect();
    for c in clients {
        let answer = c.join().unwrap();
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 20, "{answer}");
    }
    let after = thread_ticks(proxy.pid(), "mesh-worker-1").expect("the worker is still there");
    assert!(
        after > before,
        "the second worker served nothing ({before} → {after} ticks)"
    );

    // SIGTERM: the proxy waits for the second worker's listeners, drains, and exits.
    let mut proxy = proxy;
    let status = proxy.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGTERM: {status:?}"
    );
}

#[test]
fn the_connection_limit_bounds_both_workers_together() {
    let proxy = LoopbackProxy::start(app(), &["--workers", "2", "--inbound-max-connections", "4"]);
    // Eight connections that send nothing hold their permits (waiting to be detected): the
    // kernel spreads them over both workers' sockets, and only four may be held in all.
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(proxy.inbound).unwrap())
        .collect();
    let refused = || {
        let text = get(proxy.admin, "/metrics");
        metric(
            &text,
            "tcp_connections_refused_total",
            r#"direction="inbound""#,
        )
    };
    assert!(
        wait_for(Duration::from_secs(10), || refused() >= 4.0),
        "refused: {}",
        refused()
    );
    assert_eq!(refused(), 4.0);
    drop(held);
}
