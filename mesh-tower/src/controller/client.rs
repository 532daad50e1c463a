//! [`ControllerClient`]: lazy watches on the controller, merged into one local index.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_api::v1;
use mesh_api::v1::destination_client::DestinationClient;
use mesh_api::v1::inbound_policies_client::InboundPoliciesClient;
use mesh_api::v1::outbound_policies_client::OutboundPoliciesClient;
use mesh_core::{Changes, Identity, MeshPolicy, PolicyConfig};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::channel::GrpcChannel;
use super::state::{AddressTarget, ServiceId, State, StreamKey};
use super::{Backoff, Publish};
use crate::metrics::Registry;

/// How a [`ControllerClient`] reaches the controller and what it asks for.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The controller's address.
    pub addr: SocketAddr,
    /// The identity the controller must prove (`mesh/mesh-controller` by default).
    pub identity: Identity,
    /// The caller's namespace: consumer routes of that namespace apply to it.
    pub source_namespace: String,
    /// The caller's own pod (namespace, name), whose inbound policy it watches; none for a
    /// client that serves nothing.
    pub workload: Option<(String, String)>,
    /// How the objects received are compiled.
    pub policy: PolicyConfig,
    /// At most this many Services (and addresses) are watched; beyond it the one asked for
    /// least recently is dropped.
    pub max_watches: usize,
    /// How long a first request to a Service waits for the controller's first answer.
    pub first_answer: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

/// The client side of `mesh controller`: see the [module docs](super).
#[derive(Clone, Debug)]
pub struct ControllerClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ControllerConfig,
    channel: GrpcChannel,
    state: Mutex<State>,
    /// Open streams and when each was last asked for.
    streams: Mutex<HashMap<StreamKey, Watch>>,
    publish: Box<dyn Publish>,
    /// Bumped on every change, so waiters for a first answer wake.
    changed: watch::Sender<u64>,
    connected: AtomicBool,
    /// Some stream had an answer since the client started.
    ever_connected: AtomicBool,
    /// Why the inbound stream last failed (a controller refusing this pod's identity).
    inbound_error: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    registry: Registry,
}

#[derive(Debug)]
struct Watch {
    task: AbortHandle,
    used: Instant,
}

// === impl ControllerConfig ===

impl ControllerConfig {
    /// Defaults for a controller at `addr` proving `identity`: the caller in `default`, no
    /// workload, 1,000 watches, 2 s for a first answer, backoff from 100 ms to 10 s.
    pub fn new(addr: SocketAddr, identity: Identity) -> Self {
        Self {
            addr,
            identity,
            source_namespace: "default".to_owned(),
            workload: None,
            policy: PolicyConfig::default(),
            max_watches: 1000,
            first_answer: Duration::from_secs(2),
            backoff: Backoff::default(),
        }
    }
}

// === impl ControllerClient ===

impl ControllerClient {
    /// Starts a client: connects lazily (the first watch dials), watches its own workload's
    /// inbound policy if it has one, and hands every new snapshot to `publish`.
    ///
    /// Must be called within a Tokio runtime.
    pub fn start(
        config: ControllerConfig,
        tls: rustls::ClientConfig,
        publish: impl Publish,
        registry: Registry,
    ) -> Self {
        let channel = GrpcChannel::new(config.addr, config.identity.clone(), tls);
        let state = State::new(config.policy.clone());
        let this = Self {
            inner: Arc::new(Inner {
                config,
                channel,
                state: Mutex::new(state),
                streams: Mutex::new(HashMap::new()),
                publish: Box::new(publish),
                changed: watch::channel(0).0,
                connected: AtomicBool::new(false),
                ever_connected: AtomicBool::new(false),
                inbound_error: Mutex::new(None),
                last_error: Mutex::new(None),
                registry,
            }),
        };
        this.inner.gauge();
        if this.inner.config.workload.is_some() {
            this.inner.open(StreamKey::Inbound);
        }
        this
    }

