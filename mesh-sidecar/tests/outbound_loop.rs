//! A request addressed to the proxy itself is refused, not looped: `Host: 127.0.0.1:4140`
//! sent to the outbound listener once made the proxy dial itself until it ran out of file
//! descriptors. Explicit mode on loopback: no root needed.

mod support;

use support::loopback::free_port;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The proxy under test; killed when dropped, pass or fail.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request with `host` on a fresh connection; the whole response as text.
fn get(addr: SocketAddr, host: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A server that answers "ok" once per connection.
fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    addr
}

#[test]
fn a_request_to_the_proxys_own_ports_is_refused_without_a_loop() {
    let (inbound, outbound, admin) = (free_port(), free_port(), free_port());
    let child = Command::new(support::mesh_bin())
        .args(["proxy", "--mode", "explicit"])
        .args(["--inbound-addr", &inbound.to_string()])
        .args(["--outbound-addr", &outbound.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(admin, "x").contains("200 OK") && !get(admin, "x").contains("404") {
        assert!(Instant::now() < deadline, "proxy not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let app = app();
    // Warm up: the first forwarded request opens a pooled connection to the app.
    assert!(get(outbound, &app.to_string()).ends_with("ok"));
    let before = open_fds(pid);

    for own in [outbound, inbound, admin] {
        for host in [own.to_string(), format!("127.0.0.2:{}", own.port())] {
            for _ in 0..10 {
                let r = get(outbound, &host);
                assert!(r.starts_with("HTTP/1.1 502"), "Host {host}: {r:?}");
                assert!(
                    r.to_ascii_lowercase().contains("l5d-proxy-error: refusing"),
                    "Host {host}: {r:?}"
                );
            }
        }
    }
    // The proxy still serves, and holds no more descriptors than before.
    assert!(get(outbound, &app.to_string()).ends_with("ok"));
    let after = open_fds(pid);
    assert!(
        after <= before + 2,
        "open fds grew from {before} to {after}"
    );
}
