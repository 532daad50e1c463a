//! Tap: a live stream of request metadata, for `mesh tap` and `mesh top`.
//!
//! A [`Tap`] is a hub cloned into the stacks; the metrics layer
//! ([`MetricsLayer::with_tap`](crate::metrics::MetricsLayer::with_tap)) publishes a
//! [`TapEvent`] per request where it already records the response's end, with the same route,
//! identities and classification as the metrics. Tap can never slow or grow the proxy:
//!
//! - With no subscriber, a request costs one relaxed atomic load: no event is built.
//! - Each subscriber has a bounded queue; when it is full (a slow reader), events for that
//!   subscriber are dropped and counted (`tap_events_dropped_total`), never awaited.
//! - Each subscriber may cap its events per second ([`TapLimits::max_rps`]) and in total
//!   ([`TapLimits::max_events`]); the hub caps how many subscribe at once.
//!
//! ```
//! use mesh_tower::metrics::Registry;
//! use mesh_tower::tap::{Tap, TapConfig, TapFilter, TapLimits};
//!
//! let tap = Tap::new(TapConfig::default(), &Registry::new());
//! assert!(!tap.is_active());
//! let filter = TapFilter { path_prefix: Some("/books".into()), ..TapFilter::default() };
//! let sub = tap.subscribe(filter, TapLimits::default()).unwrap();
//! assert!(tap.is_active());
//! drop(sub);
//! assert!(!tap.is_active());
//! ```

mod capture;
mod event;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::HeaderName;
use metrics::{Counter, Gauge};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub(crate) use capture::Capture;
pub use event::{TapEvent, TapFilter, TapRequest};

use crate::metrics::Registry;

/// Events a subscriber's queue holds before newer ones are dropped.
pub const DEFAULT_QUEUE: usize = 1_000;

/// Subscribers a proxy serves at once.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 16;

/// The hub; see the [module docs](self). Cheap to clone: clones share subscribers.
#[derive(Clone, Debug)]
pub struct Tap {
    hub: Arc<Hub>,
}

/// What the hub allows and what it knows about the proxy it runs in.
#[derive(Clone, Debug)]
pub struct TapConfig {
    /// Subscribers served at once.
    pub max_subscribers: usize,
    /// Events each subscriber's queue holds.
    pub queue: usize,
    /// Request headers whose values events carry (none by default: headers hold secrets).
    pub headers: Vec<HeaderName>,
    /// This proxy's namespace: inbound events carry it.
    pub namespace: Option<String>,
    /// This proxy's workload: inbound events carry it.
    pub workload: Option<String>,
}

/// A subscriber's own bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapLimits {
    /// At most this many events per second; the rest are skipped (sampled out).
    pub max_rps: Option<u32>,
    /// The subscription ends after this many events.
    pub max_events: Option<u64>,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TapError {
    /// The hub serves its maximum of subscribers already.
    #[error("too many tap subscribers (at most {0})")]
    TooManySubscribers(usize),
}

#[derive(Debug)]
struct Hub {
    /// How many subscribe: the one load the request path pays.
    active: AtomicUsize,
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
    next_id: AtomicU64,
    config: TapConfig,
    dropped: Counter,
    gauge: Gauge,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    filter: TapFilter,
    tx: mpsc::Sender<Arc<TapEvent>>,
    rate: Option<Mutex<Window>>,
    /// Events still to send, with a maximum.
    remaining: Option<AtomicU64>,
    dropped: AtomicU64,
}

/// A one-second window of a rate cap.
#[derive(Debug)]
struct Window {
    max: u32,
    start: Instant,
    sent: u32,
}

/// One subscriber's stream of events; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    sub: Arc<Subscriber>,
    rx: mpsc::Receiver<Arc<TapEvent>>,
    left: Option<u64>,
}

// === impl TapRequest ===

impl TapRequest {
    /// The subscriber's limits.
    pub fn limits(&self) -> TapLimits {
        TapLimits {
            max_rps: self.max_rps,
            max_events: self.max_events,
        }
    }
}

// === impl TapConfig ===

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            queue: DEFAULT_QUEUE,
            headers: Vec::new(),
            namespace: None,
            workload: None,
        }
    }
}

// === impl Tap ===

impl Tap {
    /// A hub counting into `registry`: `tap_subscribers`, `tap_events_dropped_total`.
    pub fn new(config: TapConfig, registry: &Registry) -> Self {
        registry.describe("tap_subscribers", "Tap subscribers being served.");
        registry.describe(
            "tap_events_dropped_total",
            "Tap events dropped because a subscriber's queue was full.",
        );
        Self {
            hub: Arc::new(Hub {
                active: AtomicUsize::new(0),
                subscribers: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(0),
                dropped: registry.counter("tap_events_dropped_total", Vec::new()),
                gauge: registry.gauge("tap_subscribers", Vec::new()),
                config,
            }),
        }
    }

    /// Whether anyone subscribes: the request path asks this before building anything.
    pub fn is_active(&self) -> bool {
        self.hub.active.load(Ordering::Relaxed) > 0
    }

    /// The hub's configuration.
    pub fn config(&self) -> &TapConfig {
        &self.hub.config
    }

