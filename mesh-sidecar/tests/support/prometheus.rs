//! Debian's `prometheus`, started by a test with a scrape config pointing at loopback
//! proxies, and the traffic those tests send through them: `web` calling `api.default` over
//! its outbound proxy, api's app answering 500 to exactly one request in ten.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::loopback::{
    LoopbackProxy, exchange, free_port, get, meshed_api_config, recording_app, status_app, wait_for,
};
use super::pods::Trust;
use super::{Killed, TempDir};

/// Two loopback proxies with certificates from a real issuer, `web` (its app records what it
/// is sent) calling `api.default` (its app [`faulty_app`]) over mTLS through an HTTPRoute
/// `api-route`, and a Prometheus scraping both every second. All of it stops on drop.
pub(crate) struct WebToApi {
    pub(crate) web: LoopbackProxy,
    pub(crate) api: LoopbackProxy,
    /// Prometheus's HTTP address.
    pub(crate) prom: SocketAddr,
    _prometheus: Killed,
    _trust: Trust,
    /// Prometheus's data lives here: removed last.
    _tmp: TempDir,
}

/// The `prometheus` binary, installed from Debian if missing and we may; `None` with the
/// reason printed where it cannot be had.
pub(crate) fn prometheus_bin() -> Option<PathBuf> {
    if super::which("prometheus").is_none() && nix_is_root() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let found = super::which("prometheus");
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
pub(crate) fn faulty_app() -> SocketAddr {
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
pub(crate) fn start_prometheus(
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

/// The JSON answer of an instant query, whatever its status (`null` if there was none).
pub(crate) fn query(prom: SocketAddr, query: &str) -> Value {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let rsp = get(prom, &format!("/api/v1/query?query={encoded}"));
    rsp.split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null)
}

/// The value of an instant query's single sample, if there is one.
pub(crate) fn promql(prom: SocketAddr, q: &str) -> Option<f64> {
    query(prom, q)["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// Sends `n` requests to `api.default` through web's outbound proxy; all must be answered.
pub(crate) fn send(web: &LoopbackProxy, n: u64) {
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

// === impl WebToApi ===

impl WebToApi {
    /// Starts the proxies and Prometheus (`bin`); `what` names the temporary directory.
    pub(crate) fn start(bin: &Path, what: &str) -> Self {
        let tmp = TempDir(std::env::temp_dir().join(format!("mesh-{what}-{}", std::process::id())));
        std::fs::create_dir_all(&tmp.0).unwrap();
        let trust = Trust::new();
        trust.issue(&["web", "api"]);
        let args = |sa: &str, extra: &[String]| {
            let mut a = vec![
                "--identity-dir".to_owned(),
                trust.certs(sa).display().to_string(),
            ];
            a.extend(["--namespace", "default", "--config-poll", "200ms"].map(String::from));
            a.extend_from_slice(extra);
            a
        };
        let api = LoopbackProxy::start(faulty_app(), &borrowed(&args("api", &[])));
        let web_dir = tmp.0.join("web");
        meshed_api_config(&web_dir, api.inbound);
        let web_args = args(
            "web",
            &["--config".to_owned(), web_dir.display().to_string()],
        );
        let web = LoopbackProxy::start(recording_app().0, &borrowed(&web_args));
        let (prometheus, prom) =
            start_prometheus(bin, &tmp.0, &[(web.admin, "web"), (api.admin, "api")]);
        Self {
            web,
            api,
            prom,
            _prometheus: prometheus,
            _trust: trust,
            _tmp: tmp,
        }
    }

    /// Sends `total` requests from web to api, the first `warm_up` of them before the rest,
    /// and waits until Prometheus has scraped all of them from both proxies.
    ///
    /// A scrape takes all of a target's series at once: once each proxy's warm-up is in
    /// Prometheus, every series the bulk adds to has a sample from before it, so `increase`
    /// and `rate` see the bulk whole.
    pub(crate) fn traffic(&self, warm_up: u64, total: u64) {
        send(&self.web, warm_up);
        self.wait_scraped(warm_up, "the warm-up");
        send(&self.web, total - warm_up);
        // Both sides: a series needs a sample after the bulk too for `rate` to see it.
        self.wait_scraped(total, "all requests");
    }

    /// Waits until Prometheus has `n` responses from api (inbound) and from web (outbound).
    fn wait_scraped(&self, n: u64, what: &str) {
        let queries = [
            "sum(response_total{deployment=\"api\",direction=\"inbound\"})",
            "sum(response_total{deployment=\"web\",direction=\"outbound\"})",
        ];
        let seen = || queries.map(|q| promql(self.prom, q));
        assert!(
            wait_for(Duration::from_secs(20), || seen()
                == [Some(n as f64), Some(n as f64)]),
            "prometheus never saw {what}: {:?}",
            seen()
        );
    }
}

fn borrowed(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}
