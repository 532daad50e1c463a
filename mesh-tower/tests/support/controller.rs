//! An in-test `mesh controller`: the three gRPC services of `mesh-api`, served from data the
//! test sets, over mesh mTLS on a real socket. Each stream sends the current answer, then a
//! new one whenever the test changes the data (endpoints as add/remove diffs).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_api::v1;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

/// What the fake controller knows.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// Per Service (namespace, name): its outbound objects (JSON) and endpoints.
    pub services: BTreeMap<(String, String), (Vec<serde_json::Value>, Vec<v1::Endpoint>)>,
    /// Per address: the Service it belongs to.
    pub addresses: HashMap<SocketAddr, (String, String)>,
    /// The inbound objects of any pod that asks.
    pub inbound: Vec<serde_json::Value>,
    /// Refuse inbound policy (PERMISSION_DENIED), as for a caller that is not the pod.
    pub deny_inbound: bool,
}

/// A running fake controller. Dropping it (or [`FakeController::stop`]) closes the listener
/// and every connection, as a controller that went away.
pub struct FakeController {
    pub addr: SocketAddr,
    data: watch::Sender<Data>,
    tasks: JoinSet<()>,
}

#[derive(Clone)]
struct Svc {
    data: watch::Receiver<Data>,
}

impl FakeController {
    /// Serves on `addr` (`127.0.0.1:0` for any port) with `tls` (a mesh server config).
    pub async fn start(addr: SocketAddr, tls: rustls::ServerConfig, data: Data) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(data);
        let mut tls = tls;
        tls.alpn_protocols.push(b"h2".to_vec());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let svc = Svc { data: rx.clone() };
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = tower::service_fn(move |req| svc.clone().route(req));
                    let svc = hyper_util::service::TowerToHyperService::new(svc);
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            data: tx,
            tasks,
        }
    }

    /// Changes what the controller knows; every open stream gets the new answer.
    pub fn update(&self, f: impl FnOnce(&mut Data)) {
        self.data.send_modify(f);
    }

    /// Stops serving: the listener and every connection close.
    pub fn stop(mut self) -> Data {
        self.tasks.abort_all();
        self.data.borrow().clone()
    }
}

impl Svc {
    async fn route(
        self,
        req: Request<Incoming>,
    ) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible> {
        use tower::ServiceExt;
        let path = req.uri().path().to_owned();
        if path.starts_with("/mesh.controller.v1.Destination/") {
            v1::destination_server::DestinationServer::new(self)
                .oneshot(req)
                .await
        } else if path.starts_with("/mesh.controller.v1.OutboundPolicies/") {
            v1::outbound_policies_server::OutboundPoliciesServer::new(self)
                .oneshot(req)
                .await
        } else {
            v1::inbound_policies_server::InboundPoliciesServer::new(self)
                .oneshot(req)
                .await
        }
    }

