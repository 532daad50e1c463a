//! `mesh identity serve --kube`: bearer tokens are Kubernetes service-account tokens, checked
//! with a TokenReview (authentication.k8s.io/v1) against the API server.
//!
//! The token must be valid for the audience `mesh inject` projects it with
//! (`identity.mesh.io`), so a token minted for another purpose (the default API token) does
//! not buy a mesh identity. The identity is the token's service account,
//! `system:serviceaccount:<namespace>:<name>`, in the issuer's trust domain.

use std::future::Future;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use mesh_core::Identity;
use mesh_identity::issuer::{AuthError, TokenAuthenticator};

/// Authenticates tokens with the API server's TokenReview.
#[derive(Clone)]
pub(crate) struct TokenReviewer {
    api: Api<TokenReview>,
    trust_domain: String,
    audience: String,
}

impl TokenReviewer {
    /// A reviewer using the in-cluster config or `KUBECONFIG`.
    pub(crate) async fn connect(trust_domain: &str, audience: &str) -> Result<Self, kube::Error> {
        let client = kube::Client::try_default().await?;
        Ok(Self {
            api: Api::all(client),
            trust_domain: trust_domain.to_owned(),
            audience: audience.to_owned(),
        })
    }
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("trust_domain", &self.trust_domain)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenAuthenticator for TokenReviewer {
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let this = self.clone();
        async move {
            let answer = this
                .api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
            let status = answer.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                if let Some(why) = &status.error {
                    tracing::debug!(reason = %why, "TokenReview: not authenticated");
                }
                return Err(AuthError::UnknownToken);
            }
            // The API server answers with the audiences the token is valid for among those
            // asked; an empty answer means the token's audience was not checked.
            if !status
                .audiences
                .as_deref()
                .is_some_and(|a| a.contains(&this.audience))
            {
                return Err(AuthError::UnknownToken);
            }
            let username = status.user.and_then(|u| u.username).unwrap_or_default();
            identity_of(&this.trust_domain, &username).ok_or(AuthError::UnknownToken)
        }
    }
}

/// The identity of `system:serviceaccount:<namespace>:<name>`; other users (people, nodes)
/// have none.
fn identity_of(trust_domain: &str, username: &str) -> Option<Identity> {
    let (ns, sa) = username
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    Identity::new(trust_domain, ns, sa).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_users_have_identities() {
        assert_eq!(
            identity_of("cluster.local", "system:serviceaccount:shop:web"),
            Identity::new("cluster.local", "shop", "web").ok()
        );
        for other in [
            "admin",
            "system:node:worker-1",
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
        ] {
            assert_eq!(identity_of("cluster.local", other), None, "{other}");
        }
    }
}
