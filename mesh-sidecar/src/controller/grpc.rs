//! The controller's three gRPC services over mesh mTLS.
//!
//! Each call becomes a stream registered with the index thread, which sends its messages
//! into a bounded channel that the response streams from: the index thread never waits for a
//! slow client, and a client that lets [`STREAM_BUFFER`] messages pile up has its stream ended
//! (counted in `controller_streams_cut_total{api}`); it reconnects and gets the whole current
//! state as its first message, as after any disconnect.
//! Served with hyper's HTTP/2 server over our own rustls accept; the caller's identity,
//! read from its client certificate, travels to the services as a request extension.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::Sender;

use tokio::sync::mpsc::error::TrySendError;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mesh_api::v1::destination_server::{Destination, DestinationServer};
use mesh_api::v1::inbound_policies_server::{InboundPolicies, InboundPoliciesServer};
use mesh_api::v1::outbound_policies_server::{OutboundPolicies, OutboundPoliciesServer};
use mesh_api::v1::{
    EndpointUpdate, InboundPolicy, OutboundPolicy, OutboundTarget, ServiceRef, WorkloadRef,
    outbound_target,
};
use mesh_core::Identity;
use mesh_identity::PeerIdentity;
use mesh_tower::BoxError;
use mesh_tower::metrics::Registry;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tower::Service;

use super::index::{Input, Target, Tx, Watch};

/// Which API a stream belongs to: the `api` label of the controller's metrics.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Api {
    Destination,
    Outbound,
    Inbound,
}

/// Counts what is sent: `controller_updates_sent_total{api}`,
/// `controller_update_bytes_total{api}` (protobuf bytes), and `controller_clients{api}`.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    registry: Registry,
}

/// The three services: each call opens a stream in the index thread.
#[derive(Clone, Debug)]
pub(crate) struct Services {
    input: Sender<Input>,
}

/// The verified identity of the client, from its certificate.
#[derive(Clone, Debug)]
struct Caller(Identity);

type Stream<M> = ReceiverStream<Result<M, Status>>;

/// Messages one stream may hold unread before it is ended.
pub(crate) const STREAM_BUFFER: usize = 256;

// === impl Api ===

impl Api {
    fn label(self) -> &'static str {
        match self {
            Self::Destination => "destination",
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

// === impl Sent ===

impl Sent {
    pub(crate) fn new(registry: Registry) -> Self {
        registry.describe("controller_clients", "Streams open, per API.");
        registry.describe(
            "controller_updates_sent_total",
            "Messages sent to clients, per API.",
        );
        registry.describe(
            "controller_update_bytes_total",
            "Protobuf bytes of the messages sent to clients, per API.",
        );
        registry.describe(
            "controller_streams_cut_total",
            "Streams ended because their client did not read them, per API.",
        );
        Self { registry }
    }

    /// Sends one message on a stream and counts it; a closed stream is forgotten later. A
    /// stream whose client reads too slowly to take it is ended here (see the module docs).
    pub(crate) fn send<M: prost::Message>(&self, tx: &mut Tx<M>, api: Api, msg: M) {
        let bytes = msg.encoded_len() as u64;
        let labels = || vec![metrics::Label::new("api", api.label())];
        match tx.try_send(Ok(msg)) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(_)) => {
                *tx = super::index::closed();
                self.registry
                    .counter("controller_streams_cut_total", labels())
                    .increment(1);
                return;
            }
        }
        self.registry
            .counter("controller_updates_sent_total", labels())
            .increment(1);
        self.registry
            .counter("controller_update_bytes_total", labels())
            .increment(bytes);
    }

    pub(crate) fn clients(&self, api: Api, n: usize) {
        let labels = vec![metrics::Label::new("api", api.label())];
        (self.registry.gauge("controller_clients", labels)).set(n as f64);
    }
}

// === impl Services ===

impl Services {
    pub(crate) fn new(input: Sender<Input>) -> Self {
        Self { input }
    }

