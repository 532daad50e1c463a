//! The issuer service: signs workload CSRs over HTTPS for callers that prove who they are.
//!
//! The endpoint is documented at the [crate root](crate#the-issuer-endpoint). Callers prove
//! their identity with a bearer token, checked by a [`TokenAuthenticator`]: outside Kubernetes
//! a [`TokenFile`]; in a cluster, a TokenReview against the API server (another implementation
//! of the same trait).
//!
//! ```
//! use std::time::Duration;
//! use mesh_identity::{ca, issuer::{IssuerService, TokenFile}};
//!
//! let anchor = ca::TrustAnchor::generate("cluster.local", Duration::from_secs(86400))?;
//! let issuer = ca::Issuer::generate(&anchor, Duration::from_secs(3600))?;
//! let tokens = TokenFile::parse("s3cret emojivoto/web  # the web deployment\n", "cluster.local")?;
//! let service = IssuerService::new(issuer, tokens);
//!
//! let key = ca::generate_key()?;
//! let csr = ca::csr_pem(&key)?;
//! # let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! let chain = service.sign("s3cret", csr.as_bytes()).await?;
//! assert_eq!(chain.len(), 2);
//! let refused = service.sign("wrong", csr.as_bytes()).await.unwrap_err();
//! assert_eq!(refused.status(), 401);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use mesh_core::identity::Identity;
use ring::digest::{SHA256, digest};
use rustls_pki_types::CertificateDer;

use crate::ca::{CsrError, DEFAULT_LEAF_LIFETIME, Issuer};
use crate::cert;

mod server;

pub use server::{ConnectionConfig, ConnectionError, serve, serve_connection};

/// The path CSRs are posted to.
pub const CERTIFICATE_PATH: &str = "/v1/certificate";
/// The largest CSR body accepted; a P-256 CSR in PEM is well under 1 KiB.
pub const MAX_BODY: usize = 16 * 1024;
/// The service account the issuer's own certificate names, in the control namespace.
pub const ISSUER_SERVICE_ACCOUNT: &str = "identity";

/// How long a caller may take to send a request's body (the whole of it) by default. A CSR
/// is under 1 KiB: a caller still sending after this is holding a connection, not uploading.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No identity is bound to the token.
    #[error("unknown token")]
    UnknownToken,
    /// The token is known but not accepted, and the authenticator says why (an expired token,
    /// another audience). The reason reaches the caller, so it must never quote the token.
    #[error("token refused: {0}")]
    Refused(String),
    /// The authenticator could not decide (e.g. the API server is unreachable).
    #[error("cannot check tokens right now: {0}")]
    Unavailable(String),
}

/// Maps a bearer token to the identity it entitles its holder to.
///
/// This is the seam for Kubernetes: a TokenReview implementation asks the API server instead
/// of reading a file.
pub trait TokenAuthenticator: Send + Sync + 'static {
    /// The identity `token` entitles its holder to.
    fn authenticate(&self, token: &str)
    -> impl Future<Output = Result<Identity, AuthError>> + Send;
}

/// Tokens from a file, one `<token> <namespace>/<service-account>` per line; `#` starts a
/// comment. Tokens are kept hashed, never in the clear.
#[derive(Clone)]
pub struct TokenFile {
    tokens: HashMap<[u8; 32], Identity>,
}

/// Why a token file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("line {line}: {reason}")]
    Line {
        /// The line number, from 1.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// Why a CSR was not signed. Each maps to an HTTP status with [`IssueError::status`].
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// No usable `Authorization: Bearer` header.
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    MissingToken,
    /// The token was not accepted.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The CSR was refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The body is larger than [`MAX_BODY`].
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// The body could not be read.
    #[error("could not read the request body: {0}")]
    Body(String),
    /// The body did not arrive whole within the service's body read timeout.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// Another path than [`CERTIFICATE_PATH`].
    #[error("not found; POST a CSR to {CERTIFICATE_PATH}")]
    NotFound,
    /// Another method than POST.
    #[error("method not allowed; POST a CSR to {CERTIFICATE_PATH}")]
    MethodNotAllowed,
}

/// Signs CSRs for authenticated callers. Share it behind an `Arc` and hand it to [`serve`].
pub struct IssuerService<A> {
    issuer: ArcSwap<Issuer>,
    auth: A,
    lifetime: Duration,
    body_read_timeout: Duration,
    observe: Option<Box<Observer>>,
}

/// Told the outcome of every request answered (see [`IssuerService::observe`]).
type Observer = dyn Fn(Result<(), &IssueError>) + Send + Sync;

// === impl TokenFile ===

