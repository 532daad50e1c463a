//! `Canary` (policy.mesh.io/v1alpha1) read like every other kind: Flagger's field names,
//! defaults, and each mistake refused with its field.

use std::time::Duration;

use mesh_core::MeshPolicy;
use mesh_core::canary::{Backend, MetricCheck, OnBreach, TargetKind};

const CANARY: &str = r#"
apiVersion: policy.mesh.io/v1alpha1
kind: Canary
metadata: { name: voting, namespace: emojivoto }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: HTTPRoute, name: voting }
  stable: { name: voting-v1, port: 8080 }
  canary: { name: voting-v2, port: 8080 }
  analysis:
    interval: 30s
    stepWeight: 20
    maxWeight: 60
    threshold: 2
    minRequests: 50
    onBreach: Halt
    metrics:
    - name: request-success-rate
      thresholdRange: { min: 99 }
      maxDropFromStable: 0.5
    - name: request-duration
      thresholdRange: { max: 250 }
      maxIncreaseFromStable: 50
"#;

#[test]
fn a_canary_compiles_with_flaggers_fields() {
    let policy = MeshPolicy::from_yaml(CANARY).unwrap();
    let [c] = policy.canaries() else {
        panic!("{:?}", policy.canaries())
    };
    assert_eq!(
        (c.namespace.as_str(), c.name.as_str()),
        ("emojivoto", "voting")
    );
    assert_eq!(c.target.kind, TargetKind::HttpRoute);
    assert_eq!(c.target.name, "voting");
    assert_eq!(
        c.canary,
        Backend {
            name: "voting-v2".into(),
            port: Some(8080)
        }
    );
    let a = &c.analysis;
    assert_eq!(a.interval, Duration::from_secs(30));
    assert_eq!((a.step_weight, a.max_weight, a.threshold), (20, 60, 2));
    assert_eq!((a.min_requests, a.on_breach), (50, OnBreach::Halt));
    assert_eq!(
        a.checks,
        [
            MetricCheck::SuccessRate {
                min: Some(99.0),
                max_drop_from_stable: Some(0.5)
            },
            MetricCheck::LatencyP99 {
                max: Some(Duration::from_millis(250)),
                max_increase_from_stable: Some(50.0)
            },
        ]
    );
    assert_eq!(policy.resource_counts().get("Canary"), Some(&1));
}

#[test]
fn an_omitted_analysis_takes_flaggers_defaults_and_smi_splits_are_targets() {
    let policy = MeshPolicy::from_yaml(
        r#"
apiVersion: policy.mesh.io/v1alpha1
kind: Canary
metadata: { name: web, namespace: shop }
spec:
  targetRef: { group: split.smi-spec.io, kind: TrafficSplit, name: web }
  stable: { name: web }
  canary: { name: web-canary }
"#,
    )
    .unwrap();
    let c = &policy.canaries()[0];
    assert_eq!(c.target.kind, TargetKind::TrafficSplit);
    assert_eq!(c.analysis, mesh_core::canary::Analysis::default());
    assert!(!c.suspend);
}

#[test]
fn mistakes_are_refused_with_the_field() {
    let cases = [
        ("stepWeight: 20", "stepWeight: 0", "spec.analysis"),
        (
            "maxWeight: 60",
            "maxWeight: 10",
            "maxWeight must be between stepWeight (20)",
        ),
        ("interval: 30s", "interval: soon", "spec.analysis.interval"),
        (
            "onBreach: Halt",
            "onBreach: Panic",
            "spec.analysis.onBreach",
        ),
        (
            "name: request-duration",
            "name: request-size",
            "spec.analysis.metrics[1].name",
        ),
        ("{ max: 250 }", "{ min: 250 }", "spec.analysis.metrics[1]"),
        ("kind: HTTPRoute", "kind: Service", "spec.targetRef"),
        (
            "name: voting-v2, port: 8080",
            "name: voting-v1, port: 8080",
            "the canary backend is the stable one",
        ),
        (
            "name: voting }",
            "name: voting, namespace: other }",
            "spec.targetRef.namespace",
        ),
    ];
    for (from, to, want) in cases {
        let input = CANARY.replacen(from, to, 1);
        assert_ne!(input, CANARY, "{from}");
        let e = MeshPolicy::from_yaml(&input).unwrap_err().to_string();
        assert!(e.contains(want), "{to}: {e}");
    }
}
