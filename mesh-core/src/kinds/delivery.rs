//! mesh's own policy.mesh.io kinds: `Canary` (progressive delivery, fields named as Flagger
//! names them).

use serde::Deserialize;

use super::*;

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["targetRef", "stable", "canary"])))]
pub(crate) struct CanarySpec {
    /// The route whose backend weights the canary moves.
    pub(crate) target_ref: PolicyRef,
    /// The backend that has the traffic now.
    pub(crate) stable: CanaryBackend,
    /// The backend being rolled out.
    pub(crate) canary: CanaryBackend,
    #[serde(default)]
    pub(crate) analysis: CanaryAnalysis,
    /// Leave the weights as they are and analyse nothing.
    #[serde(default)]
    pub(crate) suspend: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct CanaryBackend {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub(crate) name: String,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535), extend("format" = "int32")))]
    pub(crate) port: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct CanaryAnalysis {
    #[cfg_attr(feature = "schema", schemars(pattern(schema::DURATION)))]
    pub(crate) interval: Option<String>,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100), extend("format" = "int32")))]
    pub(crate) step_weight: Option<i64>,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100), extend("format" = "int32")))]
    pub(crate) max_weight: Option<i64>,
    #[cfg_attr(feature = "schema", schemars(range(min = 1), extend("format" = "int32")))]
    pub(crate) threshold: Option<i64>,
    #[cfg_attr(feature = "schema", schemars(range(min = 0), extend("format" = "int64")))]
    pub(crate) min_requests: Option<i64>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub(crate) metrics: Vec<CanaryMetric>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["Rollback", "Halt"])))]
    pub(crate) on_breach: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct CanaryMetric {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["request-success-rate", "request-duration"])))]
    pub(crate) name: String,
    pub(crate) threshold_range: Option<ThresholdRange>,
    /// request-success-rate: percentage points the canary may fall below stable.
    pub(crate) max_drop_from_stable: Option<f64>,
    /// request-duration: percent the canary's p99 may exceed stable's.
    pub(crate) max_increase_from_stable: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct ThresholdRange {
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
}

/// `FaultInjection`: Istio's VirtualService `fault`, as a kind a Gateway API `ExtensionRef`
/// filter names.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct FaultInjectionSpec {
    /// Answer some requests with an error, without calling the backend.
    pub(crate) abort: Option<FaultAbort>,
    /// Hold some requests before forwarding them.
    pub(crate) delay: Option<FaultDelay>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub(crate) struct FaultAbort {
    /// The share of requests aborted, 0–100 (fractions allowed); all when unset.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    pub(crate) percentage: Option<f64>,
    /// The HTTP status answered (an HTTPRoute).
    #[cfg_attr(feature = "schema", schemars(range(min = 200, max = 599), extend("format" = "int32")))]
    pub(crate) http_status: Option<i64>,
    /// The gRPC status code answered (a GRPCRoute), 1–16.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 16), extend("format" = "int32")))]
    pub(crate) grpc_status: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["fixedDelay"])))]
pub(crate) struct FaultDelay {
    /// The share of requests delayed, 0–100 (fractions allowed); all when unset.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    pub(crate) percentage: Option<f64>,
    /// How long, a Gateway API duration (`200ms`, `1s`).
    #[cfg_attr(feature = "schema", schemars(pattern(schema::DURATION)))]
    pub(crate) fixed_delay: Option<String>,
}
