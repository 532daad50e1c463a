//! Hostile configuration: YAML alias bombs, deep nesting, lists past the Gateway API's caps
//! and files past the size cap, given to `mesh policy check` and to a running proxy's
//! `--config` reload. Each is refused promptly with its reason, memory stays bounded, and a
//! proxy keeps serving its last good config to a client that never stops asking.
//!
//! Real processes on loopback; every wait is bounded. See tests/HOSTILE.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use support::TempDir;
use support::loopback::{LoopbackProxy, app, exchange, get, metric, service, wait_for};
use support::procfs::{max_child_rss_kib, peak_rss_kib};

/// What the install gives a proxy or a control-plane pod: the bound a hostile config must
/// stay under.
const MEMORY_LIMIT_KIB: u64 = 256 * 1024;

fn temp_dir(name: &str) -> TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "mesh-hostile-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A ConfigMap whose data is a "billion laughs": nine levels of nine aliases, 9^9 strings
/// once expanded, from under a kilobyte of text.
fn alias_bomb() -> String {
    let mut s = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: lol, namespace: shop }\ndata:\n  \
         a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names: Vec<char> = ('a'..='i').collect();
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        let _ = writeln!(s, "  {}: &{} [{refs}]", w[1], w[1]);
    }
    s
}

/// A ConfigMap nested `depth` levels deep in flow brackets (`2 * depth` bytes of them).
fn nested(depth: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: deep, namespace: shop }}\ndata: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// An HTTPRoute with `n` rules; the Gateway API allows 16.
fn many_rules(n: usize) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{ name: r, namespace: shop }}\nspec:\n  \
         parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]\n  rules:\n{}",
        "  - backendRefs: [{ name: web, port: 80 }]\n".repeat(n)
    )
}

/// `mesh policy check file`, bounded in time: (success, stdout and stderr).
fn policy_check(file: &Path) -> (bool, String) {
    let o = support::output_within(
        Command::new(support::mesh_bin())
            .args(["policy", "check"])
            .arg(file),
        Duration::from_secs(30),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn policy_check_refuses_bombs_depth_long_lists_and_huge_files() {
    let dir = temp_dir("check");
    // At the cap, a route is fine: the refusals below are the caps, not the shape.
    let (ok, text) = policy_check(&write(&dir.0, "16.yaml", &many_rules(16)));
    assert!(ok, "{text}");

    let padding = "#".repeat(1024);
    let mut huge = service("web", "127.0.0.1:80".parse().unwrap());
    while huge.len() <= 65 << 20 {
        huge.push_str(&padding);
        huge.push('\n');
    }
    let cases = [
        ("bomb.yaml", alias_bomb(), "repetition limit exceeded"),
        ("deep.yaml", nested(100_000), "nested more than 64 levels"),
        ("17.yaml", many_rules(17), "more than 16 items"),
        ("huge.yaml", huge, "at most"),
    ];
    for (name, text, why) in cases {
        let (ok, out) = policy_check(&write(&dir.0, name, &text));
        assert!(!ok, "{name} was accepted: {out}");
        assert!(out.contains(why), "{name}: refused without {why:?}: {out}");
        assert!(out.contains(name), "{name}: the file is not named: {out}");
    }
    // Each was refused within the memory a pod is given (the 65 MiB file is read whole once).
    let peak = max_child_rss_kib();
    assert!(
        peak < MEMORY_LIMIT_KIB,
        "mesh policy check peaked at {peak} KiB"
    );
}

/// A client asking the proxy's outbound side for `web.shop` until told to stop, counting
/// the answers that were not the app's 200 (a timeout counts: `exchange` gives up at 5 s).
struct GoodClient {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoodClient {
    fn start(p: &LoopbackProxy) -> Self {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let failed = Arc::new(Mutex::new(Vec::new()));
        let outbound = p.outbound;
        let (s, n, f) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let r = exchange(
                    outbound,
                    b"GET /web HTTP/1.1\r\nHost: web.shop:80\r\nConnection: close\r\n\r\n",
                );
                n.fetch_add(1, Ordering::SeqCst);
                if !(r.starts_with("HTTP/1.1 200") && r.ends_with("ok")) {
                    f.lock().push(r);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the client; how many requests it sent and the answers that failed.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.sent.load(Ordering::SeqCst), self.failed.lock().clone())
    }
}

impl Drop for GoodClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn refused_reloads(p: &LoopbackProxy) -> f64 {
    metric(
        &get(p.admin, "/metrics"),
        "config_reload_total",
        "result=\"invalid\"",
    )
}

/// Replaces the config at `path` with `text` whole and waits for the proxy to refuse it.
fn reload_refused(p: &LoopbackProxy, path: &Path, text: &str, log: &Path) {
    let before = refused_reloads(p);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || refused_reloads(p) > before),
        "the config was not refused:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn hostile_config_reloads_are_refused_and_the_last_good_config_keeps_serving() {
    let dir = temp_dir("reload");
    let good = service("web", app());
    let config = write(&dir.0, "config.yaml", &good);
    let log = dir.0.join("proxy.log");
    let p = LoopbackProxy::start_logged(
        app(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--config-poll",
            "50ms",
        ],
        &log,
    );
    let client = GoodClient::start(&p);
    let peak_before = peak_rss_kib(p.pid());

    // A billion laughs next to the good objects, then 80 KB of nesting (40,000 levels).
    reload_refused(&p, &config, &format!("{good}---\n{}", alias_bomb()), &log);
    reload_refused(&p, &config, &format!("{good}---\n{}", nested(40_000)), &log);

    let (sent, failed) = client.finish();
    assert!(sent > 0, "the good client never ran");
    assert!(
        failed.is_empty(),
        "{} of {sent} good requests failed: {failed:?}",
        failed.len()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("repetition limit exceeded"), "{text}");
    assert!(text.contains("nested more than 64 levels"), "{text}");
    assert_eq!(
        metric(
            &get(p.admin, "/metrics"),
            "config_reload_total",
            "result=\"ok\""
        ),
        1.0,
        "only the first, good config was loaded"
    );
    let grown = peak_rss_kib(p.pid()).saturating_sub(peak_before);
    assert!(grown < 64 * 1024, "proxy peak RSS grew by {grown} KiB");
}
