//! `mesh proxy --config` reloads off the serving thread: with `--workers 1` (one thread serves
//! every connection) a request is answered while a large config is still being compiled.
//!
//! Proven by order, not by time: the proxy logs "config changed; compiling" before it compiles
//! and counts `config_reload_total{result="ok"}` after it swapped the result in. A request sent
//! after the first and answered before the second was served during the compile. Had the
//! compile run on the serving thread, the request would have waited for it, and the counter
//! would have moved first.
//!
//! Loopback only; the proxy is killed on drop, also when the test fails; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::loopback::{app, free_port, get, metric, wait_for};
use support::mesh_bin;

/// The proxy and its log file, both removed on drop.
struct Proxy {
    child: Child,
    dir: PathBuf,
}

impl Proxy {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` HTTPRoutes, each with 16 rules of 8 regular-expression path matches (the most
/// Gateway API allows per route is 16 rules): every regex is compiled, which takes a debug
/// build about a second for eight routes. Few large objects, not many small ones, so the
/// compile stays long but bounded however the compiler scales with the number of objects.
fn routes(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let _ = write!(
            s,
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: big{i}, namespace: big }}
spec:
  parentRefs: [{{ name: svc{i}, kind: Service, group: core, port: 80 }}]
  rules:
"
        );
        for r in 0..16 {
            s.push_str("  - matches:\n");
            for m in 0..8 {
                let _ = writeln!(
                    s,
                    "    - path: {{ type: RegularExpression, value: \"/api/v{r}/m{m}/[a-z]+/(items|orders)/[0-9]{{1,8}}\" }}"
                );
            }
            let _ = writeln!(s, "    backendRefs: [{{ name: svc{i}-r{r}, port: 80 }}]");
        }
    }
    s
}

fn reloads_ok(admin: std::net::SocketAddr) -> f64 {
    metric(
        &get(admin, "/metrics"),
        "config_reload_total",
        "result=\"ok\"",
    )
}

/// Writes `text` to `path` whole: a reload never sees half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_request_is_answered_while_a_large_config_compiles() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("mesh-reload-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    write_atomically(&config, &routes(1));

    let app = app();
    let (inbound, outbound, admin) = (free_port(), free_port(), free_port());
    let child = Command::new(mesh_bin())
        .args(["proxy", "--mode", "explicit", "--workers", "1"])
        .args(["--inbound-addr", &inbound.to_string()])
        .args(["--outbound-addr", &outbound.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--inbound-forward", &app.to_string()])
        .args(["--config-poll", "50ms"])
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("proxy.log")).unwrap())
        .spawn()
        .unwrap();
    let proxy = Proxy { child, dir };
    assert!(
        wait_for(Duration::from_secs(20), || get(admin, "/ready")
            .starts_with("HTTP/1.1 200")),
        "the proxy did not become ready:\n{}",
        proxy.log()
    );
    let before = reloads_ok(admin);
    assert!(before >= 1.0, "{}", get(admin, "/metrics"));
    let compiles = |p: &Proxy| p.log().matches("config changed; compiling").count();
    let started = compiles(&proxy);

    write_atomically(&proxy.config(), &routes(16));
    assert!(
        wait_for(Duration::from_secs(20), || compiles(&proxy) > started),
        "the new config was not picked up:\n{}",
        proxy.log()
    );
    // The compile has begun; the serving thread answers meanwhile.
    let answer = get(inbound, "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    assert_eq!(
        reloads_ok(admin),
        before,
        "the answer came only after the compile: it ran on the serving thread\n{}",
        proxy.log()
    );

    // And the large config is served once compiled.
    assert!(
        wait_for(Duration::from_secs(60), || reloads_ok(admin) > before),
        "the large config was not loaded:\n{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("config refused"), "{}", proxy.log());
}
