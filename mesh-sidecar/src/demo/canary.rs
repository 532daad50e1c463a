//! `mesh demo --canary`: a `Canary` in the demo's config directory rolls `voting-v2` out
//! through the controller's own [`Driver`], with files in place of the API server: the
//! canary is read from its file ([`CanaryFile`]), the weights are rewritten in the route file
//! the proxies reload ([`RouteFile`]), the state is kept in memory ([`Memory`]) and the
//! numbers are scraped from the demo's proxies ([`StatGoldens::Scrape`], as the controller's
//! `--canary-scrape`).
//!
//! Two acts in one run. In the first, `voting-v2` is healthy and the mesh promotes it on its
//! own. In the second, a new `voting-v2` is rolled out from scratch (the route back on
//! `voting-v1`, the Canary re-applied, as a user would after `Succeeded`); once the canary
//! reaches `fail_at` percent, `voting-v2` starts failing a share of its answers, and the mesh
//! rolls it back: all traffic to `voting-v1` in one write.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::MeshPolicy;
use mesh_core::canary::{Canary, Phase, State};
use mesh_tower::metrics::Registry;
use parking_lot::Mutex;
use serde_json::Value;

use super::app::Fault;
use super::setup::write;
use crate::canary::board::Board;
use crate::canary::goldens::StatGoldens;
use crate::canary::route::{self, TargetProblem};
use crate::canary::{
    Blocked, BoxError, Canaries, CanaryMetrics, Driver, Next, Outcome, Store, Weights,
};
use crate::stat::source::Target;

const NAMESPACE: &str = "emojivoto";
const NAME: &str = "voting";
/// The Canary's file, beside the route it moves.
pub(super) const FILE: &str = "voting-canary.yaml";
/// A step that failed for want of a file or a scrape is tried again this much later.
const RETRY: Duration = Duration::from_secs(1);

/// The Canary object the demo writes: Flagger's fields, a short interval.
pub(super) fn canary_yaml(interval: Duration) -> String {
    format!(
        "apiVersion: policy.mesh.io/v1alpha1
kind: Canary
metadata: {{ name: {NAME}, namespace: {NAMESPACE} }}
spec:
  targetRef: {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: voting-canary }}
  stable: {{ name: voting-v1, port: 8080 }}
  canary: {{ name: voting-v2, port: 8080 }}
  analysis:
    interval: {}ms
    stepWeight: 20        # 20, 40, 60, 80, then all traffic to voting-v2
    maxWeight: 80
    threshold: 1          # the first failed check rolls back
    minRequests: 5        # a quieter step holds: it proves nothing
    metrics:
    - name: request-success-rate
      thresholdRange: {{ min: 95 }}
",
        interval.as_millis()
    )
}

/// The Canary, as the proxies and `mesh policy explain` compile its file.
pub(super) struct CanaryFile(pub(super) PathBuf);

/// The route file the proxies reload: the one document the Canary targets.
pub(super) struct RouteFile(pub(super) PathBuf);

/// The state between steps, and what each step decided, for the table and the dashboard.
pub(super) struct Memory {
    state: Mutex<Option<State>>,
    board: Arc<Board>,
}

/// The two acts and what they need.
pub(super) struct Rollout {
    pub(super) config: PathBuf,
    pub(super) targets: Vec<Target>,
    pub(super) board: Arc<Board>,
    /// voting-v2's share of failed answers, set when the second act's canary reaches `fail_at`.
    pub(super) fault: Arc<Fault>,
    pub(super) fault_rate: f64,
    pub(super) fail_at: u32,
}

// === impl CanaryFile ===

impl Canaries for CanaryFile {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Canary>, BoxError> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let policy = MeshPolicy::from_yaml(&text)?;
        let found = (policy.canaries().iter())
            .find(|c| c.namespace == namespace && c.name == name)
            .map(|c| (**c).clone());
        Ok(found)
    }
}

// === impl RouteFile ===

impl RouteFile {
    fn load(&self, canary: &Canary) -> Result<Value, Blocked> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Blocked::Target(TargetProblem::NotFound {
                    kind: canary.target.kind.kind(),
                    name: canary.target.name.clone(),
                }));
            }
            Err(e) => return Err(Blocked::Io(e.into())),
        };
        serde_norway::from_str(&text).map_err(|e| Blocked::Io(e.into()))
    }
}

