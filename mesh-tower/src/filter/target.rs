//! What the filter layer reads from the outbound route target and from an authorized inbound
//! request: their filters, where a request was addressed, and their metric labels.

use std::sync::Arc;

use http::Extensions;
use mesh_core::split::{BackendRef, Backends, WeightedBackend};
use metrics::Label;

use super::{
    FilterTarget, INBOUND_INVALID_TOTAL, INBOUND_REDIRECT_TOTAL, INVALID_TOTAL, REDIRECT_TOTAL,
};
use crate::authz::Authorized;
use crate::metrics::TargetAddr;
use crate::route::RouteTarget;

// === impl FilterTarget ===

impl FilterTarget for RouteTarget {
    const REDIRECT_TOTAL: &'static str = REDIRECT_TOTAL;
    const INVALID_TOTAL: &'static str = INVALID_TOTAL;

    fn of(extensions: &Extensions) -> Option<&Self> {
        Self::of(extensions)
    }

    fn filters(&self) -> &[mesh_core::filter::Filter] {
        self.route.as_deref().map_or(&[], |r| r.filters())
    }

    /// The authority the route layer resolved.
    fn addressed_to(&self, _: &Extensions) -> Option<(String, u16)> {
        let host = (self.authority.rsplit_once(':')).map_or(&*self.authority, |(h, _)| h);
        Some((host.to_owned(), self.port))
    }

    /// Only `backend`, and no route, so that the copy is neither retried nor timed out by the
    /// original's route (the mirror has its own timeout).
    fn mirror_target(&self, backend: &BackendRef) -> Option<RouteTarget> {
        Some(Self {
            route: None,
            backends: Arc::new(Backends::new(vec![WeightedBackend {
                backend: backend.clone(),
                weight: 1,
            }])),
            pod: None,
            ..self.clone()
        })
    }

    fn fault_labels(&self) -> Vec<Label> {
        vec![
            Label::new("direction", "outbound"),
            Label::new("dst", self.authority.to_string()),
            Label::new("rt_route", self.route_name().to_owned()),
        ]
    }
}

impl FilterTarget for Authorized {
    const REDIRECT_TOTAL: &'static str = INBOUND_REDIRECT_TOTAL;
    const INVALID_TOTAL: &'static str = INBOUND_INVALID_TOTAL;

    fn of(extensions: &Extensions) -> Option<&Self> {
        Self::of(extensions)
    }

    fn filters(&self) -> &[mesh_core::filter::Filter] {
        self.filters.as_deref().unwrap_or(&[])
    }

    /// The pod's address the connection arrived at, as Linkerd's inbound proxy names a
    /// request without an authority.
    fn addressed_to(&self, extensions: &Extensions) -> Option<(String, u16)> {
        let TargetAddr(addr) = TargetAddr::of(extensions)?;
        let host = match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Some((host, addr.port()))
    }

    /// A Server's routes never mirror: Linkerd ignores such a route inbound, and so does
    /// the policy compiler.
    fn mirror_target(&self, _: &BackendRef) -> Option<RouteTarget> {
        None
    }

    fn fault_labels(&self) -> Vec<Label> {
        let route = self.route.as_deref().map_or("default", |r| r.name.as_str());
        vec![
            Label::new("direction", "inbound"),
            Label::new("route_name", route.to_owned()),
        ]
    }
}
