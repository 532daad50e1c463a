//! The tables as data: which series each one reads and how rows are made from them. Nothing
//! here formats text or knows which source answers.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::StatError;
use super::series::{Sample, Selector};
use super::source::Source;

/// The quantiles every table shows.
const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// A kind of resource, as `kubectl` and `linkerd viz` spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Deployment,
    Pod,
    Namespace,
    Service,
}

/// `KIND[/NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resource {
    pub(crate) kind: Kind,
    pub(crate) name: Option<String>,
}

/// Which namespace a query looks at: one, or all (`-A`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    Namespace(String),
    All,
}

/// What `mesh stat` asks.
#[derive(Clone, Debug)]
pub(crate) struct StatQuery {
    pub(crate) resource: Resource,
    pub(crate) scope: Scope,
    pub(crate) from: Option<Resource>,
    pub(crate) to: Option<Resource>,
}

/// Success, throughput and latency of some responses over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Golden {
    /// Responses seen in the window.
    pub(crate) requests: f64,
    /// Of those, classified `success`.
    pub(crate) successes: f64,
    pub(crate) rps: f64,
    pub(crate) latency_ms_p50: Option<f64>,
    pub(crate) latency_ms_p95: Option<f64>,
    pub(crate) latency_ms_p99: Option<f64>,
}

/// A row of `mesh stat`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct WorkloadRow {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// Proxies seen for the workload; `None` where that cannot be known (`--from`/`--to`).
    pub(crate) meshed: Option<f64>,
    pub(crate) success_rate: Option<f64>,
    #[serde(flatten)]
    pub(crate) golden: Golden,
    pub(crate) tcp_conn: Option<f64>,
    pub(crate) read_bytes_per_sec: Option<f64>,
    pub(crate) write_bytes_per_sec: Option<f64>,
}

/// A row of `mesh routes`: a route of a destination, or with `-o wide` one of its backends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RouteRow {
    /// The route's name as the metrics label it, `[DEFAULT]` for requests no route matched.
    pub(crate) route: String,
    /// The destination's authority (`host:port`).
    pub(crate) dst: String,
    /// The backend Service, on per-backend rows.
    pub(crate) backend: Option<String>,
    pub(crate) success_rate: Option<f64>,
    #[serde(flatten)]
    pub(crate) golden: Golden,
}

/// A row of `mesh edges`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct EdgeRow {
    pub(crate) src: String,
    pub(crate) src_ns: String,
    pub(crate) dst: String,
    pub(crate) dst_ns: String,
    /// Whether the requests travelled over mTLS.
    pub(crate) secured: bool,
    /// The client's identity as the destination's proxy verified it.
    pub(crate) client_id: Option<String>,
    /// The server's identity as the client's proxy verified it.
    pub(crate) server_id: Option<String>,
    pub(crate) requests: f64,
}

/// The label a kind's series are named by, on the workload's own series.
fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Deployment => "deployment",
        Kind::Pod => "pod",
        Kind::Namespace => "namespace",
        Kind::Service => "dst_service",
    }
}

// === impl Golden ===

impl Golden {
    pub(crate) fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.successes / self.requests)
    }
}

/// Success counts and latency quantiles of `sel` (a `*_total` of responses) and its latency
/// histogram, grouped by the values of `keys`.
pub(crate) async fn goldens(
    source: &Source,
    sel: &Selector,
    latency: &'static str,
    keys: &[&str],
) -> Result<BTreeMap<Vec<String>, Golden>, StatError> {
    let key = |s: &Sample| {
        keys.iter()
            .map(|k| s.label(k).to_owned())
            .collect::<Vec<_>>()
    };
    let mut by = keys.to_vec();
    by.push("classification");
    let window = source.window().as_secs_f64().max(f64::EPSILON);
    let mut out: BTreeMap<Vec<String>, Golden> = BTreeMap::new();
    for s in source.increase(sel, &by).await? {
        let g = out.entry(key(&s)).or_default();
        g.requests += s.value;
        g.rps += s.value / window;
        if s.label("classification") == "success" {
            g.successes += s.value;
        }
    }
    let lat = Selector {
        metric: latency,
        matchers: sel.matchers.clone(),
    };
    for (i, q) in QUANTILES.into_iter().enumerate() {
        for s in source.quantile(q, &lat, keys).await? {
            let g = out.entry(key(&s)).or_default();
            let slot = match i {
                0 => &mut g.latency_ms_p50,
                1 => &mut g.latency_ms_p95,
                _ => &mut g.latency_ms_p99,
            };
            *slot = Some(s.value);
        }
    }
    Ok(out)
}

