//! The dashboard in a real headless Chromium: `mesh demo --dashboard` runs a small mesh with a
//! canary; the test loads the page and asserts what a person sees — a `web` row with a
//! success rate, and the `voting` route's backends weighted 90/10, then 50/50 after the demo
//! shifts the canary. It saves a screenshot: to `docs/dashboard.png` with
//! `MESH_UPDATE_SCREENSHOT=1`, else to the test's temporary directory.
//!
//! Without a Chromium the test skips with a reason, except under `CI=true`, where it fails.

mod support;

use support::{Interrupted, TempDir};

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// How long the demo runs; it shifts the canary half-way, which leaves the browser time to
/// start and see 90/10 first even when the whole suite loads the machine (Chromium then took
/// over 20 s to show the page). The test ends, and stops the demo, once it has seen 50/50.
const DEMO: &str = "100s";
/// The longest any one thing the page should show may take to appear.
const WAIT: Duration = Duration::from_secs(90);

/// Debian's `chromium` (or another Chromium-like browser on PATH).
fn chromium() -> Option<PathBuf> {
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .find_map(|p| support::which(p))
}

/// Starts the demo (with `extra` arguments) and returns it with the dashboard URL it printed.
/// The dashboard binds port 0 and the demo prints the port it got.
fn start_demo(extra: &[&str]) -> (Interrupted, String) {
    let mut child = Command::new(support::mesh_bin())
        .args(["demo", "--duration", DEMO, "--rps", "20", "--dashboard"])
        .arg("127.0.0.1:0")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = support::read_all(child.stderr.take().unwrap());
    // Interrupted (so it stops its proxies) and reaped however the test ends.
    let demo = Interrupted(child);
    let (tx, rx) = mpsc::channel();
    // Reads (and so drains) the demo's table until it exits.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("dashboard: ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => (demo, url),
        Err(e) => {
            drop(demo);
            panic!(
                "the demo printed no dashboard URL within 60s ({e}); on stderr:\n{}",
                stderr.join().unwrap_or_default()
            )
        }
    }
}

/// Evaluates `js` (an expression giving a string) until `done` accepts its value, within
/// [`WAIT`]; returns the value, or fails with the last one seen.
fn wait_for(tab: &Tab, what: &str, js: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(v) = tab.evaluate(js, false) {
            last = v
                .value
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if done(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the page did not show {what} within {WAIT:?}; last seen: {last:?}");
}

/// The voting route's backends as the page shows them: `voting-v1=90,voting-v2=10`.
const WEIGHTS: &str = r#"(() => {
  const r = document.querySelector('[data-route="voting-svc"]');
  if (!r) return '';
  return [...r.querySelectorAll('[data-backend]')]
    .map(b => b.dataset.backend + '=' + b.dataset.weight).join(',');
})()"#;

fn screenshot_path(tmp: &Path) -> PathBuf {
    if std::env::var("MESH_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png")
    } else {
        tmp.join("dashboard.png")
    }
}

/// Debian's Chromium, or `None` (with the reason printed) where there is none outside CI.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("no Chromium found, and CI=true: .ci/run installs Debian's chromium");
        }
        println!("skipping: no chromium on PATH (apt-get install chromium)");
    }
    found
}

/// A headless browser with its profile in `tmp`, and a tab on `url`.
fn open(browser_path: PathBuf, tmp: &Path, url: &str) -> (Browser, std::sync::Arc<Tab>) {
    let browser = Browser::new(LaunchOptions {
        path: Some(browser_path),
        headless: true,
        // Chromium refuses to run as root with its sandbox; the page is our own.
        sandbox: false,
        user_data_dir: Some(tmp.join("profile")),
        window_size: Some((1280, 1200)),
        idle_browser_timeout: Duration::from_secs(120),
        ..LaunchOptions::default()
    })
    .unwrap();
    let tab = browser.new_tab().unwrap();
    // Loading takes longer than the client's default 20 s when the whole suite runs beside
    // Chromium on two cores, and under that load the load-finished event was once never seen:
    // the checks below poll the page itself (evaluation errors while it loads are retried).
    tab.set_default_timeout(WAIT);
    tab.navigate_to(url).unwrap();
    (browser, tab)
}

#[test]
fn the_dashboard_shows_workloads_and_the_canary_shifting() {
    let Some(browser_path) = chromium_or_skip() else {
        return;
    };
    let tmp = TempDir(std::env::temp_dir().join(format!("mesh-dashboard-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let (_demo, url) = start_demo(&[]);
    let (_browser, tab) = open(browser_path, &tmp.0, &url);

    let rate = wait_for(
        &tab,
        "a success rate in the web row",
        r#"document.querySelector('[data-workload="web"] [data-field="success-rate"]')?.textContent ?? ''"#,
        |v| v.ends_with('%') && v[..v.len() - 1].parse::<f64>().is_ok(),
    );
    println!("web success rate: {rate}");
    wait_for(&tab, "the canary at 90/10", WEIGHTS, |v| {
        v == "voting-v1=90,voting-v2=10"
    });
    wait_for(&tab, "the canary at 50/50 after the shift", WEIGHTS, |v| {
        v == "voting-v1=50,voting-v2=50"
    });
    // The demo's dashboard taps the proxies as `mesh-tap`: live requests appear, the canary's
    // route and backends among them.
    wait_for(
        &tab,
        "a tapped request to a voting backend",
        r#"[...document.querySelectorAll('#tap tbody tr[data-tap-event]')].map(r => r.textContent).join('|')"#,
        |v| v.contains("voting-canary") && v.contains("voting-v"),
    );
    wait_for(
        &tab,
        "an mTLS edge from web",
        r#"[...document.querySelectorAll('[data-edge^="web->"]')].map(e => e.dataset.secured).join(',')"#,
        |v| v.contains("true"),
    );

    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    let path = screenshot_path(&tmp.0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

/// The canary panel as the page shows it: `Progressing 40`, `Failed 0`, or `''` before any.
const CANARY: &str = r#"(() => {
  const c = document.querySelector('[data-canary="emojivoto/voting"]');
  return c ? c.dataset.phase + ' ' + c.dataset.weight : '';
})()"#;

#[test]
fn the_dashboard_shows_the_demo_canary_promoted_then_rolled_back() {
    let Some(browser_path) = chromium_or_skip() else {
        return;
    };
    let tmp =
        TempDir(std::env::temp_dir().join(format!("mesh-dashboard-canary-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let (_demo, url) = start_demo(&["--canary"]);
    let (_browser, tab) = open(browser_path, &tmp.0, &url);

    // A phase and a weight, whichever step the page first sees.
    let first = wait_for(&tab, "the canary's phase and weight", CANARY, |v| {
        let mut parts = v.split(' ');
        let phase = parts.next().unwrap_or("");
        let weight = parts.next().and_then(|w| w.parse::<u32>().ok());
        ["Progressing", "Succeeded", "Failed"].contains(&phase) && weight.is_some()
    });
    println!("canary first seen: {first}");
    // The demo's second act ends rolled back, all traffic on voting-v1; the panel's decisions
    // show the first act's promotion before it.
    wait_for(&tab, "the canary rolled back", CANARY, |v| v == "Failed 0");
    let decisions = wait_for(
        &tab,
        "the canary's decisions",
        r#"document.querySelector('[data-canary="emojivoto/voting"]')?.textContent ?? ''"#,
        |v| v.contains("RolledBack: roll back"),
    );
    assert!(decisions.contains("failed checks 1 of 1"), "{decisions}");
}
