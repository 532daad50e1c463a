//! What a client may make the `mesh` binary's control-plane servers (`mesh identity serve`,
//! `mesh injector`) hold, and the accept loop that enforces it: the proxy's own
//! (`proxy::accept`), so a connection cap is counted, logged and backed off the same way
//! everywhere.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use mesh_tower::BoxError;
use mesh_tower::metrics::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy::accept;

/// Time and connection bounds for one HTTPS server (flattened into its command's flags).
#[derive(Clone, Copy, Debug, Args)]
pub(crate) struct ServerLimitArgs {
    /// How long a client may take to send a request's headers, counted from when the
    /// connection is idle (opened, or its last response sent).
    #[arg(long, default_value = "10s", value_parser = mesh_core::values::parse_duration)]
    pub(crate) header_read_timeout: Duration,
    /// How long a client may take to send a whole request body; a slower one gets 408 and
    /// its connection is closed.
    #[arg(long, default_value = "10s", value_parser = mesh_core::values::parse_duration)]
    pub(crate) body_read_timeout: Duration,
    /// Connections held open at once; more are closed on accept and logged (at most once
    /// per 10 s, with a count).
    #[arg(long, default_value_t = 512)]
    pub(crate) max_connections: usize,
}

/// Accepts on `listener` until SIGTERM or Ctrl-C, at most `max_connections` at once, each
/// handed to `handle` on a task of its own. `direction` names the server in logs and in the
/// `tcp_*` counters it keeps in `registry` (the one its admin endpoint serves).
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    direction: &'static str,
    max_connections: usize,
    registry: Registry,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    let config = accept::Config {
        direction,
        max_connections,
        registry,
        shutdown,
    };
    accept::serve(listener, config, handle).await;
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
