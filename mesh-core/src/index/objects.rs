//! Which accepted objects a unit of policy is linked from: what a controller sends a client
//! so that the client's own index links the same unit.

use std::collections::BTreeSet;

use super::{ObjectRef, PolicyIndex};
use crate::compile::Key;

// === impl PolicyIndex ===

impl PolicyIndex {
    /// The accepted objects a Service's outbound policy is linked from: those filed under the
    /// Service (the Service itself, routes whose parent it is, TrafficSplits whose apex it
    /// is, its ServiceProfile) and those its last linking looked up by name (the
    /// HTTPRouteGroups a split names).
    ///
    /// An index fed only these objects links the same [`ServicePolicy`](crate::ServicePolicy)
    /// for the Service: this is what a controller sends a client watching it. Empty for a
    /// Service the index knows nothing about.
    ///
    /// The Services its routes and splits send to are among them (their ports map a backend
    /// port to the endpoints' port), so a client knows which endpoints to ask for.
    pub fn outbound_objects(&self, namespace: &str, name: &str) -> BTreeSet<ObjectRef> {
        let mut objects = self.unit_objects(Key::Service(namespace.to_owned(), name.to_owned()));
        if let Some(svc) = self.service(name, namespace) {
            for b in svc.backends() {
                let r = ObjectRef {
                    group: String::new(),
                    kind: "Service".to_owned(),
                    namespace: b.namespace().to_owned(),
                    name: b.name().to_owned(),
                };
                let accepted = self.objects.get(&r).is_some_and(|s| s.accepted.is_some());
                if accepted {
                    objects.insert(r);
                }
            }
        }
        objects
    }

    /// The accepted objects a namespace's inbound policy is linked from: its Servers,
    /// authorizations, rate limits, routes whose parent is a Server, the Namespace itself,
    /// and what those name (authentications, policies targeting the routes).
    ///
    /// The pods whose ports the Servers select are not among them: a client asks for its
    /// own pod's policy and gets its pod separately.
    pub fn inbound_objects(&self, namespace: &str) -> BTreeSet<ObjectRef> {
        self.unit_objects(Key::Inbound(namespace.to_owned()))
    }

    /// The objects filed under `unit` and under every key its last linking read.
    fn unit_objects(&self, unit: Key) -> BTreeSet<ObjectRef> {
        let reads = self.unit_reads.get(&unit).into_iter().flatten();
        std::iter::once(&unit)
            .chain(reads)
            .filter_map(|key| self.members.get(key))
            .flat_map(|members| members.keys())
            .filter_map(|seq| self.refs.get(seq))
            .cloned()
            .collect()
    }
}
