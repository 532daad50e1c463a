use std::time::Duration;

use super::sim::{Simulation, Traffic};
use super::*;

const MS: Duration = Duration::from_millis(1);

fn analysis(checks: Vec<MetricCheck>) -> Analysis {
    Analysis {
        checks,
        ..Analysis::default()
    }
}

fn success_rate(min: f64) -> MetricCheck {
    MetricCheck::SuccessRate {
        min: Some(min),
        max_drop_from_stable: None,
    }
}

fn latency(max: Duration) -> MetricCheck {
    MetricCheck::LatencyP99 {
        max: Some(max),
        max_increase_from_stable: None,
    }
}

fn healthy() -> Traffic {
    Traffic::new(0.0, 20 * MS).with_jitter(5 * MS)
}

#[test]
fn a_healthy_canary_is_promoted_after_max_weight_over_step_weight_steps() {
    for (step_weight, max_weight) in [(10, 50), (20, 100), (25, 60), (5, 5), (30, 100)] {
        let a = Analysis {
            step_weight,
            max_weight,
            ..analysis(vec![success_rate(99.0), latency(100 * MS)])
        };
        a.validate().unwrap();
        let rollout = Simulation::new(a.clone(), 1)
            .stable(healthy())
            .canary(healthy())
            .run();
        assert_eq!(
            rollout.outcome.phase,
            Phase::Succeeded,
            "{step_weight}/{max_weight}"
        );
        assert_eq!(rollout.outcome.weight, 100);
        assert_eq!(rollout.steps.len() as u32, a.steps_to_promote());
        let weights: Vec<u32> = rollout.steps.iter().map(|s| s.weight).collect();
        assert!(weights.windows(2).all(|w| w[0] < w[1]), "{weights:?}");
        assert_eq!(*weights.last().unwrap(), max_weight);
        assert_eq!(rollout.steps.last().unwrap().decision, Decision::Promote);
    }
}

#[test]
fn an_error_rate_crossing_the_threshold_at_step_k_rolls_back_at_step_k_and_never_before() {
    let a = analysis(vec![success_rate(99.0)]);
    for k in 1..=a.steps_to_promote() {
        for seed in 0..5 {
            let rollout = Simulation::new(a.clone(), seed)
                .stable(healthy())
                .canary(healthy())
                .canary_from_step(k, Traffic::new(0.05, 20 * MS))
                .run();
            assert_eq!(rollout.outcome.phase, Phase::Failed, "k={k} seed={seed}");
            assert_eq!(rollout.outcome.weight, 0);
            assert_eq!(rollout.steps.len() as u32, k, "k={k} seed={seed}");
            let last = rollout.steps.last().unwrap();
            assert!(
                matches!(
                    last.decision,
                    Decision::RollBack(Breach::SuccessRate { .. })
                ),
                "{:?}",
                last.decision
            );
            assert!(
                rollout.steps[..k as usize - 1]
                    .iter()
                    .all(|s| matches!(s.decision, Decision::Advance { .. }))
            );
        }
    }
}

#[test]
fn a_breach_in_a_step_without_enough_requests_rolls_back_one_step_later() {
    // Step 3's traffic is too thin to judge (the canary gets ~3 requests at 30 %); step 4's
    // is not, and the failing canary is rolled back then.
    let a = analysis(vec![success_rate(99.0)]);
    let rollout = Simulation::new(a, 3)
        .stable(healthy())
        .canary(healthy())
        .canary_from_step(3, Traffic::new(0.5, 20 * MS))
        .requests_from_step(3, 10)
        .requests_from_step(4, 1_000)
        .run();
    let decisions: Vec<&Decision> = rollout.steps.iter().map(|s| &s.decision).collect();
    assert!(matches!(
        decisions[2],
        Decision::Hold(HoldReason::TooFewRequests { need: 20, .. })
    ));
    assert!(
        matches!(decisions[3], Decision::RollBack(_)),
        "{decisions:?}"
    );
    assert_eq!(rollout.steps.len(), 4);
    assert_eq!(
        rollout.steps[3].weight, 30,
        "the held step did not move the weight"
    );
}

#[test]
fn a_latency_breach_rolls_back_at_the_step_it_starts() {
    let a = analysis(vec![latency(100 * MS)]);
    for k in 1..=a.steps_to_promote() {
        let rollout = Simulation::new(a.clone(), u64::from(k))
            .stable(healthy())
            .canary(healthy())
            .canary_from_step(k, Traffic::new(0.0, 150 * MS))
            .run();
        assert_eq!(rollout.steps.len() as u32, k);
        let last = &rollout.steps.last().unwrap().decision;
        assert!(
            matches!(last, Decision::RollBack(Breach::Latency { max, .. }) if *max == 100 * MS),
            "{last:?}"
        );
    }
}

#[test]
fn thresholds_relative_to_stable_compare_with_stable_in_the_same_step() {
    let a = analysis(vec![
        MetricCheck::SuccessRate {
            min: None,
            max_drop_from_stable: Some(1.0),
        },
        MetricCheck::LatencyP99 {
            max: None,
            max_increase_from_stable: Some(50.0),
        },
    ]);
    // Both backends failing 2 %: the canary is no worse than stable, so it is promoted (with
    // enough requests that sampling noise stays well inside the 1-point margin).
    let same = Traffic::new(0.02, 20 * MS);
    let rollout = Simulation::new(a.clone(), 9)
        .requests_per_step(20_000)
        .stable(same)
        .canary(same)
        .run();
    assert_eq!(rollout.outcome.phase, Phase::Succeeded);
    // Twice stable's latency is a breach; 1.2× is not.
    let slow = Simulation::new(a.clone(), 9)
        .stable(Traffic::new(0.0, 20 * MS))
        .canary(Traffic::new(0.0, 40 * MS))
        .run();
    assert!(matches!(
        slow.steps[0].decision,
        Decision::RollBack(Breach::LatencyIncrease { .. })
    ));
    let fine = Simulation::new(a, 9)
        .stable(Traffic::new(0.0, 20 * MS))
        .canary(Traffic::new(0.0, 24 * MS))
        .run();
    assert_eq!(fine.outcome.phase, Phase::Succeeded);
}

