//! Retry policy and the retry budget.
//!
//! Whether a failed request may be retried is a pure function of the route's policy, the
//! method and the response. The budget that keeps retries from amplifying an outage is a
//! plain struct fed with timestamps.

use std::time::Duration;

use crate::classify::Class;

/// Linkerd's default retry limit for `retry.linkerd.io/*` annotations.
pub const DEFAULT_RETRY_LIMIT: u32 = 1;

/// When and how often a route's requests are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Most retries of one request (not counting the first attempt).
    pub limit: u32,
    /// Which failures are retried.
    pub conditions: RetryConditions,
    /// A timeout for each retry attempt (`retry.linkerd.io/timeout`).
    pub per_try_timeout: Option<Duration>,
    /// Which request methods may be retried.
    pub methods: RetryMethods,
    /// The budget shared by all requests of the route.
    pub budget: RetryBudgetConfig,
}

/// The annotation (on a route, its Service or a ServiceProfile) that asks for mesh's stricter
/// method rule: `retry.mesh.io/methods: idempotent` (the default, `any`, is Linkerd's).
pub const RETRY_METHODS_ANNOTATION: &str = "retry.mesh.io/methods";

/// Which request methods a retry policy may retry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RetryMethods {
    /// Every method, as Linkerd retries an `isRetryable` or `retry.linkerd.io` route: a request
    /// is retried only when its body fitted the replay buffer, and within the budget.
    #[default]
    Any,
    /// mesh's stricter rule (`retry.mesh.io/methods: idempotent`): RFC 9110's idempotent
    /// methods, and a non-idempotent one (`POST`, `PATCH`) only on a route whose match names it.
    Idempotent {
        /// The route's match names a non-idempotent method.
        route_names_method: bool,
    },
}

/// Which responses count as retryable failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConditions {
    /// HTTP status ranges (`5xx`, `gateway-error`, `429`, `500-504`).
    pub http: Vec<(u16, u16)>,
    /// gRPC status codes (`unavailable` = 14, …).
    pub grpc: Vec<u32>,
    /// Retry any response the classifier calls a failure (ServiceProfile `isRetryable`).
    pub on_failure_class: bool,
}

/// The budget's parameters, with Linkerd's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a share of requests (0.2 = 20 % extra load).
    pub retry_ratio: f64,
    /// Retries allowed per second regardless of load.
    pub min_retries_per_second: u32,
    /// How long a request counts towards the ratio.
    pub ttl: Duration,
}

/// A retry budget: over any window of `ttl`, retries stay within
/// `retry_ratio × requests + min_retries_per_second × ttl`.
///
/// ```
/// use std::time::Duration;
/// use mesh_core::retry::{RetryBudget, RetryBudgetConfig};
///
/// let mut budget = RetryBudget::new(RetryBudgetConfig {
///     retry_ratio: 0.5,
///     min_retries_per_second: 0,
///     ttl: Duration::from_secs(10),
/// });
/// let t = Duration::ZERO;
/// budget.deposit(t);
/// budget.deposit(t);
/// assert!(budget.withdraw(t)); // two requests pay for one retry
/// assert!(!budget.withdraw(t));
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget {
    ratio_milli: u64,
    reserve_milli: u64,
    slot_width: Duration,
    slots: [Slot; SLOTS],
    /// Start of the newest slot, in the caller's time base.
    head_start: Duration,
    head: usize,
}

const SLOTS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// Whether a request that got this response may be retried, before the limit and the
    /// budget are consulted: the method must be idempotent (or the route explicitly names a
    /// non-idempotent one) and the response must meet a retry condition.
    pub fn is_retryable(
        &self,
        method: &str,
        status: u16,
        grpc_status: Option<u32>,
        class: Class,
    ) -> bool {
        if !self.method_allowed(method) {
            return false;
        }
        let c = &self.conditions;
        (c.on_failure_class && class.is_failure())
            || grpc_status.is_some_and(|g| c.grpc.contains(&g))
            || (grpc_status.is_none() || c.grpc.is_empty())
                && c.http.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    /// Whether requests with this method may be retried under this policy.
    pub fn method_allowed(&self, method: &str) -> bool {
        match self.methods {
            RetryMethods::Any => true,
            RetryMethods::Idempotent { route_names_method } => {
                is_idempotent(method) || route_names_method
            }
        }
    }
}

