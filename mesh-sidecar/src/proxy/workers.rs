//! `--workers N`: one single-threaded runtime per worker thread, each serving the connections
//! handed to it to the end, with its own pooled connections to the application and its own
//! outbound client. A connection never moves between threads once handed over, so a request
//! costs no cross-thread wake-up or work stealing, as it does on one shared multi-threaded
//! runtime.
//!
//! With several workers, the main thread runs each listener's one accept loop (its connection
//! limit and counters, as with one worker) and hands every accepted connection to the worker
//! holding the fewest open connections. Spreading by load rather than letting the kernel hash
//! connections over `SO_REUSEPORT` sockets matters for the few long-lived connections a peer
//! proxy multiplexes its requests on: hashed, two of them land on the same worker half the
//! time, and that worker then serves all the traffic alone. The main thread is also the first
//! worker; it runs the admin server, config and identity too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::server::graceful::GracefulShutdown;
use mesh_tower::BoxError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::{Proxy, inbound, outbound};

/// Where one worker's connections of one listener come from.
pub(crate) enum Source {
    /// The only worker accepts on the listener itself.
    Listener(TcpListener),
    /// One of several: connections the main thread's accept loop hands over.
    Handed(mpsc::UnboundedReceiver<Handoff>),
}

/// A connection on its way to a worker; `done` gets how its serving ended.
pub(crate) struct Handoff {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    done: oneshot::Sender<Result<(), BoxError>>,
}

/// Hands one listener's connections to the least loaded worker.
pub(crate) struct Dispatch {
    senders: Vec<mpsc::UnboundedSender<Handoff>>,
    /// Each worker's connections handed over and not yet done.
    open: Arc<[AtomicUsize]>,
}

/// One listener's connections for `n` workers: each worker's source, and, with several, the
/// listener and the dispatcher its accept loop hands connections to.
pub(super) fn fan_out(
    listener: TcpListener,
    n: usize,
) -> (Vec<Source>, Option<(TcpListener, Dispatch)>) {
    if n <= 1 {
        return (vec![Source::Listener(listener)], None);
    }
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let open = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let sources = receivers.into_iter().map(Source::Handed).collect();
    (sources, Some((listener, Dispatch { senders, open })))
}

// === impl Dispatch ===

impl Dispatch {
    /// Hands `tcp` to the worker with the fewest open connections. The future completes when
    /// that worker is done with it (so the accept loop's connection permit is held as long),
    /// and holds no sender: once the accept loop stops, the workers see their sources end.
    pub(super) fn hand(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<(), BoxError>> + Send + use<> {
        let (done, finished) = oneshot::channel();
        let handed = (self.senders.iter().enumerate())
            .filter(|(_, s)| !s.is_closed())
            .min_by_key(|(i, _)| self.open[*i].load(Ordering::Relaxed))
            .ok_or_else(|| BoxError::from("no worker is serving"))
            .and_then(|(i, sender)| {
                let open = Open::enter(Arc::clone(&self.open), i);
                let tcp = tcp.into_std()?;
                (sender.send(Handoff { tcp, peer, done }))
                    .map_err(|_| BoxError::from("the worker has stopped"))?;
                Ok(open)
            });
        async move {
            let _open = handed?;
            // A worker that stopped without a word (its runtime is gone) ended it too.
            finished.await.unwrap_or(Ok(()))
        }
    }
}

/// Counts a connection as open on worker `i` while alive.
struct Open {
    open: Arc<[AtomicUsize]>,
    i: usize,
}

impl Open {
    fn enter(open: Arc<[AtomicUsize]>, i: usize) -> Self {
        open[i].fetch_add(1, Ordering::Relaxed);
        Self { open, i }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.open[self.i].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves the connections handed to this worker, each on a task of its own, until the main
/// thread's accept loop stops; each one's outcome goes back to that loop, which logs and
/// counts it.
pub(super) async fn serve_handed<F, Fut>(mut handed: mpsc::UnboundedReceiver<Handoff>, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    while let Some(Handoff { tcp, peer, done }) = handed.recv().await {
        let conn = TcpStream::from_std(tcp).map(|tcp| handle(tcp, peer));
        tokio::spawn(async move {
            let outcome = match conn {
                Ok(conn) => conn.await,
                Err(e) => Err(e.into()),
            };
            let _ = done.send(outcome);
        });
    }
}

/// Starts the workers beyond the main thread, each with its inbound and outbound source. Each
/// receiver answers once that worker's sources have ended, or at once if it could not start.
pub(super) fn start(
    proxy: &Arc<Proxy>,
    graceful: &Arc<GracefulShutdown>,
    sources: Vec<(Source, Source)>,
) -> Vec<oneshot::Receiver<()>> {
    (sources.into_iter().enumerate())
        .map(|(i, (inbound, outbound))| {
            let (done, stopped) = oneshot::channel();
            let (proxy, graceful) = (Arc::clone(proxy), Arc::clone(graceful));
            let spawned = std::thread::Builder::new()
                .name(format!("mesh-worker-{}", i + 1))
                .spawn(move || run(proxy, graceful, inbound, outbound, done));
            if let Err(e) = spawned {
                tracing::error!(worker = i + 1, error = %e, "cannot start a worker thread");
            }
            stopped
        })
        .collect()
}

/// One worker: its sources until shutdown, then its connections until the process exits.
fn run(
    proxy: Arc<Proxy>,
    graceful: Arc<GracefulShutdown>,
    inbound: Source,
    outbound: Source,
    done: oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker's runtime; the others serve");
            return;
        }
    };
    runtime.block_on(async move {
        tokio::join!(
            inbound::serve(Arc::clone(&proxy), inbound, Arc::clone(&graceful)),
            outbound::serve(proxy, outbound, graceful),
        );
        // The main thread drains once every worker's sources are gone (and with them their
        // hold on `graceful`); this runtime keeps serving the connections it was handed.
        let _ = done.send(());
        std::future::pending::<()>().await;
    });
}