#[test]
fn too_little_traffic_holds_rather_than_promotes() {
    let rollout = Simulation::new(analysis(vec![success_rate(99.0)]), 5)
        .requests_per_step(50)
        .max_steps(20)
        .run();
    assert_eq!(rollout.steps.len(), 20);
    assert_eq!(rollout.outcome, State::start(&Analysis::default()));
    assert!(rollout.steps.iter().all(|s| matches!(
        s.decision,
        Decision::Hold(HoldReason::TooFewRequests { .. })
    )));
}

#[test]
fn a_threshold_above_one_tolerates_failed_checks_and_halt_keeps_the_weights() {
    let a = Analysis {
        threshold: 2,
        on_breach: OnBreach::Halt,
        ..analysis(vec![success_rate(99.0)])
    };
    let state = State {
        weight: 30,
        ..State::start(&a)
    };
    let bad = Window {
        stable: BackendWindow::new(700, 700, None),
        canary: BackendWindow::new(300, 280, None),
    };
    let first = decide(&a, &state, &bad);
    assert!(matches!(
        first.decision,
        Decision::Hold(HoldReason::Breach {
            failed_checks: 1,
            threshold: 2,
            ..
        })
    ));
    assert_eq!(first.next.weight, 30);
    let second = decide(&a, &first.next, &bad);
    assert!(matches!(second.decision, Decision::Halt(_)));
    assert_eq!(
        second.next,
        State {
            phase: Phase::Halted,
            weight: 30,
            failed_checks: 2
        }
    );
    let good = Window {
        canary: BackendWindow::new(300, 300, None),
        ..bad
    };
    assert_eq!(decide(&a, &second.next, &good).decision, Decision::Finished);
}

#[test]
fn invalid_analyses_are_refused_with_the_field() {
    let bad = [
        (
            Analysis {
                step_weight: 0,
                ..Analysis::default()
            },
            "stepWeight",
        ),
        (
            Analysis {
                step_weight: 20,
                max_weight: 10,
                ..Analysis::default()
            },
            "maxWeight",
        ),
        (
            Analysis {
                max_weight: 101,
                ..Analysis::default()
            },
            "maxWeight",
        ),
        (
            Analysis {
                threshold: 0,
                ..Analysis::default()
            },
            "threshold",
        ),
        (
            Analysis {
                interval: Duration::ZERO,
                ..Analysis::default()
            },
            "interval",
        ),
        (analysis(vec![success_rate(120.0)]), "thresholdRange.min"),
        (
            analysis(vec![MetricCheck::LatencyP99 {
                max: None,
                max_increase_from_stable: Some(-1.0),
            }]),
            "maxIncreaseFromStable",
        ),
    ];
    for (a, field) in bad {
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
}

#[test]
fn the_same_seed_gives_the_same_rollout() {
    let sim = Simulation::new(analysis(vec![success_rate(97.0)]), 11)
        .canary(Traffic::new(0.02, 20 * MS).with_jitter(30 * MS));
    assert_eq!(sim.run(), sim.run());
}

#[test]
fn decisions_read_as_sentences() {
    let d = Decision::RollBack(Breach::SuccessRate {
        canary: 95.0,
        min: 99.0,
    });
    assert_eq!(
        d.to_string(),
        "roll back: canary success rate 95.00% is below 99%"
    );
    let h = Decision::Hold(HoldReason::TooFewRequests { got: 3, need: 20 });
    assert_eq!(
        h.to_string(),
        "hold: the canary served 3 requests, 20 needed"
    );
}

#[test]
fn the_plan_lists_each_steps_weight_and_checks_read_as_conditions() {
    assert_eq!(Analysis::default().plan(), [10, 20, 30, 40, 50, 100]);
    let a = Analysis {
        step_weight: 25,
        max_weight: 60,
        ..Analysis::default()
    };
    assert_eq!(a.plan(), [25, 50, 60, 100]);
    assert_eq!(a.plan().len() as u32, a.steps_to_promote() + 1);
    let check = MetricCheck::LatencyP99 {
        max: Some(250 * MS),
        max_increase_from_stable: Some(50.0),
    };
    assert_eq!(
        check.to_string(),
        "p99 ≤ 250ms, p99 at most 50% above stable's"
    );
}

#[test]
fn a_canary_starved_of_its_share_is_a_breach_not_a_quiet_step() {
    // Callers' circuit breakers ejected a canary that failed everything: the route carried
    // 1,000 requests at weight 30, the canary served 4.
    let a = analysis(vec![success_rate(99.0)]);
    let state = State {
        weight: 30,
        ..State::start(&a)
    };
    let window = Window {
        stable: BackendWindow::new(996, 996, None),
        canary: BackendWindow::new(4, 0, None),
    };
    let step = decide(&a, &state, &window);
    assert!(
        matches!(
            step.decision,
            Decision::RollBack(Breach::Starved {
                got: 4,
                expected: 300
            })
        ),
        "{:?}",
        step.decision
    );
    // A quiet route is still only a hold: 100 requests at weight 30 bring 30, under 2 × 20.
    let quiet = Window {
        stable: BackendWindow::new(96, 96, None),
        canary: BackendWindow::new(4, 4, None),
    };
    assert!(matches!(
        decide(&a, &state, &quiet).decision,
        Decision::Hold(HoldReason::TooFewRequests { .. })
    ));
}