/// Methods RFC 9110 defines as idempotent.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Why a `retry.linkerd.io/http` or `retry.linkerd.io/grpc` annotation is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRetryConditions {
    /// An item that is not `5xx`, `gateway-error`, a status or a range of statuses.
    #[error("{0:?} is not 5xx, gateway-error, a status (100–599) or a range")]
    HttpStatus(String),
    /// A range whose low end is above its high end.
    #[error("{0:?}: the range is empty")]
    EmptyRange(String),
    /// An item that is not a gRPC status worth retrying.
    #[error(
        "{0:?} is not a retryable gRPC status (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)"
    )]
    GrpcStatus(String),
    /// Nothing listed.
    #[error("no retry conditions listed")]
    None,
}

// === impl RetryConditions ===

impl RetryConditions {
    /// Parses `retry.linkerd.io/http`: a comma-separated list of `5xx`, `gateway-error`, a
    /// status (`429`) or a range (`500-504`).
    pub fn parse_http(s: &str) -> Result<Vec<(u16, u16)>, InvalidRetryConditions> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let range = match item.to_ascii_lowercase().as_str() {
                "5xx" => (500, 599),
                "gateway-error" => (502, 504),
                other => {
                    let (lo, hi) = other.split_once('-').unwrap_or((other, other));
                    let parse = |v: &str| {
                        v.trim()
                            .parse::<u16>()
                            .ok()
                            .filter(|n| (100..=599).contains(n))
                            .ok_or_else(|| InvalidRetryConditions::HttpStatus(item.to_owned()))
                    };
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if lo > hi {
                        return Err(InvalidRetryConditions::EmptyRange(item.to_owned()));
                    }
                    (lo, hi)
                }
            };
            out.push(range);
        }
        if out.is_empty() {
            return Err(InvalidRetryConditions::None);
        }
        Ok(out)
    }

    /// Parses `retry.linkerd.io/grpc`: a comma-separated list of gRPC status names
    /// (`cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`).
    pub fn parse_grpc(s: &str) -> Result<Vec<u32>, InvalidRetryConditions> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let code = match item.to_ascii_lowercase().replace('_', "-").as_str() {
                "cancelled" => 1,
                "unknown" => 2,
                "deadline-exceeded" => 4,
                "resource-exhausted" => 8,
                "aborted" => 10,
                "internal" => 13,
                "unavailable" => 14,
                _ => return Err(InvalidRetryConditions::GrpcStatus(item.to_owned())),
            };
            out.push(code);
        }
        if out.is_empty() {
            return Err(InvalidRetryConditions::None);
        }
        Ok(out)
    }
}

// === impl RetryBudgetConfig ===

