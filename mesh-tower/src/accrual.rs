//! Failure accrual (circuit breaking) for one endpoint: after `max_failures` consecutive
//! failures the endpoint is ejected for a backoff that doubles on each ejection (1 s to 1 min by
//! default, jittered); when the backoff ends, one probe request is let through, and its success
//! brings the endpoint back.
//!
//! A plain state machine fed with instants and a jitter sample, so it is tested without
//! sleeping.

use std::time::Duration;

use tokio::time::Instant;

/// Linkerd's default: seven consecutive failures eject an endpoint.
pub const DEFAULT_MAX_FAILURES: u32 = 7;

/// Failure accrual settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AccrualConfig {
    /// Consecutive failures that eject an endpoint.
    pub max_failures: u32,
    /// The first ejection's length.
    pub min_backoff: Duration,
    /// The longest ejection.
    pub max_backoff: Duration,
    /// Jitter as a fraction of the backoff (0.5 = ±25 %).
    pub jitter: f64,
}

/// The state of one endpoint.
#[derive(Clone, Debug)]
pub struct FailureAccrual {
    config: AccrualConfig,
    consecutive: u32,
    ejections: u32,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Available,
    Ejected { until: Instant },
    Probing,
}

// === impl AccrualConfig ===

impl Default for AccrualConfig {
    fn default() -> Self {
        Self {
            max_failures: DEFAULT_MAX_FAILURES,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

// === impl FailureAccrual ===

impl FailureAccrual {
    /// A healthy endpoint.
    pub fn new(config: AccrualConfig) -> Self {
        Self {
            config,
            consecutive: 0,
            ejections: 0,
            state: State::Available,
        }
    }

    /// Whether a request may be sent now. When an ejection has just ended, this admits exactly
    /// one probe and refuses others until the probe's outcome is recorded.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            State::Available => true,
            State::Probing => false,
            State::Ejected { until } if now >= until => {
                self.state = State::Probing;
                true
            }
            State::Ejected { .. } => false,
        }
    }

    /// Whether the endpoint is currently ejected or awaiting its probe.
    pub fn is_ejected(&self, now: Instant) -> bool {
        match self.state {
            State::Available => false,
            State::Probing => true,
            State::Ejected { until } => now < until,
        }
    }

    /// Records an outcome. `jitter` is a uniform sample in `[0, 1)`.
    pub fn record(&mut self, now: Instant, success: bool, jitter: f64) {
        if success {
            self.consecutive = 0;
            self.ejections = 0;
            self.state = State::Available;
            return;
        }
        self.consecutive += 1;
        let eject = match self.state {
            State::Probing => true,
            State::Available => self.consecutive >= self.config.max_failures,
            State::Ejected { .. } => false,
        };
        if eject {
            let backoff = self.backoff(jitter);
            self.ejections += 1;
            self.state = State::Ejected {
                until: now + backoff,
            };
            tracing::debug!(?backoff, failures = self.consecutive, "endpoint ejected");
        }
    }

    /// The next ejection's length.
    fn backoff(&self, jitter: f64) -> Duration {
        let base = self
            .config
            .min_backoff
            .saturating_mul(1u32 << self.ejections.min(16))
            .min(self.config.max_backoff);
        let j = self.config.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - j / 2.0 + j * jitter.clamp(0.0, 1.0);
        base.mul_f64(factor).min(self.config.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AccrualConfig {
        AccrualConfig {
            jitter: 0.0,
            ..AccrualConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn seven_failures_eject_with_doubling_backoff_and_a_probe_restores() {
        let mut a = FailureAccrual::new(cfg());
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(a.try_acquire(t0));
            a.record(t0, false, 0.5);
        }
        assert!(a.try_acquire(t0), "six failures are not enough");
        a.record(t0, false, 0.5);
        assert!(!a.try_acquire(t0), "the seventh ejects");
        assert!(!a.try_acquire(t0 + Duration::from_millis(999)));
        // After 1 s, exactly one probe goes through.
        let t1 = t0 + Duration::from_secs(1);
        assert!(a.try_acquire(t1));
        assert!(!a.try_acquire(t1));
        // The probe fails: ejected again, twice as long.
        a.record(t1, false, 0.5);
        assert!(!a.try_acquire(t1 + Duration::from_millis(1999)));
        let t2 = t1 + Duration::from_secs(2);
        assert!(a.try_acquire(t2));
        // The probe succeeds: back in service, and the backoff resets.
        a.record(t2, true, 0.5);
        assert!(a.try_acquire(t2));
        assert!(!a.is_ejected(t2));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut a = FailureAccrual::new(AccrualConfig::default());
        a.ejections = 30;
        assert_eq!(a.backoff(1.0), Duration::from_secs(60));
        a.ejections = 0;
        assert_eq!(a.backoff(0.0), Duration::from_millis(750));
        assert_eq!(a.backoff(1.0), Duration::from_millis(1250));
    }
}
