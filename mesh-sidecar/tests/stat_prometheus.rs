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

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Killed;
use support::prometheus::{WebToApi, prometheus_bin};

const REQUESTS: u64 = 1000;
/// Sent before the direct scrapes' window is known to be covered by Prometheus too: its first
/// sample of a series must exist before the bulk, or `increase` cannot see the series' start.
const WARM_UP: u64 = 10;
/// The direct scrapes' window: long enough for all the traffic.
const SCRAPE_WINDOW: &str = "25s";
const IDENTITY_SUFFIX: &str = ".default.serviceaccount.identity.linkerd.cluster.local";

/// `mesh ARGS -o json` started now; its first stderr line (the first scrape done) is awaited.
fn start_mesh(args: &[&str]) -> (Killed, mpsc::Receiver<String>) {
    let mut child = Command::new(support::mesh_bin())
        .args(args)
        .args(["-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(15)).unwrap();
    assert!(first.starts_with("scraped 2 proxies"), "{first}");
    (Killed(child), rx)
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
    let mesh = WebToApi::start(&prom_bin, "stat");
    let (web, api, prom) = (&mesh.web, &mesh.api, mesh.prom);

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
    mesh.traffic(WARM_UP, REQUESTS);
    let sent = REQUESTS as f64;

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