    /// A stream that sends `answer(data)` now and each time the data changes it.
    fn stream<T: Send + 'static>(
        &self,
        mut answer: impl FnMut(&Data) -> Vec<T> + Send + 'static,
    ) -> ReceiverStream<Result<T, Status>> {
        let (tx, rx) = mpsc::channel(16);
        let mut data = self.data.clone();
        tokio::spawn(async move {
            loop {
                let msgs = answer(&data.borrow_and_update());
                for m in msgs {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = data.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

pub fn object(value: &serde_json::Value) -> v1::Object {
    let api = value["apiVersion"].as_str().unwrap_or_default();
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    v1::Object {
        group: group.to_owned(),
        kind: value["kind"].as_str().unwrap_or_default().to_owned(),
        namespace: value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name: value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        json: serde_json::to_vec(value).unwrap(),
    }
}

fn outbound_of(data: &Data, id: &(String, String)) -> v1::OutboundPolicy {
    use v1::outbound_policy::Target;
    match data.services.get(id) {
        Some((objects, _)) => v1::OutboundPolicy {
            target: Some(Target::Service(v1::ServiceRef {
                namespace: id.0.clone(),
                name: id.1.clone(),
            })),
            objects: objects.iter().map(object).collect(),
        },
        None => v1::OutboundPolicy {
            target: Some(Target::NotFound(v1::NotFound {})),
            objects: Vec::new(),
        },
    }
}

#[tonic::async_trait]
impl v1::outbound_policies_server::OutboundPolicies for Svc {
    type WatchStream = ReceiverStream<Result<v1::OutboundPolicy, Status>>;

    async fn watch(
        &self,
        req: tonic::Request<v1::OutboundTarget>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use v1::outbound_target::Target;
        let target = req.into_inner().target;
        let stream = self.stream(move |data| {
            let id = match &target {
                Some(Target::Service(s)) => (s.namespace.clone(), s.name.clone()),
                Some(Target::Address(a)) => {
                    let addr = SocketAddr::new(a.ip.parse().unwrap(), a.port as u16);
                    match data.addresses.get(&addr) {
                        Some(id) => id.clone(),
                        None => {
                            return vec![v1::OutboundPolicy {
                                target: Some(v1::outbound_policy::Target::Unknown(v1::Unknown {})),
                                objects: Vec::new(),
                            }];
                        }
                    }
                }
                None => return Vec::new(),
            };
            vec![outbound_of(data, &id)]
        });
        Ok(Response::new(stream))
    }
}

#[tonic::async_trait]
impl v1::destination_server::Destination for Svc {
    type GetStream = ReceiverStream<Result<v1::EndpointUpdate, Status>>;

    async fn get(
        &self,
        req: tonic::Request<v1::ServiceRef>,
    ) -> Result<Response<Self::GetStream>, Status> {
        use v1::endpoint_update::Update;
        let r = req.into_inner();
        let id = (r.namespace, r.name);
        let mut last: Option<Vec<v1::Endpoint>> = None;
        let stream = self.stream(move |data| {
            let now = data
                .services
                .get(&id)
                .map(|(_, eps)| eps.clone())
                .unwrap_or_default();
            let msg = |update| v1::EndpointUpdate {
                update: Some(update),
            };
            let out = match &last {
                None if now.is_empty() => vec![msg(Update::NoEndpoints(v1::NoEndpoints {
                    exists: data.services.contains_key(&id),
                }))],
                None => vec![msg(Update::Add(v1::Endpoints {
                    endpoints: now.clone(),
                }))],
                Some(before) => {
                    let removed: Vec<_> = before
                        .iter()
                        .filter(|e| !now.contains(e))
                        .cloned()
                        .collect();
                    let added: Vec<_> = now
                        .iter()
                        .filter(|e| !before.contains(e))
                        .cloned()
                        .collect();
                    let mut out = Vec::new();
                    if !removed.is_empty() {
                        out.push(msg(Update::Remove(v1::Endpoints { endpoints: removed })));
                    }
                    if !added.is_empty() {
                        out.push(msg(Update::Add(v1::Endpoints { endpoints: added })));
                    }
                    out
                }
            };
            last = Some(now);
            out
        });
        Ok(Response::new(stream))
    }
}

#[tonic::async_trait]
impl v1::inbound_policies_server::InboundPolicies for Svc {
    type WatchStream = ReceiverStream<Result<v1::InboundPolicy, Status>>;

    async fn watch(
        &self,
        req: tonic::Request<v1::WorkloadRef>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if self.data.borrow().deny_inbound {
            let pod = req.into_inner().pod;
            return Err(Status::permission_denied(format!(
                "the caller is not pod {pod}'s service account"
            )));
        }
        let stream = self.stream(|data| {
            vec![v1::InboundPolicy {
                objects: data.inbound.iter().map(object).collect(),
            }]
        });
        Ok(Response::new(stream))
    }
}
