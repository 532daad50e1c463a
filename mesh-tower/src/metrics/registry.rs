//! The registry: counters, gauges and histograms by label set, each family bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_core::InboundTarget;
use mesh_core::authz::{AuthzDecision, DecidedBy, ResourceId};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Label, Metadata,
    Recorder, SharedString, Unit,
};
use parking_lot::RwLock;

use super::{DEFAULT_BUCKETS, DEFAULT_SERIES_LIMIT, LATENCY_BUCKETS_MS, OVERFLOW, SERIES_DROPPED};

/// Labels whose values are a fixed enumeration keep them in an overflow series; every other
/// label reads [`OVERFLOW`] there.
const ENUMERATED_LABELS: &[&str] = &[
    "direction",
    "tls",
    "no_tls_reason",
    "classification",
    "peer",
];

/// A metrics registry that renders Prometheus text. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) counters: RwLock<Table<CounterCell>>,
    pub(super) gauges: RwLock<Table<GaugeCell>>,
    pub(super) histograms: RwLock<Table<HistogramCell>>,
    pub(super) help: RwLock<HashMap<String, String>>,
    authz: RwLock<AuthzCache>,
    limit: usize,
}

/// The series of one kind, and how many label sets each family holds (overflow series
/// aside).
#[derive(Debug)]
pub(super) struct Table<T> {
    pub(super) series: HashMap<Key, Arc<T>>,
    families: HashMap<KeyName, usize>,
}

/// Whether a registration counts against its family's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// An ordinary series.
    Counted,
    /// The registry's own bookkeeping, bounded by the number of families.
    Exempt,
}

/// Authorization counters by (allowed, target port), then by what decided, then by Server, so
/// that counting a decision allocates nothing once its label set has been seen.
type AuthzCounters = HashMap<(bool, u16), HashMap<DecidedBy, Vec<(Option<Box<str>>, Counter)>>>;

#[derive(Debug, Default)]
struct AuthzCache {
    counters: AuthzCounters,
    len: usize,
}

#[derive(Debug, Default)]
pub(super) struct CounterCell(pub(super) AtomicU64);

#[derive(Debug, Default)]
pub(super) struct GaugeCell(AtomicU64);

#[derive(Debug)]
pub(super) struct HistogramCell {
    pub(super) bounds: &'static [f64],
    pub(super) buckets: Box<[AtomicU64]>,
    pub(super) count: AtomicU64,
    pub(super) sum: AtomicU64,
}

/// `srv_kind` and `srv_name` of a decision: the Server, or the default policy that decided.
pub fn server_labels<'a>(
    server: Option<&'a ResourceId>,
    by: &'a DecidedBy,
) -> (&'static str, &'a str) {
    match server {
        Some(s) => ("server", &s.name),
        None => authz_labels(by),
    }
}

/// `authz_kind` and `authz_name` of a decision, as Linkerd labels them: the lower-case kind
/// and the name of what decided, or `default` and the policy (`probe` for a kubelet probe).
pub fn authz_labels(by: &DecidedBy) -> (&'static str, &str) {
    match by {
        DecidedBy::Default(p) => ("default", p.as_str()),
        DecidedBy::Probe => ("default", "probe"),
        DecidedBy::Server(id) => ("server", &id.name),
        DecidedBy::ServerAuthorization(id) => ("serverauthorization", &id.name),
        DecidedBy::AuthorizationPolicy(id) => ("authorizationpolicy", &id.name),
    }
}

// === cells ===

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl GaugeCell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(f(f64::from_bits(b)).to_bits())
            });
    }

    pub(super) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl HistogramCell {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        // Buckets are not cumulative here; render adds them up.
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + value).to_bits())
            });
    }
}

// === impl Table ===

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            series: HashMap::new(),
            families: HashMap::new(),
        }
    }
}

/// The overflow key of `key`'s family: the same label names, the non-enumerated values
/// replaced by [`OVERFLOW`].
fn overflow_key(key: &Key) -> Key {
    let labels: Vec<Label> = key
        .labels()
        .map(|l| {
            if ENUMERATED_LABELS.contains(&l.key()) {
                l.clone()
            } else {
                Label::new(l.key().to_owned(), OVERFLOW)
            }
        })
        .collect();
    Key::from_parts(key.name().to_owned(), labels)
}

// === impl Inner ===

impl Default for Inner {
    fn default() -> Self {
        Self {
            counters: RwLock::default(),
            gauges: RwLock::default(),
            histograms: RwLock::default(),
            help: RwLock::new(HashMap::from([(
                SERIES_DROPPED.to_owned(),
                "Label sets recorded into a family's `other` series because the family was full."
                    .to_owned(),
            )])),
            authz: RwLock::default(),
            limit: DEFAULT_SERIES_LIMIT,
        }
    }
}

