//! Linkerd's ServiceProfile: per-route conditions, response classes, retryability, timeouts,
//! the retry budget and `dstOverrides`, read once into a [`ParsedProfile`].

use std::sync::Arc;
use std::time::Duration;

use super::doc::{Cx, Doc};
use super::fields::{retry_methods, service_ref};
use crate::authz::ResourceId;
use crate::classify::{ResponseClass, ResponseMatch};
use crate::kinds::{self, IntOrString};
use crate::policy::{ProfileMatch, Route, Timeouts};
use crate::retry::{RetryBudgetConfig, RetryConditions, RetryMethods, RetryPolicy};
use crate::route;
use crate::split::{Backends, WeightedBackend};
use crate::values::{parse_duration, parse_milli_quantity};

/// Retries per request for ServiceProfile routes, which name no limit: the budget is what
/// bounds them, this only keeps one request from draining it.
const PROFILE_RETRY_LIMIT: u32 = 3;

/// A ServiceProfile after its own checks, its routes compiled.
#[derive(Clone, Debug)]
pub(crate) struct ParsedProfile {
    pub(crate) id: ResourceId,
    /// The Service it governs (from the profile's FQDN name).
    pub(crate) service: String,
    pub(crate) namespace: String,
    pub(crate) routes: Vec<Arc<Route>>,
    /// Conditions in the order written, each with its index in `routes`.
    pub(crate) matches: Vec<(ProfileMatch, usize)>,
    /// `dstOverrides`; empty when it names none.
    pub(crate) overrides: Arc<Backends>,
}

/// The retry budget ttl linkerd2-proxy accepts.
const BUDGET_TTL_MIN: Duration = Duration::from_secs(1);
const BUDGET_TTL_MAX: Duration = Duration::from_secs(60);

/// One route of a profile, checked, before the budget it shares is known.
struct CheckedRoute {
    name: String,
    condition: ProfileMatch,
    methods: Vec<String>,
    classes: Vec<ResponseClass>,
    timeout: Option<Duration>,
    retryable: bool,
}

pub(crate) fn parse_profile(
    cx: &mut Cx,
    doc: &Doc,
    spec: &kinds::ServiceProfileSpec,
) -> ParsedProfile {
    // The name is the Service's FQDN: <svc>.<ns>.svc.<cluster-domain>.
    let mut parts = doc.name.split('.');
    let service = parts.next().unwrap_or(&doc.name).to_owned();
    let namespace = parts
        .next()
        .map_or_else(|| doc.namespace.clone(), str::to_owned);
    let checked: Vec<CheckedRoute> = spec
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| check_route(cx, doc, &format!("spec.routes[{i}]"), r))
        .collect();
    let budget = retry_budget(cx, doc, spec.retry_budget.as_ref());
    let methods = match retry_methods(&doc.meta.annotations) {
        Ok(m) => m,
        Err((key, e)) => {
            cx.err(doc, format!("metadata.annotations[{key:?}]"), e);
            RetryMethods::Any
        }
    };
    let overrides = dst_overrides(cx, doc, &namespace, &spec.dst_overrides);
    let id = doc.id();
    let mut routes = Vec::new();
    let mut matches = Vec::new();
    for r in checked {
        let retry = budget.filter(|_| r.retryable).map(|budget| RetryPolicy {
            limit: PROFILE_RETRY_LIMIT,
            conditions: RetryConditions {
                http: Vec::new(),
                grpc: Vec::new(),
                on_failure_class: true,
            },
            per_try_timeout: None,
            methods: match &methods {
                RetryMethods::Any => RetryMethods::Any,
                RetryMethods::Idempotent { .. } => RetryMethods::Idempotent {
                    route_names_method: r.methods.iter().any(|m| !crate::retry::is_idempotent(m)),
                },
            },
            budget,
        });
        matches.push((r.condition, routes.len()));
        routes.push(Arc::new(Route {
            name: r.name,
            source: Some(id.clone()),
            rule: None,
            backends: Arc::default(),
            timeouts: Timeouts {
                request: r.timeout,
                backend_request: None,
            },
            retry,
            response_classes: r.classes,
            filters: Vec::new(),
            backend_filters: Vec::new(),
            grpc: false,
            created: None,
        }));
    }
    ParsedProfile {
        id,
        service,
        namespace,
        routes,
        matches,
        overrides: Arc::new(Backends::new(overrides)),
    }
}

fn check_route(cx: &mut Cx, doc: &Doc, field: &str, r: &kinds::SpRoute) -> Option<CheckedRoute> {
    let before = cx.errors.len();
    if r.name.is_empty() {
        cx.err(doc, format!("{field}.name"), "a route needs a name");
    }
    let condition = profile_match(cx, doc, &format!("{field}.condition"), &r.condition);
    let mut classes = Vec::new();
    for (j, c) in r.response_classes.iter().enumerate() {
        let f = format!("{field}.responseClasses[{j}].condition");
        let condition = response_match(cx, doc, &f, &c.condition);
        if condition.is_some() && open_ended(&c.condition) {
            cx.note(
                doc,
                format!(
                    "{f}: a status range needs both min and max; linkerd2-proxy ignores this response class, and so does mesh"
                ),
            );
            continue;
        }
        if let Some(condition) = condition {
            classes.push(ResponseClass {
                condition,
                is_failure: c.is_failure,
            });
        }
    }
    let timeout = match r.timeout.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            cx.err(doc, format!("{field}.timeout"), e);
            None
        }
    };
    if cx.errors.len() > before {
        return None;
    }
    Some(CheckedRoute {
        name: r.name.clone(),
        condition: condition?,
        methods: profile_methods(&r.condition),
        classes,
        timeout,
        retryable: r.is_retryable,
    })
}

