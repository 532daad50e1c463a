//! What the page's JSON API answers, computed once per refresh from one [`Source`] by the
//! same queries `mesh stat`, `mesh routes` and `mesh edges` run, plus the configured weights
//! from the policy files.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_core::MeshPolicy;
use mesh_core::split::Backends;
use serde::Serialize;

use crate::canary::board::Board;
use crate::stat::StatError;
use crate::stat::query::{
    self, Kind, Resource, RouteRow, RoutesQuery, Scope, StatQuery, WorkloadRow,
};
use crate::stat::series::Selector;
use crate::stat::source::Source;

/// Points of history kept per workload for its sparklines (2 minutes at one per 2 s).
pub(crate) const HISTORY: usize = 60;
/// Workloads whose history is kept; past this, the ones not seen longest are forgotten.
const MAX_WORKLOADS: usize = 1000;

/// The metric C's proxies export: when their workload certificate expires (Unix seconds).
const CERT_EXPIRY: &str = "identity_cert_expiration_timestamp_seconds";

/// One point of a workload's sparklines.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Point {
    /// Unix seconds.
    pub(crate) t: f64,
    pub(crate) success_rate: Option<f64>,
    pub(crate) rps: f64,
}

/// Recent points per workload, bounded in both directions.
#[derive(Debug, Default)]
pub(crate) struct History {
    points: BTreeMap<(String, String), (u64, VecDeque<Point>)>,
    tick: u64,
}

#[derive(Debug, Serialize)]
struct Workload<'a> {
    #[serde(flatten)]
    row: &'a WorkloadRow,
    history: &'a VecDeque<Point>,
}

#[derive(Debug, Serialize)]
struct Edge {
    #[serde(flatten)]
    row: query::EdgeRow,
    rps: f64,
}

/// A Service's routes, each with its backends.
#[derive(Debug, Serialize)]
struct RouteView {
    service: String,
    namespace: String,
    route: String,
    /// Whether the weights come from the policy files (`false`: only what traffic showed).
    configured: bool,
    success_rate: Option<f64>,
    rps: f64,
    backends: Vec<BackendView>,
}

