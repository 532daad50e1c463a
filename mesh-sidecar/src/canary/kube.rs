//! The driver's collaborators on the API server, and the controller's loop over canaries:
//! every few seconds it lists the Canary objects and drives each one it is not driving yet
//! in a task of its own, which ends when the canary is deleted.
//!
//! The state lives in the Canary's status only (see [`super::status`]), so a restarted
//! controller resumes each rollout where the last one left it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, TypeMeta,
};
use mesh_core::canary::{Canary, State};
use mesh_core::{PolicyConfig, PolicyIndex};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::route::{self, TargetProblem};
use super::{Blocked, BoxError, Canaries, CanaryMetrics, Driver, Goldens, Outcome, Store, Weights};
use crate::controller::status::create_event;
use crate::kube_watch::KINDS;

/// How often the canaries are listed for new ones.
const RELIST: Duration = Duration::from_secs(2);
/// Writes of a target that lost a race with another writer, tried again at most this often.
const CONFLICT_RETRIES: usize = 5;

/// The API server as the driver's canaries, weights and store.
#[derive(Clone)]
pub(crate) struct Kube {
    client: kube::Client,
}

// === impl Kube ===

impl Kube {
    pub(crate) fn new(client: kube::Client) -> Self {
        Self { client }
    }

    fn api(&self, namespace: &str, group: &str, kind: &str) -> Option<Api<DynamicObject>> {
        let k = KINDS.iter().find(|k| k.group == group && k.kind == kind)?;
        Some(Api::namespaced_with(
            self.client.clone(),
            namespace,
            &k.resource(),
        ))
    }

    fn canaries(&self, namespace: &str) -> Result<Api<DynamicObject>, BoxError> {
        self.api(namespace, "policy.mesh.io", "Canary")
            .ok_or_else(|| "the Canary kind is not in the catalog".into())
    }

    fn target(&self, canary: &Canary) -> Result<Api<DynamicObject>, Blocked> {
        let kind = canary.target.kind;
        self.api(&canary.namespace, kind.group(), kind.kind())
            .ok_or_else(|| Blocked::Io(format!("{} is not in the catalog", kind.kind()).into()))
    }

    /// The target object, or why it cannot carry the weights.
    async fn get_target(&self, canary: &Canary) -> Result<DynamicObject, Blocked> {
        let found = (self.target(canary)?.get_opt(&canary.target.name).await)
            .map_err(|e| Blocked::Io(e.into()))?;
        found.ok_or_else(|| {
            Blocked::Target(TargetProblem::NotFound {
                kind: canary.target.kind.kind(),
                name: canary.target.name.clone(),
            })
        })
    }

    async fn status(&self, canary: &Canary) -> Result<Value, BoxError> {
        let obj = self
            .canaries(&canary.namespace)?
            .get_opt(&canary.name)
            .await?;
        Ok(obj.map_or(Value::Null, |o| o.data["status"].clone()))
    }
}

/// A Canary object as compiled by the same index as every other kind; `None` when refused
/// (its status says why, written by the controller's index).
fn compile(mut obj: DynamicObject, resource: &ApiResource) -> Option<Canary> {
    obj.types = Some(TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    let mut index = PolicyIndex::new(PolicyConfig::default());
    index.apply(&obj).ok()?;
    index.canaries().first().map(|c| (**c).clone())
}

fn canary_resource() -> Option<ApiResource> {
    KINDS
        .iter()
        .find(|k| k.group == "policy.mesh.io" && k.kind == "Canary")
        .map(|k| k.resource())
}

impl Canaries for Kube {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Canary>, BoxError> {
        let resource = canary_resource().ok_or("the Canary kind is not in the catalog")?;
        let obj = self.canaries(namespace)?.get_opt(name).await?;
        Ok(obj.and_then(|o| compile(o, &resource)))
    }
}

impl Weights for Kube {
    async fn read(&self, canary: &Canary) -> Result<u32, Blocked> {
        let obj = self.get_target(canary).await?;
        route::read_weight(canary, &obj.data).map_err(Blocked::Target)
    }

    async fn set(&self, canary: &Canary, weight: u32) -> Result<(), Blocked> {
        let api = self.target(canary)?;
        let mut tries = 0;
        loop {
            let mut obj = self.get_target(canary).await?;
            route::set_weights(canary, &mut obj.data, weight).map_err(Blocked::Target)?;
            // The GET's resourceVersion makes this a compare-and-swap: a route the user
            // changed meanwhile is read again rather than overwritten.
            match api
                .replace(&canary.target.name, &PostParams::default(), &obj)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 && tries < CONFLICT_RETRIES => {
                    tries += 1;
                }
                Err(e) => return Err(Blocked::Io(e.into())),
            }
        }
    }
}

