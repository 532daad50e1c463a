//! Where users look for why an object does nothing: for each refused object an
//! `Accepted=False` condition (reason `Invalid`, the errors as its message) and a `Warning`
//! Event; `Accepted=True` again once a later version is accepted.
//!
//! Gateway API and Linkerd routes carry the condition per parentRef in `status.parents[]`
//! under our `controllerName`, as Gateway API controllers do; the other kinds with a status
//! subresource (the catalog's `status`) in `status.conditions[]`, beside the `targetRef` a
//! policy's status must name. Kinds without one (core kinds, and the CRDs upstream defines
//! without status: Server, the authorization kinds, ServiceProfile, SMI's) get the Event
//! only: on a real cluster their `/status` answers 404. Writes go through the `/status` subresource as merge
//! patches and are skipped when the status already says the same. Events are named after the
//! object and its resourceVersion, so two replicas create one between them (409 is ignored).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use mesh_core::ObjectRef;
use mesh_core::kinds::catalog::{self, StatusSchema};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::kube_watch::{KINDS, Refusal, object_name};

/// Ours, in `status.parents[].controllerName`.
pub(crate) const CONTROLLER_NAME: &str = "mesh.io/controller";

/// A status to write.
#[derive(Debug)]
pub(crate) struct Work {
    r: ObjectRef,
    /// `metadata.uid`, `metadata.generation` and `spec.parentRefs` of the version concerned.
    uid: Option<String>,
    generation: Option<i64>,
    parent_refs: Vec<Value>,
    /// `spec.targetRef`, which a policy's status repeats.
    target_ref: Option<Value>,
    status: Option<Value>,
    /// `None`: accepted. Else the resourceVersion refused and why.
    refused: Option<(String, String)>,
}

// === impl Work ===

impl Work {
    /// Work for an accepted object, only when its status still says we refused it.
    pub(crate) fn accepted(r: &ObjectRef, doc: &Value, status: Option<&Value>) -> Option<Self> {
        let refused_by_us = |c: &Value| c["type"] == "Accepted" && c["status"] == "False";
        let marked = status.is_some_and(|s| {
            let parents = s["parents"].as_array().into_iter().flatten();
            let ours = parents
                .filter(|p| p["controllerName"] == CONTROLLER_NAME)
                .flat_map(|p| p["conditions"].as_array().into_iter().flatten());
            let conditions = s["conditions"].as_array().into_iter().flatten();
            ours.chain(conditions).any(refused_by_us)
        });
        marked.then(|| Self::new(r, doc, status, None))
    }

    pub(crate) fn refused(r: &ObjectRef, doc: &Value, refusal: Refusal<'_>) -> Self {
        let message = (refusal.errors.iter())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let refused = Some((refusal.version.to_owned(), message));
        Self::new(r, doc, refusal.status, refused)
    }

