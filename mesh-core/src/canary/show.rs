//! How canary states and decisions read in `status`, Events, `explain` and logs.

use std::fmt;

use super::{Breach, Decision, HoldReason, MetricCheck, Phase};

// === impl Phase ===

impl Phase {
    /// The name in `status.phase`, and in the `canary_phase` metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "Progressing",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Halted => "Halted",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Decision, Breach ===

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Advance { weight } => write!(f, "advance: canary weight {weight}%"),
            Self::Promote => f.write_str("promote: all traffic to the canary"),
            Self::Hold(HoldReason::TooFewRequests { got, need }) => {
                write!(f, "hold: the canary served {got} requests, {need} needed")
            }
            Self::Hold(HoldReason::Breach {
                breach,
                failed_checks,
                threshold,
            }) => write!(
                f,
                "hold: {breach} (failed check {failed_checks} of {threshold})"
            ),
            Self::RollBack(breach) => write!(f, "roll back: {breach}"),
            Self::Halt(breach) => write!(f, "halt: {breach}"),
            Self::Finished => f.write_str("finished"),
        }
    }
}

impl fmt::Display for MetricCheck {
    /// What must hold, as `explain` shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match self {
            Self::SuccessRate {
                min,
                max_drop_from_stable,
            } => {
                if let Some(min) = min {
                    parts.push(format!("success rate ≥ {min}%"));
                }
                if let Some(d) = max_drop_from_stable {
                    parts.push(format!("success rate at most {d} points below stable's"));
                }
            }
            Self::LatencyP99 {
                max,
                max_increase_from_stable,
            } => {
                if let Some(max) = max {
                    parts.push(format!("p99 ≤ {max:?}"));
                }
                if let Some(pct) = max_increase_from_stable {
                    parts.push(format!("p99 at most {pct}% above stable's"));
                }
            }
        }
        if parts.is_empty() {
            return f.write_str("no threshold");
        }
        f.write_str(&parts.join(", "))
    }
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SuccessRate { canary, min } => {
                write!(f, "canary success rate {canary:.2}% is below {min}%")
            }
            Self::SuccessRateDrop {
                canary,
                stable,
                max_drop,
            } => write!(
                f,
                "canary success rate {canary:.2}% is more than {max_drop} points below stable's {stable:.2}%"
            ),
            Self::Latency { canary, max } => {
                write!(f, "canary p99 {canary:?} is above {max:?}")
            }
            Self::Starved { got, expected } => write!(
                f,
                "the canary served {got} requests where its weight should have brought about \
                 {expected}: its endpoints are failing or unreachable"
            ),
            Self::LatencyIncrease {
                canary,
                stable,
                max_increase,
            } => write!(
                f,
                "canary p99 {canary:?} is more than {max_increase}% above stable's {stable:?}"
            ),
        }
    }
}