/// Sums of `metric` by `keys`, keyed as [`goldens`] keys.
async fn sums(
    source: &Source,
    sel: &Selector,
    keys: &[&str],
    increase: bool,
) -> Result<BTreeMap<Vec<String>, f64>, StatError> {
    let samples = if increase {
        source.increase(sel, keys).await?
    } else {
        source.current(sel, keys).await?
    };
    Ok(keyed(samples, keys))
}

/// Samples keyed by the values of `keys`, as [`goldens`] keys them.
fn keyed(samples: Vec<Sample>, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
    samples
        .into_iter()
        .map(|s| {
            (
                keys.iter().map(|k| s.label(k).to_owned()).collect(),
                s.value,
            )
        })
        .collect()
}

fn scoped(sel: Selector, key: &'static str, scope: &Scope) -> Selector {
    match scope {
        Scope::Namespace(ns) => sel.eq(key, ns.clone()),
        Scope::All => sel,
    }
}

/// Per-workload numbers beside the responses: proxies seen, open connections, bytes moved.
#[derive(Debug, Default)]
struct Extras {
    meshed: BTreeMap<Vec<String>, f64>,
    tcp: BTreeMap<Vec<String>, f64>,
    read: BTreeMap<Vec<String>, f64>,
    write: BTreeMap<Vec<String>, f64>,
}

/// Which responses `mesh stat` reads and the labels its rows are keyed by; `true` when the
/// rows are the workloads themselves (so their proxies and connections can be counted).
fn stat_plan(q: &StatQuery) -> (Selector, Vec<&'static str>, bool) {
    let own = kind_label(q.resource.kind);
    let workload_keys: Vec<&'static str> = if q.resource.kind == Kind::Namespace {
        vec!["namespace"]
    } else {
        vec!["namespace", own]
    };
    let outbound = Selector::new("response_total").eq("direction", "outbound");
    let named = |sel: Selector| match &q.resource.name {
        Some(name) => sel.eq(own, name.clone()),
        None => sel,
    };
    match (&q.from, &q.to) {
        (Some(from), _) => {
            let mut sel = scoped(outbound, "namespace", &q.scope);
            if let Some(name) = &from.name {
                sel = sel.eq(kind_label(from.kind), name.clone());
            }
            // The rows are the Services called: a name picks one of them.
            if let Some(name) = &q.resource.name {
                sel = sel.eq("dst_service", name.clone());
            }
            (sel, vec!["dst_namespace", "dst_service"], false)
        }
        (None, Some(to)) => {
            let mut sel = scoped(outbound, "dst_namespace", &q.scope);
            if let Some(name) = &to.name {
                sel = sel.eq("dst_service", name.clone());
            }
            (named(sel), workload_keys, false)
        }
        // Services have no proxy of their own: their callers' outbound view, per Service.
        (None, None) if q.resource.kind == Kind::Service => {
            let sel = named(scoped(outbound, "dst_namespace", &q.scope));
            (sel, vec!["dst_namespace", "dst_service"], false)
        }
        (None, None) => {
            let sel = Selector::new("response_total").eq("direction", "inbound");
            (
                named(scoped(sel, "namespace", &q.scope)),
                workload_keys,
                true,
            )
        }
    }
}

async fn extras(
    source: &Source,
    q: &StatQuery,
    keys: &[&str],
    wide: bool,
) -> Result<Extras, StatError> {
    let wanted = |k: &Vec<String>| {
        let ns = match &q.scope {
            Scope::Namespace(ns) => k.first() == Some(ns),
            Scope::All => true,
        };
        ns && q.resource.name.as_ref().is_none_or(|n| k.last() == Some(n))
    };
    let inbound = |m| {
        let sel = scoped(
            Selector::new(m).eq("direction", "inbound"),
            "namespace",
            &q.scope,
        );
        match &q.resource.name {
            Some(name) => sel.eq(kind_label(q.resource.kind), name.clone()),
            None => sel,
        }
    };
    let mut e = Extras {
        meshed: keyed(source.proxies(keys).await?, keys),
        tcp: sums(source, &inbound("tcp_open_connections"), keys, false).await?,
        ..Extras::default()
    };
    e.meshed.retain(|k, _| wanted(k));
    if wide {
        e.read = sums(source, &inbound("tcp_read_bytes_total"), keys, true).await?;
        e.write = sums(source, &inbound("tcp_write_bytes_total"), keys, true).await?;
    }
    Ok(e)
}

