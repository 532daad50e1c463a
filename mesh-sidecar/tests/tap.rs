//! Tap through real proxies on loopback: `web` calls `api` over mTLS (certificates from a real
//! issuer), both proxies serve tap on their own mTLS listener, and `mesh tap` / `mesh top`
//! read them as the `mesh-tap` identity. A plaintext client and a mesh identity that is not
//! allowed are refused (and counted); a path filter sees only the matching requests, with
//! their status, route, identities and classification; `mesh top --duration` prints the
//! expected rows.
//!
//! Every wait is bounded; proxies, the app and the `mesh` children die with the test, also on
//! failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Killed;
use support::loopback::{
    LoopbackProxy, exchange, free_port, get, meshed_api_config, metric, status_app, wait_for,
};
use support::pods::Trust;

const SUFFIX: &str = ".default.serviceaccount.identity.linkerd.cluster.local";

/// An HTTP/1.1 app answering 500 to paths that end in `/fail`, 200 to the rest.
fn app() -> SocketAddr {
    status_app(|path| {
        if path.ends_with("/fail") {
            "500 Internal Server Error"
        } else {
            "200 OK"
        }
    })
}

/// The mesh: web → api over mTLS, both tappable by `mesh-tap` (DNS form, as an operator
/// writes it), api's events carrying the `x-request-id` header.
struct Mesh {
    trust: Trust,
    web: LoopbackProxy,
    api: LoopbackProxy,
    web_tap: SocketAddr,
    api_tap: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Mesh {
    fn start() -> Self {
        let trust = Trust::new();
        trust.issue(&["web", "api", "mesh-tap", "intruder"]);
        let dir = std::env::temp_dir().join(format!("mesh-tap-{}", std::process::id()));
        let allow = format!("mesh-tap{SUFFIX}");
        let proxy = |sa: &str, tap: SocketAddr, app: SocketAddr, extra: &[&str]| {
            let certs = trust.certs(sa).display().to_string();
            let workload = format!("deployment/{sa}");
            let tap = tap.to_string();
            let mut args = vec![
                "--identity-dir",
                &certs,
                "--namespace",
                "default",
                "--workload",
                &workload,
                "--config-poll",
                "200ms",
                "--tap-addr",
                &tap,
                "--tap-allow",
                &allow,
            ];
            args.extend(extra);
            LoopbackProxy::start(app, &args)
        };
        let (web_tap, api_tap) = (free_port(), free_port());
        let api = proxy("api", api_tap, app(), &["--tap-header", "x-request-id"]);
        meshed_api_config(&dir.join("web"), api.inbound);
        let web_dir = dir.join("web").display().to_string();
        let web = proxy("web", web_tap, app(), &["--config", &web_dir]);
        Self {
            trust,
            web,
            api,
            web_tap,
            api_tap,
            dir,
        }
    }

    /// `GET|POST path` to `api.default` through web's outbound proxy; the status line.
    fn send(&self, method: &str, path: &str) -> String {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: api.default\r\nx-request-id: r-{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let rsp = exchange(self.web.outbound, req.as_bytes());
        rsp.lines().next().unwrap_or_default().to_owned()
    }

    /// The known mix: four requests under /books (one a 500), three elsewhere.
    fn send_mix(&self) {
        for (m, p) in [
            ("GET", "/books/1"),
            ("GET", "/authors"),
            ("GET", "/books/1"),
            ("POST", "/books/fail"),
            ("GET", "/authors"),
            ("GET", "/books/2"),
            ("GET", "/health"),
        ] {
            let status = self.send(m, p);
            assert!(
                status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 500"),
                "{status}"
            );
        }
    }

    fn proxies(&self) -> String {
        format!("default/web={},default/api={}", self.web_tap, self.api_tap)
    }

    /// `mesh ARGS --identity-dir <sa>`, started now; returns once its streams are open.
    fn mesh(&self, sa: &str, args: &[&str]) -> (Killed, mpsc::Receiver<String>) {
        Killed::spawn(
            Command::new(support::mesh_bin())
                .args(args)
                .arg("--identity-dir")
                .arg(self.trust.certs(sa)),
        )
    }
}

/// Waits (bounded) for the child to exit; its status, stdout and the stderr lines seen.
fn finish(mut c: Killed, stderr: &mpsc::Receiver<String>) -> (bool, String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = c.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "mesh did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    c.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let err: Vec<String> = stderr.try_iter().collect();
    (status.success(), out, err.join("\n"))
}

fn wait_live(stderr: &mpsc::Receiver<String>, want: &str) {
    let line = stderr.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(line.starts_with(want), "{line}");
}

fn refused(proxy: &LoopbackProxy, reason: &str) -> f64 {
    let text = get(proxy.admin, "/metrics");
    metric(&text, "tap_refused_total", &format!("reason=\"{reason}\""))
}

#[test]
fn tap_is_mtls_only_filtered_in_the_proxy_and_read_by_tap_and_top() {
    let mesh = Mesh::start();

    // A plaintext client is refused, told why, and counted.
    let rsp = exchange(
        mesh.api_tap,
        b"POST /tap HTTP/1.1\r\nHost: api\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert!(rsp.starts_with("HTTP/1.1 403"), "{rsp}");
    assert!(rsp.contains("mTLS"), "{rsp}");
    assert!(wait_for(Duration::from_secs(5), || refused(
        &mesh.api,
        "plaintext"
    ) == 1.0));

    // A valid mesh certificate of an identity not allowed is refused too.
    let (c, err) = mesh.mesh(
        "intruder",
        &["tap", "deploy/api", "--proxy", &mesh.proxies()],
    );
    let (ok, out, err) = finish(c, &err);
    assert!(!ok, "{out}");
    assert!(err.contains("403") && err.contains("may not tap"), "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(refused(&mesh.api, "unauthorized"), 1.0);

    // The allowed identity, with a path filter: only the four /books requests, from each
    // proxy (web's outbound, api's inbound), with what the metrics know of them.
    let (c, err) = mesh.mesh(
        "mesh-tap",
        &[
            "tap",
            "deploy",
            "--proxy",
            &mesh.proxies(),
            "--path",
            "/books",
            "--max-events",
            "4",
            "-o",
            "json",
        ],
    );
    wait_live(&err, "tapping 2 proxies");
    mesh.send_mix();
    let (ok, out, err) = finish(c, &err);
    assert!(ok, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 8, "{out}");
    assert!(
        events
            .iter()
            .all(|e| e["path"].as_str().unwrap().starts_with("/books")),
        "{out}"
    );
    let (inbound, outbound): (Vec<&Value>, Vec<&Value>) =
        events.iter().partition(|e| e["direction"] == "inbound");
    assert_eq!((inbound.len(), outbound.len()), (4, 4), "{out}");
    for e in &inbound {
        assert_eq!(e["client_id"], format!("web{SUFFIX}"), "{e}");
        assert_eq!(e["workload"], "api", "{e}");
        assert_eq!(
            e["headers"]["x-request-id"],
            format!("r-{}", e["path"].as_str().unwrap()),
            "{e}"
        );
    }
    for e in &outbound {
        assert_eq!(e["route"], "api-route", "{e}");
        assert_eq!(e["backend"], "api.default", "{e}");
        assert_eq!(e["server_id"], format!("api{SUFFIX}"), "{e}");
        assert!(e.get("headers").is_none(), "web taps no header: {e}");
    }
    for dir in [&inbound, &outbound] {
        let failed: Vec<&&Value> = dir
            .iter()
            .filter(|e| e["classification"] == "failure")
            .collect();
        assert_eq!(failed.len(), 1, "{out}");
        assert_eq!(
            (failed[0]["status"].as_u64(), failed[0]["path"].as_str()),
            (Some(500), Some("/books/fail"))
        );
        assert_eq!(
            dir.iter()
                .filter(|e| e["status"] == 200 && e["classification"] == "success")
                .count(),
            3
        );
    }

    // The same traffic in `mesh tap`'s own lines.
    let (c, err) = mesh.mesh(
        "mesh-tap",
        &[
            "tap",
            "deploy/api",
            "--proxy",
            &mesh.proxies(),
            "--method",
            "POST",
            "--max-events",
            "1",
        ],
    );
    wait_live(&err, "tapping 1 proxies");
    mesh.send_mix();
    let (ok, out, err) = finish(c, &err);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("req id=0:0 proxy=in ") && lines[0].contains("tls=true :method=POST"),
        "{out}"
    );
    assert!(
        lines[0].ends_with(":path=/books/fail x-request-id=r-/books/fail"),
        "{out}"
    );
    assert!(lines[1].contains(":status=500 latency="), "{out}");
    assert!(lines[2].contains("classification=failure"), "{out}");

    // `mesh top` for a fixed time: one row per (source, destination, method, path).
    let (c, err) = mesh.mesh(
        "mesh-tap",
        &[
            "top",
            "deploy/api",
            "--proxy",
            &mesh.proxies(),
            "--duration",
            "3s",
        ],
    );
    wait_live(&err, "tapping 1 proxies");
    mesh.send_mix();
    let (ok, out, err) = finish(c, &err);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..5],
        ["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT"],
        "{out}"
    );
    // Busiest first: /authors and /books/1 twice each, then the rest once.
    let by_path = |p: &str| {
        rows.iter()
            .find(|r| r[3] == p)
            .unwrap_or_else(|| panic!("{p}: {out}"))
    };
    assert_eq!(
        by_path("/books/1")[..5],
        ["web", "api", "GET", "/books/1", "2"],
        "{out}"
    );
    assert_eq!(by_path("/authors")[4], "2", "{out}");
    assert_eq!(by_path("/books/fail")[8], "0.00%", "{out}");
    assert_eq!(by_path("/health")[8], "100.00%", "{out}");
    assert_eq!(rows.len(), 1 + 5, "{out}");
    assert_eq!(rows[1][4], "2", "{out}");
}
