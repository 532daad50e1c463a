//! A canary's `status`, where the controller keeps its [`State`] between steps (so a
//! restarted controller resumes where the last one was) and where users read what happened:
//! `phase`, `canaryWeight`, `failedChecks`, `lastTransitionTime` (of the phase), and a
//! `Promoted` condition, as Flagger writes it, whose reason and message are the last outcome.
//! Other conditions (the controller's `Accepted`) are kept as they are.

use mesh_core::canary::{Phase, State};
use serde_json::{Value, json};

use super::Outcome;

/// The condition type, as Flagger names it.
pub(crate) const CONDITION: &str = "Promoted";

/// The state a status records, or `None` when the rollout has not started (or the status
/// was not written by us).
pub(crate) fn state_of(status: &Value) -> Option<State> {
    let phase = match status["phase"].as_str()? {
        "Progressing" => Phase::Progressing,
        "Succeeded" => Phase::Succeeded,
        "Failed" => Phase::Failed,
        "Halted" => Phase::Halted,
        _ => return None,
    };
    let number = |f: &str| status[f].as_u64().and_then(|n| u32::try_from(n).ok());
    Some(State {
        phase,
        weight: number("canaryWeight")?.min(100),
        failed_checks: number("failedChecks").unwrap_or(0),
    })
}

/// The status after `outcome`, from the `current` one: `state` (if any) replaces the
/// recorded state; the `Promoted` condition says the outcome. `now` is a Kubernetes `Time`.
/// Also whether the condition changed (reason or message), so an unchanged outcome, such as
/// a route still missing, is not recorded as an Event again.
pub(crate) fn next_status(
    current: &Value,
    state: Option<&State>,
    outcome: &Outcome,
    now: &Value,
) -> (Value, bool) {
    let mut status = match current {
        Value::Object(_) => current.clone(),
        _ => json!({}),
    };
    let conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let old = conditions.iter().find(|c| c["type"] == CONDITION);
    let reason = outcome.reason();
    let message = outcome.to_string();
    let changed = old.is_none_or(|c| c["reason"] != reason || c["message"] != message.as_str());
    if let Some(state) = state {
        if state_of(&status).is_none_or(|s| s.phase != state.phase) {
            status["lastTransitionTime"] = now.clone();
        }
        status["phase"] = json!(state.phase.as_str());
        status["canaryWeight"] = json!(state.weight);
        status["failedChecks"] = json!(state.failed_checks);
    }
    let phase = state_of(&status).map(|s| s.phase);
    let truth = match phase {
        Some(Phase::Succeeded) => "True",
        Some(Phase::Failed | Phase::Halted) => "False",
        Some(Phase::Progressing) | None => "Unknown",
    };
    let since = match old {
        Some(c) if c["status"] == truth => c["lastTransitionTime"].clone(),
        _ => now.clone(),
    };
    let condition = json!({
        "type": CONDITION,
        "status": truth,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "lastUpdateTime": now,
    });
    let mut kept: Vec<Value> = (conditions.into_iter())
        .filter(|c| c["type"] != CONDITION)
        .collect();
    kept.push(condition);
    status["conditions"] = Value::Array(kept);
    (status, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::route::TargetProblem;
    use mesh_core::canary::Decision;

    fn progressing(weight: u32) -> State {
        State {
            phase: Phase::Progressing,
            weight,
            failed_checks: 0,
        }
    }

    #[test]
    fn a_status_round_trips_the_state_and_keeps_other_conditions() {
        let accepted = json!({"conditions": [{"type": "Accepted", "status": "True"}]});
        let t1 = json!("2026-01-01T00:00:00Z");
        let outcome = Outcome::Decided(Decision::Advance { weight: 20 });
        let (s, changed) = next_status(&accepted, Some(&progressing(20)), &outcome, &t1);
        assert!(changed);
        assert_eq!(state_of(&s), Some(progressing(20)));
        assert_eq!(s["lastTransitionTime"], t1);
        assert_eq!(s["conditions"][0]["type"], "Accepted");
        let c = &s["conditions"][1];
        assert_eq!(
            (c["type"].as_str(), c["status"].as_str()),
            (Some("Promoted"), Some("Unknown"))
        );
        assert_eq!(c["reason"], "Advanced");
        assert_eq!(c["message"], "advance: canary weight 20%");

        // Rolled back: the phase changes now, and the condition turns False.
        let t2 = json!("2026-01-01T00:01:00Z");
        let failed = State {
            phase: Phase::Failed,
            weight: 0,
            failed_checks: 1,
        };
        let outcome = Outcome::Decided(Decision::Finished);
        let (s, _) = next_status(&s, Some(&failed), &outcome, &t2);
        assert_eq!(state_of(&s), Some(failed));
        assert_eq!(s["lastTransitionTime"], t2);
        assert_eq!(s["conditions"][1]["status"], "False");
    }

    #[test]
    fn a_missing_target_is_said_once_and_leaves_the_state() {
        let t = json!("2026-01-01T00:00:00Z");
        let (s, _) = next_status(
            &Value::Null,
            Some(&progressing(10)),
            &Outcome::Started { weight: 10 },
            &t,
        );
        let missing = Outcome::Blocked(TargetProblem::NotFound {
            kind: "HTTPRoute",
            name: "web".into(),
        });
        let (s, changed) = next_status(&s, None, &missing, &t);
        assert!(changed);
        assert_eq!(state_of(&s), Some(progressing(10)));
        assert_eq!(s["conditions"][0]["reason"], "TargetNotFound");
        let (_, changed) = next_status(&s, None, &missing, &json!("2026-01-01T00:05:00Z"));
        assert!(!changed, "the same problem again is no news");
        assert_eq!(state_of(&json!({})), None);
    }
}