    fn new(
        r: &ObjectRef,
        doc: &Value,
        status: Option<&Value>,
        refused: Option<(String, String)>,
    ) -> Self {
        Self {
            r: r.clone(),
            uid: doc["metadata"]["uid"].as_str().map(str::to_owned),
            generation: doc["metadata"]["generation"].as_i64(),
            parent_refs: doc["spec"]["parentRefs"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            target_ref: doc["spec"].get("targetRef").cloned(),
            status: status.cloned(),
            refused,
        }
    }

    /// The shape of the kind's status subresource, if it has one.
    fn status_schema(&self) -> Option<StatusSchema> {
        catalog::by_group_kind(&self.r.group, &self.r.kind).and_then(|k| k.status)
    }

    fn has_status(&self) -> bool {
        self.status_schema().is_some()
    }

    fn condition(&self) -> Value {
        let (status, reason, message) = match &self.refused {
            Some((_, why)) => ("False", "Invalid", why.as_str()),
            None => ("True", "Accepted", "accepted by the mesh"),
        };
        let mut c = json!({
            "type": "Accepted",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": Time(Timestamp::now()),
        });
        if let Some(g) = self.generation {
            c["observedGeneration"] = json!(g);
        }
        c
    }

    /// The status to write, or `None` when the current one already says it.
    fn new_status(&self) -> Option<Value> {
        let condition = self.condition();
        let current = self.status.as_ref();
        let list = |field: &str| {
            (current.and_then(|s| s[field].as_array()))
                .cloned()
                .unwrap_or_default()
        };
        let schema = self.status_schema()?;
        let (field, (old, mut keep), mine): (_, (Vec<Value>, Vec<Value>), Vec<Value>) =
            if schema == StatusSchema::RouteParents {
                let parents = list("parents").into_iter();
                let split = parents.partition(|p| p["controllerName"] == CONTROLLER_NAME);
                let mine = (self.parent_refs.iter())
                    .map(|p| {
                        json!({
                            "parentRef": p,
                            "controllerName": CONTROLLER_NAME,
                            "conditions": [condition.clone()],
                        })
                    })
                    .collect();
                ("parents", split, mine)
            } else {
                let conditions = list("conditions").into_iter();
                let split = conditions.partition(|c| c["type"] == "Accepted");
                ("conditions", split, vec![condition])
            };
        if timeless(&old) == timeless(&mine) {
            return None;
        }
        keep.extend(mine);
        let mut status = json!({ field: keep });
        if schema == StatusSchema::TargetConditions {
            status["targetRef"] = self.target_ref.clone().unwrap_or_else(|| json!({}));
        }
        Some(status)
    }
}

/// Conditions as compared: when they last changed does not count.
fn timeless(values: &[Value]) -> Vec<Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("lastTransitionTime");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut values = values.to_vec();
    values.iter_mut().for_each(strip);
    values
}

/// Writes status and Events as the index thread reports refusals, one at a time, until the
/// process ends. A failed write is logged: the next refusal or acceptance writes again.
pub(crate) async fn run(client: kube::Client, mut work: UnboundedReceiver<Work>) {
    while let Some(w) = work.recv().await {
        if w.has_status()
            && let Err(e) = write_status(&client, &w).await
        {
            tracing::warn!(object = %object_name(&w.r), error = %e, "cannot write the object's status");
        }
        if let Some((version, message)) = &w.refused
            && let Err(e) = event(&client, &w, version, message).await
        {
            tracing::warn!(object = %object_name(&w.r), error = %e, "cannot record an Event");
        }
    }
}

