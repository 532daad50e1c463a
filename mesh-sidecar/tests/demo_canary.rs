//! `mesh demo --canary` end to end, on loopback only: the demo runs its own mesh (issuer,
//! five proxies, apps) and a Canary that moves voting-v1 → voting-v2. From what it prints, the
//! test asserts what a user watching it would see: a healthy voting-v2 stepped up and
//! promoted, then a fresh rollout rolled back only after voting-v2 started failing; and from
//! the files it keeps, that all traffic is back on voting-v1 and `mesh policy explain` shows
//! the Canary on the voting route.

mod support;

use support::{Interrupted, TempDir};

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The demo ends by itself once both acts are over (about 25 s here); this bounds a hang.
const DEADLINE: Duration = Duration::from_secs(180);

/// Runs the demo to its end and returns what it printed, line by line.
fn run_demo(keep: &std::path::Path) -> Vec<String> {
    let mut child = Command::new(support::mesh_bin())
        .args(["demo", "--canary", "--rps", "30", "--fault-rate", "0.5"])
        .arg("--keep")
        .arg(keep)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = support::read_all(child.stderr.take().unwrap());
    // Interrupted (so it stops its proxies) and reaped however the test ends.
    let mut demo = Interrupted(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            // The demo closed its output: it has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "the demo did not end within {DEADLINE:?}; it printed:\n{}",
                    lines.join("\n")
                )
            }
        }
    }
    let status = demo.0.wait().unwrap();
    assert!(
        status.success(),
        "{status}; it printed:\n{}\nand on stderr:\n{}",
        lines.join("\n"),
        stderr.join().unwrap_or_default()
    );
    lines
}

fn position(lines: &[String], what: &str) -> usize {
    (lines.iter().position(|l| l.contains(what)))
        .unwrap_or_else(|| panic!("no line with {what:?} in:\n{}", lines.join("\n")))
}

#[test]
fn the_demo_canary_is_promoted_then_rolled_back_once_voting_v2_fails() {
    let keep =
        TempDir(std::env::temp_dir().join(format!("mesh-demo-canary-{}", std::process::id())));
    let lines = run_demo(&keep.0);
    let all = lines.join("\n");

    // Act 1: stepped up, each step shown in the table, then promoted without a failed check.
    let act2 = position(&lines, ">>> act 2");
    let promoted = position(&lines, ">>> canary emojivoto/voting: Promoted");
    assert!(promoted < act2, "{all}");
    let stepped = position(&lines, "Progressing, voting-v2 60% (voting-v1 40%)");
    assert!(stepped < promoted, "{all}");
    assert!(
        !lines[..act2]
            .iter()
            .any(|l| l.contains("RolledBack") || l.contains("Held")),
        "act 1's healthy canary failed a check:\n{all}"
    );

    // Act 2: rolled back, and never before voting-v2 started failing.
    let failing = position(&lines, ">>> voting-v2 starts failing");
    let rolled_back = position(&lines, ">>> canary emojivoto/voting: RolledBack");
    assert!(act2 < failing && failing < rolled_back, "{all}");
    assert!(lines[rolled_back].contains("success rate"), "{all}");
    position(&lines, "Failed, voting-v2 0% (voting-v1 100%)");
    position(
        &lines,
        "canary: act 1 Succeeded (voting-v2 promoted); act 2 Failed (rolled back to voting-v1)",
    );

    // The route file the proxies read has all traffic back on voting-v1.
    let config = keep.0.join("config");
    let route: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(config.join("voting-route.yaml")).unwrap())
            .unwrap();
    let weights: Vec<(String, u64)> = (route["spec"]["rules"][0]["backendRefs"].as_array())
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [("voting-v1".to_owned(), 100), ("voting-v2".to_owned(), 0)]
    );

    // The Canary sits beside the route, and `explain` shows it on the voting route.
    let explain = Command::new(support::mesh_bin())
        .args(["policy", "explain"])
        .arg(&config)
        .args(["--request", "GET http://voting-svc.emojivoto:8080/"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(explain.status.success(), "{text}");
    assert!(
        text.contains("emojivoto/voting moves HTTPRoute/voting-canary from voting-v1 to voting-v2"),
        "{text}"
    );
}
