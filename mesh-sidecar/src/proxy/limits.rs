//! What the proxy lets untrusted clients make it hold: series, connections, admin time.

use std::time::Duration;

use clap::Args;
use mesh_tower::pool::{PoolConfig, PoolMetrics};

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
    /// HTTP/1 connections open to each application address at once, shared by every client
    /// connection (HTTP/2 to the application is one multiplexed connection); with several
    /// workers, each pools its own and gets an equal share.
    #[arg(
        long,
        env = "MESH_PROXY_INBOUND_APP_MAX_CONNECTIONS",
        default_value_t = 1000
    )]
    pub(crate) inbound_app_max_connections: usize,
    /// Requests that may wait for an application connection once the cap is reached; more
    /// are answered 503 and counted (with several workers, each gets an equal share).
    #[arg(
        long,
        env = "MESH_PROXY_INBOUND_APP_QUEUE_DEPTH",
        default_value_t = 1000
    )]
    pub(crate) inbound_app_queue_depth: usize,
    /// How long a queued request waits for an application connection before a 503.
    #[arg(long, env = "MESH_PROXY_INBOUND_APP_QUEUE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub(crate) inbound_app_queue_timeout: Duration,
    /// How long an idle connection to the application is kept for reuse.
    #[arg(long, env = "MESH_PROXY_INBOUND_APP_IDLE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub(crate) inbound_app_idle_timeout: Duration,
    /// How long an idle connection to an outbound endpoint is kept for reuse.
    #[arg(long, env = "MESH_PROXY_OUTBOUND_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub(crate) outbound_idle_timeout: Duration,
    /// Outbound endpoints that may hold idle connections at once; beyond it the least recently
    /// used one's are closed (counted in outbound_endpoint_connection_limit_total{outcome="evicted"}).
    #[arg(
        long,
        env = "MESH_PROXY_OUTBOUND_MAX_IDLE_ENDPOINTS",
        default_value_t = 1000
    )]
    pub(crate) outbound_max_idle_endpoints: usize,
}

impl LimitArgs {
    /// The bounds on one worker's connections to the application: its share of the cap and
    /// of the queue, so that all `workers` together stay within them.
    pub(crate) fn app_pool(&self, workers: usize) -> PoolConfig {
        PoolConfig {
            max_connections: share(self.inbound_app_max_connections, workers),
            queue_depth: share(self.inbound_app_queue_depth, workers),
            queue_timeout: self.inbound_app_queue_timeout,
            idle_timeout: self.inbound_app_idle_timeout,
            // One application per pod: its few ports.
            max_idle_addresses: 64,
        }
    }

    /// The bounds on one worker's connections to outbound endpoints (each worker has its own
    /// client): its share of the cap per endpoint. The outbound proxy forwards for the pod's
    /// own application, so no queue per endpoint beyond the listener's.
    pub(crate) fn outbound_pool(&self, workers: usize) -> PoolConfig {
        PoolConfig {
            max_connections: share(self.outbound_max_connections, workers),
            queue_depth: 0,
            queue_timeout: Duration::ZERO,
            idle_timeout: self.outbound_idle_timeout,
            max_idle_addresses: self.outbound_max_idle_endpoints,
        }
    }

    /// The connection limit of `listener`.
    pub(crate) fn max_connections(&self, listener: Listener) -> usize {
        match listener {
            Listener::Inbound => self.inbound_max_connections,
            Listener::Outbound => self.outbound_max_connections,
            Listener::Admin => self.admin_max_connections,
        }
    }
}

/// One worker's share of a bound all `workers` keep together (at least one each); one worker
/// keeps the flag exactly as given.
fn share(total: usize, workers: usize) -> usize {
    if workers > 1 {
        (total / workers).max(1)
    } else {
        total
    }
}

/// Counters for the bounds on outbound endpoint connections.
pub(crate) fn outbound_pool_metrics(registry: &mesh_tower::metrics::Registry) -> PoolMetrics {
    registry.describe(
        "outbound_endpoint_connection_limit_total",
        "Times a bound on connections to outbound endpoints was hit: a request refused at an endpoint's connection cap (outcome=\"refused\"), or an endpoint's idle connections closed to bound the endpoints holding idle ones (outcome=\"evicted\").",
    );
    let counter = |outcome: &'static str| {
        registry.counter(
            "outbound_endpoint_connection_limit_total",
            vec![metrics::Label::new("outcome", outcome)],
        )
    };
    PoolMetrics {
        queued: counter("queued"),
        refused: counter("refused"),
        evicted: counter("evicted"),
    }
}
