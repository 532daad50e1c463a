//! `mesh policy explain`'s human output: the same JSON object, one fact per line.

use std::fmt::Write as _;

use mesh_core::{Request, RequestFacts};
use serde_json::{Value, json};

/// How the destination was found, in words.
fn describe_destination(d: &Value) -> String {
    let text = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    match d["by"].as_str() {
        Some("name") => format!(
            "by name, from namespace {}{}",
            text("from_namespace"),
            if d["assumed"] == json!(true) {
                " (assumed; set --from-namespace)"
            } else {
                ""
            }
        ),
        _ if d["kind"] == json!("pod") => format!(
            "by address: pod {} of {}",
            d["pod"].as_str().unwrap_or("(unnamed)"),
            text("service")
        ),
        _ => format!("by address: {}", text("kind")),
    }
}

/// The human form of the same object.
pub(super) fn table(req: &Request, v: &Value) -> String {
    let mut s = String::new();
    let line = |s: &mut String, k: &str, val: String| {
        let _ = writeln!(s, "{k:<15} {val}");
    };
    line(
        &mut s,
        "request",
        format!("{} {}{}", req.method(), req.authority(), req.path()),
    );
    if let Some(t) = v.get("target") {
        line(
            &mut s,
            "target",
            format!(
                "pod in {} port {}{}",
                t["namespace"].as_str().unwrap_or(""),
                t["port"],
                t["port_name"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
        );
        line(
            &mut s,
            "server",
            v["server"]
                .as_str()
                .unwrap_or("none (default policy)")
                .to_owned(),
        );
    } else {
        line(
            &mut s,
            "destination",
            describe_destination(&v["destination"]),
        );
        line(
            &mut s,
            "service",
            v["service"]
                .as_str()
                .unwrap_or("unknown (not in the input)")
                .to_owned(),
        );
    }
    let route = &v["route"];
    line(
        &mut s,
        "route",
        if route.is_null() {
            if v["no_route"] == json!(true) {
                "none matches: routes are attached and none matches (404)".to_owned()
            } else {
                "default".to_owned()
            }
        } else {
            format!(
                "{} ({})",
                route["name"].as_str().unwrap_or(""),
                route["source"].as_str().unwrap_or("")
            )
        },
    );
    if let Some(bs) = v["backends"].as_array().filter(|b| !b.is_empty()) {
        let total: u64 = bs.iter().filter_map(|b| b["weight"].as_u64()).sum();
        for (i, b) in bs.iter().enumerate() {
            let w = b["weight"].as_u64().unwrap_or(0);
            let pct = if total > 0 {
                w as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            line(
                &mut s,
                if i == 0 { "backends" } else { "" },
                format!(
                    "{}:{}  weight {w} ({pct:.1}%)",
                    b["service"].as_str().unwrap_or(""),
                    b["port"]
                ),
            );
            // A backendRef's own filters, under the backend they apply to.
            for f in b["filters"].as_array().into_iter().flatten() {
                line(&mut s, "", format!("  filter {}", f.as_str().unwrap_or("")));
            }
        }
    }
    for (i, c) in v["canaries"].as_array().into_iter().flatten().enumerate() {
        for (j, l) in super::canary::lines(c).into_iter().enumerate() {
            line(&mut s, if i + j == 0 { "canary" } else { "" }, l);
        }
    }
    if let Some(samples) = v.get("samples").and_then(Value::as_object) {
        let total: u64 = samples.values().filter_map(Value::as_u64).sum();
        for (i, (k, c)) in samples.iter().enumerate() {
            let c = c.as_u64().unwrap_or(0);
            let pct = if total > 0 {
                c as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            line(
                &mut s,
                if i == 0 { "samples" } else { "" },
                format!("{k}  {c} ({pct:.1}%)"),
            );
        }
    }
    for (i, f) in v["filters"].as_array().into_iter().flatten().enumerate() {
        line(
            &mut s,
            if i == 0 { "filters" } else { "" },
            f.as_str().unwrap_or("").to_owned(),
        );
    }
    let after = &v["after_filters"];
    if let Some(r) = after.get("redirect") {
        line(
            &mut s,
            "answer",
            format!(
                "redirect {} to {}",
                r["status"],
                r["location"].as_str().unwrap_or("")
            ),
        );
    } else if let Some(e) = after.get("error") {
        line(
            &mut s,
            "answer",
            format!(
                "{} ({} is not resolved)",
                e["status"],
                e["unresolved"].as_str().unwrap_or("")
            ),
        );
    } else if !after.is_null() {
        line(
            &mut s,
            "forwarded as",
            format!(
                "{} {}{}",
                req.method(),
                after["authority"].as_str().unwrap_or(""),
                after["path"].as_str().unwrap_or("")
            ),
        );
        let lists = [
            ("with headers", &after["headers"]),
            ("response", &after["response_headers"]),
            ("mirrored", &after["mirrors"]),
        ];
        for (label, list) in lists {
            for (i, h) in list.as_array().into_iter().flatten().enumerate() {
                line(
                    &mut s,
                    if i == 0 { label } else { "" },
                    h.as_str().unwrap_or("").to_owned(),
                );
            }
        }
    }
    let t = &v["timeout_ms"];
    let show = |x: &Value| x.as_u64().map_or("none".to_owned(), |m| format!("{m}ms"));
    line(
        &mut s,
        "timeouts",
        format!(
            "request {}, backend request {}",
            show(&t["request"]),
            show(&t["backend_request"])
        ),
    );
    let r = &v["retry"];
    line(
        &mut s,
        "retry",
        if r["retryable"] == json!(true) {
            let mut x = format!(
                "up to {} on {}",
                r["limit"],
                r["conditions"].as_str().unwrap_or("")
            );
            if let Some(b) = r["budget"].as_object() {
                let _ = write!(
                    x,
                    "; budget {}% + {}/s over {}s",
                    b["retry_ratio"].as_f64().unwrap_or(0.0) * 100.0,
                    b["min_retries_per_second"],
                    b["ttl_ms"].as_u64().unwrap_or(0) / 1000
                );
            }
            x
        } else {
            "no".to_owned()
        },
    );
    if let Some(c) = v.get("classification").and_then(Value::as_object) {
        let failing: Vec<&str> = c
            .iter()
            .filter(|(_, x)| x.as_str() == Some("failure"))
            .map(|(k, _)| k.as_str())
            .collect();
        let codes: Vec<&str> = c.keys().map(String::as_str).collect();
        line(
            &mut s,
            "failures",
            format!(
                "of {}: {}",
                codes.join("/"),
                if failing.is_empty() {
                    "none".to_owned()
                } else {
                    failing.join(", ")
                }
            ),
        );
    }
    let a = &v["authorization"];
    if !a.is_null() {
        line(
            &mut s,
            "authorization",
            format!(
                "{} by {}: {}",
                if a["allowed"] == json!(true) {
                    "allowed"
                } else {
                    "DENIED"
                },
                a["by"].as_str().unwrap_or(""),
                a["reason"].as_str().unwrap_or("")
            ),
        );
        if let Some(rl) = v["rate_limit"].as_object() {
            line(
                &mut s,
                "rate limit",
                format!(
                    "{} total {} rps, this client {} rps",
                    rl["source"].as_str().unwrap_or(""),
                    rl["total_rps"],
                    rl["per_identity_rps"]
                ),
            );
        }
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        line(&mut s, "note", n.as_str().unwrap_or("").to_owned());
    }
    s
}