    /// Subscribes to events that match `filter`, within `limits`.
    pub fn subscribe(
        &self,
        filter: TapFilter,
        limits: TapLimits,
    ) -> Result<Subscription, TapError> {
        let hub = &self.hub;
        let (tx, rx) = mpsc::channel(hub.config.queue.max(1));
        let sub = Arc::new(Subscriber {
            id: hub.next_id.fetch_add(1, Ordering::Relaxed),
            filter,
            tx,
            rate: limits.max_rps.map(|max| {
                Mutex::new(Window {
                    max,
                    start: Instant::now(),
                    sent: 0,
                })
            }),
            remaining: limits.max_events.map(AtomicU64::new),
            dropped: AtomicU64::new(0),
        });
        {
            let mut subs = hub.subscribers.write();
            if subs.len() >= hub.config.max_subscribers {
                return Err(TapError::TooManySubscribers(hub.config.max_subscribers));
            }
            subs.push(Arc::clone(&sub));
            hub.active.store(subs.len(), Ordering::Relaxed);
            hub.gauge.set(subs.len() as f64);
        }
        Ok(Subscription {
            hub: Arc::clone(hub),
            sub,
            rx,
            left: limits.max_events,
        })
    }

    /// Offers `event` to every subscriber whose filter it matches; never waits.
    pub(crate) fn publish(&self, event: TapEvent) {
        let event = Arc::new(event);
        for sub in self.hub.subscribers.read().iter() {
            sub.offer(&event, &self.hub.dropped);
        }
    }
}

// === impl Subscriber ===

impl Subscriber {
    fn offer(&self, event: &Arc<TapEvent>, dropped: &Counter) {
        if !self.filter.matches(event) || !self.admit_rate() {
            return;
        }
        if let Some(left) = &self.remaining
            && left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            return;
        }
        match self.tx.try_send(Arc::clone(event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                dropped.increment(1);
            }
            // The reader went away; its Subscription's drop unsubscribes.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Whether the rate cap lets one more event through in the current second.
    fn admit_rate(&self) -> bool {
        let Some(rate) = &self.rate else {
            return true;
        };
        let mut w = rate.lock();
        let now = Instant::now();
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.sent = 0;
        }
        if w.sent >= w.max {
            return false;
        }
        w.sent += 1;
        true
    }
}

// === impl Subscription ===

impl Subscription {
    /// The next event; `None` once the subscription's maximum has been received.
    pub async fn recv(&mut self) -> Option<Arc<TapEvent>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Subscription::recv`] for a `poll`-based consumer (a response body).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<TapEvent>>> {
        if self.left == Some(0) {
            return Poll::Ready(None);
        }
        let ev = ready!(self.rx.poll_recv(cx));
        if let (Some(left), Some(_)) = (&mut self.left, &ev) {
            *left -= 1;
        }
        Poll::Ready(ev)
    }

    /// Events dropped for this subscriber so far because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.sub.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.hub.subscribers.write();
        subs.retain(|s| s.id != self.sub.id);
        self.hub.active.store(subs.len(), Ordering::Relaxed);
        self.hub.gauge.set(subs.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::event::sample;
    use super::*;

    fn tap(queue: usize) -> (Tap, Registry) {
        let registry = Registry::new();
        let config = TapConfig {
            queue,
            max_subscribers: 2,
            ..TapConfig::default()
        };
        (Tap::new(config, &registry), registry)
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (tap, registry) = tap(3);
        let mut sub = tap
            .subscribe(TapFilter::default(), TapLimits::default())
            .unwrap();
        for _ in 0..10 {
            tap.publish(sample("/"));
        }
        assert_eq!(sub.dropped(), 7);
        assert_eq!(
            registry.counter_value("tap_events_dropped_total", &[]),
            Some(7)
        );
        for _ in 0..3 {
            assert!(sub.recv().await.is_some());
        }
        // Room again: the next one is delivered.
        tap.publish(sample("/"));
        assert!(sub.recv().await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_cap_holds_per_second() {
        let (tap, _) = tap(100);
        let limits = TapLimits {
            max_rps: Some(5),
            max_events: None,
        };
        let mut sub = tap.subscribe(TapFilter::default(), limits).unwrap();
        for _ in 0..50 {
            tap.publish(sample("/"));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..50 {
            tap.publish(sample("/"));
        }
        drop(tap);
        let mut got = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), sub.recv()).await {
            got += 1;
        }
        assert_eq!(got, 10);
        // Sampled out is not dropped.
        assert_eq!(sub.dropped(), 0);
    }

    #[tokio::test]
    async fn filters_counts_and_the_subscriber_cap() {
        let (tap, registry) = tap(100);
        let filter = TapFilter {
            path_prefix: Some("/a".into()),
            ..TapFilter::default()
        };
        let limits = TapLimits {
            max_rps: None,
            max_events: Some(2),
        };
        let mut sub = tap.subscribe(filter, limits).unwrap();
        let _other = tap.subscribe(TapFilter::default(), TapLimits::default());
        assert_eq!(
            tap.subscribe(TapFilter::default(), TapLimits::default())
                .err(),
            Some(TapError::TooManySubscribers(2))
        );
        for p in ["/b", "/a1", "/c", "/a2", "/a3"] {
            tap.publish(sample(p));
        }
        assert_eq!(sub.recv().await.unwrap().path, "/a1");
        assert_eq!(sub.recv().await.unwrap().path, "/a2");
        assert!(sub.recv().await.is_none());
        assert!(registry.render().contains("tap_subscribers 2"));
    }

    #[test]
    fn nobody_subscribed_means_inactive() {
        let (tap, _) = tap(1);
        assert!(!tap.is_active());
        let sub = tap.subscribe(TapFilter::default(), TapLimits::default());
        assert!(tap.is_active());
        drop(sub);
        assert!(!tap.is_active());
    }
}