    fn open<M>(&self, watch: impl FnOnce(Tx<M>) -> Watch) -> Result<Response<Stream<M>>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        (self.input.send(Input::Watch(watch(tx))))
            .map_err(|_| Status::unavailable("the controller's index has stopped"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::codegen::async_trait]
impl Destination for Services {
    type GetStream = Stream<EndpointUpdate>;

    async fn get(&self, req: Request<ServiceRef>) -> Result<Response<Self::GetStream>, Status> {
        let ServiceRef { namespace, name } = req.into_inner();
        named(&namespace, &name)?;
        self.open(|tx| Watch::Destination {
            service: (namespace, name),
            tx,
        })
    }
}

#[tonic::codegen::async_trait]
impl OutboundPolicies for Services {
    type WatchStream = Stream<OutboundPolicy>;

    /// `source_namespace` needs nothing here: the objects sent hold every route of the
    /// Service, consumer routes of every namespace included, and the client's compile picks
    /// those of its own namespace, as `mesh policy explain` does.
    async fn watch(
        &self,
        req: Request<OutboundTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let target = match req.into_inner().target {
            Some(outbound_target::Target::Service(s)) => {
                named(&s.namespace, &s.name)?;
                Target::Service(s.namespace, s.name)
            }
            Some(outbound_target::Target::Address(a)) => {
                let ip: IpAddr = (a.ip.parse()).map_err(|_| {
                    Status::invalid_argument(format!("not an IP address: {}", a.ip))
                })?;
                let port = u16::try_from(a.port)
                    .map_err(|_| Status::invalid_argument(format!("not a port: {}", a.port)))?;
                Target::Address(SocketAddr::new(ip, port))
            }
            None => {
                return Err(Status::invalid_argument(
                    "no target: a Service or an address",
                ));
            }
        };
        self.open(|tx| Watch::Outbound { target, tx })
    }
}

#[tonic::codegen::async_trait]
impl InboundPolicies for Services {
    type WatchStream = Stream<InboundPolicy>;

    async fn watch(
        &self,
        req: Request<WorkloadRef>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let Some(Caller(caller)) = req.extensions().get::<Caller>().cloned() else {
            return Err(Status::unauthenticated(
                "no client certificate with a mesh identity",
            ));
        };
        let WorkloadRef { namespace, pod } = req.into_inner();
        named(&namespace, &pod)?;
        self.open(|tx| Watch::Inbound {
            namespace,
            pod,
            caller,
            tx,
        })
    }
}

fn named(namespace: &str, name: &str) -> Result<(), Status> {
    if namespace.is_empty() || name.is_empty() {
        return Err(Status::invalid_argument(
            "a namespace and a name are required",
        ));
    }
    Ok(())
}

/// Serves one accepted connection: mTLS handshake, then gRPC over HTTP/2.
pub(crate) async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    services: Services,
) -> Result<(), BoxError> {
    let tls = tokio::time::timeout(super::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
    let caller = tls.get_ref().1.peer_identity().map(Caller);
    let destination = DestinationServer::new(services.clone());
    let outbound = OutboundPoliciesServer::new(services.clone());
    let inbound = InboundPoliciesServer::new(services);
    let caller = Arc::new(caller);
    let svc = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        if let Some(c) = caller.as_ref() {
            req.extensions_mut().insert(c.clone());
        }
        let (mut d, mut o, mut i) = (destination.clone(), outbound.clone(), inbound.clone());
        async move {
            let path = req.uri().path();
            let rsp: Result<http::Response<tonic::body::Body>, Infallible> =
                if path.starts_with("/mesh.controller.v1.Destination/") {
                    d.call(req).await
                } else if path.starts_with("/mesh.controller.v1.OutboundPolicies/") {
                    o.call(req).await
                } else if path.starts_with("/mesh.controller.v1.InboundPolicies/") {
                    i.call(req).await
                } else {
                    Ok(Status::unimplemented(format!("no such method: {path}")).into_http())
                };
            rsp
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_its_client_does_not_read_is_ended_not_grown() {
        let registry = Registry::new();
        let sent = Sent::new(registry.clone());
        let (mut tx, mut rx) = tokio::sync::mpsc::channel(2);
        for _ in 0..3 {
            sent.send(&mut tx, Api::Inbound, InboundPolicy::default());
        }
        // Two were queued; the third found the buffer full and ended the stream.
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        assert!(tx.is_closed(), "the stream is let go");
        assert_eq!(
            registry.counter_value("controller_streams_cut_total", &[("api", "inbound")]),
            Some(1)
        );
    }
}