    /// Watches a Service's outbound policy and endpoints (if not yet), and waits a bounded
    /// time for the controller's first answer. Returns whether it has answered; if not, the
    /// caller decides with what it has.
    pub async fn ensure(&self, namespace: &str, name: &str) -> bool {
        let id: ServiceId = (namespace.to_owned(), name.to_owned());
        let outbound = StreamKey::Outbound(id.clone());
        let endpoints = StreamKey::Endpoints(id);
        self.inner.open(outbound.clone());
        self.inner.open(endpoints.clone());
        self.wait(|state| state.answered(&endpoints) && state.answered_with_endpoints(&outbound))
            .await
    }

    /// What the controller says `addr` is (transparent mode), watching it if not yet and
    /// waiting a bounded time for a first answer; `None` when it has not answered.
    pub async fn ensure_addr(&self, addr: SocketAddr) -> Option<AddressTarget> {
        let key = StreamKey::Address(addr);
        self.inner.open(key.clone());
        let answered = self.wait(|state| state.answered_with_endpoints(&key)).await;
        let target = self.inner.state.lock().address(addr).cloned();
        if let Some(AddressTarget::Service(ns, name)) = &target {
            // A pod's Service may not be among the objects carried: its endpoints are what
            // names the pod.
            let key = StreamKey::Endpoints((ns.clone(), name.clone()));
            self.inner.open(key.clone());
            self.wait(|state| state.answered(&key)).await;
        }
        answered.then_some(target).flatten()
    }

    /// The current snapshot of everything received.
    pub fn snapshot(&self) -> MeshPolicy {
        self.inner.state.lock().snapshot()
    }

    /// Why the client is not ready, if it is not: the controller never answered yet
    /// ("controller not connected: …", with the last error), or its own inbound policy has
    /// not arrived ("no answer yet for …"). Empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.inner.ever_connected.load(Ordering::Acquire) {
            reasons.push(self.inner.not_connected());
        }
        if let Some((ns, pod)) = &self.inner.config.workload
            && !self.inner.state.lock().answered(&StreamKey::Inbound)
        {
            let why = self.inner.inbound_error.lock().clone();
            let why = why.map(|e| format!(": {e}")).unwrap_or_default();
            reasons.push(format!(
                "no answer yet for the inbound policy of pod {ns}/{pod}{why}"
            ));
        }
        reasons
    }

    /// Why the client serves old data, if it does: it had answers from the controller, lost
    /// it, and keeps serving the last data received while it reconnects.
    pub fn degraded(&self) -> Vec<String> {
        let inner = &self.inner;
        if inner.ever_connected.load(Ordering::Acquire) && !inner.connected.load(Ordering::Acquire)
        {
            vec![inner.not_connected()]
        } else {
            Vec::new()
        }
    }

    /// Waits until `done` holds or the first-answer bound passes. Returns whether it holds.
    async fn wait(&self, done: impl Fn(&State) -> bool) -> bool {
        let mut rx = self.inner.changed.subscribe();
        let deadline = Instant::now() + self.inner.config.first_answer;
        loop {
            if done(&self.inner.state.lock()) {
                return true;
            }
            if self.inner.known_down() {
                // No answer can come before a reconnect: decide now with what is known,
                // rather than hold every new destination for the whole bound.
                return false;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return done(&self.inner.state.lock()),
            }
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("addr", &self.config.addr)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in self.streams.get_mut().values() {
            w.task.abort();
        }
    }
}

// === impl Inner ===