impl Weights for RouteFile {
    async fn read(&self, canary: &Canary) -> Result<u32, Blocked> {
        route::read_weight(canary, &self.load(canary)?).map_err(Blocked::Target)
    }

    async fn set(&self, canary: &Canary, weight: u32) -> Result<(), Blocked> {
        let mut doc = self.load(canary)?;
        route::set_weights(canary, &mut doc, weight).map_err(Blocked::Target)?;
        let text = serde_norway::to_string(&doc).map_err(|e| Blocked::Io(e.into()))?;
        // Atomic (a temporary file renamed over it): a proxy never reads half a route.
        write(&self.0, &text).map_err(|e| Blocked::Io(e.into()))
    }
}

// === impl Memory ===

impl Memory {
    pub(super) fn new(board: Arc<Board>) -> Self {
        Self {
            state: Mutex::new(None),
            board,
        }
    }

    fn state(&self) -> Option<State> {
        *self.state.lock()
    }

    /// Forgets the rollout, as deleting and re-applying the Canary does.
    fn reset(&self) {
        *self.state.lock() = None;
    }
}

impl Store for Memory {
    async fn load(&self, _: &Canary) -> Result<Option<State>, BoxError> {
        Ok(self.state())
    }

    async fn record(
        &self,
        canary: &Canary,
        state: Option<&State>,
        outcome: &Outcome,
    ) -> Result<(), BoxError> {
        if let Some(s) = state {
            *self.state.lock() = Some(*s);
        }
        self.board.record(canary, state, outcome);
        println!(
            ">>> canary {}/{}: {}: {outcome}",
            canary.namespace,
            canary.name,
            outcome.reason()
        );
        Ok(())
    }
}

// === impl Rollout ===

impl Rollout {
    /// Both acts; returns how each ended.
    pub(super) async fn run(self) -> [Option<Phase>; 2] {
        let driver = Driver {
            canaries: CanaryFile(self.config.join(FILE)),
            weights: RouteFile(self.config.join("voting-route.yaml")),
            store: Memory::new(Arc::clone(&self.board)),
            goldens: StatGoldens::Scrape(self.targets.clone()),
            metrics: CanaryMetrics::new(Registry::new()),
        };
        println!(">>> act 1: voting-v2 is healthy; the mesh rolls it out on its own");
        let first = self.act(&driver, false).await;
        // A new voting-v2 build: the route back on voting-v1, the Canary applied again.
        let Some(canary) = driver.canaries.get(NAMESPACE, NAME).await.ok().flatten() else {
            println!(">>> act 2 cannot start: the Canary is gone");
            return [first, None];
        };
        // Two intervals on the promoted voting-v2, so the table and the page show it.
        tokio::time::sleep(canary.analysis.interval * 2).await;
        if let Err(e) = driver.weights.set(&canary, 0).await {
            println!(">>> act 2 cannot start: {e:?}");
            return [first, None];
        }
        driver.store.reset();
        println!(
            ">>> act 2: a new voting-v2 from scratch; it will fail {:.0}% of its answers once it has {}% of the traffic",
            self.fault_rate * 100.0,
            self.fail_at
        );
        let second = self.act(&driver, true).await;
        [first, second]
    }

    /// Steps the canary until its rollout is over; `None` if it was deleted.
    async fn act(&self, driver: &DemoDriver, failing: bool) -> Option<Phase> {
        loop {
            let next = driver.step(NAMESPACE, NAME).await;
            let state = driver.store.state();
            if failing && self.fault.get() == 0.0 && state.is_some_and(|s| s.weight >= self.fail_at)
            {
                self.fault.set(self.fault_rate);
                println!(">>> voting-v2 starts failing");
            }
            if let Some(s) = state
                && s.phase != Phase::Progressing
            {
                return Some(s.phase);
            }
            match next {
                Ok(Next::Stop) => return None,
                Ok(Next::Measure) => {}
                Ok(Next::Wait(d)) => tokio::time::sleep(d).await,
                Err(e) => {
                    println!(">>> canary step failed: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

type DemoDriver = Driver<CanaryFile, RouteFile, Memory, StatGoldens>;
