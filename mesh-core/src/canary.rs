//! Progressive delivery as a pure decision: one analysis step of a canary, from the golden
//! metrics of its stable and canary backends over the last interval to the next weight.
//!
//! The controller calls [`decide`] once per interval with what the proxies measured; a team
//! calls it in `cargo test` with numbers of its own, or runs a whole rollout in milliseconds
//! with the seeded [`sim::Simulation`]. Nothing here reads a clock or the network.
//!
//! The rules are Flagger's, so its users know them: the canary starts at `stepWeight`; each
//! interval whose checks pass moves it up by `stepWeight` until `maxWeight`; one more passing
//! interval at `maxWeight` promotes it (all traffic to the canary). A failed check counts
//! against `threshold`; reaching it rolls back at once (all traffic to stable) or halts, as
//! `onBreach` says. An interval in which the canary served fewer than `minRequests` requests
//! proves nothing: it holds, neither advancing nor counting as a failure — unless the route's
//! traffic should have brought it at least twice `minRequests` at its weight, which is what a
//! canary that fails every request looks like once callers eject it: that is a breach.
//!
//! ```
//! use std::time::Duration;
//! use mesh_core::canary::{Analysis, BackendWindow, Decision, MetricCheck, State, Window, decide};
//!
//! let analysis = Analysis {
//!     step_weight: 20,
//!     max_weight: 60,
//!     checks: vec![MetricCheck::SuccessRate { min: Some(99.0), max_drop_from_stable: None }],
//!     ..Analysis::default()
//! };
//! let healthy = Window {
//!     stable: BackendWindow::new(800, 800, Some(Duration::from_millis(20))),
//!     canary: BackendWindow::new(200, 200, Some(Duration::from_millis(22))),
//! };
//! let step = decide(&analysis, &State::start(&analysis), &healthy);
//! assert_eq!(step.decision, Decision::Advance { weight: 40 });
//!
//! let failing = Window { canary: BackendWindow::new(200, 150, None), ..healthy };
//! let step = decide(&analysis, &step.next, &failing);
//! assert!(matches!(step.decision, Decision::RollBack { .. }));
//! assert_eq!(step.next.weight, 0);
//! ```

use std::time::Duration;

mod check;
mod show;
pub mod sim;

/// A `Canary` (policy.mesh.io/v1alpha1) as compiled: which route's weights it moves, between
/// which backends, and how each step is judged.
#[derive(Clone, Debug, PartialEq)]
pub struct Canary {
    /// Its namespace, which is also the route's and the backends'.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The route it moves.
    pub target: Target,
    /// The backend that has the traffic now.
    pub stable: Backend,
    /// The backend being rolled out.
    pub canary: Backend,
    /// How each step is judged and moved.
    pub analysis: Analysis,
    /// Analyse nothing and leave the weights as they are.
    pub suspend: bool,
}

/// The object whose backend weights a canary moves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Its kind.
    pub kind: TargetKind,
    /// Its name, in the canary's namespace.
    pub name: String,
}

/// The kinds a canary can move the weights of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A Gateway API HTTPRoute (`gateway.networking.k8s.io`).
    HttpRoute,
    /// Linkerd's `policy.linkerd.io` HTTPRoute.
    LinkerdHttpRoute,
    /// A Gateway API GRPCRoute.
    GrpcRoute,
    /// An SMI TrafficSplit, as Flagger moves on Linkerd.
    TrafficSplit,
}

/// A backend named in a canary: a Service in the canary's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The Service.
    pub name: String,
    /// The port, or `None` for whichever port the route names.
    pub port: Option<u16>,
}

/// How a canary is analysed and moved: the `spec.analysis` of a `Canary`.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// How often a step is analysed.
    pub interval: Duration,
    /// Percentage points added to the canary's weight per passing step (1–100).
    pub step_weight: u32,
    /// The canary's weight at which one more passing step promotes it (`step_weight`–100).
    pub max_weight: u32,
    /// Failed checks tolerated: reaching this many rolls back (or halts). At least 1.
    pub threshold: u32,
    /// Requests the canary must have served in a step for the step to count.
    pub min_requests: u64,
    /// What must hold for a step to pass. None: only `min_requests` decides.
    pub checks: Vec<MetricCheck>,
    /// What a breach does.
    pub on_breach: OnBreach,
}

