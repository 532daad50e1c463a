//! `grafana/mesh.json`, the Grafana dashboard of ours, checked without Grafana (it is in none
//! of the registries this project installs from): its structure as Grafana imports it, then
//! every query it holds run by a real Prometheus (Debian's `prometheus`) scraping two loopback
//! proxies that carried a known mix: 200 requests from `web` to `api` over mTLS, exactly 10 %
//! answered 500. Every query must parse and name only metrics and labels the proxies export,
//! and the panels must show that traffic: api's success rate reads 90 %.
//!
//! Prometheus is installed with apt where missing; where it cannot be, the Prometheus half
//! skips with a reason (under `CI=true` that is a failure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use regex::Regex;
use serde_json::Value;
use support::prometheus::{WebToApi, prometheus_bin, query};

const DASHBOARD: &str = include_str!("../../grafana/mesh.json");
const DATASOURCE: &str = "${DS_PROMETHEUS}";
const REQUESTS: u64 = 200;
const WARM_UP: u64 = 10;
/// What Grafana makes of `$__rate_interval` at its defaults (four 15 s scrape intervals). The
/// whole traffic falls inside it.
const RATE_INTERVAL: &str = "1m";
/// Variables Grafana defines itself.
const BUILTINS: &[&str] = &["__rate_interval", "__interval", "__range", "__interval_ms"];
/// Panels that may rightly be empty for this traffic: nothing is denied.
const MAY_BE_EMPTY: &[&str] = &["Authorization denials"];

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("grafana/mesh.json is JSON")
}

/// The panels that show data (rows aside), top to bottom.
fn panels(d: &Value) -> Vec<&Value> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

fn targets(p: &Value) -> &Vec<Value> {
    p["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no targets", p["title"]))
}

fn title(p: &Value) -> &str {
    p["title"].as_str().unwrap()
}

/// The templating variables by name, with their `label_values(...)` queries.
fn variables(d: &Value) -> BTreeMap<String, String> {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["datasource"]["uid"], DATASOURCE, "{v:#}");
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            (v["name"].as_str().unwrap().to_owned(), q.to_owned())
        })
        .collect()
}

/// Every variable `text` uses, `$name` or `${name}`.
fn used_variables(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    re.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

#[test]
fn the_dashboard_imports_as_grafana_reads_it() {
    let d = dashboard();
    let inputs = d["__inputs"].as_array().unwrap();
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "{inputs:#?}"
    );
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "Grafana ≥ 9");
    let ids: Vec<u64> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "panel ids repeat: {ids:?}");
    let vars = variables(&d);
    assert_eq!(
        vars.keys().map(String::as_str).collect::<Vec<_>>(),
        ["deployment", "namespace"]
    );
    let defined = |name: &String| vars.contains_key(name) || BUILTINS.contains(&name.as_str());
    for q in vars.values() {
        assert!(q.starts_with("label_values("), "{q}");
        for v in used_variables(q) {
            assert!(defined(&v), "${v} in {q} is not defined");
        }
    }
    for p in panels(&d) {
        assert_eq!(p["datasource"]["uid"], DATASOURCE, "{}", title(p));
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{}",
            title(p)
        );
        let refs: BTreeSet<&str> = targets(p)
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets(p).len(), "{}: refIds repeat", title(p));
        for t in targets(p) {
            assert_eq!(t["datasource"]["uid"], DATASOURCE, "{}", title(p));
            let expr = t["expr"].as_str().unwrap();
            for v in used_variables(expr) {
                assert!(defined(&v), "{}: ${v} is not defined", title(p));
            }
        }
    }
}

/// `text` with the variables as Grafana would fill them for `deployment` in `default`.
fn substitute(text: &str, deployment: &str) -> String {
    text.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "15s")
        .replace("$namespace", "default")
        .replace("$deployment", deployment)
}