impl Inner {
    /// Opens the stream `key` unless open; marks it used; drops the least recently used
    /// Service or address watch beyond the cap.
    fn open(self: &Arc<Self>, key: StreamKey) {
        let mut streams = self.streams.lock();
        if let Some(w) = streams.get_mut(&key) {
            w.used = Instant::now();
            return;
        }
        let inner = Arc::clone(self);
        let task = tokio::spawn(inner.run(key.clone())).abort_handle();
        streams.insert(
            key,
            Watch {
                task,
                used: Instant::now(),
            },
        );
        let lazy = |k: &StreamKey| !matches!(k, StreamKey::Inbound);
        let cap = self.config.max_watches.max(1);
        let mut dropped = Vec::new();
        // Outbound and Endpoints of one Service count as one watch.
        while streams.keys().filter(|k| lazy(k)).count() > cap * 2 {
            let Some(oldest) = (streams.iter())
                .filter(|(k, _)| lazy(k))
                .min_by_key(|(_, w)| w.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(w) = streams.remove(&oldest) {
                w.task.abort();
                dropped.push(oldest);
            }
        }
        // Under the streams lock, so that a dropped stream's last message (see `apply`)
        // cannot land after it is forgotten.
        for key in dropped {
            tracing::debug!(?key, "dropping the least recently used controller watch");
            let changes = self.state.lock().forget(&key);
            self.publish_changes(&changes);
        }
    }

    /// Applies what stream `key` received, unless its watch was dropped meanwhile: its task
    /// is aborted at its next await, and this runs between awaits.
    fn apply(&self, key: &StreamKey, f: impl FnOnce(&mut State) -> Changes) {
        let streams = self.streams.lock();
        if !streams.contains_key(key) {
            return;
        }
        let changes = f(&mut self.state.lock());
        self.publish_changes(&changes);
        drop(streams);
    }

    /// Keeps one stream open: (re)opens it, applies its messages, and on failure keeps what
    /// it carried and retries with backoff, until the watch is dropped.
    async fn run(self: Arc<Self>, key: StreamKey) {
        let mut backoff = self.config.backoff.clone();
        loop {
            self.state.lock().reopened(&key);
            let result = self.stream(&key).await;
            if self.state.lock().answered(&key) {
                // It worked for a while: the next failure starts from a short delay again.
                backoff.reset();
            }
            let (error, refused) = match result {
                Ok(()) => ("the controller ended the stream".to_owned(), false),
                Err(status) => (
                    format!("{}: {}", status.code(), status.message()),
                    is_refusal(status.code()),
                ),
            };
            if key == StreamKey::Inbound {
                *self.inbound_error.lock() = Some(error.clone());
            }
            if refused {
                // The controller answered, and said no: the connection is fine, and the
                // other streams are not affected.
                tracing::warn!(?key, %error, "the controller refused a watch; retrying");
                self.connected();
            } else {
                tracing::debug!(?key, %error, "controller stream ended; reopening");
                self.disconnected(error);
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One stream, from open to end. Ok means the server closed it cleanly.
    async fn stream(self: &Arc<Self>, key: &StreamKey) -> Result<(), tonic::Status> {
        let channel = self.channel.clone();
        let origin = channel.origin();
        let source_namespace = self.config.source_namespace.clone();
        match key {
            StreamKey::Outbound(_) | StreamKey::Address(_) => {
                let target = match key {
                    StreamKey::Address(addr) => {
                        v1::outbound_target::Target::Address(v1::SocketAddress {
                            ip: addr.ip().to_string(),
                            port: u32::from(addr.port()),
                        })
                    }
                    StreamKey::Outbound(id) | StreamKey::Endpoints(id) => {
                        v1::outbound_target::Target::Service(service_ref(id))
                    }
                    StreamKey::Inbound => return Ok(()),
                };
                let request = v1::OutboundTarget {
                    target: Some(target),
                    source_namespace,
                };
                let mut client = OutboundPoliciesClient::with_origin(channel, origin);
                let mut stream = client.watch(request).await?.into_inner();
                while let Some(msg) = stream.message().await? {
                    self.outbound(key, msg);
                }
            }
            StreamKey::Endpoints(id) => {
                let mut client = DestinationClient::with_origin(channel, origin);
                let mut stream = client.get(service_ref(id)).await?.into_inner();
                let mut first = true;
                while let Some(msg) = stream.message().await? {
                    self.connected();
                    if let Some(update) = msg.update {
                        self.apply(key, |state| state.endpoints(id, update, first));
                    }
                    first = false;
                }
            }
            StreamKey::Inbound => {
                let Some((namespace, pod)) = self.config.workload.clone() else {
                    return Ok(());
                };
                let mut client = InboundPoliciesClient::with_origin(channel, origin);
                let request = v1::WorkloadRef { namespace, pod };
                let mut stream = client.watch(request).await?.into_inner();
                while let Some(msg) = stream.message().await? {
                    self.connected();
                    self.apply(key, |state| state.carry(key, msg.objects));
                }
            }
        }
        Ok(())
    }

    /// One OutboundPolicies message: its objects, and for an address, what it is.
    fn outbound(self: &Arc<Self>, key: &StreamKey, msg: v1::OutboundPolicy) {
        use v1::outbound_policy::Target;
        self.connected();
        let services: Vec<StreamKey> = (msg.objects.iter())
            .filter(|o| o.group.is_empty() && o.kind == "Service")
            .map(|o| StreamKey::Endpoints((o.namespace.clone(), o.name.clone())))
            .collect();
        self.apply(key, |state| {
            if let StreamKey::Address(addr) = key {
                let target = match &msg.target {
                    Some(Target::Service(s)) => {
                        AddressTarget::Service(s.namespace.clone(), s.name.clone())
                    }
                    Some(Target::Pod(p)) => match &p.service {
                        Some(s) if !s.name.is_empty() => {
                            AddressTarget::Service(s.namespace.clone(), s.name.clone())
                        }
                        _ => AddressTarget::Pod,
                    },
                    Some(Target::Unknown(_) | Target::NotFound(_)) | None => AddressTarget::Unknown,
                };
                state.set_address(*addr, target);
            }
            state.carry(key, msg.objects)
        });
        // The Services carried are the target and the backends its routes and splits name:
        // the balancer needs the endpoints of each.
        for key in services {
            self.open(key);
        }
    }

    fn publish_changes(&self, changes: &Changes) {
        // Under the lock, so that two streams' snapshots are published in the order taken.
        let state = self.state.lock();
        let snapshot = state.snapshot();
        // Endpoints are keyed by Service port, so a Service that changed (or arrived after
        // its endpoints, as two streams may) has its endpoints keyed anew.
        let mut endpoints = changes.endpoints.clone();
        endpoints.extend(changes.services.iter().cloned());
        self.publish.publish(snapshot, &endpoints);
        drop(state);
        self.changed.send_modify(|v| *v += 1);
    }

    /// The last attempt failed and nothing has answered since.
    fn known_down(&self) -> bool {
        !self.connected.load(Ordering::Acquire) && self.last_error.lock().is_some()
    }

    fn not_connected(&self) -> String {
        let why = self.last_error.lock().clone();
        format!(
            "controller not connected: {}",
            why.as_deref().unwrap_or("connecting")
        )
    }

    fn connected(&self) {
        self.ever_connected.store(true, Ordering::Release);
        if !self.connected.swap(true, Ordering::AcqRel) {
            if self.last_error.lock().is_some() {
                self.registry
                    .counter("controller_reconnects_total", Vec::new())
                    .increment(1);
                tracing::info!(addr = %self.config.addr, "reconnected to the controller");
            }
            self.gauge();
        }
    }

    fn disconnected(&self, error: String) {
        *self.last_error.lock() = Some(error);
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(addr = %self.config.addr, "lost the controller; the last data received keeps serving");
            self.gauge();
        }
        // Waiters for a first answer should not wait for an answer that cannot come.
        self.changed.send_modify(|v| *v += 1);
    }

    fn gauge(&self) {
        let up = if self.connected.load(Ordering::Acquire) {
            1.0
        } else {
            0.0
        };
        self.registry
            .gauge("controller_connected", Vec::new())
            .set(up);
    }
}

/// A status the controller itself sent about this one request, as opposed to a connection
/// or server failure.
fn is_refusal(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

fn service_ref((namespace, name): &ServiceId) -> v1::ServiceRef {
    v1::ServiceRef {
        namespace: namespace.clone(),
        name: name.clone(),
    }
}