/// `mesh stat`: per workload, or per destination with `--from`.
pub(crate) async fn stat(
    source: &Source,
    q: &StatQuery,
    wide: bool,
) -> Result<Vec<WorkloadRow>, StatError> {
    let (sel, keys, per_workload) = stat_plan(q);
    let golden = goldens(source, &sel, "response_latency_ms", &keys).await?;
    let e = if per_workload {
        extras(source, q, &keys, wide).await?
    } else {
        Extras::default()
    };
    let window = source.window().as_secs_f64().max(f64::EPSILON);
    let names: BTreeSet<&Vec<String>> = golden.keys().chain(e.meshed.keys()).collect();
    Ok(names
        .into_iter()
        .filter(|k| k.iter().all(|v| !v.is_empty()))
        .map(|k| {
            let g = golden.get(k).cloned().unwrap_or_default();
            let count = |m: &BTreeMap<Vec<String>, f64>| {
                per_workload.then(|| m.get(k).copied().unwrap_or(0.0))
            };
            let rate = |m: &BTreeMap<Vec<String>, f64>| {
                if wide {
                    m.get(k).map(|v| v / window)
                } else {
                    None
                }
            };
            WorkloadRow {
                namespace: k.first().cloned().unwrap_or_default(),
                name: k.last().cloned().unwrap_or_default(),
                meshed: count(&e.meshed),
                success_rate: g.success_rate(),
                golden: g,
                tcp_conn: count(&e.tcp),
                read_bytes_per_sec: rate(&e.read),
                write_bytes_per_sec: rate(&e.write),
            }
        })
        .collect())
}

/// Whether authority `host:port` names Service `name` in namespace `ns` (any DNS form).
pub(crate) fn names_service(authority: &str, name: &str, ns: &Scope) -> bool {
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let mut parts = host.split('.');
    parts.next() == Some(name)
        && match (parts.next(), ns) {
            (Some(n), Scope::Namespace(want)) => n == want,
            _ => true,
        }
}

/// What `mesh routes` asks: the routes a workload calls, or the routes of a Service.
#[derive(Clone, Debug)]
pub(crate) struct RoutesQuery {
    pub(crate) resource: Resource,
    pub(crate) scope: Scope,
    /// Only destinations that name this Service.
    pub(crate) to: Option<String>,
}

/// `mesh routes`: per route of each destination, `[DEFAULT]` for what no route matched, and
/// with `wide` per backend.
pub(crate) async fn routes(
    source: &Source,
    q: &RoutesQuery,
    wide: bool,
) -> Result<Vec<RouteRow>, StatError> {
    let mut base = Selector::new("route_response_total").eq("direction", "outbound");
    let mut service = q.to.clone();
    match (&q.resource.kind, &q.resource.name) {
        (Kind::Service, name) => service = name.clone().or(service),
        (kind, Some(name)) => {
            base = scoped(base, "namespace", &q.scope).eq(kind_label(*kind), name.clone());
        }
        (_, None) => base = scoped(base, "namespace", &q.scope),
    }
    let keep = |dst: &str| {
        service
            .as_ref()
            .is_none_or(|s| names_service(dst, s, &q.scope))
    };
    let routed = goldens(
        source,
        &base,
        "route_response_latency_ms",
        &["dst", "rt_route"],
    )
    .await?;
    let all = Selector {
        metric: "response_total",
        matchers: base.matchers.clone(),
    };
    let per_dst = goldens(source, &all, "response_latency_ms", &["authority"]).await?;
    let mut rows = Vec::new();
    for (dst, total) in per_dst.iter().filter(|(k, _)| keep(&k[0])) {
        let mut left = total.clone();
        for (k, g) in routed.iter().filter(|(k, _)| k[0] == dst[0]) {
            left.requests -= g.requests;
            left.successes -= g.successes;
            left.rps -= g.rps;
            rows.push(route_row(&k[1], &k[0], None, g.clone()));
        }
        // What no route matched: only counts can be subtracted, not latency histograms.
        // Prometheus extrapolates each series' `increase` on its own, so a difference under
        // 1 % of the total is that noise, not requests.
        if left.requests > (total.requests * 0.01).max(0.5) {
            let default = Golden {
                latency_ms_p50: None,
                latency_ms_p95: None,
                latency_ms_p99: None,
                ..left
            };
            rows.push(route_row("[DEFAULT]", &dst[0], None, default));
        }
    }
    if wide {
        let backends = goldens(
            source,
            &all,
            "response_latency_ms",
            &["authority", "dst_service"],
        )
        .await?;
        for (k, g) in backends
            .into_iter()
            .filter(|(k, _)| keep(&k[0]) && !k[1].is_empty())
        {
            rows.push(route_row("", &k[0], Some(k[1].clone()), g));
        }
    }
    Ok(rows)
}

