//! A metric check: its validation, and whether a step's window passes it.

use super::{Breach, InvalidAnalysis, MetricCheck, Window};

// === impl MetricCheck ===

impl MetricCheck {
    pub(super) fn validate(&self) -> Result<(), InvalidAnalysis> {
        let percent = |field, range, value: Option<f64>, ok: fn(f64) -> bool| match value {
            Some(v) if !ok(v) => Err(InvalidAnalysis::Percent {
                field,
                range,
                value: v.to_string(),
            }),
            _ => Ok(()),
        };
        let in_0_100 = |v: f64| (0.0..=100.0).contains(&v);
        match self {
            Self::SuccessRate {
                min,
                max_drop_from_stable,
            } => {
                percent("thresholdRange.min", "0–100", *min, in_0_100)?;
                percent(
                    "maxDropFromStable",
                    "0–100",
                    *max_drop_from_stable,
                    in_0_100,
                )
            }
            Self::LatencyP99 {
                max_increase_from_stable,
                ..
            } => percent(
                "maxIncreaseFromStable",
                "zero or more",
                *max_increase_from_stable,
                |v| v >= 0.0 && v.is_finite(),
            ),
        }
    }

    /// The breach this check finds in `window`, if any.
    pub fn breach(&self, window: &Window) -> Option<Breach> {
        match *self {
            Self::SuccessRate {
                min,
                max_drop_from_stable,
            } => {
                let canary = window.canary.success_rate()?;
                if let Some(min) = min.filter(|&m| canary < m) {
                    return Some(Breach::SuccessRate { canary, min });
                }
                let stable = window.stable.success_rate()?;
                let max_drop = max_drop_from_stable.filter(|&d| canary < stable - d)?;
                Some(Breach::SuccessRateDrop {
                    canary,
                    stable,
                    max_drop,
                })
            }
            Self::LatencyP99 {
                max,
                max_increase_from_stable,
            } => {
                let canary = window.canary.p99?;
                if let Some(max) = max.filter(|&m| canary > m) {
                    return Some(Breach::Latency { canary, max });
                }
                let stable = window.stable.p99?;
                let max_increase = max_increase_from_stable.filter(|&pct| {
                    canary.as_secs_f64() > stable.as_secs_f64() * (1.0 + pct / 100.0)
                })?;
                Some(Breach::LatencyIncrease {
                    canary,
                    stable,
                    max_increase,
                })
            }
        }
    }
}
