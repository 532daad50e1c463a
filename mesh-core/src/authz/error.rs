//! Why a manifest's authorization values do not parse.

use crate::identity::InvalidIdentity;

/// A string that is not one of Linkerd's default policies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a policy (all-unauthenticated, all-authenticated, cluster-authenticated, cluster-unauthenticated, deny, audit)"
)]
pub struct UnknownDefaultPolicy(pub String);

/// A string that is not a network in CIDR form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network in CIDR form (10.0.0.0/8, fd00::/8)")]
pub struct InvalidCidr(pub String);

/// An entry of a `meshTLS.identities` list that is neither `*`, a wildcard nor an identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentityMatch {
    /// A `*.` wildcard with nothing after it, or with another `*`.
    #[error("{0:?} is not a valid identity wildcard")]
    Wildcard(String),
    /// Not a wildcard, and not an identity in either form.
    #[error(transparent)]
    Identity(#[from] InvalidIdentity),
}
