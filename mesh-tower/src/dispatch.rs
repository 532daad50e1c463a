//! What the outbound layers decide about a request, carried as one request extension.
//!
//! Each decision is attached by one layer and read by the layers below it: the route
//! ([`RouteTarget`], by [`RouteLayer`](crate::route::RouteLayer)), the metrics handle
//! ([`Sent`], by the outbound [`MetricsLayer`](crate::metrics::MetricsLayer)), the backend
//! ([`Backend`], by [`SplitLayer`](crate::split::SplitLayer)) and the endpoint ([`Endpoint`],
//! by [`BalanceLayer`](crate::balance::BalanceLayer)). They travel together because
//! `http::Extensions` boxes each type it holds, and a retried request copies every box per
//! attempt: one extension is one box (and one copy per attempt), where four were four.
//!
//! Read a decision with its type's `of` (`RouteTarget::of(req.extensions())`); attach one,
//! as a test standing in for a layer would, through [`Dispatch::get_mut`]:
//!
//! ```
//! use mesh_tower::discover::Endpoint;
//! use mesh_tower::dispatch::Dispatch;
//!
//! let mut req = http::Request::new(());
//! let to = Endpoint::new("10.0.0.1:8080".parse().unwrap());
//! Dispatch::get_mut(req.extensions_mut()).endpoint = Some(to.clone());
//! assert_eq!(Endpoint::of(req.extensions()), Some(&to));
//! ```

use http::Extensions;

use crate::discover::Endpoint;
use crate::metrics::Sent;
use crate::route::RouteTarget;
use crate::split::Backend;

/// See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Dispatch {
    /// The route the request matched and its weighted backends.
    pub target: Option<RouteTarget>,
    /// The handle through which the request is counted when it is sent.
    pub sent: Option<Sent>,
    /// The backend the split chose.
    pub backend: Option<Backend>,
    /// The endpoint the balancer chose.
    pub endpoint: Option<Endpoint>,
}

// === impl Dispatch ===

impl Dispatch {
    /// The decisions attached to a request so far, if any.
    pub fn get(extensions: &Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    /// The decisions attached to a request, attaching an empty set first if there is none.
    pub fn get_mut(extensions: &mut Extensions) -> &mut Self {
        extensions.get_or_insert_default::<Self>()
    }
}

// === impl RouteTarget, Sent, Backend, Endpoint ===

impl RouteTarget {
    /// The route decision attached to a request, if it was routed.
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        Dispatch::get(extensions)?.target.as_ref()
    }
}

impl Sent {
    /// The metrics handle attached to an outbound request, if a metrics layer is above.
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        Dispatch::get(extensions)?.sent.as_ref()
    }
}

impl Backend {
    /// The backend chosen for a request, if it was split.
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        Dispatch::get(extensions)?.backend.as_ref()
    }
}

impl Endpoint {
    /// The endpoint chosen for a request, if it was balanced.
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        Dispatch::get(extensions)?.endpoint.as_ref()
    }
}
