//! The driver with everything in memory: what it writes, records and leaves alone.

use std::collections::VecDeque;
use std::time::Duration;

use mesh_core::canary::{
    Analysis, Backend, BackendWindow, Canary, MetricCheck, Phase, State, Target, TargetKind, Window,
};
use parking_lot::Mutex;

use super::route::TargetProblem;
use super::*;

#[derive(Default)]
struct Fakes {
    canary: Mutex<Option<Canary>>,
    /// The route's canary weight; `None`: the route is missing.
    route: Mutex<Option<u32>>,
    writes: Mutex<Vec<u32>>,
    state: Mutex<Option<State>>,
    reasons: Mutex<Vec<&'static str>>,
    windows: Mutex<VecDeque<Window>>,
    /// Another replica's step, recorded while this one measures.
    meanwhile: Mutex<Option<State>>,
}

impl Canaries for &Fakes {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Canary>, BoxError> {
        Ok(self.canary.lock().clone())
    }
}

impl Weights for &Fakes {
    async fn read(&self, c: &Canary) -> Result<u32, Blocked> {
        (*self.route.lock()).ok_or_else(|| missing(c))
    }

    async fn set(&self, c: &Canary, weight: u32) -> Result<(), Blocked> {
        let mut route = self.route.lock();
        let r = route.as_mut().ok_or_else(|| missing(c))?;
        *r = weight;
        self.writes.lock().push(weight);
        Ok(())
    }
}

impl Store for &Fakes {
    async fn load(&self, _: &Canary) -> Result<Option<State>, BoxError> {
        Ok(*self.state.lock())
    }

    async fn record(&self, _: &Canary, s: Option<&State>, o: &Outcome) -> Result<(), BoxError> {
        if let Some(s) = s {
            *self.state.lock() = Some(*s);
        }
        self.reasons.lock().push(o.reason());
        Ok(())
    }
}

impl Goldens for &Fakes {
    async fn window(&self, _: &Canary, _: Duration) -> Result<Window, BoxError> {
        if let Some(s) = self.meanwhile.lock().take() {
            *self.state.lock() = Some(s);
        }
        Ok(self.windows.lock().pop_front().unwrap_or_default())
    }
}

fn missing(c: &Canary) -> Blocked {
    Blocked::Target(TargetProblem::NotFound {
        kind: "HTTPRoute",
        name: c.target.name.clone(),
    })
}

fn canary() -> Canary {
    Canary {
        namespace: "shop".into(),
        name: "web".into(),
        target: Target {
            kind: TargetKind::HttpRoute,
            name: "web".into(),
        },
        stable: Backend {
            name: "web-v1".into(),
            port: None,
        },
        canary: Backend {
            name: "web-v2".into(),
            port: None,
        },
        analysis: Analysis {
            step_weight: 25,
            max_weight: 50,
            min_requests: 10,
            checks: vec![MetricCheck::SuccessRate {
                min: Some(90.0),
                max_drop_from_stable: None,
            }],
            ..Analysis::default()
        },
        suspend: false,
    }
}

fn window(canary_successes: u64) -> Window {
    Window {
        stable: BackendWindow::new(100, 100, None),
        canary: BackendWindow::new(100, canary_successes, None),
    }
}

fn fakes(windows: &[Window]) -> Fakes {
    let f = Fakes::default();
    *f.canary.lock() = Some(canary());
    *f.route.lock() = Some(0);
    f.windows.lock().extend(windows.iter().copied());
    f
}

fn driver(f: &Fakes) -> Driver<&Fakes, &Fakes, &Fakes, &Fakes> {
    Driver {
        canaries: f,
        weights: f,
        store: f,
        goldens: f,
        metrics: CanaryMetrics::new(Registry::new()),
    }
}

async fn steps(f: &Fakes, n: usize) -> Vec<Next> {
    steps_of(&driver(f), n).await
}

async fn steps_of(d: &Driver<&Fakes, &Fakes, &Fakes, &Fakes>, n: usize) -> Vec<Next> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(d.step("shop", "web").await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_healthy_canary_is_promoted_along_the_plan_then_left_alone() {
    let f = fakes(&[window(100), window(100), window(100)]);
    let d = driver(&f);
    steps_of(&d, 5).await;
    assert_eq!(*f.writes.lock(), [25, 50, 100]);
    assert_eq!(
        *f.reasons.lock(),
        ["Started", "Advanced", "Promoted"],
        "a finished rollout records nothing more"
    );
    assert_eq!(f.state.lock().map(|s| s.phase), Some(Phase::Succeeded));
    let text = d.metrics.0.render();
    assert!(
        text.contains("canary_weight{namespace=\"shop\",name=\"web\"} 100"),
        "{text}"
    );
}

#[tokio::test]
async fn a_breach_rolls_back_in_one_write() {
    let f = fakes(&[window(100), window(50)]);
    steps(&f, 3).await;
    assert_eq!(*f.writes.lock(), [25, 50, 0]);
    assert_eq!(*f.reasons.lock(), ["Started", "Advanced", "RolledBack"]);
    assert_eq!(f.state.lock().map(|s| s.phase), Some(Phase::Failed));
}

#[tokio::test]
async fn suspended_deleted_and_unroutable_canaries_write_nothing() {
    let f = fakes(&[window(100)]);
    f.canary.lock().as_mut().unwrap().suspend = true;
    assert_eq!(steps(&f, 2).await, [Next::Wait(Duration::from_secs(60)); 2]);
    assert!(f.writes.lock().is_empty() && f.reasons.lock().is_empty());

    *f.canary.lock() = None;
    assert_eq!(steps(&f, 1).await, [Next::Stop]);

    *f.canary.lock() = Some(canary());
    *f.route.lock() = None;
    steps(&f, 2).await;
    assert!(f.writes.lock().is_empty());
    assert_eq!(*f.reasons.lock(), ["TargetNotFound", "TargetNotFound"]);
    assert_eq!(*f.state.lock(), None, "the rollout has not started");
}

#[tokio::test]
async fn a_step_another_replica_took_meanwhile_stands() {
    let f = fakes(&[window(50), window(100)]);
    steps(&f, 1).await;
    let theirs = State {
        phase: Phase::Progressing,
        weight: 50,
        failed_checks: 0,
    };
    *f.meanwhile.lock() = Some(theirs);
    // Our failing window was measured against a state that is gone: dropped.
    assert_eq!(steps(&f, 1).await, [Next::Measure]);
    assert_eq!(*f.state.lock(), Some(theirs));
    assert_eq!(*f.writes.lock(), [25]);
    steps(&f, 1).await;
    assert_eq!(*f.writes.lock(), [25, 100]);
}
