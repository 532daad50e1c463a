//! The one accept loop every listener (inbound, outbound, admin, and the identity and
//! injector servers) runs.
//!
//! It bounds what a listener may hold open and what a failing `accept` may cost:
//! - at most `max` connections at once per listener: past it, a new connection is closed at
//!   once and counted in `tcp_connections_refused_total{reason="connection_limit"}`, so file
//!   descriptors stay bounded by the listeners' limits;
//! - an `accept` error (EMFILE, ENFILE, ENOBUFS…) backs off exponentially, 5 ms doubling to
//!   1 s, until an accept succeeds again; a tight retry loop on EMFILE burns a core, since the
//!   pending connection stays in the backlog and the error repeats at once;
//! - errors are logged at most once per [`LOG_INTERVAL`] per listener, with a count of what
//!   was not logged, and counted in `tcp_accept_errors_total`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_tower::BoxError;
use mesh_tower::metrics::Registry;
use metrics::{Counter, Label};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// The first back-off after an accept error.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per listener and kind of trouble in this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Which listener a loop serves: its `direction` label and its connection limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// Connections into the workload.
    Inbound,
    /// The workload's own connections out.
    Outbound,
    /// `/metrics`, `/ready`, `/live`, `/shutdown`.
    Admin,
}

/// Something that accepts connections: a `TcpListener`, or a scripted one in tests.
pub(crate) trait Accept {
    /// One accepted connection.
    type Conn: Send + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>> + Send;
}

/// What one loop needs besides its listener.
pub(crate) struct Config {
    /// The `direction` label of its metrics and logs: a proxy [`Listener`], or another
    /// server of the `mesh` binary (`identity`, `injector`).
    pub(crate) direction: &'static str,
    pub(crate) max_connections: usize,
    pub(crate) registry: Registry,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Exponential back-off, reset by a success.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

/// Logs a recurring trouble at most once per interval, with how often it happened meanwhile.
#[derive(Debug)]
struct Throttled {
    what: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

/// The counters of one listener.
struct Counters {
    errors: Counter,
    accept_errors: Counter,
    refused: Counter,
}

// === impl Listener ===

impl Listener {
    /// The `direction` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Admin => "admin",
        }
    }
}

impl Accept for TcpListener {
    type Conn = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (tcp, peer) = Self::accept(self).await?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, peer))
    }
}

/// Accepts connections until shutdown and hands each to `handle` on a task of its own. A
/// connection that ends in an error (a malformed request, a slow or vanished client) is closed,
/// logged and counted in `tcp_connection_errors_total`.
pub(crate) async fn serve<A, F, Fut>(mut listener: A, config: Config, handle: F)
where
    A: Accept,
    F: Fn(A::Conn, SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let Config {
        direction,
        max_connections,
        registry,
        mut shutdown,
    } = config;
    let counters = Counters::new(&registry, direction);
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut backoff = Backoff::new();
    let mut accept_log = Throttled::new("accept failed; backing off");
    let mut limit_log = Throttled::new("connection limit reached; refusing connections");
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = super::stopped(&mut shutdown) => return,
        };
        let (conn, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                counters.accept_errors.increment(1);
                let wait = backoff.fail();
                accept_log.note(direction, &e, wait);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = super::stopped(&mut shutdown) => return,
                }
            }
        };
        backoff.reset();
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            counters.refused.increment(1);
            limit_log.note(direction, &max_connections, Duration::ZERO);
            drop(conn);
            continue;
        };
        let conn = handle(conn, peer);
        let errors = counters.errors.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, direction, "connection ended");
                errors.increment(1);
            }
            drop(permit);
        });
    }
}

// === impl Counters ===

impl Counters {
    fn new(registry: &Registry, direction: &'static str) -> Self {
        registry.describe(
            "tcp_connections_refused_total",
            "Connections closed on accept because their listener held its limit.",
        );
        registry.describe(
            "tcp_accept_errors_total",
            "Failed accepts (out of file descriptors and the like); each backs off.",
        );
        let by_direction = || vec![Label::new("direction", direction)];
        let mut refused = by_direction();
        refused.push(Label::new("reason", "connection_limit"));
        Self {
            errors: registry.counter("tcp_connection_errors_total", by_direction()),
            accept_errors: registry.counter("tcp_accept_errors_total", by_direction()),
            refused: registry.counter("tcp_connections_refused_total", refused),
        }
    }
}

// === impl Backoff ===

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    /// How long to wait after one more failure.
    fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

// === impl Throttled ===

impl Throttled {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            suppressed: 0,
        }
    }

    fn note(&mut self, direction: &str, detail: &dyn std::fmt::Display, wait: Duration) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + LOG_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            direction,
            %detail,
            retry_in = ?wait,
            more_since_last_log = self.suppressed,
            "{}",
            self.what
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fails every accept with EMFILE, counting the attempts.
    struct Exhausted(Arc<AtomicUsize>);

    impl Accept for Exhausted {
        type Conn = ();

        async fn accept(&mut self) -> io::Result<((), SocketAddr)> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::from_raw_os_error(24)) // EMFILE
        }
    }

    /// Accepts `n` connections, then waits forever.
    struct Flood(usize);

    impl Accept for Flood {
        type Conn = ();

        async fn accept(&mut self) -> io::Result<((), SocketAddr)> {
            if self.0 == 0 {
                std::future::pending::<()>().await;
            }
            self.0 -= 1;
            Ok(((), SocketAddr::from(([127, 0, 0, 1], 1))))
        }
    }

    fn config(registry: &Registry, max: usize) -> (Config, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let config = Config {
            direction: Listener::Admin.as_str(),
            max_connections: max,
            registry: registry.clone(),
            shutdown: rx,
        };
        (config, tx)
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        let registry = Registry::new();
        let attempts = Arc::new(AtomicUsize::new(0));
        let (config, stop) = config(&registry, 8);
        let task = tokio::spawn(serve(
            Exhausted(Arc::clone(&attempts)),
            config,
            |(), _| async { Ok(()) },
        ));
        // A minute of failing accepts: 5 ms doubling to 1 s is ~8 tries to reach the cap,
        // then one a second. A loop without back-off would try millions of times.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let n = attempts.load(Ordering::Relaxed);
        assert!((55..=70).contains(&n), "{n} accept attempts in a minute");
        assert_eq!(
            registry.counter_value("tcp_accept_errors_total", &[("direction", "admin")]),
            Some(n as u64)
        );
        stop.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn connections_past_the_limit_are_refused_and_counted() {
        let registry = Registry::new();
        let (config, stop) = config(&registry, 3);
        let served = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&served);
        let task = tokio::spawn(serve(Flood(10), config, move |(), _| {
            s.fetch_add(1, Ordering::Relaxed);
            // Each connection stays open: the limit, not the loop, must turn the rest away.
            std::future::pending()
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(served.load(Ordering::Relaxed), 3);
        assert_eq!(
            registry.counter_value(
                "tcp_connections_refused_total",
                &[("direction", "admin"), ("reason", "connection_limit")]
            ),
            Some(7)
        );
        stop.send_replace(true);
        task.await.unwrap();
    }
}
