//! `mesh proxy --workers 2`: a second single-threaded runtime on a thread of its own, handed
//! connections by the main thread's accept loop. Every request is answered, inbound and
//! outbound (each worker has its own outbound client); of two long-lived connections, the
//! second worker serves one; SIGTERM still drains and exits, and a listener's connection limit
//! bounds both workers together. Explicit mode on loopback: no root needed.

mod support;

use std::time::Duration;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::loopback::{LoopbackProxy, app, get, metric, service, wait_for};

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

/// Opens two connections to `addr`, then sends 500 pipelined requests for `host` on each, as a
/// peer proxy multiplexes its requests on a few long-lived connections; checks that every
/// request was answered 200 and that the proxy's second worker did some of the work: each new
/// connection goes to the worker holding the fewest, so the second goes to the other worker.
fn two_busy_connections(proxy: &LoopbackProxy, addr: std::net::SocketAddr, host: &str) {
    const REQUESTS: usize = 500;
    let before = thread_ticks(proxy.pid(), "mesh-worker-1").expect("a thread mesh-worker-1");
    let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").repeat(REQUESTS - 1);
    request.push_str(&format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ));
    // Both are open before either sends, so neither can end before the other is handed out.
    let conns: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let clients: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let request = request.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(request.as_bytes()).unwrap();
                let mut answer = String::new();
                let _ = c.read_to_string(&mut answer);
                answer
            })
        })
        .collect();
    for c in clients {
        let answer = c.join().unwrap();
        let ok = answer.matches("HTTP/1.1 200 OK").count();
        assert_eq!(
            ok,
            REQUESTS,
            "{}",
            &answer[answer.len().saturating_sub(500)..]
        );
    }
    let after = thread_ticks(proxy.pid(), "mesh-worker-1").expect("the worker is still there");
    assert!(
        after > before,
        "the second worker served nothing ({before} → {after} ticks)"
    );
}

#[test]
fn two_workers_share_the_connections_and_drain_on_sigterm() {
    let proxy = LoopbackProxy::start(app(), &["--workers", "2", "--shutdown-grace", "5s"]);
    two_busy_connections(&proxy, proxy.inbound, "app");

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
    // Eight connections that send nothing hold their permits (waiting to be detected): they
    // are handed to both workers, and only four may be held in all.
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

#[test]
fn each_worker_routes_outbound_requests_with_its_own_client() {
    let path = std::env::temp_dir().join(format!("mesh-workers-{}.yaml", std::process::id()));
    std::fs::write(&path, service("web", app())).unwrap();
    let config = path.to_str().unwrap();
    let proxy = LoopbackProxy::start(app(), &["--workers", "2", "--config", config]);
    two_busy_connections(&proxy, proxy.outbound, "web.shop");
    let text = get(proxy.admin, "/metrics");
    let _ = std::fs::remove_file(&path);
    let answered: f64 = text
        .lines()
        .filter(|l| l.starts_with("response_total{") && l.contains(r#"direction="outbound""#))
        .filter(|l| l.contains(r#"dst_service="web""#) && l.contains(r#"status_code="200""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(answered, 2.0 * 500.0, "{text}");
}