async fn write_status(client: &kube::Client, w: &Work) -> Result<(), kube::Error> {
    let Some(status) = w.new_status() else {
        return Ok(());
    };
    let Some(kind) = KINDS
        .iter()
        .find(|k| k.group == w.r.group && k.kind == w.r.kind)
    else {
        return Ok(());
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &w.r.namespace, &kind.resource());
    let patch = Patch::Merge(json!({ "status": status }));
    api.patch_status(&w.r.name, &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

/// One `Warning` Event per refused resourceVersion.
async fn event(
    client: &kube::Client,
    w: &Work,
    version: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let kind = KINDS
        .iter()
        .find(|k| k.group == w.r.group && k.kind == w.r.kind);
    let name = format!(
        "{}.{}.{}",
        w.r.name,
        w.r.kind.to_ascii_lowercase(),
        if version.is_empty() { "0" } else { version }
    );
    let involved = ObjectReference {
        api_version: kind.map(|k| k.api_version()),
        kind: Some(w.r.kind.clone()),
        name: Some(w.r.name.clone()),
        namespace: Some(w.r.namespace.clone()),
        uid: w.uid.clone(),
        resource_version: Some(version.to_owned()),
        ..ObjectReference::default()
    };
    let message = format!("refused by the mesh, the last accepted version serves: {message}");
    create_event(client, name, involved, "Warning", "Invalid", message).await
}

/// Creates one Event named `name` about `involved`, reported by the controller. A name taken
/// already (another replica recorded it) is not an error.
pub(crate) async fn create_event(
    client: &kube::Client,
    name: String,
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: String,
) -> Result<(), kube::Error> {
    let namespace = involved.namespace.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some(type_.to_owned()),
        source: Some(EventSource {
            component: Some("mesh-controller".to_owned()),
            host: None,
        }),
        reporting_component: Some(CONTROLLER_NAME.to_owned()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_ref() -> ObjectRef {
        ObjectRef {
            group: "gateway.networking.k8s.io".to_owned(),
            kind: "HTTPRoute".to_owned(),
            namespace: "shop".to_owned(),
            name: "web".to_owned(),
        }
    }

    fn route_doc() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "shop", "generation": 3, "uid": "u-1"},
            "spec": {"parentRefs": [{"name": "web", "kind": "Service", "group": ""}]},
        })
    }

    fn refused(status: Option<&Value>) -> Work {
        let errors = [];
        let refusal = Refusal {
            version: "7",
            status,
            errors: &errors,
        };
        Work::refused(&route_ref(), &route_doc(), refusal)
    }

    #[test]
    fn a_refused_route_is_marked_per_parent_beside_other_controllers() {
        let other = json!({"parents": [{"controllerName": "example.com/gw", "conditions": []}]});
        let status = refused(Some(&other))
            .new_status()
            .expect("a status to write");
        let parents = status["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0]["controllerName"], "example.com/gw");
        let ours = &parents[1];
        assert_eq!(ours["controllerName"], CONTROLLER_NAME);
        assert_eq!(ours["parentRef"]["name"], "web");
        let c = &ours["conditions"][0];
        assert_eq!(
            (c["type"].as_str(), c["status"].as_str()),
            (Some("Accepted"), Some("False"))
        );
        assert_eq!(c["reason"], "Invalid");
        assert_eq!(c["observedGeneration"], 3);

        // Written once: the same refusal again changes nothing, whatever the time.
        let now = json!({"parents": parents});
        assert!(refused(Some(&now)).new_status().is_none());

        // Accepted again: only because our condition says False, and it turns True.
        let accepted = Work::accepted(&route_ref(), &route_doc(), Some(&now)).expect("work");
        let status = accepted.new_status().expect("Accepted=True");
        assert_eq!(status["parents"][1]["conditions"][0]["status"], "True");
        assert!(Work::accepted(&route_ref(), &route_doc(), Some(&other)).is_none());
    }

    /// Only kinds whose CRD has a status subresource get a status: a real API server
    /// answers 404 for the others' `/status` (Linkerd's Server has none).
    #[test]
    fn policies_carry_the_condition_and_their_target_and_kinds_without_status_none() {
        let policy = ObjectRef {
            group: "policy.linkerd.io".to_owned(),
            kind: "HTTPLocalRateLimitPolicy".to_owned(),
            namespace: "shop".to_owned(),
            name: "web".to_owned(),
        };
        let errors = [];
        let refusal = Refusal {
            version: "1",
            status: None,
            errors: &errors,
        };
        let target = json!({"group": "policy.linkerd.io", "kind": "Server", "name": "web"});
        let doc = json!({"metadata": {}, "spec": {"targetRef": target}});
        let w = Work::refused(&policy, &doc, refusal);
        let status = w.new_status().expect("a status");
        assert_eq!(status["conditions"][0]["type"], "Accepted");
        assert_eq!(status["targetRef"], target);
        assert!(w.has_status());
        for (group, kind) in [("policy.linkerd.io", "Server"), ("", "Service")] {
            let r = ObjectRef {
                group: group.to_owned(),
                kind: kind.to_owned(),
                ..policy.clone()
            };
            let w = Work::refused(&r, &json!({}), refusal);
            assert!(!w.has_status() && w.new_status().is_none(), "{kind}");
        }
    }
}
