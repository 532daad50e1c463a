//! The thread that owns the controller's [`PolicyIndex`] and every client stream.
//!
//! Watcher events and new client streams arrive on one channel, so a stream's first message
//! and every later one are computed from the same index, in order. After each burst of events
//! only the streams whose Service or namespace the index reports changed are looked at, and a
//! stream gets a message only when what it would receive differs from what it last got. An
//! endpoint change reaches only the Destination streams of that Service, as add/remove diffs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mesh_api::v1::{
    Endpoint, EndpointUpdate, Endpoints, InboundPolicy, NoEndpoints, NotFound, Object,
    OutboundPolicy, PodAddress, Port, ServiceRef, Unknown, endpoint_update, outbound_policy,
};
use mesh_core::destination::{Destination as Found, PodEndpoint};
use mesh_core::{Changes, Identity, MeshPolicy, ObjectRef, PolicyIndex};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tonic::Status;

use super::grpc::Api;
use super::status::Work;
use crate::kube_watch::{Applier, Driver, Observer, Op, Refusal};

/// What the index thread is told: watcher events and new client streams.
// Nearly every message is a watch event: boxing it to shrink the rare stream opening would
// cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Input {
    Kube(Op),
    Watch(Watch),
}

/// Where a stream's messages go.
pub(crate) type Tx<T> = tokio::sync::mpsc::Sender<Result<T, Status>>;

/// A client stream opening.
#[derive(Debug)]
pub(crate) enum Watch {
    Outbound {
        target: Target,
        tx: Tx<OutboundPolicy>,
    },
    /// Admitted only if `caller` is the pod's service account in the pod's namespace.
    Inbound {
        namespace: String,
        pod: String,
        caller: Identity,
        tx: Tx<InboundPolicy>,
    },
    Destination {
        service: (String, String),
        tx: Tx<EndpointUpdate>,
    },
}

/// What an outbound stream asks about.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// (namespace, name).
    Service(String, String),
    Address(SocketAddr),
}

/// The accepted version of each object, as JSON: what clients are sent. A refused object
/// keeps its last accepted version here, as in the index. Status work goes to the writer.
#[derive(Debug, Default)]
pub(crate) struct Documents {
    docs: HashMap<ObjectRef, Arc<[u8]>>,
    status: Option<UnboundedSender<Work>>,
}

/// The open streams and what each last got.
pub(crate) struct Hub {
    outbound: Vec<Stream<Target, OutboundPolicy, OutboundPolicy>>,
    inbound: Vec<Stream<InboundWatch, InboundPolicy, InboundPolicy>>,
    destination: Vec<Stream<(String, String), EndpointSet, EndpointUpdate>>,
    sent: super::grpc::Sent,
    /// Set once every kind is listed: `/ready`.
    ready: Arc<AtomicBool>,
}

/// One stream: what it watches, what it was last sent (its state), where it goes.
struct Stream<K, L, M> {
    key: K,
    last: Option<L>,
    tx: Tx<M>,
}

#[derive(Debug)]
struct InboundWatch {
    namespace: String,
    pod: String,
    caller: Identity,
}

/// An endpoint as the API matches it on removal: address and ports.
type EndpointKey = (String, Vec<(String, u32)>);

/// A Service's endpoints as a Destination stream was last sent them.
type EndpointSet = BTreeMap<EndpointKey, Endpoint>;

// === impl Input ===

impl From<Op> for Input {
    fn from(op: Op) -> Self {
        Self::Kube(op)
    }
}

// === impl Documents ===

impl Documents {
    pub(crate) fn new(status: Option<UnboundedSender<Work>>) -> Self {
        Self {
            docs: HashMap::new(),
            status,
        }
    }

    fn objects(&self, refs: impl IntoIterator<Item = ObjectRef>) -> Vec<Object> {
        refs.into_iter()
            .filter_map(|r| {
                let json = self.docs.get(&r)?.to_vec();
                Some(Object {
                    group: r.group,
                    kind: r.kind,
                    namespace: r.namespace,
                    name: r.name,
                    json,
                })
            })
            .collect()
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let r = ObjectRef {
            group: String::new(),
            kind: "Pod".to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        serde_json::from_slice(self.docs.get(&r)?).ok()
    }

    fn work(&self, work: Option<Work>) {
        if let (Some(tx), Some(work)) = (&self.status, work) {
            // The writer ends only with the process.
            let _ = tx.send(work);
        }
    }
}

impl Observer for Documents {
    fn accepted(&mut self, r: &ObjectRef, doc: &Value, status: Option<&Value>) {
        // Serialising a `Value` cannot fail.
        let json = serde_json::to_vec(doc).unwrap_or_default();
        self.docs.insert(r.clone(), json.into());
        self.work(Work::accepted(r, doc, status));
    }

