//! `mesh identity serve --kube`: bearer tokens are Kubernetes service-account tokens, checked
//! with a TokenReview (authentication.k8s.io/v1) against the API server.
//!
//! The token must be valid for the audience `mesh inject` projects it with
//! (`identity.mesh.io`), so a token minted for another purpose (the default API token) does
//! not buy a mesh identity. The identity is the token's service account,
//! `system:serviceaccount:<namespace>:<name>`, in the issuer's trust domain.

use std::future::Future;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
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
            verdict(
                answer.status.unwrap_or_default(),
                &this.audience,
                &this.trust_domain,
            )
        }
    }
}

/// What a TokenReview's answer entitles the token's holder to. A refusal says why, from the
/// API server's own `status.error` where it gives one: it names audiences and expiry, never
/// the token, so the caller may read it.
fn verdict(
    status: TokenReviewStatus,
    audience: &str,
    trust_domain: &str,
) -> Result<Identity, AuthError> {
    if status.authenticated != Some(true) {
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "the API server did not authenticate it".to_owned());
        return Err(AuthError::Refused(why));
    }
    // The API server answers with the audiences the token is valid for among those asked; an
    // empty answer means the token's audience was not checked.
    if !status
        .audiences
        .as_deref()
        .is_some_and(|a| a.iter().any(|a| a == audience))
    {
        return Err(AuthError::Refused(format!(
            "audiences do not include {audience}"
        )));
    }
    let username = status.user.and_then(|u| u.username).unwrap_or_default();
    identity_of(trust_domain, &username)
        .ok_or_else(|| AuthError::Refused(format!("{username:?} is not a service account")))
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

    #[test]
    fn refusals_say_why() {
        use k8s_openapi::api::authentication::v1::UserInfo;
        let answer = |authenticated, error: Option<&str>, audiences: &[&str], user: &str| {
            TokenReviewStatus {
                authenticated: Some(authenticated),
                error: error.map(str::to_owned),
                audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
                user: Some(UserInfo {
                    username: Some(user.to_owned()),
                    ..UserInfo::default()
                }),
            }
        };
        let aud = "identity.mesh.io";
        let web = "system:serviceaccount:shop:web";
        let wrong_audience = "[invalid bearer token, token audiences [\"api\"] is invalid for \
                              the target audiences [\"identity.mesh.io\"]]";
        let cases = [
            (
                answer(true, None, &[aud], web),
                Ok("spiffe://cluster.local/ns/shop/sa/web"),
            ),
            (
                answer(false, Some(wrong_audience), &[], ""),
                Err(wrong_audience),
            ),
            (
                answer(false, None, &[], ""),
                Err("the API server did not authenticate it"),
            ),
            // Authenticated, but the answer does not vouch for our audience.
            (
                answer(true, None, &[], web),
                Err("audiences do not include identity.mesh.io"),
            ),
            (
                answer(true, None, &[aud], "admin"),
                Err("\"admin\" is not a service account"),
            ),
        ];
        for (status, want) in cases {
            let got = verdict(status.clone(), aud, "cluster.local");
            match (got, want) {
                (Ok(id), Ok(want)) => assert_eq!(id.to_string(), want),
                (Err(AuthError::Refused(why)), Err(want)) => assert_eq!(why, want),
                (got, want) => panic!("{status:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