/// One check of a step, named as Flagger names its built-in metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricCheck {
    /// `request-success-rate`, in percent.
    SuccessRate {
        /// The canary's success rate must be at least this (`thresholdRange.min`).
        min: Option<f64>,
        /// …and at most this many percentage points below the stable backend's.
        max_drop_from_stable: Option<f64>,
    },
    /// `request-duration`: the canary's p99 latency.
    LatencyP99 {
        /// At most this (`thresholdRange.max`).
        max: Option<Duration>,
        /// …and at most this many percent above the stable backend's p99.
        max_increase_from_stable: Option<f64>,
    },
}

/// What reaching the failed-check threshold does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnBreach {
    /// All traffic back to stable at once; the canary is `Failed`.
    #[default]
    Rollback,
    /// Weights stay where they are and the canary is `Halted` for a person to decide.
    Halt,
}

/// Where a canary is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Shifting traffic step by step.
    Progressing,
    /// All traffic on the canary.
    Succeeded,
    /// Rolled back: all traffic on stable.
    Failed,
    /// A breach with `onBreach: Halt`: weights frozen until the canary is changed.
    Halted,
}

/// What the controller keeps between steps (the `status` of a `Canary`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Where it is.
    pub phase: Phase,
    /// The canary backend's weight in percent; stable has the rest.
    pub weight: u32,
    /// Failed checks so far in this rollout.
    pub failed_checks: u32,
}

/// One backend's golden metrics over one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackendWindow {
    /// Responses completed in the step.
    pub requests: u64,
    /// Of those, classified successes.
    pub successes: u64,
    /// The p99 response latency, when there were responses to measure it from.
    pub p99: Option<Duration>,
}

/// Both backends over one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    /// The stable backend.
    pub stable: BackendWindow,
    /// The canary backend.
    pub canary: BackendWindow,
}

/// What one step decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The step passed: the canary goes to `weight`.
    Advance {
        /// The canary's new weight.
        weight: u32,
    },
    /// The step passed at `maxWeight`: all traffic to the canary.
    Promote,
    /// Nothing moves this step.
    Hold(HoldReason),
    /// The threshold was reached: all traffic back to stable.
    RollBack(Breach),
    /// The threshold was reached with `onBreach: Halt`: weights frozen.
    Halt(Breach),
    /// The rollout is over (succeeded, failed or halted): nothing to do.
    Finished,
}

/// Why a step held.
#[derive(Clone, Debug, PartialEq)]
pub enum HoldReason {
    /// The canary served too few requests for the step to mean anything.
    TooFewRequests {
        /// Requests served.
        got: u64,
        /// `minRequests`.
        need: u64,
    },
    /// A check failed, but fewer than `threshold` times so far.
    Breach {
        /// What failed.
        breach: Breach,
        /// Failed checks so far.
        failed_checks: u32,
        /// `threshold`.
        threshold: u32,
    },
}

/// A check that failed, with the figures that failed it.
#[derive(Clone, Debug, PartialEq)]
pub enum Breach {
    /// The canary's success rate was below `min`.
    SuccessRate {
        /// The canary's, in percent.
        canary: f64,
        /// The floor.
        min: f64,
    },
    /// The canary's success rate was more than `max_drop` points below stable's.
    SuccessRateDrop {
        /// The canary's, in percent.
        canary: f64,
        /// Stable's, in percent.
        stable: f64,
        /// The allowed drop in points.
        max_drop: f64,
    },
    /// The canary served far fewer requests than its weight should have brought it: a
    /// backend that fails every request gets ejected by the callers' circuit breakers and
    /// would otherwise look like a quiet one.
    Starved {
        /// Requests the canary served.
        got: u64,
        /// What its weight should have brought it, from the step's total.
        expected: u64,
    },
    /// The canary's p99 was above `max`.
    Latency {
        /// The canary's p99.
        canary: Duration,
        /// The ceiling.
        max: Duration,
    },
    /// The canary's p99 was more than `max_increase` percent above stable's.
    LatencyIncrease {
        /// The canary's p99.
        canary: Duration,
        /// Stable's p99.
        stable: Duration,
        /// The allowed increase in percent.
        max_increase: f64,
    },
}