impl Default for RetryBudgetConfig {
    /// Linkerd's defaults: 20 % extra load, 10 retries per second, over 10 seconds.
    fn default() -> Self {
        Self {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A full budget.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let ttl = config.ttl.max(Duration::from_millis(SLOTS as u64));
        let ratio_milli = (config.retry_ratio.clamp(0.0, 1000.0) * 1000.0).round() as u64;
        let reserve_milli = u64::from(config.min_retries_per_second) * ttl.as_millis() as u64;
        Self {
            ratio_milli,
            reserve_milli,
            slot_width: ttl / SLOTS as u32,
            slots: [Slot::default(); SLOTS],
            head_start: Duration::ZERO,
            head: 0,
        }
    }

    /// Records a request (first attempts only), which earns `retry_ratio` of a retry.
    pub fn deposit(&mut self, now: Duration) {
        self.advance(now);
        self.slots[self.head].deposits += 1;
    }

    /// Takes one retry from the budget if it allows one.
    pub fn withdraw(&mut self, now: Duration) -> bool {
        self.advance(now);
        if self.balance_milli() >= 1000 {
            self.slots[self.head].withdrawals += 1;
            true
        } else {
            false
        }
    }

    /// Retries the budget would allow now.
    pub fn available(&mut self, now: Duration) -> u64 {
        self.advance(now);
        self.balance_milli().max(0) as u64 / 1000
    }

    fn balance_milli(&self) -> i128 {
        let (dep, wd) = self.slots.iter().fold((0u64, 0u64), |(d, w), s| {
            (d + s.deposits, w + s.withdrawals)
        });
        // reserve is per second × ttl in ms, so divide by 1000 for the count in milli-retries.
        i128::from(dep) * i128::from(self.ratio_milli) + i128::from(self.reserve_milli)
            - i128::from(wd) * 1000
    }

    /// Moves the window forward to `now`, dropping slots older than `ttl`. Time that goes
    /// backwards is treated as now.
    fn advance(&mut self, now: Duration) {
        if now < self.head_start + self.slot_width {
            return;
        }
        let elapsed = now - self.head_start;
        let steps = (elapsed.as_nanos() / self.slot_width.as_nanos().max(1)) as u64;
        for _ in 0..steps.min(SLOTS as u64) {
            self.head = (self.head + 1) % SLOTS;
            self.slots[self.head] = Slot::default();
        }
        self.head_start += self.slot_width * steps.min(u64::from(u32::MAX)) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn budget_allows_ratio_plus_floor_per_window() {
        // Linkerd's defaults: 100 requests earn 20 retries, plus 10/s × 10 s = 100.
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        for _ in 0..100 {
            b.deposit(secs(0.0));
        }
        let mut allowed = 0;
        while b.withdraw(secs(0.5)) {
            allowed += 1;
        }
        assert_eq!(allowed, 120);
    }

    #[test]
    fn budget_refills_as_the_window_moves() {
        let cfg = RetryBudgetConfig {
            retry_ratio: 0.0,
            min_retries_per_second: 1,
            ttl: Duration::from_secs(10),
        };
        let mut b = RetryBudget::new(cfg);
        let mut n = 0;
        while b.withdraw(secs(0.0)) {
            n += 1;
        }
        assert_eq!(n, 10);
        assert!(!b.withdraw(secs(5.0)));
        // After a whole ttl, the old withdrawals have expired.
        assert!(b.withdraw(secs(10.5)));
    }

    #[test]
    fn any_method_as_linkerd_unless_asked_for_idempotent_only() {
        let mut p = RetryPolicy {
            limit: 3,
            conditions: RetryConditions {
                http: vec![(500, 599)],
                grpc: vec![],
                on_failure_class: false,
            },
            per_try_timeout: None,
            methods: RetryMethods::Any,
            budget: RetryBudgetConfig::default(),
        };
        assert!(p.is_retryable("POST", 503, None, Class::Failure));
        assert!(!p.is_retryable("GET", 404, None, Class::Failure));
        p.methods = RetryMethods::Idempotent {
            route_names_method: false,
        };
        let cases = [
            ("GET", 503, true),
            ("PUT", 500, true),
            ("GET", 404, false),
            ("POST", 503, false),
            ("PATCH", 503, false),
        ];
        for (m, s, want) in cases {
            assert_eq!(p.is_retryable(m, s, None, Class::Failure), want, "{m} {s}");
        }
        p.methods = RetryMethods::Idempotent {
            route_names_method: true,
        };
        assert!(p.is_retryable("POST", 503, None, Class::Failure));
    }

    #[test]
    fn annotation_syntax() {
        assert_eq!(
            RetryConditions::parse_http("5xx, gateway-error,429,500-504").unwrap(),
            vec![(500, 599), (502, 504), (429, 429), (500, 504)]
        );
        assert!(RetryConditions::parse_http("6xx").is_err());
        assert!(RetryConditions::parse_http("504-500").is_err());
        assert_eq!(
            RetryConditions::parse_grpc("unavailable,deadline-exceeded").unwrap(),
            vec![14, 4]
        );
        assert!(RetryConditions::parse_grpc("not-found").is_err());
    }
}
