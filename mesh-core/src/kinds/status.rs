//! Which kinds have a `status` of their own, and its schema.
//!
//! A CRD with `subresources.status` serves `/status`, keeps the main resource's writes away
//! from status and validates status against the `status` property of its schema; a CRD
//! without it prunes any status. Ours declare it exactly where the upstream CRDs do, so a
//! status our controller writes on a real cluster lands (or is not attempted) the same way:
//! Gateway API's and Linkerd's routes (`status.parents[]`), Linkerd's
//! HTTPLocalRateLimitPolicy (`status.conditions` and `status.targetRef`, as Linkerd's policy
//! controller types it) and our Canary. Linkerd's Server, authorization and authentication
//! kinds, ServiceProfile and SMI's kinds have none.

#[cfg(feature = "schema")]
use serde_json::{Value, json};

/// The shape of a kind's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusSchema {
    /// A route's: one entry per parent and controller, `status.parents[]` of
    /// `{parentRef, controllerName, conditions}` (Gateway API `RouteStatus`).
    RouteParents,
    /// A policy's: `status.conditions` and the `status.targetRef` they are about.
    TargetConditions,
    /// A Canary's progress: `phase`, `canaryWeight`, `failedChecks`,
    /// `lastTransitionTime` and `conditions`.
    Canary,
}

// === impl StatusSchema ===

#[cfg(feature = "schema")]
impl StatusSchema {
    /// The `status` property of a CRD's schema, given the schema of the object's `spec`
    /// (whose references a status repeats).
    pub(crate) fn schema(self, spec: &Value) -> Value {
        match self {
            Self::RouteParents => json!({
                "type": "object",
                "required": ["parents"],
                "properties": {"parents": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["controllerName", "parentRef"],
                        "properties": {
                            "conditions": conditions(Some(8)),
                            "controllerName": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 253,
                                "pattern": CONTROLLER_NAME,
                            },
                            "parentRef": spec["properties"]["parentRefs"]["items"].clone(),
                        },
                    },
                }},
            }),
            Self::TargetConditions => json!({
                "type": "object",
                "required": ["conditions", "targetRef"],
                "properties": {
                    "conditions": conditions(None),
                    "targetRef": spec["properties"]["targetRef"].clone(),
                },
            }),
            Self::Canary => json!({
                "type": "object",
                "properties": {
                    "phase": {
                        "type": "string",
                        "enum": ["Progressing", "Succeeded", "Failed", "Halted"],
                    },
                    "canaryWeight": {
                        "type": "integer", "format": "int32", "minimum": 0, "maximum": 100,
                    },
                    "failedChecks": {"type": "integer", "format": "int32", "minimum": 0},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                    "conditions": conditions(None),
                },
            }),
        }
    }
}

/// Gateway API's `GatewayController`: a domain, a slash, a path.
#[cfg(feature = "schema")]
const CONTROLLER_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$";

/// A list of `metav1.Condition`, keyed by type as Kubernetes' own types declare it.
#[cfg(feature = "schema")]
fn conditions(max_items: Option<u64>) -> Value {
    let mut list = json!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "message": {"type": "string", "maxLength": 32768},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                },
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                },
            },
        },
        "x-kubernetes-list-map-keys": ["type"],
        "x-kubernetes-list-type": "map",
    });
    if let Some(max) = max_items {
        list["maxItems"] = json!(max);
        list["minItems"] = json!(1);
    }
    list
}
