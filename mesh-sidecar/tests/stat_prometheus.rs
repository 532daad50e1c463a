//! `mesh stat`, `mesh routes` and `mesh edges` against a real Prometheus (Debian's
//! `prometheus`, scraping two loopback proxies every second) and against the proxies scraped
//! directly: 1,000 requests from `web` to `api` over mTLS, exactly 10 % of them answered 500
//! by api's app; both sources must report ≈ 90 % success and the request count that was sent.
//!
//! Prometheus is installed with apt where missing; where it cannot be installed or run the test
//! skips with a reason (under `CI=true` that is a failure). Every wait is bounded; Prometheus,
//! the proxies and the `mesh` children are killed on drop, also on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Killed;
use support::loopback::{
    LoopbackProxy, exchange, free_port, get, meshed_api_config, recording_app, status_app, wait_for,
};
use support::pods::Trust;

const REQUESTS: u64 = 1000;
/// Sent before the direct scrapes' window is known to be covered by Prometheus too: its first
/// sample of a series must exist before the bulk, or `increase` cannot see the series' start.
const WARM_UP: u64 = 10;
/// The direct scrapes' window: long enough for all the traffic.
const SCRAPE_WINDOW: &str = "25s";
const IDENTITY_SUFFIX: &str = ".default.serviceaccount.identity.linkerd.cluster.local";

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `prometheus` binary, installed from Debian if missing and we may; `None` with the
/// reason printed where it cannot be had.
fn prometheus_bin() -> Option<PathBuf> {
    if support::which("prometheus").is_none() && nix_is_root() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let found = support::which("prometheus");
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus is missing under CI (.ci/run installs it)"
        );
        eprintln!("skipping: prometheus is not installed and cannot be installed here");
    }
    found
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// An HTTP/1.1 app answering 500 to every tenth request it receives (the first, the
/// eleventh, …) and 200 to the rest.
fn faulty_app() -> SocketAddr {
    let n = AtomicU64::new(0);
    status_app(move |_| {
        if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(10) {
            "500 Internal Server Error"
        } else {
            "200 OK"
        }
    })
}

