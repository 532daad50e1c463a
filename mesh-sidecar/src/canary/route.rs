//! Moving a canary's weights on the object the user owns, as JSON: every HTTPRoute or
//! GRPCRoute rule (Gateway API or Linkerd's) whose `backendRefs` name both the stable and
//! the canary backend, or a TrafficSplit's `spec.backends`. Pure, so each shape is tested
//! here and the API server code only GETs and PUTs.

use mesh_core::canary::{Backend, Canary, TargetKind};
use serde_json::{Value, json};

/// Why the target cannot carry the canary's weights. Nothing is written then.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetProblem {
    /// The object named by `targetRef` does not exist.
    #[error("{kind} {name} does not exist")]
    NotFound { kind: &'static str, name: String },
    /// No rule (or no TrafficSplit backend list) names this backend next to the other one.
    #[error("{kind} {name} has no {place} naming both {stable} and {canary}")]
    Backends {
        kind: &'static str,
        name: String,
        place: &'static str,
        stable: String,
        canary: String,
    },
}

// === impl TargetProblem ===

impl TargetProblem {
    /// The condition and Event reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "TargetNotFound",
            Self::Backends { .. } => "BackendNotFound",
        }
    }
}

/// The canary's share in percent on `target` (an object of the canary's target kind), from
/// the first place that names both backends.
pub(crate) fn read_weight(canary: &Canary, target: &Value) -> Result<u32, TargetProblem> {
    let Some((stable, canary)) = pairs(canary, target)?.into_iter().next() else {
        return Ok(0);
    };
    let (s, c) = (
        weight_of(&target_at(target, stable)),
        weight_of(&target_at(target, canary)),
    );
    let total = s + c;
    // At most 100: the rounded share of a total; no weight at all is no traffic.
    let share = (c * 100 + total / 2).checked_div(total).unwrap_or(0);
    Ok(u32::try_from(share).unwrap_or(100))
}

/// Sets stable to `100 - weight` and the canary to `weight` everywhere both are named.
pub(crate) fn set_weights(
    canary: &Canary,
    target: &mut Value,
    weight: u32,
) -> Result<(), TargetProblem> {
    let weight = weight.min(100);
    for (stable, canary) in pairs(canary, target)? {
        set_at(target, stable, 100 - weight);
        set_at(target, canary, weight);
    }
    Ok(())
}

/// A backend entry, as JSON pointers into the object.
type Pointer = String;

/// (stable, canary) entries in each place that names both.
fn pairs(canary: &Canary, target: &Value) -> Result<Vec<(Pointer, Pointer)>, TargetProblem> {
    let kind = canary.target.kind;
    let (lists, place, key): (Vec<Pointer>, _, _) = match kind {
        TargetKind::TrafficSplit => (
            vec!["/spec/backends".to_owned()],
            "spec.backends",
            "service",
        ),
        TargetKind::HttpRoute | TargetKind::GrpcRoute | TargetKind::LinkerdHttpRoute => {
            let rules = target["spec"]["rules"].as_array().map_or(0, Vec::len);
            let lists = (0..rules).map(|i| format!("/spec/rules/{i}/backendRefs"));
            (lists.collect(), "rule", "name")
        }
    };
    let find = |list: &Pointer, b: &Backend| {
        let refs = target.pointer(list)?.as_array()?;
        let i = refs.iter().position(|r| names(r, key, b))?;
        Some(format!("{list}/{i}"))
    };
    let found: Vec<_> = (lists.iter())
        .filter_map(|l| Some((find(l, &canary.stable)?, find(l, &canary.canary)?)))
        .collect();
    if found.is_empty() {
        return Err(TargetProblem::Backends {
            kind: kind.kind(),
            name: canary.target.name.clone(),
            place,
            stable: canary.stable.name.clone(),
            canary: canary.canary.name.clone(),
        });
    }
    Ok(found)
}

/// Whether a backend entry is `b`: its name, and its port when the canary gives one.
fn names(entry: &Value, key: &str, b: &Backend) -> bool {
    entry[key] == b.name.as_str()
        && b.port
            .is_none_or(|p| entry["port"].is_null() || entry["port"] == json!(p))
}

fn target_at(target: &Value, pointer: Pointer) -> Value {
    target.pointer(&pointer).cloned().unwrap_or(Value::Null)
}