// === impl Registry ===

impl Registry {
    /// An empty registry holding at most [`DEFAULT_SERIES_LIMIT`] label sets per family.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry holding at most `limit` label sets per family (at least one).
    pub fn with_series_limit(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                ..Inner::default()
            }),
        }
    }

    /// How many label sets a family holds before new ones are folded into `other`; the
    /// layers bound their own intern tables by it too.
    pub fn series_limit(&self) -> usize {
        self.inner.limit
    }

    fn meta() -> Metadata<'static> {
        Metadata::new("mesh", metrics::Level::INFO, Some(module_path!()))
    }

    /// A counter handle for `name` with `labels`: resolve it once, increment it often.
    pub fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.register_counter(&Key::from_parts(name, labels), &Self::meta())
    }

    /// A gauge handle.
    pub fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.register_gauge(&Key::from_parts(name, labels), &Self::meta())
    }

    /// A histogram handle; `*_ms` histograms get Linkerd's latency buckets.
    pub fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.register_histogram(&Key::from_parts(name, labels), &Self::meta())
    }

    /// Sets the `# HELP` text of a metric.
    pub fn describe(&self, name: &str, help: &str) {
        self.inner
            .help
            .write()
            .insert(name.to_owned(), help.to_owned());
    }

    /// The current value of a counter, for tests and tools.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let counters = self.inner.counters.read();
        counters
            .series
            .iter()
            .find(|(k, _)| matches(k, name, labels))
            .map(|(_, c)| c.0.load(Ordering::Relaxed))
    }

    /// The sum of a counter over every label set that includes `labels`.
    pub fn counter_sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let counters = self.inner.counters.read();
        counters
            .series
            .iter()
            .filter(|(k, _)| matches(k, name, labels))
            .map(|(_, c)| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// The cell of `key` in `table`: the existing one, a new one while its family has room, or
    /// the family's overflow cell (and one more in [`SERIES_DROPPED`]).
    fn register<T>(
        &self,
        table: &RwLock<Table<T>>,
        key: &Key,
        limit: Limit,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let full = |t: &Table<T>| {
            limit == Limit::Counted
                && t.families.get(key.name()).copied().unwrap_or(0) >= self.inner.limit
        };
        let overflow = {
            let t = table.read();
            if let Some(c) = t.series.get(key) {
                return Arc::clone(c);
            }
            full(&t).then(|| overflow_key(key))
        };
        let cell = match overflow {
            // The family's overflow series usually exists already: no write lock then.
            Some(o) => {
                let found = table.read().series.get(&o).cloned();
                found.unwrap_or_else(|| {
                    Arc::clone(
                        table
                            .write()
                            .series
                            .entry(o)
                            .or_insert_with(|| Arc::new(make())),
                    )
                })
            }
            None => {
                let mut t = table.write();
                if let Some(c) = t.series.get(key) {
                    return Arc::clone(c);
                }
                if full(&t) {
                    // Another registration filled the family meanwhile.
                    Arc::clone(
                        t.series
                            .entry(overflow_key(key))
                            .or_insert_with(|| Arc::new(make())),
                    )
                } else {
                    if limit == Limit::Counted {
                        *t.families
                            .entry(KeyName::from(key.name().to_owned()))
                            .or_default() += 1;
                    }
                    let c = Arc::new(make());
                    t.series.insert(key.clone(), Arc::clone(&c));
                    return c;
                }
            }
        };
        self.dropped(key.name());
        cell
    }

    /// Counts one label set of `family` folded into its overflow series.
    fn dropped(&self, family: &str) {
        let key = Key::from_parts(
            SERIES_DROPPED,
            vec![Label::new("family", family.to_owned())],
        );
        self.register(
            &self.inner.counters,
            &key,
            Limit::Exempt,
            CounterCell::default,
        )
        .increment(1);
    }

    /// Counts an inbound authorization decision.
    pub fn count_authz(&self, target: &InboundTarget, d: &AuthzDecision<'_>) {
        let server = d.server.as_ref().map(|s| s.name.as_str());
        let cached = |m: &AuthzCache| {
            m.counters
                .get(&(d.allowed, target.port))?
                .get(&d.by)?
                .iter()
                .find(|(s, _)| s.as_deref() == server)
                .map(|(_, c)| c.clone())
        };
        if let Some(c) = cached(&self.inner.authz.read()) {
            c.increment(1);
            return;
        }
        let (srv_kind, srv_name) = server_labels(d.server.as_deref(), &d.by);
        let (authz_kind, authz_name) = authz_labels(&d.by);
        let name = if d.allowed {
            "inbound_http_authz_allow_total"
        } else {
            "inbound_http_authz_deny_total"
        };
        let mut l = vec![
            Label::new("target_port", target.port.to_string()),
            Label::new("srv_kind", srv_kind),
            Label::new("srv_name", srv_name.to_owned()),
        ];
        if d.allowed {
            l.push(Label::new("authz_kind", authz_kind));
            l.push(Label::new("authz_name", authz_name.to_owned()));
        }
        let counter = self.counter(name, l);
        counter.increment(1);
        let mut cache = self.inner.authz.write();
        // Ports are the client's choice in transparent mode: keep the cache as bounded as the
        // series it points at.
        if cache.len < self.inner.limit {
            cache.len += 1;
            cache
                .counters
                .entry((d.allowed, target.port))
                .or_default()
                .entry(d.by.clone())
                .or_default()
                .push((server.map(Into::into), counter));
        }
    }
}

