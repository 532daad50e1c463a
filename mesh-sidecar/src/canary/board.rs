//! What each canary a [`Driver`](super::Driver) moves looks like now, for people rather than
//! for the next step: its phase, weight, failed checks and last decision in words, with the
//! last few decisions. `mesh demo --canary` prints it in its live table and serves it to the
//! dashboard (`/api/canaries`); the controller keeps the same facts in each Canary's status.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use mesh_core::canary::{Canary, State};
use parking_lot::Mutex;
use serde::Serialize;

use super::Outcome;

/// Decisions kept per canary: a whole short rollout, bounded for a long one.
const HISTORY: usize = 20;

/// The canaries' views, by namespace and name.
#[derive(Debug, Default)]
pub(crate) struct Board {
    views: Mutex<BTreeMap<(String, String), View>>,
}

/// One canary as a person reads it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct View {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `HTTPRoute/voting-canary`.
    pub(crate) target: String,
    pub(crate) stable: String,
    pub(crate) canary: String,
    /// `None` until the rollout started.
    pub(crate) phase: Option<&'static str>,
    /// The canary's weight in percent; stable has the rest.
    pub(crate) weight: Option<u32>,
    pub(crate) failed_checks: u32,
    pub(crate) threshold: u32,
    /// The last outcome: the `Promoted` condition's reason and message.
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// The last decisions, oldest first.
    pub(crate) history: VecDeque<Decided>,
}

/// One recorded outcome.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Decided {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) weight: Option<u32>,
}

// === impl Board ===

impl Board {
    /// Records `outcome`, and `state` when it moved anything.
    pub(crate) fn record(&self, canary: &Canary, state: Option<&State>, outcome: &Outcome) {
        let key = (canary.namespace.clone(), canary.name.clone());
        let mut views = self.views.lock();
        let view = views.entry(key).or_insert_with(|| View::new(canary));
        if let Some(s) = state {
            view.phase = Some(s.phase.as_str());
            view.weight = Some(s.weight);
            view.failed_checks = s.failed_checks;
        }
        view.threshold = canary.analysis.threshold;
        view.reason = outcome.reason();
        view.message = outcome.to_string();
        if view.history.len() == HISTORY {
            view.history.pop_front();
        }
        view.history.push_back(Decided {
            reason: view.reason,
            message: view.message.clone(),
            weight: view.weight,
        });
    }

    /// Every canary, by namespace and name.
    pub(crate) fn views(&self) -> Vec<View> {
        self.views.lock().values().cloned().collect()
    }
}

// === impl View ===

impl View {
    fn new(canary: &Canary) -> Self {
        Self {
            namespace: canary.namespace.clone(),
            name: canary.name.clone(),
            target: format!("{}/{}", canary.target.kind.kind(), canary.target.name),
            stable: canary.stable.name.clone(),
            canary: canary.canary.name.clone(),
            phase: None,
            weight: None,
            failed_checks: 0,
            threshold: canary.analysis.threshold,
            reason: "",
            message: String::new(),
            history: VecDeque::new(),
        }
    }
}

impl fmt::Display for View {
    /// One line: `canary emojivoto/voting: Progressing, voting-v2 40% (voting-v1 60%), failed
    /// checks 0 of 1; last: advance: canary weight 40%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "canary {}/{}: ", self.namespace, self.name)?;
        match (self.phase, self.weight) {
            (Some(phase), Some(w)) => write!(
                f,
                "{phase}, {} {w}% ({} {}%), failed checks {} of {}",
                self.canary,
                self.stable,
                100 - w.min(100),
                self.failed_checks,
                self.threshold
            )?,
            _ => f.write_str("not started")?,
        }
        if !self.message.is_empty() {
            write!(f, "; last: {}", self.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::canary::{Analysis, Backend, Decision, Phase, Target, TargetKind};

    #[test]
    fn a_view_says_the_phase_weights_and_last_decision_and_keeps_a_bounded_history() {
        let canary = Canary {
            namespace: "emojivoto".into(),
            name: "voting".into(),
            target: Target {
                kind: TargetKind::HttpRoute,
                name: "voting-canary".into(),
            },
            stable: Backend {
                name: "voting-v1".into(),
                port: None,
            },
            canary: Backend {
                name: "voting-v2".into(),
                port: None,
            },
            analysis: Analysis::default(),
            suspend: false,
        };
        let board = Board::default();
        let state = State {
            phase: Phase::Progressing,
            weight: 40,
            failed_checks: 0,
        };
        for _ in 0..HISTORY + 5 {
            let advance = Outcome::Decided(Decision::Advance { weight: 40 });
            board.record(&canary, Some(&state), &advance);
        }
        let views = board.views();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].history.len(), HISTORY);
        assert_eq!(
            views[0].to_string(),
            "canary emojivoto/voting: Progressing, voting-v2 40% (voting-v1 60%), failed checks 0 of 1; last: advance: canary weight 40%"
        );
        let json = serde_json::to_value(&views).unwrap();
        assert_eq!(json[0]["phase"], "Progressing");
        assert_eq!(json[0]["weight"], 40);
        assert_eq!(json[0]["reason"], "Advanced");
    }
}
