//! What the inbound layers know about a request, carried as one request extension.
//!
//! The server that accepted the connection attaches who is calling ([`ClientInfo`]), which
//! workload port it arrived at (`Arc<`[`InboundTarget`]`>`) and at what address
//! ([`TargetAddr`]); [`AuthorizeLayer`](crate::authz::AuthorizeLayer) adds what admitted it
//! ([`Authorized`]). They travel together because `http::Extensions` boxes each type it holds:
//! the connection's part is made once and cloned into each request as one box (reference
//! counts, no copies), and the authorization fills in a field of it.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_tower::accepted::Accepted;
//! use mesh_tower::authz::ClientInfo;
//! use mesh_tower::server::local_target;
//!
//! let conn = Accepted {
//!     client: Some(ClientInfo { identity: None, addr: "10.0.0.9:40000".parse().unwrap() }),
//!     target: Some(Arc::new(local_target("shop", 8080, &[("app", "web")]))),
//!     ..Accepted::default()
//! };
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(conn.clone());
//! assert_eq!(ClientInfo::of(req.extensions()), conn.client.as_ref());
//! ```

use std::sync::Arc;

use http::Extensions;
use mesh_core::InboundTarget;

use crate::authz::{Authorized, ClientInfo};
use crate::metrics::TargetAddr;

/// See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Accepted {
    /// Who is calling, as the server saw the connection.
    pub client: Option<ClientInfo>,
    /// The workload port the connection arrived at.
    pub target: Option<Arc<InboundTarget>>,
    /// The address the connection arrived at, for the `target_addr` label.
    pub target_addr: Option<TargetAddr>,
    /// What admitted the request, once authorized.
    pub authorized: Option<Authorized>,
}

// === impl Accepted ===

impl Accepted {
    /// What is attached to a request, if anything.
    pub fn get(extensions: &Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    /// What is attached to a request, attaching an empty set first if there is none.
    pub fn get_mut(extensions: &mut Extensions) -> &mut Self {
        extensions.get_or_insert_default::<Self>()
    }

    /// The workload port a request arrived at, if the server said.
    pub fn target_of(extensions: &Extensions) -> Option<&Arc<InboundTarget>> {
        Self::get(extensions)?.target.as_ref()
    }
}

// === impl ClientInfo, Authorized, TargetAddr ===

impl ClientInfo {
    /// Who is calling, if the server said.
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        Accepted::get(extensions)?.client.as_ref()
    }
}

impl Authorized {
    /// What admitted a request, if it was authorized.
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        Accepted::get(extensions)?.authorized.as_ref()
    }
}

impl TargetAddr {
    /// The address a request's connection arrived at, if the server said.
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        Accepted::get(extensions)?.target_addr.as_ref()
    }
}