fn matches(k: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    k.name() == name
        && labels
            .iter()
            .all(|(n, v)| k.labels().any(|l| l.key() == *n && l.value() == *v))
}

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.register(
            &self.inner.counters,
            key,
            Limit::Counted,
            CounterCell::default,
        ))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.register(&self.inner.gauges, key, Limit::Counted, GaugeCell::default))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let bounds = if key.name().ends_with("_ms") {
            LATENCY_BUCKETS_MS
        } else {
            DEFAULT_BUCKETS
        };
        Histogram::from_arc(
            self.register(&self.inner.histograms, key, Limit::Counted, || {
                HistogramCell::new(bounds)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: usize) -> Vec<Label> {
        vec![
            Label::new("direction", "outbound"),
            Label::new("authority", format!("h{i}:80")),
        ]
    }

    #[test]
    fn a_full_family_folds_new_label_sets_into_one_other_series_and_counts_them() {
        let r = Registry::with_series_limit(3);
        for i in 0..10 {
            r.counter("request_total", host(i)).increment(1);
        }
        let text = r.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("request_total{"))
            .count();
        assert_eq!(series, 4, "three kept and one overflow:\n{text}");
        assert!(
            text.contains("request_total{direction=\"outbound\",authority=\"other\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("metrics_series_dropped_total{family=\"request_total\"} 7"),
            "{text}"
        );
        // What was kept keeps counting on its own.
        r.counter("request_total", host(0)).increment(1);
        assert_eq!(
            r.counter_value("request_total", &[("authority", "h0:80")]),
            Some(2)
        );
    }

    #[test]
    fn the_limit_is_per_family() {
        let r = Registry::with_series_limit(2);
        for i in 0..2 {
            r.counter("request_total", host(i)).increment(1);
            r.histogram("response_latency_ms", host(i)).record(1.0);
            r.gauge("tcp_open_connections", host(i)).set(1.0);
        }
        let text = r.render();
        assert!(!text.contains("other"), "{text}");
        assert!(!text.contains(SERIES_DROPPED), "{text}");
        r.histogram("response_latency_ms", host(9)).record(1.0);
        r.gauge("tcp_open_connections", host(9)).set(1.0);
        let text = r.render();
        assert!(
            text.contains(
                "response_latency_ms_count{direction=\"outbound\",authority=\"other\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("metrics_series_dropped_total{family=\"tcp_open_connections\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn overflow_keeps_enumerated_labels() {
        let r = Registry::with_series_limit(1);
        for (i, class) in ["success", "failure", "failure"].into_iter().enumerate() {
            let mut l = host(i);
            l.push(Label::new("classification", class));
            l.push(Label::new("status_code", format!("{}", 200 + i)));
            r.counter("response_total", l).increment(1);
        }
        let text = r.render();
        assert!(
            text.contains(
                "response_total{direction=\"outbound\",authority=\"other\",classification=\"failure\",status_code=\"other\"} 2"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_authz_cache_is_bounded_and_decisions_are_still_counted() {
        let r = Registry::with_series_limit(4);
        let peer = mesh_core::Peer::default();
        let policy = mesh_core::authz::DefaultPolicy::AllUnauthenticated;
        let d = AuthzDecision {
            allowed: true,
            by: DecidedBy::Default(policy),
            reason: mesh_core::authz::Reason::DefaultAdmits {
                policy,
                peer: &peer,
            },
            server: None,
            route: None,
            rate_limit: None,
        };
        for port in 1..=100u16 {
            let target = InboundTarget {
                port,
                ..InboundTarget::default()
            };
            r.count_authz(&target, &d);
        }
        assert!(r.inner.authz.read().len <= 4);
        assert_eq!(r.counter_sum("inbound_http_authz_allow_total", &[]), 100);
    }
}
