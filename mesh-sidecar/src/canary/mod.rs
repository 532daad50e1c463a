//! The canary analysis loop: each `interval` of a [`Canary`], take the golden metrics of its
//! stable and canary backends, [`decide`] as `mesh_core::canary` says, move the weights on
//! the route the user owns when the decision moves them, and record what was decided.
//!
//! The [`Driver`] is generic over where canaries come from ([`Canaries`]), where the weights
//! live ([`Weights`]), where the state is kept ([`Store`]) and where the numbers come from
//! ([`Goldens`]): `mesh controller` plugs in the API server (`kube`) and the sources
//! `mesh stat` reads (`goldens`); anything else (files, a test) can plug in its own.
//!
//! Any number of controller replicas may drive the same canary: a replica whose recorded
//! state changed while it measured drops its window, so one step is taken per interval
//! (up to two replicas finishing a window at the same instant).
//!
//! What a user can rely on: a suspended canary, and a deleted one, leave the weights as they
//! are; a rollback returns all traffic to stable in one write; a target that is missing or
//! does not name both backends is reported (the `Promoted` condition's reason, an Event)
//! and nothing is written.

use std::fmt;
use std::time::Duration;

use mesh_core::canary::{Canary, Decision, HoldReason, Phase, State, Window, decide};
use mesh_tower::metrics::Registry;
use metrics::Label;

pub(crate) mod board;
pub(crate) mod goldens;
pub(crate) mod kube;
pub(crate) mod route;
pub(crate) mod status;

use route::TargetProblem;

/// An error of one of the driver's collaborators (the API server, a metrics source).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where canaries come from. `Ok(None)`: deleted (or no longer valid): stop driving it.
pub(crate) trait Canaries {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Canary>, BoxError>> + Send;
}

/// Where a canary's target keeps its backend weights.
pub(crate) trait Weights {
    /// The canary's weight on the target now (checking that the target can carry it).
    fn read(&self, canary: &Canary) -> impl Future<Output = Result<u32, Blocked>> + Send;
    /// Stable to `100 - weight`, the canary to `weight`, in one write.
    fn set(&self, canary: &Canary, weight: u32)
    -> impl Future<Output = Result<(), Blocked>> + Send;
}

/// Where the state between steps is kept, and outcomes are recorded.
pub(crate) trait Store {
    /// The state recorded, or `None` before the rollout started.
    fn load(&self, canary: &Canary)
    -> impl Future<Output = Result<Option<State>, BoxError>> + Send;
    /// Records an outcome and, when it moved anything, the state after it.
    fn record(
        &self,
        canary: &Canary,
        state: Option<&State>,
        outcome: &Outcome,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// The golden metrics of both backends over the next `interval`: returns once it has passed.
pub(crate) trait Goldens {
    fn window(
        &self,
        canary: &Canary,
        interval: Duration,
    ) -> impl Future<Output = Result<Window, BoxError>> + Send;
}

/// Why weights were not read or written.
#[derive(Debug)]
pub(crate) enum Blocked {
    /// The target cannot carry the weights: reported to the user.
    Target(TargetProblem),
    /// The store could not be reached: tried again next interval.
    Io(BoxError),
}

/// What one step of a canary did.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The rollout began: the canary got its first weight.
    Started { weight: u32 },
    /// [`decide`] said this.
    Decided(Decision),
    /// The target cannot carry the weights; nothing was written.
    Blocked(TargetProblem),
}

/// What the loop does next after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The canary is gone: stop.
    Stop,
    /// Nothing was measured (suspended, blocked, just started, finished): wait an interval.
    Wait(Duration),
    /// A window was measured and decided: measure the next one at once.
    Measure,
}

/// `canary_weight` and `canary_phase` on the controller's `/metrics`.
#[derive(Clone, Debug)]
pub(crate) struct CanaryMetrics(Registry);

/// Drives canaries one step at a time. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Driver<C, W, S, G> {
    pub(crate) canaries: C,
    pub(crate) weights: W,
    pub(crate) store: S,
    pub(crate) goldens: G,
    pub(crate) metrics: CanaryMetrics,
}

// === impl Outcome ===

impl Outcome {
    /// The `Promoted` condition's reason, and the Event's.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Started { .. } => "Started",
            Self::Decided(Decision::Advance { .. }) => "Advanced",
            Self::Decided(Decision::Promote) => "Promoted",
            Self::Decided(Decision::Hold(HoldReason::TooFewRequests { .. })) => "Waiting",
            Self::Decided(Decision::Hold(HoldReason::Breach { .. })) => "Held",
            Self::Decided(Decision::RollBack(_)) => "RolledBack",
            Self::Decided(Decision::Halt(_)) => "Halted",
            Self::Decided(Decision::Finished) => "Finished",
            Self::Blocked(p) => p.reason(),
        }
    }

    /// The Event type for outcomes that move or stop something; `None`: status only (a hold
    /// for want of traffic says nothing new each interval).
    pub(crate) fn event_type(&self) -> Option<&'static str> {
        match self {
            Self::Started { .. } | Self::Decided(Decision::Advance { .. } | Decision::Promote) => {
                Some("Normal")
            }
            Self::Decided(
                Decision::Hold(HoldReason::Breach { .. })
                | Decision::RollBack(_)
                | Decision::Halt(_),
            )
            | Self::Blocked(_) => Some("Warning"),
            Self::Decided(
                Decision::Hold(HoldReason::TooFewRequests { .. }) | Decision::Finished,
            ) => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started { weight } => write!(f, "started: canary weight {weight}%"),
            Self::Decided(d) => d.fmt(f),
            Self::Blocked(p) => write!(f, "nothing written: {p}"),
        }
    }
}

