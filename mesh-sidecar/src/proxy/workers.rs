//! `--workers N`: one single-threaded runtime per worker thread, each accepting on inbound
//! and outbound sockets of its own — bound to the same addresses with `SO_REUSEPORT`, so the
//! kernel spreads new connections across the workers — and serving its connections to the
//! end, with its own pooled connections to the application. A connection never moves between
//! threads, so a request costs no cross-thread wake-up or work stealing, as it does on one
//! shared multi-threaded runtime. The main thread is the first worker; it also runs the
//! admin server, config and identity.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use super::{Proxy, inbound, outbound};

/// The backlog of each listening socket (what `TcpListener::bind` uses).
const BACKLOG: u32 = 1024;

/// Binds a proxy listener on `addr`; `shared` lets the other workers bind the same address.
pub(super) fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Starts the workers beyond the main thread, listening on `inbound` and `outbound` (the
/// main thread's addresses, so a port 0 resolved there is shared too). Each receiver
/// answers once that worker's listeners have stopped, or at once if it could not start.
pub(super) fn start(
    proxy: &Arc<Proxy>,
    graceful: &Arc<GracefulShutdown>,
    inbound: SocketAddr,
    outbound: SocketAddr,
) -> Vec<oneshot::Receiver<()>> {
    (1..proxy.args.workers)
        .map(|i| {
            let (done, stopped) = oneshot::channel();
            let (proxy, graceful) = (Arc::clone(proxy), Arc::clone(graceful));
            let spawned = std::thread::Builder::new()
                .name(format!("mesh-worker-{i}"))
                .spawn(move || run(proxy, graceful, inbound, outbound, done));
            if let Err(e) = spawned {
                tracing::error!(worker = i, error = %e, "cannot start a worker thread");
            }
            stopped
        })
        .collect()
}

/// One worker: its listeners until shutdown, then its connections until the process exits.
fn run(
    proxy: Arc<Proxy>,
    graceful: Arc<GracefulShutdown>,
    inbound: SocketAddr,
    outbound: SocketAddr,
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
        match listen(inbound, true).and_then(|i| Ok((i, listen(outbound, true)?))) {
            Ok((i, o)) => {
                tokio::join!(
                    inbound::serve(Arc::clone(&proxy), i, Arc::clone(&graceful)),
                    outbound::serve(proxy, o, graceful),
                );
            }
            Err(e) => {
                drop((proxy, graceful));
                tracing::error!(error = %e, "a worker cannot listen; the others serve");
            }
        }
        // The main thread drains once every worker's listeners are gone (and with them their
        // hold on `graceful`); this runtime keeps serving the connections it accepted.
        let _ = done.send(());
        std::future::pending::<()>().await;
    });
}
