//! mesh's own policy.mesh.io kinds, read and checked alone: `Canary` and `FaultInjection`;
//! and the `FaultInjection`s an `ExtensionRef` filter names, found while linking its route.

use std::sync::Arc;
use std::time::Duration;

use super::doc::{Cx, Doc};
use super::object::{Key, Object, Reader};
use crate::canary::{Analysis, Backend, Canary, MetricCheck, OnBreach, Target, TargetKind};
use crate::filter::Filter;
use crate::filter::fault::{Abort, AbortStatus, Delay, Fault, FaultRef, Share};
use crate::kinds;
use crate::values::parse_duration;

/// The group of mesh's own kinds.
pub(crate) const GROUP: &str = "policy.mesh.io";

pub(crate) fn parse_canary(cx: &mut Cx, doc: &Doc, spec: &kinds::CanarySpec) -> Option<Canary> {
    let errors = cx.errors.len();
    let t = &spec.target_ref;
    let kind = TargetKind::from_ref(t.group.as_deref(), &t.kind);
    if kind.is_none() {
        cx.err(
            doc,
            "spec.targetRef",
            format!(
                "{}/{}: a canary moves the weights of an HTTPRoute, a GRPCRoute or a TrafficSplit",
                t.group.as_deref().unwrap_or("gateway.networking.k8s.io"),
                t.kind
            ),
        );
    }
    if t.name.as_deref().is_none_or(str::is_empty) {
        cx.err(doc, "spec.targetRef.name", "missing");
    }
    if let Some(ns) = t.namespace.as_deref().filter(|ns| *ns != doc.namespace) {
        cx.err(
            doc,
            "spec.targetRef.namespace",
            format!("{ns:?}: a canary moves a route in its own namespace only"),
        );
    }
    let stable = backend(cx, doc, "spec.stable", &spec.stable);
    let canary = backend(cx, doc, "spec.canary", &spec.canary);
    if stable.as_ref().is_some_and(|s| Some(s) == canary.as_ref()) {
        cx.err(doc, "spec.canary", "the canary backend is the stable one");
    }
    let analysis = analysis(cx, doc, &spec.analysis);
    if cx.errors.len() > errors {
        return None;
    }
    Some(Canary {
        namespace: doc.namespace.clone(),
        name: doc.name.clone(),
        target: Target {
            kind: kind?,
            name: t.name.clone()?,
        },
        stable: stable?,
        canary: canary?,
        analysis: analysis?,
        suspend: spec.suspend,
    })
}

fn backend(cx: &mut Cx, doc: &Doc, field: &str, b: &kinds::CanaryBackend) -> Option<Backend> {
    if b.name.is_empty() {
        cx.err(doc, format!("{field}.name"), "missing");
        return None;
    }
    let port = match b.port.map(super::fields::port).transpose() {
        Ok(p) => p,
        Err(e) => {
            cx.err(doc, format!("{field}.port"), e);
            return None;
        }
    };
    Some(Backend {
        name: b.name.clone(),
        port,
    })
}

fn analysis(cx: &mut Cx, doc: &Doc, a: &kinds::CanaryAnalysis) -> Option<Analysis> {
    let defaults = Analysis::default();
    let mut bad = false;
    let mut int = |field: &str, v: Option<i64>, default: u64| -> u64 {
        match v.map(u64::try_from) {
            None => default,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                cx.err(
                    doc,
                    format!("spec.analysis.{field}"),
                    "must not be negative",
                );
                bad = true;
                default
            }
        }
    };
    let percent = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let step_weight = percent(int(
        "stepWeight",
        a.step_weight,
        defaults.step_weight.into(),
    ));
    let max_weight = percent(int("maxWeight", a.max_weight, defaults.max_weight.into()));
    let threshold = percent(int("threshold", a.threshold, defaults.threshold.into()));
    let min_requests = int("minRequests", a.min_requests, defaults.min_requests);
    let interval = match a.interval.as_deref().map(parse_duration).transpose() {
        Ok(i) => i.unwrap_or(defaults.interval),
        Err(e) => {
            cx.err(doc, "spec.analysis.interval", e);
            bad = true;
            Duration::ZERO
        }
    };
    let on_breach = match a.on_breach.as_deref() {
        None | Some("Rollback") => OnBreach::Rollback,
        Some("Halt") => OnBreach::Halt,
        Some(other) => {
            cx.err(
                doc,
                "spec.analysis.onBreach",
                format!("{other:?}: must be Rollback or Halt"),
            );
            bad = true;
            OnBreach::Rollback
        }
    };
    let mut checks = Vec::new();
    for (i, m) in a.metrics.iter().enumerate() {
        match metric(m) {
            Ok(check) => checks.push(check),
            Err((field, message)) => {
                cx.err(doc, format!("spec.analysis.metrics[{i}]{field}"), message);
                bad = true;
            }
        }
    }
    let analysis = Analysis {
        interval,
        step_weight,
        max_weight,
        threshold,
        min_requests,
        checks,
        on_breach,
    };
    if bad {
        return None;
    }
    if let Err(e) = analysis.validate() {
        cx.err(doc, "spec.analysis", e);
        return None;
    }
    Some(analysis)
}