/// The profile's retry budget; `None` when its `ttl` is outside 1–60 s, which linkerd2-proxy
/// ignores, retrying nothing under it (noted, so the user learns why).
fn retry_budget(
    cx: &mut Cx,
    doc: &Doc,
    budget: Option<&kinds::SpRetryBudget>,
) -> Option<RetryBudgetConfig> {
    let Some(b) = budget else {
        return Some(RetryBudgetConfig::default());
    };
    if !(0.0..=1000.0).contains(&b.retry_ratio) || b.retry_ratio.is_nan() {
        cx.err(
            doc,
            "spec.retryBudget.retryRatio",
            format!("{} is not a ratio of 0 or more", b.retry_ratio),
        );
    }
    let min_retries_per_second = match u32::try_from(b.min_retries_per_second) {
        Ok(n) => n,
        Err(_) => {
            cx.err(
                doc,
                "spec.retryBudget.minRetriesPerSecond",
                format!("{} is out of range", b.min_retries_per_second),
            );
            0
        }
    };
    let ttl = match parse_duration(&b.ttl) {
        Ok(d) => d,
        Err(e) => {
            cx.err(doc, "spec.retryBudget.ttl", e);
            Duration::ZERO
        }
    };
    if !(BUDGET_TTL_MIN..=BUDGET_TTL_MAX).contains(&ttl) && !ttl.is_zero() {
        cx.note(
            doc,
            format!(
                "spec.retryBudget.ttl: {} is outside 1s–60s; linkerd2-proxy ignores such a budget and retries none of this profile's routes, and so does mesh",
                b.ttl
            ),
        );
        return None;
    }
    // Values behind an error are never served: the profile is refused.
    Some(RetryBudgetConfig {
        retry_ratio: b.retry_ratio,
        min_retries_per_second,
        ttl,
    })
}

fn dst_overrides(
    cx: &mut Cx,
    doc: &Doc,
    namespace: &str,
    list: &[kinds::SpDstOverride],
) -> Vec<WeightedBackend> {
    let mut out = Vec::new();
    for (i, o) in list.iter().enumerate() {
        let weight = match &o.weight {
            IntOrString::Int(n) => u64::try_from(*n)
                .map_err(|_| format!("{n} is negative"))
                .and_then(|n| {
                    n.checked_mul(1000)
                        .ok_or_else(|| format!("{n} is too large a weight"))
                }),
            IntOrString::String(s) => parse_milli_quantity(s).map_err(|e| e.to_string()),
        };
        let weight = match weight {
            Ok(w) => Some(w),
            Err(e) => {
                cx.err(doc, format!("spec.dstOverrides[{i}].weight"), e);
                None
            }
        };
        let field = format!("spec.dstOverrides[{i}].authority");
        if o.authority.is_empty() {
            cx.err(doc, field, "empty");
            continue;
        }
        let (host, port) = match route::split_authority(&o.authority, 0) {
            Ok(hp) => hp,
            Err(e) => {
                cx.err(doc, field, e);
                continue;
            }
        };
        let port = (port != 0).then_some(port);
        let short = host.strip_suffix(".cluster.local").unwrap_or(host);
        let short = short.strip_suffix(".svc").unwrap_or(short);
        if let Some(weight) = weight {
            out.push(WeightedBackend {
                backend: service_ref(short, namespace, port),
                weight,
            });
        }
    }
    out
}

/// Checks and compiles a request condition as Linkerd's validator does; several fields of
/// one condition are ANDed.
fn profile_match(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    m: &kinds::SpRequestMatch,
) -> Option<ProfileMatch> {
    let set = m.path_regex.is_some()
        || m.method.is_some()
        || !m.all.is_empty()
        || !m.any.is_empty()
        || m.not.is_some();
    let mut ok = set;
    if !set {
        cx.err(doc, field, "a request match must have a field set");
    }
    let mut parts = Vec::new();
    if let Some(r) = &m.path_regex {
        match route::full_regex(r) {
            Ok(r) => parts.push(ProfileMatch::Path(r)),
            Err(e) => {
                cx.err(doc, format!("{field}.pathRegex"), e);
                ok = false;
            }
        }
    }
    if let Some(me) = &m.method {
        if me.is_empty() || !me.bytes().all(|b| b.is_ascii_alphabetic()) {
            cx.err(
                doc,
                format!("{field}.method"),
                format!("{me:?} is not an HTTP method"),
            );
            ok = false;
        } else {
            parts.push(ProfileMatch::Method(me.to_ascii_uppercase()));
        }
    }
    let nested = Nested {
        all: &m.all,
        any: &m.any,
        not: m.not.as_deref(),
    };
    nested.compose(cx, doc, field, parts, ok, profile_match)
}

