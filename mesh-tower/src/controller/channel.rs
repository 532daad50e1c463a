//! The HTTP/2 connection to the controller, as a service tonic's generated clients call.
//!
//! It is [`Connect`]'s meshed path: mutual TLS proving the controller's identity, one HTTP/2
//! connection reused by every stream and re-dialed when it closes. A second TLS client here
//! would be a second place to get identity checks wrong.

use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::Identity;
use tower_service::Service;

use crate::BoxError;
use crate::connect::{Connect, ResponseFuture};
use crate::discover::Endpoint;

/// A gRPC channel to one controller address over mesh mTLS; cheap to clone (clones share the
/// connection).
#[derive(Clone, Debug)]
pub struct GrpcChannel {
    connect: Connect<tonic::body::Body>,
    controller: Endpoint,
}

// === impl GrpcChannel ===

impl GrpcChannel {
    /// A channel to `addr`, which must prove `identity`; `tls` is the workload's mesh client
    /// config (`mesh_identity::tls::client_config`).
    pub fn new(addr: std::net::SocketAddr, identity: Identity, tls: rustls::ClientConfig) -> Self {
        Self {
            connect: Connect::new(Some(tls)),
            controller: Endpoint::meshed(addr, identity),
        }
    }

    /// The origin (`https://addr`) generated clients put in front of their paths.
    pub fn origin(&self) -> http::Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = self.controller.addr.to_string().parse().ok();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        http::Uri::from_parts(parts).unwrap_or_default()
    }
}

impl Service<Request<tonic::body::Body>> for GrpcChannel {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connect.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        // gRPC is HTTP/2 end to end: without this, Connect would mark it as an HTTP/1 request
        // crossing the mesh.
        *req.version_mut() = http::Version::HTTP_2;
        crate::dispatch::Dispatch::get_mut(req.extensions_mut()).endpoint =
            Some(self.controller.clone());
        self.connect.call(req)
    }
}
