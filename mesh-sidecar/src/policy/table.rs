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

/// Lines of `label  value`, the label column padded; a list's label on its first line only.
#[derive(Default)]
struct Table(String);

impl Table {
    fn line(&mut self, label: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{label:<15} {value}");
    }

    fn list<T: std::fmt::Display>(&mut self, label: &str, values: impl IntoIterator<Item = T>) {
        for (i, v) in values.into_iter().enumerate() {
            self.line(if i == 0 { label } else { "" }, v);
        }
    }
}

/// The strings of a JSON array (none when it is not one).
fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().unwrap_or(""))
}

/// `part` as a percentage of `total`, 0 when there is no total.
fn percent(part: u64, total: u64) -> f64 {
    if total > 0 {
        part as f64 * 100.0 / total as f64
    } else {
        0.0
    }
}

/// The human form of the same object.
pub(super) fn table(req: &Request, v: &Value) -> String {
    let mut t = Table::default();
    t.line(
        "request",
        format!("{} {}{}", req.method(), req.authority(), req.path()),
    );
    target(&mut t, v);
    t.line("route", route(v));
    backends(&mut t, &v["backends"]);
    for (i, c) in v["canaries"].as_array().into_iter().flatten().enumerate() {
        for (j, l) in super::canary::lines(c).into_iter().enumerate() {
            t.line(if i + j == 0 { "canary" } else { "" }, l);
        }
    }
    if let Some(samples) = v.get("samples").and_then(Value::as_object) {
        let total: u64 = samples.values().filter_map(Value::as_u64).sum();
        t.list(
            "samples",
            samples.iter().map(|(k, c)| {
                let c = c.as_u64().unwrap_or(0);
                format!("{k}  {c} ({:.1}%)", percent(c, total))
            }),
        );
    }
    t.list("filters", strings(&v["filters"]));
    after_filters(&mut t, req, &v["after_filters"]);
    let ms = &v["timeout_ms"];
    let show = |x: &Value| x.as_u64().map_or("none".to_owned(), |m| format!("{m}ms"));
    t.line(
        "timeouts",
        format!(
            "request {}, backend request {}",
            show(&ms["request"]),
            show(&ms["backend_request"])
        ),
    );
    t.line("retry", retry(&v["retry"]));
    if let Some(c) = v.get("classification").and_then(Value::as_object) {
        let failing: Vec<&str> = (c.iter())
            .filter(|(_, x)| x.as_str() == Some("failure"))
            .map(|(k, _)| k.as_str())
            .collect();
        let codes: Vec<&str> = c.keys().map(String::as_str).collect();
        let failing = match failing.is_empty() {
            true => "none".to_owned(),
            false => failing.join(", "),
        };
        t.line("failures", format!("of {}: {failing}", codes.join("/")));
    }
    authorization(&mut t, v);
    // Every note is its own fact, each labelled.
    for n in strings(&v["notes"]) {
        t.line("note", n);
    }
    t.0
}

/// Inbound: the pod port and Server; outbound: how the destination was found and its Service.
fn target(t: &mut Table, v: &Value) {
    let Some(target) = v.get("target") else {
        t.line("destination", describe_destination(&v["destination"]));
        let service = v["service"]
            .as_str()
            .unwrap_or("unknown (not in the input)");
        t.line("service", service);
        return;
    };
    let port_name = (target["port_name"].as_str())
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    t.line(
        "target",
        format!(
            "pod in {} port {}{port_name}",
            target["namespace"].as_str().unwrap_or(""),
            target["port"],
        ),
    );
    t.line(
        "server",
        v["server"].as_str().unwrap_or("none (default policy)"),
    );
}

fn route(v: &Value) -> String {
    let route = &v["route"];
    if !route.is_null() {
        return format!(
            "{} ({})",
            route["name"].as_str().unwrap_or(""),
            route["source"].as_str().unwrap_or("")
        );
    }
    match v["no_route"] == json!(true) {
        true => "none matches: routes are attached and none matches (404)".to_owned(),
        false => "default".to_owned(),
    }
}

/// Each backend with its weight and share, and under it its backendRef's own filters.
fn backends(t: &mut Table, bs: &Value) {
    let bs = bs.as_array().map_or(&[][..], Vec::as_slice);
    let total: u64 = bs.iter().filter_map(|b| b["weight"].as_u64()).sum();
    for (i, b) in bs.iter().enumerate() {
        let w = b["weight"].as_u64().unwrap_or(0);
        t.line(
            if i == 0 { "backends" } else { "" },
            format!(
                "{}:{}  weight {w} ({:.1}%)",
                b["service"].as_str().unwrap_or(""),
                b["port"],
                percent(w, total)
            ),
        );
        for f in strings(&b["filters"]) {
            t.line("", format!("  filter {f}"));
        }
    }
}

/// What the filters made of the request: a redirect, an error, or the request forwarded.
fn after_filters(t: &mut Table, req: &Request, after: &Value) {
    if let Some(r) = after.get("redirect") {
        let to = r["location"].as_str().unwrap_or("");
        t.line("answer", format!("redirect {} to {to}", r["status"]));
    } else if let Some(e) = after.get("error") {
        let unresolved = e["unresolved"].as_str().unwrap_or("");
        t.line(
            "answer",
            format!("{} ({unresolved} is not resolved)", e["status"]),
        );
    } else if !after.is_null() {
        t.line(
            "forwarded as",
            format!(
                "{} {}{}",
                req.method(),
                after["authority"].as_str().unwrap_or(""),
                after["path"].as_str().unwrap_or("")
            ),
        );
        t.list("with headers", strings(&after["headers"]));
        t.list("response", strings(&after["response_headers"]));
        t.list("mirrored", strings(&after["mirrors"]));
    }
}

fn retry(r: &Value) -> String {
    if r["retryable"] != json!(true) {
        return "no".to_owned();
    }
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
}

fn authorization(t: &mut Table, v: &Value) {
    let a = &v["authorization"];
    if a.is_null() {
        return;
    }
    let verdict = match a["allowed"] == json!(true) {
        true => "allowed",
        false => "DENIED",
    };
    t.line(
        "authorization",
        format!(
            "{verdict} by {}: {}",
            a["by"].as_str().unwrap_or(""),
            a["reason"].as_str().unwrap_or("")
        ),
    );
    if let Some(rl) = v["rate_limit"].as_object() {
        t.line(
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