/// The decision of one step and the state after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// What was decided.
    pub decision: Decision,
    /// The state to keep for the next step.
    pub next: State,
}

/// An analysis that cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnalysis {
    /// `stepWeight` outside 1–100.
    #[error("stepWeight must be between 1 and 100, not {0}")]
    StepWeight(u32),
    /// `maxWeight` below `stepWeight` or above 100.
    #[error("maxWeight must be between stepWeight ({step}) and 100, not {max}")]
    MaxWeight {
        /// `maxWeight`.
        max: u32,
        /// `stepWeight`.
        step: u32,
    },
    /// `threshold` of zero.
    #[error("threshold must be at least 1")]
    Threshold,
    /// A zero `interval`.
    #[error("interval must be longer than zero")]
    Interval,
    /// A percentage outside 0–100, or a negative increase.
    #[error("{field} must be {range}, not {value}")]
    Percent {
        /// The field, as written in the manifest.
        field: &'static str,
        /// What it may be.
        range: &'static str,
        /// What it was.
        value: String,
    },
}

// === impl TargetKind ===

impl TargetKind {
    /// From a `targetRef`'s group (absent: Gateway API's) and kind.
    pub fn from_ref(group: Option<&str>, kind: &str) -> Option<Self> {
        match (group.unwrap_or("gateway.networking.k8s.io"), kind) {
            ("gateway.networking.k8s.io", "HTTPRoute") => Some(Self::HttpRoute),
            ("policy.linkerd.io", "HTTPRoute") => Some(Self::LinkerdHttpRoute),
            ("gateway.networking.k8s.io", "GRPCRoute") => Some(Self::GrpcRoute),
            ("split.smi-spec.io", "TrafficSplit") => Some(Self::TrafficSplit),
            _ => None,
        }
    }

    /// Its API group.
    pub fn group(self) -> &'static str {
        match self {
            Self::HttpRoute | Self::GrpcRoute => "gateway.networking.k8s.io",
            Self::LinkerdHttpRoute => "policy.linkerd.io",
            Self::TrafficSplit => "split.smi-spec.io",
        }
    }

    /// Its kind.
    pub fn kind(self) -> &'static str {
        match self {
            Self::HttpRoute | Self::LinkerdHttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
            Self::TrafficSplit => "TrafficSplit",
        }
    }
}

// === impl Analysis ===

impl Default for Analysis {
    /// Flagger's usual values: 1 minute, steps of 10 up to 50, roll back on the first breach.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            step_weight: 10,
            max_weight: 50,
            threshold: 1,
            min_requests: 20,
            checks: Vec::new(),
            on_breach: OnBreach::Rollback,
        }
    }
}

impl Analysis {
    /// Refuses what [`decide`] could not act on sensibly.
    pub fn validate(&self) -> Result<(), InvalidAnalysis> {
        if !(1..=100).contains(&self.step_weight) {
            return Err(InvalidAnalysis::StepWeight(self.step_weight));
        }
        if !(self.step_weight..=100).contains(&self.max_weight) {
            return Err(InvalidAnalysis::MaxWeight {
                max: self.max_weight,
                step: self.step_weight,
            });
        }
        if self.threshold == 0 {
            return Err(InvalidAnalysis::Threshold);
        }
        if self.interval.is_zero() {
            return Err(InvalidAnalysis::Interval);
        }
        self.checks.iter().try_for_each(MetricCheck::validate)
    }

