//! Fault injection: what mesh's `FaultInjection` kind (named by an `ExtensionRef` route filter)
//! does to one request, decided from random draws the caller passes in.
//!
//! As in Istio's VirtualService `fault`, the abort and the delay are drawn independently: a
//! request may be delayed, aborted, or delayed and then aborted.
//!
//! ```
//! use std::time::Duration;
//! use mesh_core::filter::fault::{Abort, AbortStatus, Delay, Fault, Share};
//!
//! let fault = Fault {
//!     abort: Some(Abort { share: Share::from_percentage(10.0).unwrap(), status: AbortStatus::Http(503) }),
//!     delay: Some(Delay { share: Share::ALL, fixed: Duration::from_millis(200) }),
//! };
//! // A draw below 10 % of the range aborts; every request is delayed.
//! let injected = fault.decide(0, u64::MAX);
//! assert_eq!(injected.abort, Some(AbortStatus::Http(503)));
//! assert_eq!(injected.delay, Some(Duration::from_millis(200)));
//! assert_eq!(fault.decide(u64::MAX, 0).abort, None);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// An `ExtensionRef` filter naming a `FaultInjection` in the route's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRef {
    /// The `FaultInjection`'s name.
    pub name: String,
    /// What it injects, once linking found it; `None` while it does not exist, and then
    /// Gateway API says the requests the filter would process get an error (500).
    pub fault: Option<Arc<Fault>>,
}

/// A `FaultInjection`: at least one of an abort and a delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Answer some requests without calling the backend.
    pub abort: Option<Abort>,
    /// Hold some requests before forwarding them.
    pub delay: Option<Delay>,
}

/// `abort`: a share of requests answered with a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    /// The share of requests aborted.
    pub share: Share,
    /// What they are answered with.
    pub status: AbortStatus,
}

/// What an aborted request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status (`httpStatus`).
    Http(u16),
    /// A gRPC status code (`grpcStatus`), as a trailers-only response.
    Grpc(u16),
}

/// `delay`: a share of requests held for a fixed time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    /// The share of requests delayed.
    pub share: Share,
    /// How long.
    pub fixed: Duration,
}

/// A share of requests, in millionths: `percentage: 0.5` is 5,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Share(u32);

/// What a fault does to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Answer with this instead of calling the backend (after the delay, if any).
    pub abort: Option<AbortStatus>,
    /// Wait this long first.
    pub delay: Option<Duration>,
}

/// Millionths in 100 %.
const MILLION: u32 = 1_000_000;

// === impl Fault ===

impl Fault {
    /// What this fault does to the request whose random draws (each uniform over `u64`) are
    /// `abort_draw` and `delay_draw`.
    pub fn decide(&self, abort_draw: u64, delay_draw: u64) -> Injected {
        Injected {
            abort: (self.abort)
                .filter(|a| a.share.hit(abort_draw))
                .map(|a| a.status),
            delay: (self.delay)
                .filter(|d| d.share.hit(delay_draw))
                .map(|d| d.fixed),
        }
    }
}

// === impl Share ===

impl Share {
    /// Every request.
    pub const ALL: Self = Self(MILLION);

    /// The share `percentage` (0–100, fractions to a ten-thousandth) names; `None` outside.
    pub fn from_percentage(percentage: f64) -> Option<Self> {
        if !(0.0..=100.0).contains(&percentage) {
            return None;
        }
        // Within 0..=1e6 after the range check, so the cast neither wraps nor saturates.
        let millionths = (percentage * 10_000.0).round() as u32;
        Some(Self(millionths))
    }

    /// The share as a percentage.
    pub fn percentage(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// Whether the request whose draw (uniform over `u64`) is `draw` falls in this share.
    pub fn hit(self, draw: u64) -> bool {
        // The bias of a u64 draw modulo a million is below 2^-44.
        self.0 >= MILLION || draw % u64::from(MILLION) < u64::from(self.0)
    }
}

// === Display, for `mesh policy explain` ===

impl fmt::Display for FaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultInjection/{}: ", self.name)?;
        match &self.fault {
            Some(fault) => write!(f, "{fault}"),
            None => f.write_str("not found, every request answered 500"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(a) = &self.abort {
            parts.push(format!("abort {} for {} of requests", a.status, a.share));
        }
        if let Some(d) = &self.delay {
            parts.push(format!("delay {:?} for {}", d.fixed, d.share));
        }
        f.write_str(&parts.join("; "))
    }
}

impl fmt::Display for AbortStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(s) => write!(f, "{s}"),
            Self::Grpc(c) => write!(f, "grpc-status {c}"),
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} %", self.percentage())
    }
}