// === impl CanaryMetrics ===

impl CanaryMetrics {
    const PHASES: [Phase; 4] = [
        Phase::Progressing,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Halted,
    ];

    pub(crate) fn new(registry: Registry) -> Self {
        registry.describe("canary_weight", "The canary backend's weight in percent.");
        registry.describe(
            "canary_phase",
            "1 for the canary's current phase, 0 for the others.",
        );
        Self(registry)
    }

    fn set(&self, canary: &Canary, state: &State) {
        let named = || {
            vec![
                Label::new("namespace", canary.namespace.clone()),
                Label::new("name", canary.name.clone()),
            ]
        };
        (self.0.gauge("canary_weight", named())).set(f64::from(state.weight));
        for phase in Self::PHASES {
            let mut labels = named();
            labels.push(Label::new("phase", phase.as_str()));
            let on = if phase == state.phase { 1.0 } else { 0.0 };
            self.0.gauge("canary_phase", labels).set(on);
        }
    }
}

// === impl Driver ===

impl<C: Canaries, W: Weights, S: Store, G: Goldens> Driver<C, W, S, G> {
    /// One step of canary `namespace/name`, returning what to do next.
    pub(crate) async fn step(&self, namespace: &str, name: &str) -> Result<Next, BoxError> {
        let Some(canary) = self.canaries.get(namespace, name).await? else {
            return Ok(Next::Stop);
        };
        let wait = Next::Wait(canary.analysis.interval);
        if canary.suspend {
            return Ok(wait);
        }
        let on_route = match self.weights.read(&canary).await {
            Ok(w) => w,
            Err(b) => return self.report(&canary, b).await,
        };
        let Some(state) = self.store.load(&canary).await? else {
            return self.start(&canary).await;
        };
        if on_route != state.weight {
            // Someone else moved the weights; the next move writes ours again.
            tracing::warn!(canary = %format!("{namespace}/{name}"), on_route, recorded = state.weight, "the target's canary weight differs from the recorded one");
        }
        self.metrics.set(&canary, &state);
        if state.phase != Phase::Progressing {
            return Ok(wait);
        }
        let window = (self.goldens)
            .window(&canary, canary.analysis.interval)
            .await?;
        // Suspended or deleted while measuring: leave everything as it is.
        let Some(canary) = self.canaries.get(namespace, name).await? else {
            return Ok(Next::Stop);
        };
        if canary.suspend {
            return Ok(Next::Wait(canary.analysis.interval));
        }
        // Another replica stepped while this one measured: its step stands, and this one
        // measures again from the new state (replicas keep no state of their own).
        if self.store.load(&canary).await? != Some(state) {
            return Ok(Next::Measure);
        }
        let step = decide(&canary.analysis, &state, &window);
        tracing::info!(canary = %format!("{namespace}/{name}"), ?window, decision = %step.decision, "canary step");
        if step.next.weight != state.weight
            && let Err(b) = self.weights.set(&canary, step.next.weight).await
        {
            return self.report(&canary, b).await;
        }
        // The metrics say what the route says, before the status does.
        self.metrics.set(&canary, &step.next);
        let outcome = Outcome::Decided(step.decision);
        self.store
            .record(&canary, Some(&step.next), &outcome)
            .await?;
        Ok(Next::Measure)
    }

    /// The canary's first weight.
    async fn start(&self, canary: &Canary) -> Result<Next, BoxError> {
        let state = State::start(&canary.analysis);
        if let Err(b) = self.weights.set(canary, state.weight).await {
            return self.report(canary, b).await;
        }
        let outcome = Outcome::Started {
            weight: state.weight,
        };
        self.metrics.set(canary, &state);
        self.store.record(canary, Some(&state), &outcome).await?;
        Ok(Next::Wait(Duration::ZERO))
    }

    /// Reports a target that cannot carry the weights; passes store errors up.
    async fn report(&self, canary: &Canary, blocked: Blocked) -> Result<Next, BoxError> {
        match blocked {
            Blocked::Io(e) => Err(e),
            Blocked::Target(problem) => {
                let outcome = Outcome::Blocked(problem);
                self.store.record(canary, None, &outcome).await?;
                Ok(Next::Wait(canary.analysis.interval))
            }
        }
    }

    /// Steps canary `namespace/name` until it is deleted. Errors are logged and retried an
    /// interval later.
    pub(crate) async fn run(&self, namespace: &str, name: &str) {
        const RETRY: Duration = Duration::from_secs(5);
        loop {
            match self.step(namespace, name).await {
                Ok(Next::Stop) => return,
                Ok(Next::Measure) => {}
                Ok(Next::Wait(d)) => tokio::time::sleep(d).await,
                Err(e) => {
                    tracing::warn!(canary = %format!("{namespace}/{name}"), error = %e, "canary step failed");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