fn route_row(route: &str, dst: &str, backend: Option<String>, golden: Golden) -> RouteRow {
    RouteRow {
        route: route.to_owned(),
        dst: dst.to_owned(),
        backend,
        success_rate: golden.success_rate(),
        golden,
    }
}

/// `mesh edges`: who called whom in the window, and over mTLS with which identities.
///
/// Edges come from the callers' outbound series (the destination is the Service they
/// called); the client's identity is the one the destination's proxy (the workload named as
/// the Service) verified: the client identity of the caller's namespace and service account
/// named as the caller, or its only client identity.
pub(crate) async fn edges(source: &Source, scope: &Scope) -> Result<Vec<EdgeRow>, StatError> {
    let out = scoped(
        Selector::new("response_total").eq("direction", "outbound"),
        "namespace",
        scope,
    );
    let out_keys = [
        "namespace",
        "deployment",
        "dst_namespace",
        "dst_service",
        "tls",
        "server_id",
    ];
    let calls = source.increase(&out, &out_keys).await?;
    let inbound = Selector::new("response_total")
        .eq("direction", "inbound")
        .eq("tls", "true");
    let seen = source
        .increase(&inbound, &["namespace", "deployment", "client_id"])
        .await?;
    let mut rows: Vec<EdgeRow> = calls
        .iter()
        .filter(|s| s.value > 0.0 && !s.label("dst_service").is_empty())
        .map(|s| {
            let (src, src_ns) = (s.label("deployment"), s.label("namespace"));
            let (dst, dst_ns) = (s.label("dst_service"), s.label("dst_namespace"));
            let secured = s.label("tls") == "true";
            let clients: BTreeSet<&str> = seen
                .iter()
                .filter(|i| i.label("namespace") == dst_ns && i.label("deployment") == dst)
                .map(|i| i.label("client_id"))
                .collect();
            let client_id = secured
                .then(|| {
                    let named = format!("{src}.{src_ns}.");
                    clients
                        .iter()
                        .find(|c| c.starts_with(&named))
                        .or(if clients.len() == 1 {
                            clients.first()
                        } else {
                            None
                        })
                        .map(|c| (*c).to_owned())
                })
                .flatten();
            EdgeRow {
                src: src.to_owned(),
                src_ns: src_ns.to_owned(),
                dst: dst.to_owned(),
                dst_ns: dst_ns.to_owned(),
                secured,
                client_id,
                server_id: Some(s.label("server_id").to_owned()).filter(|v| !v.is_empty()),
                requests: s.value,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.src_ns, &a.src, &a.dst).cmp(&(&b.src_ns, &b.src, &b.dst)));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_name_services_in_any_dns_form() {
        let ns = Scope::Namespace("default".into());
        assert!(names_service(
            "api.default.svc.cluster.local:80",
            "api",
            &ns
        ));
        assert!(names_service("api:80", "api", &ns));
        assert!(!names_service("api.shop.svc.cluster.local:80", "api", &ns));
        assert!(names_service(
            "api.shop.svc.cluster.local:80",
            "api",
            &Scope::All
        ));
        assert!(!names_service("apiv2.default:80", "api", &ns));
    }
}
