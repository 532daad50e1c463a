//! Seeded weighted sampling converges to the weights and never picks a zero weight.

use mesh_core::split::{BackendRef, Backends, SplitMix64, WeightedBackend};
use proptest::prelude::*;

fn backends(weights: &[u64]) -> Backends {
    Backends::new(
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| WeightedBackend {
                backend: BackendRef::new(format!("b{i}"), "ns", Some(80)),
                weight,
            })
            .collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sampling_converges_to_the_weights(
        weights in prop::collection::vec(prop_oneof![Just(0u64), 1u64..1_000], 1..6),
        seed in any::<u64>(),
    ) {
        let total: u64 = weights.iter().sum();
        prop_assume!(total > 0);
        let set = backends(&weights);
        let n = 20_000u64;
        let mut counts = vec![0u64; weights.len()];
        let mut rng = SplitMix64::new(seed);
        for _ in 0..n {
            let b = set.pick(rng.next()).expect("a positive total always picks");
            let i: usize = b.name()[1..].parse().unwrap();
            counts[i] += 1;
        }
        for (i, (&w, &c)) in weights.iter().zip(&counts).enumerate() {
            if w == 0 {
                prop_assert_eq!(c, 0, "zero-weight backend b{} was chosen", i);
            } else {
                let want = w as f64 / total as f64;
                let got = c as f64 / n as f64;
                // Five standard deviations of a binomial share, plus a little slack.
                let tol = 5.0 * (want * (1.0 - want) / n as f64).sqrt() + 0.002;
                prop_assert!((got - want).abs() <= tol, "b{}: got {} want {} ± {}", i, got, want, tol);
            }
        }
    }

    #[test]
    fn every_sample_picks_a_positive_weight(weights in prop::collection::vec(0u64..5, 1..8), sample in any::<u64>()) {
        let set = backends(&weights);
        match set.pick(sample) {
            Some(b) => {
                let i: usize = b.name()[1..].parse().unwrap();
                prop_assert!(weights[i] > 0);
            }
            None => prop_assert_eq!(weights.iter().sum::<u64>(), 0),
        }
    }
}