/// Methods a profile condition requires (outside any `not`/`any`).
fn profile_methods(m: &kinds::SpRequestMatch) -> Vec<String> {
    let mut out: Vec<String> = m.method.iter().map(|x| x.to_ascii_uppercase()).collect();
    for a in &m.all {
        out.extend(profile_methods(a));
    }
    out
}

/// Checks and compiles a response condition.
fn response_match(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    m: &kinds::SpResponseMatch,
) -> Option<ResponseMatch> {
    let set = m.status.is_some() || !m.all.is_empty() || !m.any.is_empty() || m.not.is_some();
    let mut ok = set;
    if !set {
        cx.err(doc, field, "a response match must have a field set");
    }
    let mut parts = Vec::new();
    if let Some(s) = &m.status {
        match status_range(s) {
            Ok((min, max)) => parts.push(ResponseMatch::Status { min, max }),
            Err(errors) => {
                for e in errors {
                    cx.err(doc, format!("{field}.status"), e);
                }
                ok = false;
            }
        }
    }
    let nested = Nested {
        all: &m.all,
        any: &m.any,
        not: m.not.as_deref(),
    };
    nested.compose(cx, doc, field, parts, ok, response_match)
}

/// A status range, both ends within 100–599, min not above max.
fn status_range(s: &kinds::SpRange) -> Result<(u16, u16), Vec<String>> {
    let mut errors = Vec::new();
    let check = |v: Option<i64>| v.is_none_or(|v| (100..=599).contains(&v));
    if !check(s.min) || !check(s.max) {
        errors.push("range min and max must be between 100 and 599".to_owned());
    } else if let (Some(lo), Some(hi)) = (s.min, s.max)
        && lo > hi
    {
        errors.push(format!("range min {lo} is above max {hi}"));
    }
    if s.min.is_none() && s.max.is_none() {
        errors.push("a range needs min or max".to_owned());
    }
    let bound = |v: Option<i64>, default: u16| u16::try_from(v.unwrap_or(i64::from(default)));
    match (bound(s.min, 100), bound(s.max, 599)) {
        (Ok(min), Ok(max)) if errors.is_empty() => Ok((min, max)),
        _ => Err(errors),
    }
}

/// Whether a response condition has a status range without both ends anywhere in it.
fn open_ended(m: &kinds::SpResponseMatch) -> bool {
    m.status
        .as_ref()
        .is_some_and(|s| s.min.is_none() || s.max.is_none())
        || m.all.iter().chain(&m.any).any(open_ended)
        || m.not.as_deref().is_some_and(open_ended)
}

/// A condition that nests: `all`, `any`, `not`.
trait Condition: Sized {
    fn all(v: Vec<Self>) -> Self;
    fn any(v: Vec<Self>) -> Self;
    fn not(c: Self) -> Self;
}

/// The nested parts of a request or response condition, as written.
struct Nested<'a, S> {
    all: &'a [S],
    any: &'a [S],
    not: Option<&'a S>,
}

type ReadCondition<S, T> = fn(&mut Cx, &Doc, &str, &S) -> Option<T>;

impl<S> Nested<'_, S> {
    /// Reads the nested parts after the condition's own `parts`; several parts are ANDed,
    /// as in Linkerd. `None` (errors reported) if any part is wrong.
    fn compose<T: Condition>(
        &self,
        cx: &mut Cx,
        doc: &Doc,
        field: &str,
        mut parts: Vec<T>,
        mut ok: bool,
        read: ReadCondition<S, T>,
    ) -> Option<T> {
        for (name, list, make) in [
            ("all", self.all, T::all as fn(Vec<T>) -> T),
            ("any", self.any, T::any),
        ] {
            let v: Vec<Option<T>> = (list.iter().enumerate())
                .map(|(i, s)| read(cx, doc, &format!("{field}.{name}[{i}]"), s))
                .collect();
            match v.into_iter().collect::<Option<Vec<T>>>() {
                Some(v) if !v.is_empty() => parts.push(make(v)),
                Some(_) => {}
                None => ok = false,
            }
        }
        if let Some(n) = self.not {
            match read(cx, doc, &format!("{field}.not"), n) {
                Some(n) => parts.push(T::not(n)),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        match parts.len() {
            1 => parts.pop(),
            _ => Some(T::all(parts)),
        }
    }
}

impl Condition for ProfileMatch {
    fn all(v: Vec<Self>) -> Self {
        Self::All(v)
    }
    fn any(v: Vec<Self>) -> Self {
        Self::Any(v)
    }
    fn not(c: Self) -> Self {
        Self::Not(Box::new(c))
    }
}

impl Condition for ResponseMatch {
    fn all(v: Vec<Self>) -> Self {
        Self::All(v)
    }
    fn any(v: Vec<Self>) -> Self {
        Self::Any(v)
    }
    fn not(c: Self) -> Self {
        Self::Not(Box::new(c))
    }
}