/// One of Flagger's built-in metrics, or the field at fault and why.
fn metric(m: &kinds::CanaryMetric) -> Result<MetricCheck, (&'static str, String)> {
    let range = m.threshold_range.clone().unwrap_or_default();
    match m.name.as_str() {
        "request-success-rate" => {
            if range.max.is_some() || m.max_increase_from_stable.is_some() {
                return Err((
                    "",
                    "request-success-rate takes thresholdRange.min and maxDropFromStable".into(),
                ));
            }
            Ok(MetricCheck::SuccessRate {
                min: range.min,
                max_drop_from_stable: m.max_drop_from_stable,
            })
        }
        "request-duration" => {
            if range.min.is_some() || m.max_drop_from_stable.is_some() {
                return Err((
                    "",
                    "request-duration takes thresholdRange.max (milliseconds) and maxIncreaseFromStable".into(),
                ));
            }
            let max = match range.max {
                Some(ms) if !(ms.is_finite() && ms >= 0.0) => {
                    return Err((
                        ".thresholdRange.max",
                        format!("{ms} is not a number of milliseconds"),
                    ));
                }
                ms => ms.map(|ms| Duration::from_secs_f64(ms / 1_000.0)),
            };
            Ok(MetricCheck::LatencyP99 {
                max,
                max_increase_from_stable: m.max_increase_from_stable,
            })
        }
        other => Err((
            ".name",
            format!("{other:?}: the metrics are request-success-rate and request-duration"),
        )),
    }
}

/// A `FaultInjection`: an abort, a delay or both, each mistake refused with its field.
pub(crate) fn parse_fault(
    cx: &mut Cx,
    doc: &Doc,
    spec: &kinds::FaultInjectionSpec,
) -> Option<Fault> {
    if spec.abort.is_none() && spec.delay.is_none() {
        cx.err(
            doc,
            "spec",
            "a FaultInjection needs an abort, a delay or both",
        );
        return None;
    }
    let errors = cx.errors.len();
    let abort = spec.abort.as_ref().and_then(|a| fault_abort(cx, doc, a));
    let delay = spec.delay.as_ref().and_then(|d| {
        let share = share(cx, doc, "spec.delay.percentage", d.percentage)?;
        let Some(fixed) = d.fixed_delay.as_deref() else {
            cx.err(doc, "spec.delay.fixedDelay", "missing");
            return None;
        };
        match parse_duration(fixed) {
            Ok(fixed) => Some(Delay { share, fixed }),
            Err(e) => {
                cx.err(doc, "spec.delay.fixedDelay", e);
                None
            }
        }
    });
    (cx.errors.len() == errors).then_some(Fault { abort, delay })
}

fn fault_abort(cx: &mut Cx, doc: &Doc, a: &kinds::FaultAbort) -> Option<Abort> {
    let share = share(cx, doc, "spec.abort.percentage", a.percentage);
    let status = match (a.http_status, a.grpc_status) {
        (Some(_), Some(_)) => {
            cx.err(doc, "spec.abort", "httpStatus and grpcStatus are exclusive");
            return None;
        }
        (None, None) => {
            cx.err(doc, "spec.abort", "needs httpStatus or grpcStatus");
            return None;
        }
        (Some(s), None) => match u16::try_from(s).ok().filter(|s| (200..=599).contains(s)) {
            Some(s) => AbortStatus::Http(s),
            None => {
                cx.err(
                    doc,
                    "spec.abort.httpStatus",
                    format!("{s} is not an HTTP status within 200–599"),
                );
                return None;
            }
        },
        (None, Some(c)) => match u16::try_from(c).ok().filter(|c| (1..=16).contains(c)) {
            Some(c) => AbortStatus::Grpc(c),
            None => {
                cx.err(
                    doc,
                    "spec.abort.grpcStatus",
                    format!("{c} is not a gRPC error code (1–16)"),
                );
                return None;
            }
        },
    };
    Some(Abort {
        share: share?,
        status,
    })
}

/// A `percentage`: every request when unset.
fn share(cx: &mut Cx, doc: &Doc, field: &str, percentage: Option<f64>) -> Option<Share> {
    let Some(p) = percentage else {
        return Some(Share::ALL);
    };
    let share = Share::from_percentage(p);
    if share.is_none() {
        cx.err(doc, field, format!("{p} is not a percentage within 0–100"));
    }
    share
}

/// `filters` with each `FaultInjection` reference (in `namespace`, as `ExtensionRef`s are
/// local) resolved from the index; a read by name, so that a change to it relinks the route.
pub(crate) fn resolve_faults(
    r: &mut Reader<'_>,
    namespace: &str,
    filters: &[Filter],
) -> Vec<Filter> {
    (filters.iter())
        .map(|f| match f {
            Filter::Fault(fr) => {
                let key = Key::Named("FaultInjection", namespace.to_owned(), fr.name.clone());
                let fault = r.members(key).find_map(|e| match &e.object {
                    Object::Fault(found) => Some(Arc::clone(found)),
                    _ => None,
                });
                Filter::Fault(FaultRef {
                    name: fr.name.clone(),
                    fault,
                })
            }
            other => other.clone(),
        })
        .collect()
}
