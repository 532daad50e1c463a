//! A deterministic rollout simulator: seeded traffic with an error rate and a latency per
//! backend, split by the canary's current weight, analysed step by step with [`decide`] on
//! virtual time. A whole rollout runs in milliseconds, the same on every machine.
//!
//! ```
//! use std::time::Duration;
//! use mesh_core::canary::{Analysis, MetricCheck, Phase};
//! use mesh_core::canary::sim::{Simulation, Traffic};
//!
//! let analysis = Analysis {
//!     checks: vec![MetricCheck::SuccessRate { min: Some(99.0), max_drop_from_stable: None }],
//!     ..Analysis::default()
//! };
//! let healthy = Traffic::new(0.0, Duration::from_millis(20));
//! let rollout = Simulation::new(analysis, 7)
//!     .stable(healthy)
//!     .canary(healthy)
//!     .canary_from_step(3, Traffic::new(0.05, Duration::from_millis(20)))
//!     .run();
//! assert_eq!(rollout.outcome.phase, Phase::Failed);
//! assert_eq!(rollout.steps.len(), 3); // steps 1 and 2 advanced, step 3 rolled back
//! ```

use std::time::Duration;

use super::{Analysis, BackendWindow, Decision, State, Window, decide};
use crate::split::SplitMix64;

/// How a backend behaves: the share of requests that fail and how long responses take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    /// Failed responses, 0.0–1.0.
    pub error_rate: f64,
    /// The fastest response.
    pub latency: Duration,
    /// Responses take `latency` plus a uniform share of this.
    pub jitter: Duration,
}

/// A rollout to simulate. Build with [`Simulation::new`], then [`Simulation::run`].
#[derive(Clone, Debug)]
pub struct Simulation {
    analysis: Analysis,
    seed: u64,
    /// Requests per step over both backends, each from a step on (1-based), in step order.
    requests: Vec<(u32, u64)>,
    max_steps: u32,
    stable: Traffic,
    /// The canary's behaviour, each from a step on (1-based), in step order.
    canary: Vec<(u32, Traffic)>,
}

/// One simulated step.
#[derive(Clone, Debug, PartialEq)]
pub struct SimStep {
    /// 1-based.
    pub index: u32,
    /// Virtual time at the end of the step.
    pub at: Duration,
    /// The canary's weight while the step's traffic ran.
    pub weight: u32,
    /// What the backends did.
    pub window: Window,
    /// What the analysis decided.
    pub decision: Decision,
}

/// What a simulated rollout did.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// Every step analysed, in order.
    pub steps: Vec<SimStep>,
    /// The state after the last step.
    pub outcome: State,
}

// === impl Traffic ===

impl Traffic {
    /// A backend failing `error_rate` of requests, each taking `latency`.
    pub fn new(error_rate: f64, latency: Duration) -> Self {
        Self {
            error_rate,
            latency,
            jitter: Duration::ZERO,
        }
    }

    /// The same, with responses spread over `latency..latency + jitter`.
    pub fn with_jitter(self, jitter: Duration) -> Self {
        Self { jitter, ..self }
    }
}

impl Default for Traffic {
    /// Healthy: no errors, 10 ms.
    fn default() -> Self {
        Self::new(0.0, Duration::from_millis(10))
    }
}

// === impl Simulation ===

impl Simulation {
    /// 1,000 requests per step, at most 100 steps, both backends healthy.
    pub fn new(analysis: Analysis, seed: u64) -> Self {
        Self {
            analysis,
            seed,
            requests: vec![(1, 1_000)],
            max_steps: 100,
            stable: Traffic::default(),
            canary: vec![(1, Traffic::default())],
        }
    }

    /// Requests per step over both backends.
    pub fn requests_per_step(mut self, n: u64) -> Self {
        self.requests = vec![(1, n)];
        self
    }

    /// Requests per step over both backends from step `step` (1-based) on.
    pub fn requests_from_step(mut self, step: u32, n: u64) -> Self {
        from_step(&mut self.requests, step, n);
        self
    }

    /// Stop after this many steps even if the rollout is still progressing.
    pub fn max_steps(mut self, n: u32) -> Self {
        self.max_steps = n;
        self
    }

    /// How the stable backend behaves throughout.
    pub fn stable(mut self, traffic: Traffic) -> Self {
        self.stable = traffic;
        self
    }

    /// How the canary behaves from the first step.
    pub fn canary(mut self, traffic: Traffic) -> Self {
        self.canary = vec![(1, traffic)];
        self
    }

    /// How the canary behaves from step `step` (1-based) on.
    pub fn canary_from_step(mut self, step: u32, traffic: Traffic) -> Self {
        from_step(&mut self.canary, step, traffic);
        self
    }

    /// Runs the rollout until it finishes or `max_steps` have been analysed.
    pub fn run(&self) -> Rollout {
        let mut rng = SplitMix64::new(self.seed);
        let mut state = State::start(&self.analysis);
        let mut steps = Vec::new();
        for index in 1..=self.max_steps {
            let window = self.traffic(index, state.weight, &mut rng);
            let step = decide(&self.analysis, &state, &window);
            steps.push(SimStep {
                index,
                at: self.analysis.interval.saturating_mul(index),
                weight: state.weight,
                window,
                decision: step.decision,
            });
            state = step.next;
            if state.phase != super::Phase::Progressing {
                break;
            }
        }
        Rollout {
            steps,
            outcome: state,
        }
    }

    /// One step's requests, split by `weight`.
    fn traffic(&self, step: u32, weight: u32, rng: &mut SplitMix64) -> Window {
        let canary = at_step(&self.canary, step).unwrap_or_default();
        let mut stable = Measured::default();
        let mut canary_seen = Measured::default();
        for _ in 0..at_step(&self.requests, step).unwrap_or(0) {
            let (traffic, into) = if unit(rng) * 100.0 < f64::from(weight) {
                (&canary, &mut canary_seen)
            } else {
                (&self.stable, &mut stable)
            };
            let ok = unit(rng) >= traffic.error_rate;
            let latency = traffic.latency + traffic.jitter.mul_f64(unit(rng));
            into.record(ok, latency);
        }
        Window {
            stable: stable.window(),
            canary: canary_seen.window(),
        }
    }
}

/// Sets what holds from `step` on in a schedule of (first step, value), replacing later entries.
fn from_step<T>(schedule: &mut Vec<(u32, T)>, step: u32, value: T) {
    schedule.retain(|(from, _)| *from < step);
    schedule.push((step, value));
}

/// What a schedule says for `step`.
fn at_step<T: Copy>(schedule: &[(u32, T)], step: u32) -> Option<T> {
    (schedule.iter().rev())
        .find(|(from, _)| *from <= step)
        .map(|(_, v)| *v)
}

/// A uniform sample in [0, 1).
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next() >> 11) as f64 / (1u64 << 53) as f64
}

/// Responses seen for one backend in one step.
#[derive(Default)]
struct Measured {
    successes: u64,
    latencies: Vec<Duration>,
}

impl Measured {
    fn record(&mut self, ok: bool, latency: Duration) {
        self.successes += u64::from(ok);
        self.latencies.push(latency);
    }

    /// Counts and the nearest-rank p99.
    fn window(mut self) -> BackendWindow {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let p99 = (n > 0).then(|| self.latencies[(n * 99).div_ceil(100).max(1) - 1]);
        BackendWindow::new(n as u64, self.successes, p99)
    }
}
