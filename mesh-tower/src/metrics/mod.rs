//! Golden metrics with Linkerd's names and labels, through the `metrics` facade.
//!
//! [`Registry`] is a `metrics::Recorder` that keeps counters and gauges as atomics and
//! histograms as real fixed-bucket histograms (Linkerd's latency bounds for `*_latency_ms`), and
//! renders the Prometheus text format. It keeps no raw samples, so memory does not grow with
//! load. Handles are resolved once per label set and cached, so the per-request cost is a hash
//! lookup and a few atomic adds.
//!
//! Memory does not grow with what clients send either: each metric family holds at most
//! [`Registry::series_limit`] label sets (default [`DEFAULT_SERIES_LIMIT`]). Past that, a new
//! label set records into an overflow series of the family whose labels read `other` (all but
//! the few whose values are a fixed enumeration: `direction`, `tls`, `no_tls_reason`,
//! `classification`, `peer`), and [`SERIES_DROPPED`]`{family}` counts each registration
//! that was folded: once the layers' own bounded caches are full too, that is about one per
//! request (or connection) recorded into `other`.
//!
//! [`MetricsLayer`] records `request_total`, `response_total` (with `status_code` and
//! `classification`), `response_latency_ms`; and per route `route_request_total`,
//! `route_response_total`, `route_response_latency_ms` labelled `dst` and `rt_route`. Labels:
//! `direction`, `tls` (`true`, or `no_identity` with `no_tls_reason`), `server_id` (outbound) /
//! `client_id` (inbound) in Linkerd's DNS form; outbound `authority`, `target_addr`,
//! `dst_service`, `dst_namespace`; inbound `target_addr` (the port the request arrived at),
//! `srv_kind`/`srv_name` (the Server or default policy that admitted it) and
//! `route_kind`/`route_name` (its inbound route). Inbound series are never keyed by the
//! client's `Host`: a client chooses that freely.
//!
//! [`Registry::track_cert_expiry`] keeps Linkerd's [`CERT_EXPIRY`] gauge at the workload
//! certificate's `notAfter` through every rotation.
//!
//! # When each is recorded
//!
//! As in Linkerd's proxy:
//!
//! - `request_total` when the request is sent, so a request whose response never comes is
//!   counted. Inbound, every label is known when the layer is called, and it counts then.
//!   Outbound, `target_addr`, `server_id` and `dst_*` name the endpoint and backend, which only
//!   the balancer below knows. Linkerd counts in its per-endpoint stack; ours is one stack with
//!   the balancer at the bottom, so the layer puts a [`Sent`] handle in the request's
//!   extensions and the balancer records through it once it has chosen (attempts share it:
//!   a retried request counts once, with its first endpoint). A request answered before any
//!   endpoint is chosen (a redirect filter, no endpoints) is counted when that answer comes,
//!   with the labels known then. This keeps the label sets users saw before.
//! - `response_latency_ms` at the response headers.
//! - `response_total` and its classification at the end of the response stream: the body's
//!   end, its trailers (a gRPC `grpc-status` there decides), or its error (always a failure).
//!   A trailers-only gRPC response carries its status in the headers. Route response classes
//!   (`responseClasses`) decide for HTTP statuses; otherwise a 5xx, or a `grpc-status` that
//!   linkerd2-proxy counts as a failure ([`mesh_core::classify::GRPC_FAILURES`]: 2, 4, 13, 14,
//!   15), is a failure. A stream that carried a gRPC status adds `grpc_status`; one that ended in
//!   an error adds `error` with Linkerd's values (`timeout`, `h2(<reason>)` for a reset
//!   stream, `unclassified` for anything else, such as an HTTP/1 body cut short). A body
//!   dropped before its end (the client went away) is classified as Linkerd does, by what was
//!   known when it was dropped: its status and any `grpc-status` in its headers.
//! - An error in place of a response (a timeout, a failed connect) is counted at once, with
//!   the status the mesh answers it with and, when it is a failure, `error`.
//!
//! ```
//! use mesh_tower::metrics::Registry;
//! use metrics::Recorder;
//!
//! let registry = Registry::new();
//! let key = metrics::Key::from_parts("request_total", vec![metrics::Label::new("direction", "inbound")]);
//! let meta = metrics::Metadata::new("mesh", metrics::Level::INFO, None);
//! registry.register_counter(&key, &meta).increment(2);
//! assert!(registry.render().contains("request_total{direction=\"inbound\"} 2"));
//! ```

mod body;
mod bounded;
mod cert;
mod classify;
mod layer;
mod registry;
mod render;
mod series;

pub use body::ResponseBody;
pub(crate) use bounded::BoundedMap;
pub use cert::CERT_EXPIRY;
pub(crate) use classify::grpc_status;
pub use layer::{Metrics, MetricsLayer, ResponseFuture, Sent, TargetAddr};
pub use registry::{Registry, authz_labels, server_labels};

/// Linkerd's latency histogram bounds, in milliseconds.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Bounds for other histograms.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How many label sets a metric family holds before new ones are folded into `other`, and
/// how many values each intern table keeps.
pub const DEFAULT_SERIES_LIMIT: usize = 10_000;

/// The counter of label sets folded into a family's overflow series, labelled `family`.
pub const SERIES_DROPPED: &str = "metrics_series_dropped_total";

/// The value an overflow series' labels read.
pub const OVERFLOW: &str = "other";

/// Which way a request travels through this workload. Serialized as its label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Into the workload.
    Inbound,
    /// Out of the workload.
    Outbound,
}

// === impl Direction ===

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}
