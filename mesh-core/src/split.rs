//! Weighted backends and the choice between them.
//!
//! Randomness is an argument: [`Backends::pick`] takes a uniform `u64` sample, so a test can
//! replay a choice, and [`SplitMix64`] gives a seeded stream of samples for simulations.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A destination Service and port that a route sends traffic to.
///
/// The names are shared (`Arc<str>`): a request's chosen backend, a balancer's key and a metric
/// label are clones of the route's, so cloning one allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendRef {
    name: Arc<str>,
    namespace: Arc<str>,
    port: Option<u16>,
}

/// A backend and its relative weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBackend {
    /// Where to send.
    pub backend: BackendRef,
    /// Relative weight; zero means never chosen.
    pub weight: u64,
}

/// The weighted backends of a route, ready for picking.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Backends {
    list: Vec<WeightedBackend>,
    total: u64,
}

/// A small, fast, seeded generator of uniform `u64` samples (SplitMix64). Deterministic:
/// the same seed gives the same samples on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

// === impl BackendRef ===

impl BackendRef {
    /// The Service `name` in `namespace`, at `port` (`None`: the port the request was sent to).
    pub fn new(
        name: impl Into<Arc<str>>,
        namespace: impl Into<Arc<str>>,
        port: Option<u16>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }

    /// A destination that is no Service: an address, in no namespace.
    pub fn address(addr: SocketAddr) -> Self {
        Self::new(addr.ip().to_string(), "", Some(addr.port()))
    }

    /// The Service's name (an address's IP, for a destination that is no Service).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Service's namespace; empty for an address.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The port, or `None` for "the port the request was sent to".
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The same backend at `port` where it names none: the port the request was sent to.
    /// Shares the names.
    #[must_use]
    pub fn or_port(&self, port: u16) -> Self {
        Self {
            port: Some(self.port.unwrap_or(port)),
            ..self.clone()
        }
    }

    /// `name.namespace`, the form `mesh policy explain` prints; an address (a destination that
    /// is no Service) prints as itself.
    pub fn service(&self) -> String {
        if self.namespace.is_empty() {
            self.name.to_string()
        } else {
            format!("{}.{}", self.name, self.namespace)
        }
    }

    /// The address, when the destination is an IP address rather than a Service.
    pub fn ip(&self) -> Option<IpAddr> {
        if self.namespace.is_empty() {
            self.name.parse().ok()
        } else {
            None
        }
    }
}

impl fmt::Display for BackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.namespace.is_empty() {
            write!(f, ".{}", self.namespace)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

// === impl Backends ===

impl Backends {
    /// Builds the set; weights saturate rather than overflow.
    pub fn new(list: Vec<WeightedBackend>) -> Self {
        let total = list
            .iter()
            .fold(0u64, |acc, b| acc.saturating_add(b.weight));
        Self { list, total }
    }

    /// All backends, including zero-weight ones, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = &WeightedBackend> {
        self.list.iter()
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u64 {
        self.total
    }

    /// Chooses a backend from a uniform sample over all of `u64`. A zero-weight backend is
    /// never chosen; `None` only when every weight is zero (or there are no backends).
    pub fn pick(&self, sample: u64) -> Option<&BackendRef> {
        if self.total == 0 {
            return None;
        }
        if let [only] = self.list.as_slice() {
            return Some(&only.backend);
        }
        // Scale the sample into [0, total) without modulo bias.
        let mut point = ((u128::from(sample) * u128::from(self.total)) >> 64) as u64;
        for b in &self.list {
            if point < b.weight {
                return Some(&b.backend);
            }
            point -= b.weight;
        }
        // Unreachable as point < total, but stay total rather than panic.
        self.list
            .iter()
            .rev()
            .find(|b| b.weight > 0)
            .map(|b| &b.backend)
    }
}

// === impl SplitMix64 ===

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next sample.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str, weight: u64) -> WeightedBackend {
        WeightedBackend {
            backend: BackendRef::new(name, "ns", Some(80)),
            weight,
        }
    }

    #[test]
    fn picks_by_weight_at_the_edges() {
        let s = Backends::new(vec![b("a", 90), b("z", 0), b("c", 10)]);
        assert_eq!(s.pick(0).unwrap().name(), "a");
        assert_eq!(s.pick(u64::MAX).unwrap().name(), "c");
        // 90% of the way through the sample space is the first sample that reaches c.
        let edge = (((u128::from(u64::MAX) + 1) * 90).div_ceil(100)) as u64;
        assert_eq!(s.pick(edge - 1).unwrap().name(), "a");
        assert_eq!(s.pick(edge).unwrap().name(), "c");
    }

    #[test]
    fn all_zero_weights_pick_nothing() {
        assert!(Backends::new(vec![b("a", 0), b("b", 0)]).pick(7).is_none());
        assert!(Backends::new(vec![]).pick(7).is_none());
    }

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..10 {
            assert_eq!(a.next(), b.next());
        }
    }
}