#[derive(Debug, Serialize)]
struct BackendView {
    name: String,
    /// The configured weight, and as a share of the route's total in percent.
    weight: Option<u64>,
    weight_percent: Option<f64>,
    /// The share of the route's observed requests this backend served, in percent.
    observed_percent: Option<f64>,
    rps: f64,
    success_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Cert {
    namespace: String,
    workload: String,
    pod: String,
    /// Unix seconds; `None` until the proxy exports the metric.
    expires_at: Option<f64>,
    expires_in_seconds: Option<f64>,
}

/// The four JSON answers of one refresh.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    pub(crate) workloads: serde_json::Value,
    pub(crate) edges: serde_json::Value,
    pub(crate) routes: serde_json::Value,
    pub(crate) certs: serde_json::Value,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn json(v: impl Serialize) -> serde_json::Value {
    // Our own plain structs always serialize; `null` would only hide a bug, never panic.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Everything the page shows, from `source` and the policy snapshot (if files were given).
pub(crate) async fn answers(
    source: &Source,
    scope: &Scope,
    policy: Option<&MeshPolicy>,
    history: &mut History,
) -> Result<Answers, StatError> {
    let all = Resource {
        kind: Kind::Deployment,
        name: None,
    };
    let q = StatQuery {
        resource: all.clone(),
        scope: scope.clone(),
        from: None,
        to: None,
    };
    let rows = query::stat(source, &q, false).await?;
    history.record(&rows, now());
    let workloads: Vec<Workload<'_>> = rows
        .iter()
        .map(|row| Workload {
            row,
            history: history.of(&row.namespace, &row.name),
        })
        .collect();
    let window = source.window().as_secs_f64().max(f64::EPSILON);
    let edges: Vec<Edge> = query::edges(source, scope)
        .await?
        .into_iter()
        .map(|row| Edge {
            rps: row.requests / window,
            row,
        })
        .collect();
    let rq = RoutesQuery {
        resource: all,
        scope: scope.clone(),
        to: None,
    };
    let observed = query::routes(source, &rq, true).await?;
    Ok(Answers {
        workloads: json(workloads),
        edges: json(edges),
        routes: json(routes(policy, &observed, scope)),
        certs: json(certs(source, scope).await?),
    })
}

/// The configured routes with their observed numbers; without policy files, the routes and
/// backends traffic showed, without weights.
fn routes(policy: Option<&MeshPolicy>, observed: &[RouteRow], scope: &Scope) -> Vec<RouteView> {
    let mut out = Vec::new();
    if let Some(policy) = policy {
        for svc in policy.services() {
            if let Scope::Namespace(ns) = scope
                && ns != svc.namespace()
            {
                continue;
            }
            let mine: Vec<&RouteRow> = observed
                .iter()
                .filter(|r| {
                    let ns = Scope::Namespace(svc.namespace().to_owned());
                    query::names_service(&r.dst, svc.name(), &ns)
                })
                .collect();
            if let Some(split) = svc.traffic_split() {
                out.push(view(
                    svc.name(),
                    svc.namespace(),
                    "[split]",
                    Some(split),
                    &mine,
                ));
            }
            for r in svc.routes() {
                if r.source().is_some() && !r.backends().is_empty() {
                    out.push(view(
                        svc.name(),
                        svc.namespace(),
                        r.name(),
                        Some(r.backends()),
                        &mine,
                    ));
                }
            }
        }
    } else {
        let mut dsts: Vec<&str> = observed
            .iter()
            .filter(|r| r.backend.is_some())
            .map(|r| r.dst.as_str())
            .collect();
        dsts.dedup();
        for dst in dsts {
            let mine: Vec<&RouteRow> = observed.iter().filter(|r| r.dst == dst).collect();
            out.push(view(dst, "", "", None, &mine));
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.service, &a.route).cmp(&(&b.namespace, &b.service, &b.route))
    });
    out
}

/// One route: its configured backends (or the observed ones) and what traffic each took.
fn view(
    service: &str,
    namespace: &str,
    route: &str,
    configured: Option<&Backends>,
    rows: &[&RouteRow],
) -> RouteView {
    let per_backend: Vec<&RouteRow> = rows
        .iter()
        .copied()
        .filter(|r| r.backend.is_some())
        .collect();
    let total_rps: f64 = per_backend.iter().map(|r| r.golden.rps).sum();
    let whole = rows
        .iter()
        .find(|r| r.backend.is_none() && (r.route == route || route.is_empty()));
    let observed = |name: &str| {
        per_backend
            .iter()
            .find(|r| r.backend.as_deref() == Some(name))
    };
    let backend = |name: String, weight: Option<u64>, total: u64| {
        let seen = observed(&name);
        let rps = seen.map_or(0.0, |r| r.golden.rps);
        BackendView {
            weight_percent: weight
                .filter(|_| total > 0)
                .map(|w| w as f64 * 100.0 / total as f64),
            observed_percent: (total_rps > 0.0).then(|| rps * 100.0 / total_rps),
            success_rate: seen.and_then(|r| r.success_rate),
            rps,
            weight,
            name,
        }
    };
    let backends = match configured {
        Some(b) => b
            .iter()
            .map(|w| {
                backend(
                    w.backend.name().to_owned(),
                    Some(w.weight),
                    b.total_weight(),
                )
            })
            .collect(),
        None => per_backend
            .iter()
            .filter_map(|r| r.backend.clone())
            .map(|n| backend(n, None, 0))
            .collect(),
    };
    RouteView {
        service: service.to_owned(),
        namespace: namespace.to_owned(),
        route: route.to_owned(),
        configured: configured.is_some(),
        success_rate: whole.and_then(|r| r.success_rate),
        rps: whole.map_or(total_rps, |r| r.golden.rps),
        backends,
    }
}

/// Each proxy seen, with its certificate's expiry where it exports one.
async fn certs(source: &Source, scope: &Scope) -> Result<Vec<Cert>, StatError> {
    let keys = ["namespace", "deployment", "pod"];
    let mut sel = Selector::new(CERT_EXPIRY);
    if let Scope::Namespace(ns) = scope {
        sel = sel.eq("namespace", ns.clone());
    }
    let expiry = source.current(&sel, &keys).await?;
    let now = now();
    let mut out: Vec<Cert> = source
        .proxies(&keys)
        .await?
        .into_iter()
        .filter(|p| match scope {
            Scope::Namespace(ns) => p.label("namespace") == ns,
            Scope::All => true,
        })
        .map(|p| {
            let expires_at = expiry
                .iter()
                .find(|e| keys.iter().all(|k| e.label(k) == p.label(k)))
                .map(|e| e.value);
            Cert {
                namespace: p.label("namespace").to_owned(),
                workload: p.label("deployment").to_owned(),
                pod: p.label("pod").to_owned(),
                expires_in_seconds: expires_at.map(|t| t - now),
                expires_at,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.namespace, &a.workload, &a.pod).cmp(&(&b.namespace, &b.workload, &b.pod))
    });
    Ok(out)
}

// === impl History ===

impl History {
    /// Adds this refresh's point to each workload in `rows`; forgets the workloads unseen
    /// longest once more than [`MAX_WORKLOADS`] are kept.
    pub(crate) fn record(&mut self, rows: &[WorkloadRow], t: f64) {
        self.tick += 1;
        for r in rows {
            let (seen, points) = self
                .points
                .entry((r.namespace.clone(), r.name.clone()))
                .or_default();
            *seen = self.tick;
            if points.len() == HISTORY {
                points.pop_front();
            }
            points.push_back(Point {
                t,
                success_rate: r.success_rate,
                rps: r.golden.rps,
            });
        }
        while self.points.len() > MAX_WORKLOADS {
            let oldest = self
                .points
                .iter()
                .min_by_key(|(_, (seen, _))| *seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.points.remove(&k),
                None => break,
            };
        }
    }