    fn refused(&mut self, r: &ObjectRef, doc: &Value, refusal: Refusal<'_>) {
        self.work(Some(Work::refused(r, doc, refusal)));
    }

    fn deleted(&mut self, r: &ObjectRef) {
        self.docs.remove(r);
    }
}

// === impl Hub ===

impl Driver<Documents, Input> for Hub {
    fn handle(&mut self, a: &mut Applier<Documents>, input: Input) {
        match input {
            Input::Kube(op) => a.handle(op),
            Input::Watch(w) => self.open(a, w),
        }
    }

    /// After a burst of events: what changed reaches the streams that watch it.
    fn publish(&mut self, a: &mut Applier<Documents>) {
        if !a.synced() {
            return;
        }
        self.ready.store(true, Ordering::Release);
        let changes = a.take_changes();
        self.push(a, &changes);
        self.count();
    }
}

impl Hub {
    pub(crate) fn new(sent: super::grpc::Sent, ready: Arc<AtomicBool>) -> Self {
        Self {
            outbound: Vec::new(),
            inbound: Vec::new(),
            destination: Vec::new(),
            sent,
            ready,
        }
    }

    /// A new stream: answered at once when the index holds a whole picture, else on the
    /// first publish.
    fn open(&mut self, a: &Applier<Documents>, w: Watch) {
        match w {
            Watch::Outbound { target, tx } => self.outbound.push(Stream {
                key: target,
                last: None,
                tx,
            }),
            Watch::Inbound {
                namespace,
                pod,
                caller,
                tx,
            } => self.inbound.push(Stream {
                key: InboundWatch {
                    namespace,
                    pod,
                    caller,
                },
                last: None,
                tx,
            }),
            Watch::Destination { service, tx } => self.destination.push(Stream {
                key: service,
                last: None,
                tx,
            }),
        }
        if a.synced() {
            self.push(a, &Changes::default());
        }
        self.count();
    }

    fn push(&mut self, a: &Applier<Documents>, changes: &Changes) {
        let (index, docs) = (&a.index, &a.observer);
        // Only address lookups need a snapshot; taking one clones Arcs.
        let by_address = self.outbound.iter().any(|s| {
            matches!(s.key, Target::Address(_)) && (s.last.is_none() || address_may_change(changes))
        });
        let snapshot = by_address.then(|| index.snapshot());
        for s in &mut self.outbound {
            let due = match &s.key {
                Target::Service(ns, name) => {
                    changes.services.contains(&(ns.clone(), name.clone()))
                        || carries_changed_service(s.last.as_ref(), changes)
                }
                Target::Address(_) => address_may_change(changes),
            };
            if s.last.is_some() && !due {
                continue;
            }
            let msg = outbound(index, docs, snapshot.as_ref(), &s.key);
            if s.last.as_ref() != Some(&msg) {
                self.sent.send(&mut s.tx, Api::Outbound, msg.clone());
                s.last = Some(msg);
            }
        }
        for s in &mut self.inbound {
            let w = &s.key;
            let due = changes.inbound_namespaces.contains(&w.namespace) || changes.workloads;
            if s.last.is_some() && !due {
                continue;
            }
            match inbound(index, docs, w) {
                Ok(None) => {}
                Ok(Some(msg)) => {
                    if s.last.as_ref() != Some(&msg) {
                        self.sent.send(&mut s.tx, Api::Inbound, msg.clone());
                        s.last = Some(msg);
                    }
                }
                Err(status) => {
                    // The stream ends: dropping the sender after the error closes it.
                    let _ = s.tx.try_send(Err(status));
                    s.last = Some(InboundPolicy::default());
                    s.tx = closed();
                }
            }
        }
        for s in &mut self.destination {
            let (ns, name) = &s.key;
            let due = changes.endpoints.contains(&s.key) || changes.services.contains(&s.key);
            if s.last.is_some() && !due {
                continue;
            }
            let now = endpoints(index, ns, name);
            for update in diff(index, &s.key, s.last.as_ref(), &now) {
                self.sent.send(&mut s.tx, Api::Destination, update);
            }
            s.last = Some(now);
        }
    }

