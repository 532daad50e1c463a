//! Fault injection in the filter layer: the faults of a request's rule drawn with fresh
//! randomness ([`mesh_core::filter::fault::Fault::decide`] is the decision), counted, and a
//! delayed request held before it is forwarded or aborted.
//!
//! The delay is a timer inside the request's future: dropping the future (the client went
//! away, the route's request timeout fired above this layer) cancels it, and nothing was sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use mesh_core::filter::fault::{AbortStatus, Fault, Injected};
use metrics::Label;
use tower_service::Service;

use super::{ResponseFuture, Shared};
use crate::BoxError;
use crate::errors::FaultAborted;
use crate::metrics::Registry;

/// The counter of faults injected, labelled with the route (`direction`, and `dst` and
/// `rt_route` outbound, `route_name` inbound) and `fault` (`abort` or `delay`).
pub const FAULT_TOTAL: &str = "route_fault_injected_total";

/// A response the filter layer produces later than its call: an answer of its own, or a
/// forward after a delay.
pub(super) type Later<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// What the faults of one request's rule do to it, each drawn independently: the first
/// abort drawn, and the delays drawn one after another (as filters in a row would hold it).
pub(super) fn draw(faults: &[&Fault]) -> Injected {
    let mut out = Injected::default();
    for f in faults {
        let i = f.decide(fastrand::u64(..), fastrand::u64(..));
        out.abort = out.abort.or(i.abort);
        out.delay = match (out.delay, i.delay) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
    }
    out
}

/// Counts what was injected into a request of the route `labels` names.
pub(super) fn count(registry: &Registry, labels: Vec<Label>, injected: &Injected) {
    let kinds = [
        ("abort", injected.abort.is_some()),
        ("delay", injected.delay.is_some()),
    ];
    for (fault, _) in kinds.into_iter().filter(|(_, hit)| *hit) {
        let mut labels = labels.clone();
        labels.push(Label::new("fault", fault));
        registry.counter(FAULT_TOTAL, labels).increment(1);
    }
}

/// An error answered later, as a [`Later`].
pub(super) fn answer<T: Send + 'static>(err: impl Into<BoxError>) -> Later<T> {
    Box::pin(std::future::ready(Err(err.into())))
}

/// Waits `delay`, then aborts with `abort` or forwards `req` to `ready` (a service that was
/// polled ready) with the response header `edits`.
pub(super) fn delayed<S, Q, RB>(
    delay: Duration,
    abort: Option<AbortStatus>,
    ready: &mut S,
    req: Request<Q>,
    edits: Vec<mesh_core::filter::HeaderModifier>,
    shared: &Arc<Shared>,
) -> Later<Response<RB>>
where
    S: Service<Request<Q>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Q: Send + 'static,
    RB: Send + 'static,
{
    // The service polled ready goes with the request; a clone takes its place.
    let clone = ready.clone();
    let mut inner = std::mem::replace(ready, clone);
    let shared = Arc::clone(shared);
    Box::pin(async move {
        tokio::time::sleep(delay).await;
        if let Some(a) = abort {
            return Err(FaultAborted(a).into());
        }
        ResponseFuture {
            inner: inner.call(req),
            edits,
            shared,
        }
        .await
    })
}