/// Prometheus scraping `targets` (admin address, workload name) every second.
fn start_prometheus(
    bin: &Path,
    dir: &Path,
    targets: &[(SocketAddr, &str)],
) -> (Killed, SocketAddr) {
    let mut config = String::from(
        "global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n- job_name: mesh-proxy\n  static_configs:\n",
    );
    for (addr, name) in targets {
        config.push_str(&format!(
            "  - targets: [\"{addr}\"]\n    labels: {{ namespace: default, deployment: {name}, pod: {name} }}\n"
        ));
    }
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let listen = free_port();
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let child = Killed(child);
    assert!(
        wait_for(Duration::from_secs(30), || get(listen, "/-/ready")
            .starts_with("HTTP/1.1 200")),
        "prometheus did not become ready: {}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    (child, listen)
}

/// The value of an instant query's single sample, if there is one.
fn promql(prom: SocketAddr, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let rsp = get(prom, &format!("/api/v1/query?query={encoded}"));
    let body = rsp.split_once("\r\n\r\n")?.1;
    let v: Value = serde_json::from_str(body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Sends `n` requests to `api.default` through web's outbound proxy; all must be answered.
fn send(web: &LoopbackProxy, n: u64) {
    for _ in 0..n {
        let rsp = exchange(
            web.outbound,
            b"GET /vote HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n",
        );
        assert!(
            rsp.starts_with("HTTP/1.1 200") || rsp.starts_with("HTTP/1.1 500"),
            "{rsp}"
        );
    }
}

/// `mesh ARGS -o json` started now; its first stderr line (the first scrape done) is awaited.
fn start_mesh(args: &[&str]) -> (Killed, mpsc::Receiver<String>) {
    let (child, rx) = Killed::spawn(
        Command::new(support::mesh_bin())
            .args(args)
            .args(["-o", "json"]),
    );
    let first = rx.recv_timeout(Duration::from_secs(15)).unwrap();
    assert!(first.starts_with("scraped 2 proxies"), "{first}");
    (child, rx)
}

/// Waits for a `start_mesh` child and returns its JSON.
fn finish(mut c: Killed, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{what} did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    c.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"))
}

fn run_json(args: &[&str]) -> Value {
    let out = Command::new(support::mesh_bin())
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn row<'a>(rows: &'a Value, key: &str, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[key].as_str().is_some_and(|v| v.contains(name)))
        .unwrap_or_else(|| panic!("no row {key}={name} in {rows:#}"))
}

/// The window a source reports over, and how far its counts may stray from what was sent.
struct Expect {
    window_secs: f64,
    tolerance: f64,
}

/// Direct scrapes: exact differences, over a window that also holds the scrapes themselves (a
/// little over [`SCRAPE_WINDOW`]).
const DIRECT: Expect = Expect {
    window_secs: 25.0,
    tolerance: 0.02,
};

/// Prometheus over the default 1m: `increase` extrapolates each series towards the window's
/// edges (up to a scrape interval past its last sample, over a series some 30 s old), so its
/// counts read a few percent high; the success rate, a ratio, does not move.
const PROMETHEUS: Expect = Expect {
    window_secs: 60.0,
    tolerance: 0.1,
};

/// ≈ 90 % success and ≈ 1,000 requests, at the rate that is over the source's window.
fn assert_mix(r: &Value, e: &Expect, what: &str) {
    let requests = r["requests"].as_f64().unwrap();
    let success = r["success_rate"].as_f64().unwrap();
    let rps = r["rps"].as_f64().unwrap();
    let sent = REQUESTS as f64;
    assert!(
        (requests - sent).abs() <= sent * e.tolerance,
        "{what}: requests {requests}\n{r:#}"
    );
    assert!(
        (success - 0.9).abs() <= 0.01,
        "{what}: success {success}\n{r:#}"
    );
    let want = sent / e.window_secs;
    assert!(
        (rps - want).abs() <= want * e.tolerance,
        "{what}: rps {rps}, want ≈ {want}\n{r:#}"
    );
    assert!(
        r["latency_ms_p50"].as_f64().is_some(),
        "{what}: no p50\n{r:#}"
    );
}

#[test]
fn stat_routes_and_edges_agree_through_prometheus_and_direct_scrape() {
    let Some(prom_bin) = prometheus_bin() else {
        return;
    };
    let tmp = TempDir(std::env::temp_dir().join(format!("mesh-stat-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let trust = Trust::new();
    trust.issue(&["web", "api"]);
    let ids = |sa: &str| {
        [
            "--identity-dir".to_owned(),
            trust.certs(sa).display().to_string(),
        ]
    };
    let common = ["--namespace", "default", "--config-poll", "200ms"];

    let api_ids = ids("api");
    let mut api_args: Vec<&str> = api_ids.iter().map(String::as_str).collect();
    api_args.extend(common);
    let api = LoopbackProxy::start(faulty_app(), &api_args);
    meshed_api_config(&tmp.0.join("web"), api.inbound);
    let web_ids = ids("web");
    let web_dir = tmp.0.join("web").display().to_string();
    let mut web_args: Vec<&str> = web_ids.iter().map(String::as_str).collect();
    web_args.extend(common);
    web_args.extend(["--config", &web_dir]);
    let web = LoopbackProxy::start(recording_app().0, &web_args);
    let (_prom, prom) =
        start_prometheus(&prom_bin, &tmp.0, &[(web.admin, "web"), (api.admin, "api")]);

    // The direct scrapes open their window, then the traffic flows inside it.
    let scrape = format!("default/web={},default/api={}", web.admin, api.admin);
    let direct = |cmd: &[&str]| {
        let mut args = cmd.to_vec();
        args.extend(["--scrape", &scrape, "--time-window", SCRAPE_WINDOW]);
        start_mesh(&args).0
    };
    let (stat_s, routes_s, edges_s) = (
        direct(&["stat", "deploy"]),
        direct(&["routes", "deploy/web"]),
        direct(&["edges", "deploy"]),
    );
    let api_in = "sum(response_total{deployment=\"api\",direction=\"inbound\"})";
    // A scrape takes all of a target's series at once: once each proxy's warm-up is in
    // Prometheus, every series the bulk adds to has a sample from before it.
    let web_out = "sum(response_total{deployment=\"web\",direction=\"outbound\"})";
    send(&web, WARM_UP);
    assert!(
        wait_for(Duration::from_secs(20), || [api_in, web_out]
            .iter()
            .all(|q| promql(prom, q) == Some(WARM_UP as f64))),
        "prometheus never saw the warm-up: {:?} {:?}",
        promql(prom, api_in),
        promql(prom, web_out)
    );
    send(&web, REQUESTS - WARM_UP);
    let sent = REQUESTS as f64;
    assert!(
        wait_for(Duration::from_secs(20), || promql(prom, api_in)
            == Some(sent)),
        "prometheus never saw all requests: {:?}",
        promql(prom, api_in)
    );

    let prom_url = format!("http://{prom}");
    let via_prom = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--prometheus", &prom_url]);
        run_json(&args)
    };
    let stat_direct = finish(stat_s, "stat --scrape");
    let stat_prom = via_prom(&["stat", "deploy"]);
    let api_direct = row(&stat_direct, "name", "api");
    assert_eq!(
        api_direct["requests"].as_f64(),
        Some(sent),
        "{stat_direct:#}"
    );
    assert_eq!(api_direct["meshed"].as_f64(), Some(1.0), "{stat_direct:#}");
    assert_mix(api_direct, &DIRECT, "stat --scrape");
    assert_mix(
        row(&stat_prom, "name", "api"),
        &PROMETHEUS,
        "stat --prometheus",
    );
    let sr = |rows: &Value| row(rows, "name", "api")["success_rate"].as_f64().unwrap();
    assert!((sr(&stat_direct) - sr(&stat_prom)).abs() < 0.01);
    assert_eq!(row(&stat_prom, "name", "api")["meshed"].as_f64(), Some(1.0));

    // The same traffic as web sent it.
    let from = via_prom(&["stat", "deploy", "--from", "deploy/web"]);
    assert_mix(
        row(&from, "name", "api"),
        &PROMETHEUS,
        "stat --from --prometheus",
    );

    let routes_direct = finish(routes_s, "routes --scrape");
    let api_route = |rows: &Value| row(rows, "route", "api-route").clone();
    assert_mix(&api_route(&routes_direct), &DIRECT, "routes --scrape");
    let routes_prom = via_prom(&["routes", "deploy/web"]);
    assert_mix(&api_route(&routes_prom), &PROMETHEUS, "routes --prometheus");
    let svc = via_prom(&["routes", "svc/api"]);
    assert_mix(&api_route(&svc), &PROMETHEUS, "routes svc/api");
    assert_eq!(svc.as_array().map(Vec::len), Some(1), "{svc:#}");

    let edges_direct = finish(edges_s, "edges --scrape");
    let edges_prom = via_prom(&["edges", "deploy"]);
    for (edges, what) in [(&edges_direct, "--scrape"), (&edges_prom, "--prometheus")] {
        let e = row(edges, "src", "web");
        assert_eq!(e["dst"], "api", "{what}: {edges:#}");
        assert_eq!(e["secured"], true, "{what}: {edges:#}");
        assert_eq!(
            e["server_id"],
            format!("api{IDENTITY_SUFFIX}"),
            "{what}: {edges:#}"
        );
        assert_eq!(
            e["client_id"],
            format!("web{IDENTITY_SUFFIX}"),
            "{what}: {edges:#}"
        );
    }

    // The table a person reads.
    let table = Command::new(support::mesh_bin())
        .args([
            "routes",
            "deploy/web",
            "--prometheus",
            &format!("http://{prom}"),
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("ROUTE"), "{table}");
    // The route matches every request: nothing is left for `[DEFAULT]`.
    assert!(!table.contains("[DEFAULT]"), "{table}");
    let success = table
        .lines()
        .find(|l| l.starts_with("api-route"))
        .and_then(|l| l.split_whitespace().find_map(|c| c.strip_suffix('%')))
        .and_then(|c| c.parse::<f64>().ok());
    assert!(success.is_some_and(|s| (s - 90.0).abs() < 1.0), "{table}");
}