/// An entry's weight in milli-units: Gateway API's default is 1; SMI's may be a quantity
/// like `900m`.
fn weight_of(entry: &Value) -> u64 {
    match &entry["weight"] {
        Value::Null => 1000,
        Value::String(s) => mesh_core::values::parse_milli_quantity(s).unwrap_or(0),
        w => w.as_u64().unwrap_or(0).saturating_mul(1000),
    }
}

fn set_at(target: &mut Value, pointer: Pointer, weight: u32) {
    if let Some(entry) = target.pointer_mut(&pointer) {
        entry["weight"] = json!(weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::canary::{Analysis, Target};

    fn canary(kind: TargetKind) -> Canary {
        Canary {
            namespace: "shop".into(),
            name: "web".into(),
            target: Target {
                kind,
                name: "web".into(),
            },
            stable: Backend {
                name: "web-v1".into(),
                port: Some(80),
            },
            canary: Backend {
                name: "web-v2".into(),
                port: None,
            },
            analysis: Analysis::default(),
            suspend: false,
        }
    }

    fn route() -> Value {
        json!({"spec": {"rules": [
            {"matches": [{"path": {"value": "/admin"}}], "backendRefs": [{"name": "admin", "port": 80}]},
            {"backendRefs": [{"name": "web-v1", "port": 80}, {"name": "web-v2", "port": 80, "weight": 0}]},
            {"matches": [{"path": {"value": "/api"}}],
             "backendRefs": [{"name": "web-v2", "port": 80}, {"name": "web-v1", "port": 80, "weight": 5}]},
        ]}})
    }

    #[test]
    fn every_rule_naming_both_backends_moves_and_others_stay() {
        let c = canary(TargetKind::HttpRoute);
        let mut r = route();
        assert_eq!(read_weight(&c, &r), Ok(0));
        set_weights(&c, &mut r, 30).unwrap();
        let refs = |i: usize| r["spec"]["rules"][i]["backendRefs"].clone();
        assert_eq!(refs(0), json!([{"name": "admin", "port": 80}]));
        assert_eq!(refs(1)[0]["weight"], 70);
        assert_eq!(refs(1)[1]["weight"], 30);
        assert_eq!(refs(2)[0]["weight"], 30);
        assert_eq!(refs(2)[1]["weight"], 70);
        assert_eq!(read_weight(&c, &r), Ok(30));
        set_weights(&c, &mut r, 100).unwrap();
        assert_eq!(read_weight(&c, &r), Ok(100));
    }

    #[test]
    fn unset_gateway_weights_are_one_each() {
        let c = canary(TargetKind::GrpcRoute);
        let r =
            json!({"spec": {"rules": [{"backendRefs": [{"name": "web-v1"}, {"name": "web-v2"}]}]}});
        assert_eq!(read_weight(&c, &r), Ok(50));
    }

    #[test]
    fn a_route_without_both_backends_or_on_another_port_is_refused_unchanged() {
        let c = canary(TargetKind::LinkerdHttpRoute);
        let mut r = json!({"spec": {"rules": [
            {"backendRefs": [{"name": "web-v1", "port": 80}]},
            {"backendRefs": [{"name": "web-v2", "port": 80}]},
        ]}});
        let before = r.clone();
        let err = set_weights(&c, &mut r, 10).unwrap_err();
        assert_eq!(err.reason(), "BackendNotFound");
        assert!(err.to_string().contains("web-v1 and web-v2"), "{err}");
        assert_eq!(r, before);
        let other_port = json!({"spec": {"rules": [
            {"backendRefs": [{"name": "web-v1", "port": 8080}, {"name": "web-v2"}]},
        ]}});
        assert!(read_weight(&c, &other_port).is_err());
    }

    #[test]
    fn traffic_splits_move_spec_backends_including_milli_weights() {
        let c = canary(TargetKind::TrafficSplit);
        let mut split = json!({"spec": {"service": "web", "backends": [
            {"service": "web-v1", "weight": "900m"},
            {"service": "web-v2", "weight": "100m"},
        ]}});
        assert_eq!(read_weight(&c, &split), Ok(10));
        set_weights(&c, &mut split, 40).unwrap();
        assert_eq!(
            split["spec"]["backends"],
            json!([{"service": "web-v1", "weight": 60}, {"service": "web-v2", "weight": 40}])
        );
    }
}
