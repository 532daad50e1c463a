//! HTTP/1 connections to upstream addresses, pooled per address and shared by every caller.
//!
//! A proxy's callers (its client connections) come and go, and one HTTP/2 client connection
//! can carry hundreds of concurrent streams; so idle connections are kept per upstream
//! *address*, never per caller, and a run opens about as many connections as its peak
//! concurrency. Each address has a cap on open connections ([`PoolConfig::max_connections`]);
//! a request beyond it waits in a bounded queue for a connection to come back or close, and is
//! refused with [`PoolExhausted`] (a 503) when the queue is full or its wait runs out. Idle
//! connections are closed after [`PoolConfig::idle_timeout`], and at most
//! [`PoolConfig::max_idle_addresses`] addresses keep idle connections: beyond it, the least
//! recently used address's are closed.
//!
//! Hitting any of these bounds is counted through [`PoolMetrics`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use metrics::Counter;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::BoxError;
use crate::errors::{ConnectFailed, PoolExhausted};

/// The bounds of a [`Http1Pool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Open connections per address, busy and idle together.
    pub max_connections: usize,
    /// Requests per address that may wait for a connection once the cap is reached.
    pub queue_depth: usize,
    /// How long a waiting request waits before it is refused.
    pub queue_timeout: Duration,
    /// How long a connection may sit idle before it is closed.
    pub idle_timeout: Duration,
    /// Addresses that may keep idle connections at once.
    pub max_idle_addresses: usize,
}

/// Counters for the bounds of a pool; no-ops unless set.
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    /// A request found the address at its connection cap and waited.
    pub queued: Counter,
    /// A request was refused: the queue was full or its wait ran out.
    pub refused: Counter,
    /// An address's idle connections were closed to stay under
    /// [`PoolConfig::max_idle_addresses`].
    pub evicted: Counter,
}

/// Why a request was refused a connection (answered 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// The address's queue already held [`PoolConfig::queue_depth`] requests.
    QueueFull,
    /// No connection came free within [`PoolConfig::queue_timeout`].
    QueueTimeout,
}

/// A pool of HTTP/1 connections per upstream address. Cheap to clone: clones share it.
pub struct Http1Pool<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    config: PoolConfig,
    metrics: PoolMetrics,
    addrs: Mutex<HashMap<SocketAddr, Arc<Upstream<B>>>>,
    sweeping: AtomicBool,
}

/// One address's connections.
struct Upstream<B> {
    idle: Mutex<Vec<Idle<B>>>,
    /// One permit per open connection, held by its driver task until it closes.
    open: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Signalled when a connection comes back idle.
    returned: Notify,
    last_used: Mutex<Instant>,
}

struct Idle<B> {
    send: SendRequest<B>,
    since: Instant,
}

/// Takes a request's place in an address's queue until dropped.
struct Waiting<'a>(&'a AtomicUsize);

// === impl PoolConfig ===

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            queue_depth: 1000,
            queue_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(90),
            max_idle_addresses: 1000,
        }
    }
}

// === impl PoolMetrics ===

impl Default for PoolMetrics {
    fn default() -> Self {
        Self {
            queued: Counter::noop(),
            refused: Counter::noop(),
            evicted: Counter::noop(),
        }
    }
}

// === impl Http1Pool ===

impl<B> Clone for Http1Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> std::fmt::Debug for Http1Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool")
            .field("config", &self.inner.config)
            .field("addresses", &self.inner.addrs.lock().len())
            .finish_non_exhaustive()
    }
}

impl<B> Http1Pool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// An empty pool with these bounds, counting into `metrics`.
    pub fn new(config: PoolConfig, metrics: PoolMetrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                metrics,
                addrs: Mutex::new(HashMap::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (already in origin form, with its Host) to `addr` on a pooled connection;
    /// the connection goes back to the pool once the response body has been read.
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<Incoming>, BoxError> {
        self.start_sweeping();
        let up = self.upstream(addr);
        let mut send = self.checkout(addr, &up).await?;
        let rsp = send.send_request(req).await?;
        let pool = Arc::downgrade(&self.inner);
        // The connection is ready again once this response's body is consumed (or never, if
        // it closes): wait for that off the request path, then offer it to the next request.
        tokio::spawn(async move {
            if send.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.put_idle(addr, &up, send);
            }
        });
        Ok(rsp)
    }

    fn upstream(&self, addr: SocketAddr) -> Arc<Upstream<B>> {
        let max = self.inner.config.max_connections.max(1);
        let up = Arc::clone(self.inner.addrs.lock().entry(addr).or_insert_with(|| {
            Arc::new(Upstream {
                idle: Mutex::new(Vec::new()),
                open: Arc::new(Semaphore::new(max)),
                waiting: AtomicUsize::new(0),
                returned: Notify::new(),
                last_used: Mutex::new(Instant::now()),
            })
        }));
        *up.last_used.lock() = Instant::now();
        up
    }

    /// An idle connection, a new one under the cap, or one that comes free while queued.
    async fn checkout(
        &self,
        addr: SocketAddr,
        up: &Upstream<B>,
    ) -> Result<SendRequest<B>, BoxError> {
        let config = &self.inner.config;
        if let Some(s) = up.take_idle(config.idle_timeout) {
            return Ok(s);
        }
        if let Ok(permit) = Arc::clone(&up.open).try_acquire_owned() {
            return connect(addr, permit).await;
        }
        self.inner.metrics.queued.increment(1);
        let _waiting = Waiting::enter(&up.waiting);
        if up.waiting.load(Ordering::Acquire) > config.queue_depth {
            self.inner.metrics.refused.increment(1);
            return Err(PoolExhausted {
                addr,
                why: Exhausted::QueueFull,
            }
            .into());
        }
        let deadline = Instant::now() + config.queue_timeout;
        loop {
            let returned = up.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a connection returned in between still wakes us.
            returned.as_mut().enable();
            if let Some(s) = up.take_idle(config.idle_timeout) {
                return Ok(s);
            }
            tokio::select! {
                () = &mut returned => {}
                permit = Arc::clone(&up.open).acquire_owned() => {
                    // The semaphore is never closed: an error cannot happen, but is an answer.
                    return connect(addr, permit?).await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.inner.metrics.refused.increment(1);
                    return Err(PoolExhausted { addr, why: Exhausted::QueueTimeout }.into());
                }
            }
        }
    }

    /// Closes idle connections past their time, from a task that lives as long as the pool.
    fn start_sweeping(&self) {
        if self.inner.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(&self.inner);
        let period = (self.inner.config.idle_timeout / 2).max(Duration::from_millis(50));
        tokio::spawn(sweep(pool, period));
    }
}

