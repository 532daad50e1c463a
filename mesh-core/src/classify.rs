//! Whether a response is a failure: for metrics (`classification` label) and for retries.

/// The outcome of classifying a response. Serialized as its label value (`success`,
/// `failure`), as tap events carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// The request succeeded.
    Success,
    /// The request failed.
    Failure,
}

/// A ServiceProfile response class: if the condition holds, the response is (or is not) a
/// failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseClass {
    /// When this class applies.
    pub condition: ResponseMatch,
    /// Whether responses in this class are failures.
    pub is_failure: bool,
}

/// A condition on a response, as in a ServiceProfile's `responseClasses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseMatch {
    /// The status lies in `min..=max`.
    Status {
        /// Lowest status, inclusive.
        min: u16,
        /// Highest status, inclusive.
        max: u16,
    },
    /// Every condition holds.
    All(Vec<Self>),
    /// At least one condition holds.
    Any(Vec<Self>),
    /// The condition does not hold.
    Not(Box<Self>),
}

// === impl Class ===

impl Class {
    /// The `classification` label value Linkerd uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    /// Whether this is a failure.
    pub fn is_failure(self) -> bool {
        self == Self::Failure
    }
}

// === impl ResponseMatch ===

impl ResponseMatch {
    /// Whether the condition holds for a status code.
    pub fn matches(&self, status: u16) -> bool {
        match self {
            Self::Status { min, max } => (*min..=*max).contains(&status),
            Self::All(v) => v.iter().all(|m| m.matches(status)),
            Self::Any(v) => v.iter().any(|m| m.matches(status)),
            Self::Not(m) => !m.matches(status),
        }
    }
}

/// The `grpc-status` codes that are failures when no response class decides, as linkerd2-proxy
/// counts them: UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE and DATA_LOSS. The others
/// (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, …) are the caller's mistakes, as 4xx are
/// for HTTP, and count as successes, so success rates read as `linkerd viz stat` reads them.
pub const GRPC_FAILURES: [u32; 5] = [2, 4, 13, 14, 15];

/// Classifies a response. The first of `classes` whose condition holds decides; otherwise a
/// 5xx status, or a `grpc-status` (from headers or trailers) in [`GRPC_FAILURES`], is a
/// failure.
///
/// ```
/// use mesh_core::classify::{classify, Class, ResponseClass, ResponseMatch};
///
/// assert_eq!(classify(&[], 503, None), Class::Failure);
/// assert_eq!(classify(&[], 200, Some(14)), Class::Failure); // gRPC UNAVAILABLE
/// assert_eq!(classify(&[], 200, Some(5)), Class::Success); // gRPC NOT_FOUND, as Linkerd counts it
/// let not_found_fails = [ResponseClass {
///     condition: ResponseMatch::Status { min: 404, max: 404 },
///     is_failure: true,
/// }];
/// assert_eq!(classify(&not_found_fails, 404, None), Class::Failure);
/// ```
pub fn classify(classes: &[ResponseClass], status: u16, grpc_status: Option<u32>) -> Class {
    if let Some(c) = classes.iter().find(|c| c.condition.matches(status)) {
        return if c.is_failure {
            Class::Failure
        } else {
            Class::Success
        };
    }
    let grpc_failure = grpc_status.is_some_and(|code| GRPC_FAILURES.contains(&code));
    if grpc_failure || (500..=599).contains(&status) {
        Class::Failure
    } else {
        Class::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_class_decides_then_the_default() {
        let classes = [
            ResponseClass {
                condition: ResponseMatch::Status { min: 500, max: 503 },
                is_failure: false,
            },
            ResponseClass {
                condition: ResponseMatch::All(vec![
                    ResponseMatch::Status { min: 400, max: 599 },
                    ResponseMatch::Not(Box::new(ResponseMatch::Status { min: 404, max: 404 })),
                ]),
                is_failure: true,
            },
        ];
        let cases = [
            (200, None, Class::Success),
            (404, None, Class::Success),
            (400, None, Class::Failure),
            (502, None, Class::Success),
            (504, None, Class::Failure),
            (200, Some(0), Class::Success),
            (200, Some(2), Class::Failure),
            (200, Some(5), Class::Success),
            (200, Some(16), Class::Success),
        ];
        for (status, grpc, want) in cases {
            assert_eq!(classify(&classes, status, grpc), want, "{status} {grpc:?}");
        }
    }
}
