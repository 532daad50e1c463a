//! What the proxy lets untrusted clients make it hold: series, connections, admin time.

use std::time::Duration;

use clap::Args;

use super::accept::Listener;
use super::parse_duration;

/// Bounds on what clients can make the proxy hold (flattened into `mesh proxy`'s flags).
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Label sets per metric family before new ones are folded into one `other` series
    /// (counted in metrics_series_dropped_total).
    #[arg(long, env = "MESH_PROXY_METRICS_SERIES_LIMIT", default_value_t = mesh_tower::metrics::DEFAULT_SERIES_LIMIT)]
    pub(crate) metrics_series_limit: usize,
    /// Connections the inbound listener holds open at once; more are refused and counted.
    #[arg(
        long,
        env = "MESH_PROXY_INBOUND_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub(crate) inbound_max_connections: usize,
    /// Connections the outbound listener holds open at once; more are refused and counted.
    #[arg(
        long,
        env = "MESH_PROXY_OUTBOUND_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub(crate) outbound_max_connections: usize,
    /// Connections the admin listener holds open at once; more are refused and counted.
    #[arg(long, env = "MESH_PROXY_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub(crate) admin_max_connections: usize,
    /// How long an admin client may take to send a request's headers, counted from when the
    /// connection is idle (opened, or its last response sent).
    #[arg(long, env = "MESH_PROXY_ADMIN_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub(crate) admin_header_read_timeout: Duration,
    /// How long an admin connection may pass no bytes either way before it is closed.
    #[arg(long, env = "MESH_PROXY_ADMIN_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub(crate) admin_idle_timeout: Duration,
}

impl LimitArgs {
    /// The connection limit of `listener`.
    pub(crate) fn max_connections(&self, listener: Listener) -> usize {
        match listener {
            Listener::Inbound => self.inbound_max_connections,
            Listener::Outbound => self.outbound_max_connections,
            Listener::Admin => self.admin_max_connections,
        }
    }
}