impl TokenFile {
    /// Parses token-file text; identities are in `trust_domain`.
    pub fn parse(text: &str, trust_domain: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| TokenFileError::Line { line, reason };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.split_whitespace();
            let (Some(token), Some(who), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(err(
                    "expected `<token> <namespace>/<service-account>`".to_owned()
                ));
            };
            let (ns, sa) = who.split_once('/').ok_or_else(|| {
                err(format!(
                    "{who:?} is not of the form <namespace>/<service-account>"
                ))
            })?;
            let id = Identity::new(trust_domain, ns, sa).map_err(|e| err(e.to_string()))?;
            if tokens.insert(hash(token), id).is_some() {
                return Err(err("this token appears on an earlier line too".to_owned()));
            }
        }
        Ok(Self { tokens })
    }

    /// Reads and parses the token file at `path`.
    pub fn load(path: &Path, trust_domain: &str) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, trust_domain).map_err(|e| match e {
            TokenFileError::Line { line, reason } => TokenFileError::Line {
                line,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl TokenAuthenticator for TokenFile {
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        let res = self
            .tokens
            .get(&hash(token))
            .cloned()
            .ok_or(AuthError::UnknownToken);
        std::future::ready(res)
    }
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

fn hash(token: &str) -> [u8; 32] {
    let d = digest(&SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

// === impl IssueError ===

impl IssueError {
    /// The HTTP status this refusal is sent with.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingToken | Self::Auth(AuthError::UnknownToken | AuthError::Refused(_)) => 401,
            Self::Auth(AuthError::Unavailable(_)) => 503,
            Self::Csr(CsrError::IdentityNotAllowed { .. }) => 403,
            Self::Csr(CsrError::Sign(_)) => 500,
            Self::Csr(_) | Self::Body(_) => 400,
            Self::BodyTimeout(_) => 408,
            Self::TooLarge => 413,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
        }
    }

    /// A short, fixed name for the kind of refusal (`unknown_token`, `identity_not_allowed`,
    /// …): a metric label that never carries what the caller sent.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Auth(AuthError::UnknownToken) => "unknown_token",
            Self::Auth(AuthError::Refused(_)) => "token_refused",
            Self::Auth(AuthError::Unavailable(_)) => "auth_unavailable",
            Self::Csr(CsrError::IdentityNotAllowed { .. }) => "identity_not_allowed",
            Self::Csr(CsrError::Sign(_)) => "sign_failed",
            Self::Csr(_) => "bad_csr",
            Self::Body(_) => "bad_body",
            Self::BodyTimeout(_) => "body_timeout",
            Self::TooLarge => "too_large",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }
}

// === impl IssuerService ===

impl<A: TokenAuthenticator> IssuerService<A> {
    /// A service signing with `issuer` (an `Issuer` or an `Arc<Issuer>` shared with, e.g., the
    /// rotation of the service's own certificate) for callers `auth` accepts, 24 h leaves.
    pub fn new(issuer: impl Into<Arc<Issuer>>, auth: A) -> Self {
        Self {
            issuer: ArcSwap::new(issuer.into()),
            auth,
            lifetime: DEFAULT_LEAF_LIFETIME,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            observe: None,
        }
    }

    /// Calls `observe` with the outcome of every request the HTTP endpoint answers (`Ok` for
    /// a signed certificate), e.g. to count them in metrics.
    pub fn observe(
        mut self,
        observe: impl Fn(Result<(), &IssueError>) + Send + Sync + 'static,
    ) -> Self {
        self.observe = Some(Box::new(observe));
        self
    }

    /// Sets how long a caller may take to send a whole request body (see
    /// [`DEFAULT_BODY_READ_TIMEOUT`]); past it the request gets 408 and the connection closes.
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Sets the lifetime of issued leaves.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The issuer in use.
    pub fn issuer(&self) -> Arc<Issuer> {
        self.issuer.load_full()
    }

    /// Switches to another issuer (e.g. one signed by a new anchor); the next CSR uses it.
    pub fn set_issuer(&self, issuer: impl Into<Arc<Issuer>>) {
        self.issuer.store(issuer.into());
    }

    /// Authenticates `token` and signs `csr` (PEM or DER) for its identity. This is what the
    /// HTTP endpoint does, without HTTP.
    pub async fn sign(
        &self,
        token: &str,
        csr: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, IssueError> {
        let id = self.auth.authenticate(token).await?;
        let chain = self.issuer.load().sign_csr(csr, &id, self.lifetime)?;
        Ok(chain)
    }

    /// Answers one HTTP request. Never fails: every refusal becomes a 4xx/5xx with a reason.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let outcome = self.try_handle(req).await;
        if let Some(observe) = &self.observe {
            observe(outcome.as_ref().map(|_| ()));
        }
        match outcome {
            Ok(chain) => {
                let pem = cert::certs_to_pem(&chain);
                respond(StatusCode::OK, "application/pem-certificate-chain", pem)
            }
            Err(e) => {
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut res = respond(
                    status,
                    "text/plain; charset=utf-8",
                    format!("{}\n", crate::error_chain(&e)),
                );
                // The rest of a body we stopped reading would be taken for the next request.
                if matches!(e, IssueError::TooLarge | IssueError::BodyTimeout(_)) {
                    res.headers_mut()
                        .insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
                }
                res
            }
        }
    }

    async fn try_handle(
        &self,
        req: Request<Incoming>,
    ) -> Result<Vec<CertificateDer<'static>>, IssueError> {
        if req.uri().path() != CERTIFICATE_PATH {
            return Err(IssueError::NotFound);
        }
        if req.method() != Method::POST {
            return Err(IssueError::MethodNotAllowed);
        }
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(IssueError::MissingToken)?
            .to_owned();
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_BODY) {
            return Err(IssueError::TooLarge);
        }
        let id = match self.auth.authenticate(&token).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "refused a CSR: bad token");
                return Err(e.into());
            }
        };
        // Bounded in size and in time: a body trickled in a byte at a time would otherwise
        // hold the connection (and its buffers) for as long as the caller likes.
        let collect = Limited::new(req.into_body(), MAX_BODY).collect();
        let body = tokio::time::timeout(self.body_read_timeout, collect)
            .await
            .map_err(|_| IssueError::BodyTimeout(self.body_read_timeout))?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    IssueError::TooLarge
                } else {
                    IssueError::Body(e.to_string())
                }
            })?
            .to_bytes();
        match self.issuer.load().sign_csr(&body, &id, self.lifetime) {
            Ok(chain) => {
                tracing::info!(identity = %id, "issued a certificate");
                Ok(chain)
            }
            Err(e) => {
                tracing::warn!(identity = %id, error = %crate::error_chain(&e), "refused a CSR");
                Err(e.into())
            }
        }
    }
}

