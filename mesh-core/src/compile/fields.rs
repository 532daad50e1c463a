//! Field readers shared by several kinds: ports, label selectors, networks, and Linkerd's
//! `retry.linkerd.io/*` and `timeout.linkerd.io/*` annotations.

use std::collections::BTreeMap;
use std::time::Duration;

use super::doc::{Cx, Doc};
use crate::authz::{Cidr, NetworkMatch, Selector, SelectorExpr};
use crate::kinds;
use crate::retry::{
    DEFAULT_RETRY_LIMIT, RETRY_METHODS_ANNOTATION, RetryBudgetConfig, RetryConditions,
    RetryMethods, RetryPolicy,
};
use crate::split::BackendRef;
use crate::values::parse_duration;

/// Route-level settings from `retry.linkerd.io/*` and `timeout.linkerd.io/*` annotations.
#[derive(Clone, Debug, Default)]
pub(crate) struct Annotated {
    pub(crate) request: Option<Duration>,
    pub(crate) response: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
}

pub(crate) fn port(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is not a port (1–65535)"))
}

pub(crate) fn port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is neither a port number nor a port name (lowercase, at most 15 characters)"
        ))
    }
}

pub(crate) fn service_ref(service: &str, namespace: &str, port: Option<u16>) -> BackendRef {
    let (name, ns) = service.split_once('.').unwrap_or((service, namespace));
    BackendRef::new(name, ns, port)
}

pub(crate) fn selector(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    s: &kinds::LabelSelector,
) -> Option<Selector> {
    let mut expressions = Vec::new();
    for (i, e) in s.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let expr = match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => {
                cx.err(
                    doc,
                    format!("{f}.values"),
                    format!("{} needs at least one value", e.operator),
                );
                return None;
            }
            "In" => SelectorExpr::In(e.key.clone(), e.values.clone()),
            "NotIn" => SelectorExpr::NotIn(e.key.clone(), e.values.clone()),
            "Exists" => SelectorExpr::Exists(e.key.clone()),
            "DoesNotExist" => SelectorExpr::DoesNotExist(e.key.clone()),
            other => {
                cx.err(
                    doc,
                    format!("{f}.operator"),
                    format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                );
                return None;
            }
        };
        expressions.push(expr);
    }
    Some(Selector {
        labels: s.match_labels.clone(),
        expressions,
    })
}

pub(crate) fn networks(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    list: &[kinds::Network],
) -> Option<Vec<NetworkMatch>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, n) in list.iter().enumerate() {
        let net = match n.cidr.parse::<Cidr>() {
            Ok(c) => c,
            Err(e) => {
                cx.err(doc, format!("{field}[{i}].cidr"), e);
                ok = false;
                continue;
            }
        };
        let mut except = Vec::new();
        for (j, e) in n.except.iter().enumerate() {
            match e.parse::<Cidr>() {
                // The API server's schema cannot say it; Linkerd's admission refuses it.
                Ok(c) if !net.covers(&c) => {
                    cx.err(
                        doc,
                        format!("{field}[{i}].except[{j}]"),
                        format!("{e} is not inside {}", n.cidr),
                    );
                    ok = false;
                }
                Ok(c) => except.push(c),
                Err(err) => {
                    cx.err(doc, format!("{field}[{i}].except[{j}]"), err);
                    ok = false;
                }
            }
        }
        out.push(NetworkMatch { net, except });
    }
    ok.then_some(out)
}

/// Reads the `retry.linkerd.io/*` and `timeout.linkerd.io/*` annotations of a document once,
/// naming the annotation in errors.
pub(crate) fn annotated(cx: &mut Cx, doc: &Doc, grpc: bool) -> Annotated {
    match parse_annotations(&doc.meta.annotations, grpc) {
        Ok(a) => a,
        Err((key, e)) => {
            cx.err(doc, format!("metadata.annotations[{key:?}]"), e);
            Annotated::default()
        }
    }
}

fn parse_annotations(
    map: &BTreeMap<String, String>,
    grpc: bool,
) -> Result<Annotated, (String, String)> {
    let dur = |key: &str| -> Result<Option<Duration>, (String, String)> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(|e| (key.to_owned(), e.to_string())),
        }
    };
    let request = dur("timeout.linkerd.io/request")?;
    let response = dur("timeout.linkerd.io/response")?;
    let per_try = dur("retry.linkerd.io/timeout")?;
    let http = map
        .get("retry.linkerd.io/http")
        .map(|v| {
            RetryConditions::parse_http(v)
                .map_err(|e| ("retry.linkerd.io/http".to_owned(), e.to_string()))
        })
        .transpose()?;
    let grpc_codes = map
        .get("retry.linkerd.io/grpc")
        .map(|v| {
            RetryConditions::parse_grpc(v)
                .map_err(|e| ("retry.linkerd.io/grpc".to_owned(), e.to_string()))
        })
        .transpose()?;
    let limit = map
        .get("retry.linkerd.io/limit")
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                (
                    "retry.linkerd.io/limit".to_owned(),
                    format!("{v:?} is not a whole number of retries"),
                )
            })
        })
        .transpose()?;
    let methods = retry_methods(map)?;
    let retry = (http.is_some() || grpc_codes.is_some() || limit.is_some()).then(|| {
        let (http, grpc_codes) = match (http, grpc_codes) {
            (None, None) if grpc => (Vec::new(), vec![1, 4, 8, 14]),
            (None, None) => (vec![(500, 599)], Vec::new()),
            (h, g) => (h.unwrap_or_default(), g.unwrap_or_default()),
        };
        RetryPolicy {
            limit: limit.unwrap_or(DEFAULT_RETRY_LIMIT),
            conditions: RetryConditions {
                http,
                grpc: grpc_codes,
                on_failure_class: false,
            },
            per_try_timeout: per_try,
            methods: methods.clone(),
            budget: RetryBudgetConfig::default(),
        }
    });
    Ok(Annotated {
        request,
        response,
        retry,
    })
}

/// `retry.mesh.io/methods`: `any` (Linkerd's rule, the default) or `idempotent` (ours).
pub(crate) fn retry_methods(
    map: &BTreeMap<String, String>,
) -> Result<RetryMethods, (String, String)> {
    match map.get(RETRY_METHODS_ANNOTATION).map(|v| v.trim()) {
        None | Some("any") => Ok(RetryMethods::Any),
        Some("idempotent") => Ok(RetryMethods::Idempotent {
            route_names_method: false,
        }),
        Some(other) => Err((
            RETRY_METHODS_ANNOTATION.to_owned(),
            format!("{other:?} is not any or idempotent"),
        )),
    }
}