async fn sweep<B>(pool: Weak<Inner<B>>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}

// === impl Inner ===

impl<B> Inner<B> {
    fn put_idle(&self, addr: SocketAddr, up: &Arc<Upstream<B>>, send: SendRequest<B>) {
        up.idle.lock().push(Idle {
            send,
            since: Instant::now(),
        });
        up.returned.notify_one();
        self.bound_idle_addresses(addr);
    }

    /// Closes the idle connections of the least recently used address while more than the
    /// allowed number of addresses hold some.
    fn bound_idle_addresses(&self, keep: SocketAddr) {
        let addrs = self.addrs.lock();
        if addrs.len() <= self.config.max_idle_addresses {
            return;
        }
        let holding = addrs.values().filter(|u| !u.idle.lock().is_empty()).count();
        if holding <= self.config.max_idle_addresses {
            return;
        }
        let oldest = addrs
            .iter()
            .filter(|(a, u)| **a != keep && !u.idle.lock().is_empty())
            .min_by_key(|(_, u)| *u.last_used.lock());
        if let Some((_, u)) = oldest {
            u.idle.lock().clear();
            self.metrics.evicted.increment(1);
        }
    }

    /// Drops idle connections past the idle timeout (closing them), and forgets addresses
    /// with nothing open and nobody waiting.
    fn sweep(&self) {
        let max = self.config.max_connections.max(1);
        self.addrs.lock().retain(|_, up| {
            up.idle
                .lock()
                .retain(|i| i.since.elapsed() < self.config.idle_timeout && !i.send.is_closed());
            let unused =
                up.open.available_permits() == max && up.waiting.load(Ordering::Acquire) == 0;
            !unused
        });
    }
}

// === impl Upstream ===

impl<B> Upstream<B> {
    /// The most recently returned idle connection that can take a request, dropping those
    /// that closed or idled too long.
    fn take_idle(&self, idle_timeout: Duration) -> Option<SendRequest<B>> {
        let mut idle = self.idle.lock();
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < idle_timeout && i.send.is_ready() {
                return Some(i.send);
            }
        }
        None
    }
}

// === impl Waiting ===

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A new HTTP/1 connection to `addr`, whose driver holds `permit` until it closes.
async fn connect<B>(
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> Result<SendRequest<B>, BoxError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let fail = |source: BoxError| -> BoxError { Box::new(ConnectFailed { addr, source }) };
    let tcp = TcpStream::connect(addr).await.map_err(|e| fail(e.into()))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| fail(e.into()))?;
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, %addr, "upstream HTTP/1 connection closed");
        }
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Empty};
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1 server that counts the connections it accepted and holds each request for
    /// `delay` before answering.
    async fn counting_server(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from("ok"))))
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn config(max: usize, depth: usize) -> PoolConfig {
        PoolConfig {
            max_connections: max,
            queue_depth: depth,
            queue_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_idle_addresses: 8,
        }
    }

    async fn get(pool: &Http1Pool<Empty<Bytes>>, addr: SocketAddr) -> Result<(), BoxError> {
        let req = Request::get("/")
            .header("host", "app")
            .body(Empty::new())
            .unwrap();
        let rsp = pool.send(addr, req).await?;
        rsp.into_body().collect().await?;
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_requests_share_connections_under_the_cap() {
        let (addr, accepted) = counting_server(Duration::from_millis(20)).await;
        let pool = Http1Pool::new(config(4, 1000), PoolMetrics::default());
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { get(&pool, addr).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(accepted.load(Ordering::SeqCst) <= 4, "{accepted:?}");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_a_typed_error() {
        let (addr, _) = counting_server(Duration::from_millis(300)).await;
        let pool = Http1Pool::new(config(1, 1), PoolMetrics::default());
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { get(&pool, addr).await })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                let e = crate::errors::find::<PoolExhausted>(&*e).expect("a pool refusal");
                assert_eq!(e.why, Exhausted::QueueFull);
                refused += 1;
            }
        }
        assert_eq!(refused, 1);
    }
}