impl Store for Kube {
    async fn load(&self, canary: &Canary) -> Result<Option<State>, BoxError> {
        Ok(super::status::state_of(&self.status(canary).await?))
    }

    async fn record(
        &self,
        canary: &Canary,
        state: Option<&State>,
        outcome: &Outcome,
    ) -> Result<(), BoxError> {
        let now = serde_json::to_value(Time(Timestamp::now()))?;
        let current = self.status(canary).await?;
        let (status, changed) = super::status::next_status(&current, state, outcome, &now);
        let patch = Patch::Merge(json!({ "status": status }));
        (self.canaries(&canary.namespace)?)
            .patch_status(&canary.name, &PatchParams::default(), &patch)
            .await?;
        if let (true, Some(type_)) = (changed, outcome.event_type()) {
            self.event(canary, type_, outcome).await?;
        }
        Ok(())
    }
}

impl Kube {
    async fn event(&self, canary: &Canary, type_: &str, outcome: &Outcome) -> Result<(), BoxError> {
        let reason = outcome.reason();
        let name = format!(
            "{}.canary.{}.{:x}",
            canary.name,
            reason.to_ascii_lowercase(),
            Timestamp::now().as_nanosecond()
        );
        let involved = ObjectReference {
            api_version: Some("policy.mesh.io/v1alpha1".to_owned()),
            kind: Some("Canary".to_owned()),
            name: Some(canary.name.clone()),
            namespace: Some(canary.namespace.clone()),
            ..ObjectReference::default()
        };
        let message = outcome.to_string();
        create_event(&self.client, name, involved, type_, reason, message).await?;
        Ok(())
    }
}

/// Drives every canary in `namespaces` (all when empty) until the process ends, while `leader`
/// says this replica was elected to; losing the election stops every driver at once.
pub(crate) async fn run<G>(
    client: kube::Client,
    namespaces: Vec<String>,
    goldens: G,
    metrics: CanaryMetrics,
    mut leader: watch::Receiver<bool>,
) where
    G: Goldens + Send + Sync + 'static,
{
    let Some(resource) = canary_resource() else {
        return;
    };
    let kube = Kube::new(client.clone());
    let driver = Arc::new(Driver {
        canaries: kube.clone(),
        weights: kube.clone(),
        store: kube,
        goldens,
        metrics,
    });
    let apis: Vec<Api<DynamicObject>> = if namespaces.is_empty() {
        vec![Api::all_with(client, &resource)]
    } else {
        (namespaces.iter())
            .map(|ns| Api::namespaced_with(client.clone(), ns, &resource))
            .collect()
    };
    let mut driving: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
    loop {
        // Only the elected replica drives: two would each move the weights every interval.
        if !*leader.borrow_and_update() {
            for (_, task) in driving.drain() {
                task.abort();
            }
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        driving.retain(|_, task| !task.is_finished());
        for api in &apis {
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                // Not served: the Canary CRD is not installed (yet).
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list canaries");
                    continue;
                }
            };
            for obj in list.items {
                let (Some(ns), Some(name)) =
                    (obj.metadata.namespace.clone(), obj.metadata.name.clone())
                else {
                    continue;
                };
                let key = (ns, name);
                if driving.contains_key(&key) || compile(obj, &resource).is_none() {
                    continue;
                }
                let driver = Arc::clone(&driver);
                let (ns, name) = key.clone();
                let task = tokio::spawn(async move { driver.run(&ns, &name).await });
                driving.insert(key, task);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RELIST) => {}
            // Leadership lost (or won again): looked at first thing in the next round.
            _ = leader.changed() => {}
        }
    }
}
