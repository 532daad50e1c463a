//! What `mesh policy explain` says about a Canary that moves the weights of the route a
//! request took: between which backends, in which steps, judged by what.

use mesh_core::MeshPolicy;
use mesh_core::canary::{Canary, TargetKind};
use mesh_core::policy::OutboundDecision;
use serde_json::{Value, json};

/// The canaries that move this decision's backends, as JSON (empty when none).
pub(super) fn explain(policy: &MeshPolicy, d: &OutboundDecision<'_>) -> Vec<Value> {
    let names: Vec<String> = d.backends().map(|b| b.backend.name().to_owned()).collect();
    let source = d.route().and_then(|r| r.source());
    (policy.canaries().iter())
        .filter(|c| {
            let route_matches = c.target.kind == TargetKind::TrafficSplit
                || source.is_some_and(|s| {
                    s.kind == c.target.kind.kind()
                        && s.namespace == c.namespace
                        && s.name == c.target.name
                });
            route_matches && names.contains(&c.stable.name) && names.contains(&c.canary.name)
        })
        .map(|c| describe(c))
        .collect()
}

fn describe(c: &Canary) -> Value {
    let a = &c.analysis;
    json!({
        "name": format!("{}/{}", c.namespace, c.name),
        "target": format!("{}/{}", c.target.kind.kind(), c.target.name),
        "stable": c.stable.name,
        "canary": c.canary.name,
        "suspend": c.suspend,
        "interval_ms": a.interval.as_millis() as u64,
        "plan": a.plan(),
        "threshold": a.threshold,
        "min_requests": a.min_requests,
        "checks": a.checks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "on_breach": format!("{:?}", a.on_breach),
    })
}

/// The table lines for one canary.
pub(super) fn lines(c: &Value) -> Vec<String> {
    let text = |k: &str| c[k].as_str().unwrap_or("").to_owned();
    let plan: Vec<String> = (c["plan"].as_array().into_iter().flatten())
        .map(|w| format!("{w}%"))
        .collect();
    let checks: Vec<String> = (c["checks"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut out = vec![format!(
        "{} moves {} from {} to {}{}",
        text("name"),
        text("target"),
        text("stable"),
        text("canary"),
        if c["suspend"] == json!(true) {
            " (suspended)"
        } else {
            ""
        }
    )];
    out.push(format!(
        "every {} ms: {} (≥ {} canary requests per step)",
        c["interval_ms"],
        plan.join(" → "),
        c["min_requests"]
    ));
    out.push(format!(
        "passes when {}; {} after {} failed check(s)",
        if checks.is_empty() {
            "the canary served enough requests".to_owned()
        } else {
            checks.join(" and ")
        },
        if c["on_breach"] == json!("Halt") {
            "halts"
        } else {
            "rolls back"
        },
        c["threshold"]
    ));
    out
}