impl<A> std::fmt::Debug for IssuerService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerService")
            .field("issuer", &self.issuer.load())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    res
}

/// The identity the issuer service's own certificate carries.
pub fn issuer_identity(
    trust_domain: &str,
    control_namespace: &str,
) -> Result<Identity, mesh_core::identity::InvalidIdentity> {
    Identity::new(trust_domain, control_namespace, ISSUER_SERVICE_ACCOUNT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn token_files_map_tokens_to_identities() {
        let text = "\
# bootstrap tokens
tok-web   emojivoto/web
   tok-api emojivoto/api   # trailing comment

";
        let file = TokenFile::parse(text, "cluster.local").unwrap();
        assert_eq!(file.len(), 2);
        let web = file.authenticate("tok-web").await.unwrap();
        assert_eq!(
            web.to_string(),
            "spiffe://cluster.local/ns/emojivoto/sa/web"
        );
        assert_eq!(
            file.authenticate("tok-api")
                .await
                .unwrap()
                .service_account(),
            "api"
        );
        assert_eq!(
            file.authenticate("tok-nope").await,
            Err(AuthError::UnknownToken)
        );
        assert!(
            format!("{file:?}").contains("tokens: 2"),
            "never the tokens themselves"
        );
    }

    #[test]
    fn malformed_token_files_name_the_line() {
        let cases = [
            ("just-a-token\n", 1, "expected"),
            ("a ns/sa extra\n", 1, "expected"),
            ("# c\na emojivoto-web\n", 2, "not of the form"),
            ("a Emojivoto/web\n", 1, "only lowercase"),
            ("a ns/sa\nb ns/sb\na ns/sc\n", 3, "earlier line"),
        ];
        for (text, line, reason) in cases {
            match TokenFile::parse(text, "cluster.local") {
                Err(TokenFileError::Line { line: l, reason: r }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(r.contains(reason), "{text:?}: {r}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_map_to_status_codes() {
        let other = Identity::new("cluster.local", "a", "b").unwrap();
        let cases = [
            (IssueError::MissingToken, 401),
            (IssueError::Auth(AuthError::UnknownToken), 401),
            (IssueError::Auth(AuthError::Refused("expired".into())), 401),
            (IssueError::Auth(AuthError::Unavailable("down".into())), 503),
            (
                IssueError::Csr(CsrError::IdentityNotAllowed {
                    requested: "x".into(),
                    entitled: other,
                }),
                403,
            ),
            (IssueError::Csr(CsrError::Malformed("x".into())), 400),
            (IssueError::Csr(CsrError::WrongKeyType("x".into())), 400),
            (IssueError::TooLarge, 413),
            (IssueError::BodyTimeout(Duration::from_secs(1)), 408),
            (IssueError::NotFound, 404),
            (IssueError::MethodNotAllowed, 405),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err}");
        }
    }
}