    fn of(&self, namespace: &str, name: &str) -> &VecDeque<Point> {
        static EMPTY: VecDeque<Point> = VecDeque::new();
        self.points
            .get(&(namespace.to_owned(), name.to_owned()))
            .map_or(&EMPTY, |(_, p)| p)
    }
}

/// `/api/canaries`: each canary's phase, weights, checks and last decisions, as the demo's
/// driver recorded them; empty where no driver runs beside the dashboard.
pub(crate) fn canaries(board: Option<&Board>) -> serde_json::Value {
    let views = board.map(Board::views).unwrap_or_default();
    serde_json::to_value(views).unwrap_or_else(|_| serde_json::json!([]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stat::query::Golden;

    fn row(name: &str, rps: f64) -> WorkloadRow {
        WorkloadRow {
            namespace: "ns".into(),
            name: name.into(),
            meshed: Some(1.0),
            success_rate: Some(1.0),
            golden: Golden {
                rps,
                ..Golden::default()
            },
            tcp_conn: None,
            read_bytes_per_sec: None,
            write_bytes_per_sec: None,
        }
    }

    #[test]
    fn history_is_bounded_per_workload() {
        let mut h = History::default();
        for i in 0..(HISTORY + 10) {
            h.record(&[row("web", i as f64)], i as f64);
        }
        let points = h.of("ns", "web");
        assert_eq!(points.len(), HISTORY);
        assert_eq!(points.back().map(|p| p.rps), Some((HISTORY + 9) as f64));
        assert!(h.of("ns", "nobody").is_empty());
    }

    #[test]
    fn configured_weights_meet_observed_shares() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: canary, namespace: ns }
spec:
  parentRefs: [{ name: api, kind: Service, group: core, port: 80 }]
  rules:
  - backendRefs:
    - { name: api-v1, port: 80, weight: 90 }
    - { name: api-v2, port: 80, weight: 10 }
";
        let policy = MeshPolicy::from_yaml(yaml).unwrap();
        let golden = |rps| Golden {
            rps,
            ..Golden::default()
        };
        let observed = [
            RouteRow {
                route: "".into(),
                dst: "api.ns.svc.cluster.local:80".into(),
                backend: Some("api-v1".into()),
                success_rate: Some(1.0),
                golden: golden(3.0),
            },
            RouteRow {
                route: "".into(),
                dst: "api.ns.svc.cluster.local:80".into(),
                backend: Some("api-v2".into()),
                success_rate: Some(0.5),
                golden: golden(1.0),
            },
        ];
        let views = routes(Some(&policy), &observed, &Scope::Namespace("ns".into()));
        assert_eq!(views.len(), 1, "{views:?}");
        let b = &views[0].backends;
        assert_eq!(
            (b[0].name.as_str(), b[0].weight_percent),
            ("api-v1", Some(90.0))
        );
        assert_eq!(
            (b[1].name.as_str(), b[1].weight_percent),
            ("api-v2", Some(10.0))
        );
        assert_eq!(b[1].observed_percent, Some(25.0));
        assert_eq!(b[1].success_rate, Some(0.5));
        assert!(routes(Some(&policy), &observed, &Scope::Namespace("x".into())).is_empty());
    }
}