    /// Forgets closed streams and sets `controller_clients{api}`.
    fn count(&mut self) {
        self.outbound.retain(|s| !s.tx.is_closed());
        self.inbound.retain(|s| !s.tx.is_closed());
        self.destination.retain(|s| !s.tx.is_closed());
        self.sent.clients(Api::Outbound, self.outbound.len());
        self.sent.clients(Api::Inbound, self.inbound.len());
        self.sent.clients(Api::Destination, self.destination.len());
    }
}

/// Whether the last message sent carried a Service (a backend) that changed since.
fn carries_changed_service(last: Option<&OutboundPolicy>, changes: &Changes) -> bool {
    (last.into_iter().flat_map(|m| &m.objects))
        .filter(|o| o.group.is_empty() && o.kind == "Service")
        .any(|o| {
            changes
                .services
                .contains(&(o.namespace.clone(), o.name.clone()))
        })
}

/// A Service's or an address's target may change with any Service or endpoint.
fn address_may_change(c: &Changes) -> bool {
    !c.services.is_empty() || !c.endpoints.is_empty()
}

/// A sender whose receiver is gone: the stream is forgotten at the next count.
pub(super) fn closed<T>() -> Tx<T> {
    tokio::sync::mpsc::channel(1).0
}

fn outbound(
    index: &PolicyIndex,
    docs: &Documents,
    snapshot: Option<&MeshPolicy>,
    target: &Target,
) -> OutboundPolicy {
    let service = |ns: &str, name: &str| {
        if index.service(name, ns).is_none() {
            return OutboundPolicy {
                target: Some(outbound_policy::Target::NotFound(NotFound {})),
                objects: Vec::new(),
            };
        }
        OutboundPolicy {
            target: Some(outbound_policy::Target::Service(ServiceRef {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })),
            objects: docs.objects(index.outbound_objects(ns, name)),
        }
    };
    let unknown = OutboundPolicy {
        target: Some(outbound_policy::Target::Unknown(Unknown {})),
        objects: Vec::new(),
    };
    match target {
        Target::Service(ns, name) => service(ns, name),
        Target::Address(addr) => match snapshot.map(|s| s.lookup_addr(*addr)) {
            Some(Found::Service { service: s, .. }) => service(s.namespace(), s.name()),
            Some(Found::Endpoint(pod)) => pod_address(pod, addr.port()),
            Some(Found::Unknown) | None => unknown,
        },
    }
}

/// A pod's address: who answers there, and the Service it is an endpoint of.
fn pod_address(pod: &PodEndpoint, port: u16) -> OutboundPolicy {
    let endpoint = Endpoint {
        ip: pod.ip.to_string(),
        ports: vec![Port {
            name: String::new(),
            port: u32::from(port),
        }],
        pod: pod.pod.clone().unwrap_or_default(),
        namespace: pod.namespace.clone(),
        service_account: pod.service_account.clone().unwrap_or_default(),
    };
    let service = ServiceRef {
        namespace: pod.namespace.clone(),
        name: pod.service.clone(),
    };
    OutboundPolicy {
        target: Some(outbound_policy::Target::Pod(PodAddress {
            service: Some(service),
            endpoint: Some(endpoint),
        })),
        objects: Vec::new(),
    }
}

/// The pod's own inbound policy; `None` until the pod is known; refused when the caller is
/// not the pod's service account.
fn inbound(
    index: &PolicyIndex,
    docs: &Documents,
    w: &InboundWatch,
) -> Result<Option<InboundPolicy>, Status> {
    let Some(pod) = docs.pod(&w.namespace, &w.pod) else {
        return Ok(None);
    };
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if w.caller.namespace() != w.namespace || w.caller.service_account() != account {
        return Err(Status::permission_denied(format!(
            "{} may read the inbound policy of its own pods only; pod {}/{} runs as {account}",
            w.caller, w.namespace, w.pod
        )));
    }
    let own = ObjectRef {
        group: String::new(),
        kind: "Pod".to_owned(),
        namespace: w.namespace.clone(),
        name: w.pod.clone(),
    };
    let mut refs: BTreeSet<ObjectRef> = index.inbound_objects(&w.namespace);
    refs.insert(own);
    Ok(Some(InboundPolicy {
        objects: docs.objects(refs),
    }))
}

/// A Service's ready endpoints, keyed as removals match them.
fn endpoints(index: &PolicyIndex, ns: &str, name: &str) -> EndpointSet {
    let mut out = BTreeMap::new();
    for set in index.service_endpoints(name, ns) {
        let ports: Vec<Port> = (set.ports.iter())
            .map(|(name, port)| Port {
                name: name.clone().unwrap_or_default(),
                port: u32::from(*port),
            })
            .collect();
        for a in &set.addresses {
            let e = Endpoint {
                ip: a.ip.to_string(),
                ports: ports.clone(),
                pod: a.pod.clone().unwrap_or_default(),
                namespace: set.namespace.clone(),
                service_account: a.service_account.clone().unwrap_or_default(),
            };
            let key = (
                e.ip.clone(),
                ports.iter().map(|p| (p.name.clone(), p.port)).collect(),
            );
            // The first slice that lists an address names it, as the address index does.
            out.entry(key).or_insert(e);
        }
    }
    out
}

/// What a Destination stream must be sent to go from `last` to `now`: the whole set first
/// (or `no_endpoints`), then removals and additions.
fn diff(
    index: &PolicyIndex,
    (ns, name): &(String, String),
    last: Option<&EndpointSet>,
    now: &EndpointSet,
) -> Vec<EndpointUpdate> {
    let update = |u| EndpointUpdate { update: Some(u) };
    let Some(last) = last else {
        if now.is_empty() {
            let exists = index.service(name, ns).is_some();
            return vec![update(endpoint_update::Update::NoEndpoints(NoEndpoints {
                exists,
            }))];
        }
        let endpoints = now.values().cloned().collect();
        return vec![update(endpoint_update::Update::Add(Endpoints {
            endpoints,
        }))];
    };
    let mut out = Vec::new();
    let removed: Vec<Endpoint> = (last.iter())
        .filter(|(k, _)| !now.contains_key(*k))
        .map(|(_, e)| e.clone())
        .collect();
    if !removed.is_empty() {
        let endpoints = Endpoints { endpoints: removed };
        out.push(update(endpoint_update::Update::Remove(endpoints)));
    }
    let added: Vec<Endpoint> = (now.iter())
        .filter(|(k, e)| last.get(*k) != Some(*e))
        .map(|(_, e)| e.clone())
        .collect();
    if !added.is_empty() {
        let endpoints = Endpoints { endpoints: added };
        out.push(update(endpoint_update::Update::Add(endpoints)));
    }
    out
}

#[cfg(test)]
mod tests {
    use mesh_core::PolicyConfig;
    use serde_json::json;