    /// The number of passing steps from the first weight to promotion.
    pub fn steps_to_promote(&self) -> u32 {
        self.max_weight.div_ceil(self.step_weight.max(1))
    }

    /// The canary's weight during each step of a rollout that passes every step, ending
    /// with 100 once promoted: `[10, 20, 30, 40, 50, 100]` for steps of 10 up to 50.
    pub fn plan(&self) -> Vec<u32> {
        let step = self.step_weight.max(1);
        let mut weights: Vec<u32> = (1..=self.steps_to_promote())
            .map(|i| (i * step).min(self.max_weight))
            .collect();
        weights.push(100);
        weights
    }
}

// === impl State ===

impl State {
    /// A rollout's first state: progressing with the canary at `stepWeight`.
    pub fn start(analysis: &Analysis) -> Self {
        Self {
            phase: Phase::Progressing,
            weight: analysis.step_weight.min(100),
            failed_checks: 0,
        }
    }
}

// === impl BackendWindow ===

impl BackendWindow {
    /// A window of `requests` responses, `successes` of them successful.
    pub fn new(requests: u64, successes: u64, p99: Option<Duration>) -> Self {
        Self {
            requests,
            successes: successes.min(requests),
            p99,
        }
    }

    /// Successes in percent, or `None` without responses.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.successes as f64 * 100.0 / self.requests as f64)
    }
}

/// One step: what `window` says about a canary in `state`, under `analysis`.
///
/// Total: any numbers give a decision. A finished rollout stays finished.
pub fn decide(analysis: &Analysis, state: &State, window: &Window) -> Step {
    let stay = |decision| Step {
        decision,
        next: *state,
    };
    if state.phase != Phase::Progressing {
        return stay(Decision::Finished);
    }
    if window.canary.requests < analysis.min_requests {
        // Enough traffic reached the route for the canary's weight to bring it twice the
        // minimum, yet it served fewer: its endpoints are failing fast, ejected or unreachable.
        // That is a failed check, not a quiet step.
        let total = window
            .stable
            .requests
            .saturating_add(window.canary.requests);
        let expected = total.saturating_mul(u64::from(state.weight)) / 100;
        if expected >= analysis.min_requests.saturating_mul(2).max(1) {
            let breach = Breach::Starved {
                got: window.canary.requests,
                expected,
            };
            return on_breach(analysis, state, breach);
        }
        return stay(Decision::Hold(HoldReason::TooFewRequests {
            got: window.canary.requests,
            need: analysis.min_requests,
        }));
    }
    if let Some(breach) = analysis.checks.iter().find_map(|c| c.breach(window)) {
        return on_breach(analysis, state, breach);
    }
    if state.weight >= analysis.max_weight {
        return Step {
            decision: Decision::Promote,
            next: State {
                phase: Phase::Succeeded,
                weight: 100,
                ..*state
            },
        };
    }
    let weight = (state.weight + analysis.step_weight).min(analysis.max_weight);
    Step {
        decision: Decision::Advance { weight },
        next: State { weight, ..*state },
    }
}

fn on_breach(analysis: &Analysis, state: &State, breach: Breach) -> Step {
    let failed_checks = state.failed_checks + 1;
    if failed_checks < analysis.threshold {
        return Step {
            decision: Decision::Hold(HoldReason::Breach {
                breach,
                failed_checks,
                threshold: analysis.threshold,
            }),
            next: State {
                failed_checks,
                ..*state
            },
        };
    }
    match analysis.on_breach {
        OnBreach::Rollback => Step {
            decision: Decision::RollBack(breach),
            next: State {
                phase: Phase::Failed,
                weight: 0,
                failed_checks,
            },
        },
        OnBreach::Halt => Step {
            decision: Decision::Halt(breach),
            next: State {
                phase: Phase::Halted,
                failed_checks,
                ..*state
            },
        },
    }
}

#[cfg(test)]
mod tests;
