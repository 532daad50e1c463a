//! Test your mesh policy in plain Rust: load the manifests you deploy, describe requests, and
//! check the decisions the mesh will take. No cluster, no network.
//!
//! Run it with `cargo run --example policy_testing`.

use std::error::Error;
use std::time::Duration;

use mesh::core::{MeshPolicy, Request};

fn main() -> Result<(), Box<dyn Error>> {
    let policy = MeshPolicy::from_yaml(include_str!("deploy/canary.yaml"))?;

    // Testers who send the header always reach the canary.
    let tester =
        Request::new("GET", "http://web-svc.emojivoto:80/api/vote")?.header("x-canary", "1");
    let tester_route = policy.outbound(&tester).route_name();
    assert_eq!(tester_route, Some("canary-header"));
    let tester_share = policy
        .sample_backends(&tester, 10_000, 7)
        .share("web-svc-v2");
    assert_eq!(tester_share, 1.0);

    // Everyone else is split 90/10, with retries and a 2 s budget for the whole request.
    let everyone = Request::new("GET", "http://web-svc.emojivoto:80/api/vote")?;
    let d = policy.outbound(&everyone);
    assert_eq!(d.route_name(), Some("web-split"));
    assert_eq!(d.timeouts().request, Some(Duration::from_secs(2)));
    let retry = d.retry().ok_or("the split route retries")?;
    assert_eq!(retry.limit, 2);
    assert!(retry.method_allowed("GET"));
    assert!(
        !retry.method_allowed("POST"),
        "POST is never retried unless a route names it"
    );
    let samples = policy.sample_backends(&everyone, 10_000, 7);
    let share = samples.share("web-svc-v2");
    assert!((0.08..0.12).contains(&share), "canary share {share}");

    println!("tester   → {}", tester_route.unwrap_or("default"));
    println!("everyone → {samples}");
    println!(
        "canary share {:.1}%, request timeout {:?}, up to {} retries",
        share * 100.0,
        d.timeouts().request.unwrap_or_default(),
        retry.limit
    );
    Ok(())
}