/// An instant query's samples; panics unless Prometheus accepted it.
fn samples(prom: SocketAddr, expr: &str) -> Vec<Value> {
    let rsp = query(prom, expr);
    assert_eq!(rsp["status"], "success", "{expr}\n{rsp:#}");
    rsp["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// The variable's values: `label_values(SELECTOR, LABEL)` asked as PromQL.
fn variable_values(prom: SocketAddr, q: &str) -> BTreeSet<String> {
    let re = Regex::new(r"^label_values\((.+),\s*(\w+)\)$").unwrap();
    let c = re.captures(q).unwrap_or_else(|| panic!("{q}"));
    let label = &c[2];
    samples(prom, &format!("count by ({label}) ({})", &c[1]))
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
        .collect()
}

/// The samples of each target of each panel, by panel title and in target order, for
/// `deployment`; every target must be accepted.
fn run_all(prom: SocketAddr, d: &Value, deployment: &str) -> BTreeMap<String, Vec<Vec<Value>>> {
    panels(d)
        .into_iter()
        .map(|p| {
            let per_target = targets(p)
                .iter()
                .map(|t| samples(prom, &substitute(t["expr"].as_str().unwrap(), deployment)))
                .collect();
            (title(p).to_owned(), per_target)
        })
        .collect()
}

/// The one sample of `panel` whose `label` is `want`.
fn sample_of(
    results: &BTreeMap<String, Vec<Vec<Value>>>,
    panel: &str,
    label: &str,
    want: &str,
) -> f64 {
    let rows = &results[panel][0];
    let s = rows
        .iter()
        .find(|s| s["metric"][label] == want)
        .unwrap_or_else(|| panic!("{panel}: no {label}={want} in {rows:#?}"));
    value(s)
}

#[test]
fn every_query_runs_on_prometheus_and_the_panels_show_the_traffic() {
    let Some(bin) = prometheus_bin() else {
        return;
    };
    let mesh = WebToApi::start(&bin, "grafana");
    mesh.traffic(WARM_UP, REQUESTS);
    let prom = mesh.prom;
    let d = dashboard();

    let vars = variables(&d);
    let namespaces = variable_values(prom, &vars["namespace"]);
    assert!(namespaces.contains("default"), "{namespaces:?}");
    let deployments = variable_values(prom, &substitute(&vars["deployment"], ""));
    assert!(
        deployments.contains("api") && deployments.contains("web"),
        "{deployments:?}"
    );

    let api = run_all(prom, &d, "api");
    let web = run_all(prom, &d, "web");
    for p in panels(&d) {
        let t = title(p);
        for (i, target) in targets(p).iter().enumerate() {
            assert!(
                MAY_BE_EMPTY.contains(&t) || !api[t][i].is_empty() || !web[t][i].is_empty(),
                "{t} shows nothing for either workload: {}",
                substitute(target["expr"].as_str().unwrap(), "web")
            );
        }
    }
    // What api served, and what web sent it, per route and per backend: (whose view, panel,
    // the label that picks the series, its value, the value the panel must read).
    let expected = [
        (&api, "Success rate", "deployment", "api", 0.9),
        (
            &api,
            "Success rate by direction",
            "direction",
            "inbound",
            0.9,
        ),
        (
            &web,
            "Success rate by direction",
            "direction",
            "outbound",
            0.9,
        ),
        (&web, "Route success rate", "rt_route", "api-route", 0.9),
        (&web, "Backend success rate", "dst_service", "api", 0.9),
        (&web, "Traffic share per backend", "dst_service", "api", 1.0),
        (&api, "mTLS share of requests", "direction", "inbound", 1.0),
    ];
    for (results, panel, label, value, want) in expected {
        let got = sample_of(results, panel, label, value);
        assert!(
            (got - want).abs() <= 0.02,
            "{panel} {label}={value}: {got}, want ≈ {want}"
        );
    }
    assert!(sample_of(&api, "Request rate", "deployment", "api") > 0.0);
    for (q, latency) in ["p50", "p95", "p99"].iter().zip(&api["Latency"]) {
        assert!(
            !latency.is_empty() && latency.iter().all(|s| value(s).is_finite()),
            "{q}: {latency:#?}"
        );
    }
    let expires_in = sample_of(&api, "Certificate expires in", "deployment", "api");
    assert!(expires_in > 3600.0, "{expires_in}");
}