    use super::*;

    fn slice(name: &str, ips: &[&str]) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip]})).collect::<Vec<_>>(),
        })
    }

    fn kinds(updates: &[EndpointUpdate]) -> Vec<(&'static str, Vec<String>)> {
        let ips = |e: &Endpoints| e.endpoints.iter().map(|e| e.ip.clone()).collect();
        (updates.iter().filter_map(|u| u.update.as_ref()))
            .map(|u| match u {
                endpoint_update::Update::Add(e) => ("add", ips(e)),
                endpoint_update::Update::Remove(e) => ("remove", ips(e)),
                endpoint_update::Update::NoEndpoints(n) => ("none", vec![n.exists.to_string()]),
            })
            .collect()
    }

    #[test]
    fn destination_streams_get_the_whole_set_then_differences() {
        let mut index = PolicyIndex::new(PolicyConfig::default());
        let key = ("shop".to_owned(), "web".to_owned());
        let first = endpoints(&index, "shop", "web");
        assert_eq!(
            kinds(&diff(&index, &key, None, &first)),
            [("none", vec!["false".to_owned()])]
        );

        index
            .apply(&slice("a", &["10.0.0.1", "10.0.0.2"]))
            .expect("applies");
        let set = endpoints(&index, "shop", "web");
        let whole = diff(&index, &key, None, &set);
        assert_eq!(
            kinds(&whole),
            [("add", vec!["10.0.0.1".to_owned(), "10.0.0.2".to_owned()])]
        );

        index
            .apply(&slice("a", &["10.0.0.2", "10.0.0.3"]))
            .expect("applies");
        let now = endpoints(&index, "shop", "web");
        assert_eq!(
            kinds(&diff(&index, &key, Some(&set), &now)),
            [
                ("remove", vec!["10.0.0.1".to_owned()]),
                ("add", vec!["10.0.0.3".to_owned()])
            ]
        );
        assert!(diff(&index, &key, Some(&now), &now).is_empty());
    }
}
