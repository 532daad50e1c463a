//! Workload identity names: the SPIFFE form and Linkerd's DNS form.
//!
//! An identity is a service account in a namespace, within a trust domain. It prints as
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` and, for Linkerd's tooling, as
//! `<service-account>.<namespace>.serviceaccount.identity.<control-ns>.<trust-domain>`.
//! Everywhere an identity is accepted, either form is accepted, and both parse to the same
//! value: the control namespace is a naming convention of the DNS form, not part of who the
//! workload is.
//!
//! ```
//! use mesh_core::identity::Identity;
//!
//! let a: Identity = "spiffe://cluster.local/ns/emojivoto/sa/web".parse()?;
//! let b: Identity = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local".parse()?;
//! assert_eq!(a, b);
//! assert_eq!(a.to_dns("linkerd"), "web.emojivoto.serviceaccount.identity.linkerd.cluster.local");
//! assert_eq!(b.to_string(), "spiffe://cluster.local/ns/emojivoto/sa/web");
//! # Ok::<(), mesh_core::identity::InvalidIdentity>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The trust domain used when none is configured, as in Linkerd and Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The control-plane namespace used in DNS-form names when none is configured.
pub const DEFAULT_CONTROL_NAMESPACE: &str = "linkerd";

const SPIFFE_SCHEME: &str = "spiffe://";
const DNS_MARKER: &str = ".serviceaccount.identity.";
// Kubernetes names are at most 253 characters; a trust domain is a DNS name.
const MAX_PART: usize = 253;

/// A workload identity: a service account, in a namespace, in a trust domain.
///
/// Cloned into every request and response that names a peer or an endpoint, so its parts sit
/// behind one `Arc`: a clone is a reference count, not three strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(Arc<Parts>);

/// The parts of an [`Identity`], in the order identities compare by.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Parts {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a workload identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {input:?}: {reason}")]
pub struct InvalidIdentity {
    input: String,
    reason: IdentityProblem,
}

/// What is wrong with an identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityProblem {
    /// Longer than any identity can be.
    #[error("too long to be an identity")]
    TooLong,
    /// `spiffe://<td>` with no path.
    #[error("a SPIFFE ID needs a path /ns/<namespace>/sa/<service-account>")]
    NoSpiffePath,
    /// A SPIFFE path other than `ns/<namespace>/sa/<service-account>`.
    #[error("the path {0:?} is not of the form ns/<namespace>/sa/<service-account>")]
    SpiffePath(String),
    /// Neither form.
    #[error(
        "neither a SPIFFE ID (spiffe://…) nor a DNS-form identity (<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>)"
    )]
    NeitherForm,
    /// Neither a SPIFFE ID nor a DNS name, so no peer can ever carry it.
    #[error("neither a SPIFFE ID (spiffe://<trust-domain>/<path>) nor a DNS name")]
    NotAName,
    /// The DNS form without `<service-account>.<namespace>`.
    #[error("the DNS form needs <service-account>.<namespace> before .serviceaccount.identity.")]
    DnsWorkload,
    /// The DNS form without `<control-ns>.<trust-domain>`.
    #[error("the DNS form needs <control-ns>.<trust-domain> after .serviceaccount.identity.")]
    DnsDomain,
    /// A part is empty.
    #[error("the {0} is empty")]
    Empty(Part),
    /// A label of a part is longer than a DNS label may be.
    #[error("the {0} {1:?} is longer than 63 characters")]
    LabelTooLong(Part, String),
    /// A part is longer than a DNS name may be.
    #[error("the {0} is longer than {MAX_PART} characters")]
    TooLongPart(Part),
    /// A label holds a character DNS labels may not.
    #[error("the {0} {1:?} holds {2:?}; only lowercase letters, digits and '-' are allowed")]
    Character(Part, String, char),
    /// A label starts or ends with `-`.
    #[error("the {0} {1:?} must start and end with a letter or digit")]
    Edge(Part, String),
    /// A name holds the labels the DNS form uses as its separator.
    #[error("the {0} {1:?} holds the labels serviceaccount.identity, which the DNS form reserves")]
    Reserved(Part, String),
}

/// A part of an identity, as errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The trust domain.
    TrustDomain,
    /// The workload's namespace.
    Namespace,
    /// The workload's service account.
    ServiceAccount,
    /// The control-plane namespace of the DNS form.
    ControlNamespace,
    /// A name that is not a workload identity (a DNS name, or a SPIFFE ID's path segment).
    Name,
}

// === impl Identity ===

impl Identity {
    /// Builds an identity from its parts, checking each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, InvalidIdentity> {
        let input = format!("{SPIFFE_SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        let err = |reason| InvalidIdentity {
            input: input.clone(),
            reason,
        };
        check_dns_name(Part::TrustDomain, trust_domain).map_err(err)?;
        check_label(Part::Namespace, namespace).map_err(err)?;
        check_subdomain(Part::ServiceAccount, service_account).map_err(err)?;
        Ok(Self::from_parts(trust_domain, namespace, service_account))
    }

    /// Builds an identity from parts already checked.
    fn from_parts(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self(Arc::new(Parts {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }))
    }

    /// Parses either form. Same as `s.parse()`.
    pub fn parse(s: &str) -> Result<Self, InvalidIdentity> {
        s.parse()
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.0.trust_domain
    }

    /// The workload's namespace.
    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    /// The workload's service account.
    pub fn service_account(&self) -> &str {
        &self.0.service_account
    }

    /// The SPIFFE form, `spiffe://<td>/ns/<ns>/sa/<sa>` (also what `Display` prints).
    pub fn to_spiffe(&self) -> String {
        self.to_string()
    }

    /// Linkerd's DNS form, `<sa>.<ns>.serviceaccount.identity.<control_ns>.<td>`, used in
    /// metrics labels and in `MeshTLSAuthentication` manifests.
    pub fn to_dns(&self, control_namespace: &str) -> String {
        format!(
            "{}.{}{DNS_MARKER}{}.{}",
            self.0.service_account, self.0.namespace, control_namespace, self.0.trust_domain
        )
    }

    fn parse_spiffe(rest: &str) -> Result<Self, IdentityProblem> {
        let (td, path) = rest.split_once('/').ok_or(IdentityProblem::NoSpiffePath)?;
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
                check_dns_name(Part::TrustDomain, td)?;
                check_label(Part::Namespace, ns)?;
                check_subdomain(Part::ServiceAccount, sa)?;
                Ok(Self::from_parts(td, ns, sa))
            }
            _ => Err(IdentityProblem::SpiffePath(path.to_owned())),
        }
    }

    fn parse_dns(s: &str) -> Result<Self, IdentityProblem> {
        let (workload, domain) = s
            .split_once(DNS_MARKER)
            .ok_or(IdentityProblem::NeitherForm)?;
        // Namespaces are DNS labels (no dots); service accounts may hold dots.
        let (sa, ns) = workload
            .rsplit_once('.')
            .ok_or(IdentityProblem::DnsWorkload)?;
        let (control_ns, td) = domain.split_once('.').ok_or(IdentityProblem::DnsDomain)?;
        check_label(Part::ControlNamespace, control_ns)?;
        check_dns_name(Part::TrustDomain, td)?;
        check_label(Part::Namespace, ns)?;
        check_subdomain(Part::ServiceAccount, sa)?;
        Ok(Self::from_parts(td, ns, sa))
    }
}

impl FromStr for Identity {
    type Err = InvalidIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let res = if s.len() > 2 * MAX_PART + 64 {
            Err(IdentityProblem::TooLong)
        } else if let Some(rest) = s.strip_prefix(SPIFFE_SCHEME) {
            Self::parse_spiffe(rest)
        } else {
            Self::parse_dns(s)
        };
        res.map_err(|reason| InvalidIdentity {
            input: s.chars().take(300).collect(),
            reason,
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SPIFFE_SCHEME}{}/ns/{}/sa/{}",
            self.0.trust_domain, self.0.namespace, self.0.service_account
        )
    }
}

// === impl Part ===

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TrustDomain => "trust domain",
            Self::Namespace => "namespace",
            Self::ServiceAccount => "service account",
            Self::ControlNamespace => "control namespace",
            Self::Name => "name",
        })
    }
}

/// Checks a name that policy may admit a peer by although it is no service account's identity
/// (Linkerd accepts these in `MeshTLSAuthentication.spec.identities`): a SPIFFE ID of any
/// path (`spiffe://cluster.local/vm/db`) or a DNS name (`db.example.org`). A SPIFFE ID under
/// `/ns/` and a name holding `.serviceaccount.identity.` must be well-formed workload
/// identities: a typo there would otherwise silently admit no one.
pub fn check_peer_name(s: &str) -> Result<(), InvalidIdentity> {
    let res = if s.len() > 2 * MAX_PART + 64 {
        Err(IdentityProblem::TooLong)
    } else if let Some(rest) = s.strip_prefix(SPIFFE_SCHEME) {
        check_spiffe_name(rest)
    } else if s.contains(DNS_MARKER) {
        Identity::parse_dns(s).map(drop)
    } else if s.contains('.') {
        check_dns_name(Part::Name, s).map_err(|_| IdentityProblem::NotAName)
    } else {
        // A single label is a host name, not a name a certificate carries across a mesh.
        Err(IdentityProblem::NotAName)
    };
    res.map_err(|reason| InvalidIdentity {
        input: s.chars().take(300).collect(),
        reason,
    })
}

/// A SPIFFE ID (`<trust-domain>/<path>` after the scheme), per the SPIFFE ID spec: path
/// segments of letters, digits, `.`, `-` and `_`, none empty, `.` or `..`.
fn check_spiffe_name(rest: &str) -> Result<(), IdentityProblem> {
    let (td, path) = rest.split_once('/').ok_or(IdentityProblem::NoSpiffePath)?;
    if path.starts_with("ns/") {
        return Identity::parse_spiffe(rest).map(drop);
    }
    check_dns_name(Part::TrustDomain, td)?;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(IdentityProblem::Empty(Part::Name));
        }
        if let Some(c) = seg.chars().find(|&c| !ok_char(c)) {
            return Err(IdentityProblem::Character(Part::Name, seg.to_owned(), c));
        }
    }
    Ok(())
}

// === impl InvalidIdentity ===

impl InvalidIdentity {
    /// What is wrong with it.
    pub fn reason(&self) -> &IdentityProblem {
        &self.reason
    }
}

// === validation helpers ===

/// An RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric.
fn check_label(what: Part, s: &str) -> Result<(), IdentityProblem> {
    if s.is_empty() {
        return Err(IdentityProblem::Empty(what));
    }
    if s.len() > 63 {
        return Err(IdentityProblem::LabelTooLong(what, s.to_owned()));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(c) = s.chars().find(|&c| !ok_char(c)) {
        return Err(IdentityProblem::Character(what, s.to_owned(), c));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(IdentityProblem::Edge(what, s.to_owned()));
    }
    Ok(())
}

/// An RFC 1123 subdomain: dot-separated labels, at most 253 characters.
fn check_subdomain(what: Part, s: &str) -> Result<(), IdentityProblem> {
    if s.len() > MAX_PART {
        return Err(IdentityProblem::TooLongPart(what));
    }
    if s.is_empty() {
        return Err(IdentityProblem::Empty(what));
    }
    s.split('.').try_for_each(|l| check_label(what, l))?;
    // The DNS form joins names with `.serviceaccount.identity.`; a name holding those labels
    // would print as a DNS form that parses back as another identity.
    let labels: Vec<&str> = s.split('.').collect();
    if labels
        .windows(2)
        .any(|w| w == ["serviceaccount", "identity"])
    {
        return Err(IdentityProblem::Reserved(what, s.to_owned()));
    }
    Ok(())
}

fn check_dns_name(what: Part, s: &str) -> Result<(), IdentityProblem> {
    check_subdomain(what, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_to_the_same_identity() {
        let cases = [
            "spiffe://cluster.local/ns/emojivoto/sa/web",
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            "web.emojivoto.serviceaccount.identity.mesh.cluster.local",
        ];
        let want = Identity::new("cluster.local", "emojivoto", "web").unwrap();
        for c in cases {
            assert_eq!(c.parse::<Identity>().unwrap(), want, "{c}");
        }
        assert_eq!(
            want.to_dns("linkerd"),
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
        );
    }

    #[test]
    fn dotted_service_accounts_and_trust_domains() {
        let id: Identity = "a.b.ns1.serviceaccount.identity.linkerd.example.org"
            .parse()
            .unwrap();
        assert_eq!(id.service_account(), "a.b");
        assert_eq!(id.namespace(), "ns1");
        assert_eq!(id.trust_domain(), "example.org");
        let back: Identity = id.to_string().parse().unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn malformed_names_are_rejected_with_a_reason() {
        let cases = [
            ("", "neither a SPIFFE ID"),
            ("spiffe://cluster.local", "needs a path"),
            ("spiffe://cluster.local/ns/x", "not of the form"),
            ("spiffe://cluster.local/ns/x/sa/y/extra", "not of the form"),
            ("spiffe://cluster.local/ns/X/sa/y", "only lowercase"),
            ("spiffe:///ns/x/sa/y", "trust domain is empty"),
            ("spiffe://cluster.local/ns//sa/y", "namespace is empty"),
            ("spiffe://cluster.local/ns/-x/sa/y", "must start and end"),
            (
                "web.serviceaccount.identity.linkerd.cluster.local",
                "needs <service-account>",
            ),
            (
                "web.ns.serviceaccount.identity.linkerd",
                "needs <control-ns>",
            ),
            ("web.emojivoto", "neither a SPIFFE ID"),
            (
                "spiffe://cl.wl/ns/o/sa/x.lr.serviceaccount.identity.lr.la9",
                "which the DNS form reserves",
            ),
            (
                "spiffe://a.serviceaccount.identity.b/ns/o/sa/web",
                "which the DNS form reserves",
            ),
        ];
        for (input, reason) in cases {
            let err = input.parse::<Identity>().unwrap_err();
            assert!(
                err.to_string().contains(reason),
                "{input:?}: {err} should say {reason:?}"
            );
        }
    }

    #[test]
    fn names_linkerd_accepts_beside_workload_identities() {
        for ok in [
            "spiffe://cluster.local/vm/db",
            "spiffe://example.org/a_b/c.d-e",
            "db.example.org",
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            "spiffe://cluster.local/ns/emojivoto/sa/web",
        ] {
            assert_eq!(check_peer_name(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("not an identity", "nor a DNS name"),
            ("db", "nor a DNS name"),
            ("Db.Example.org", "nor a DNS name"),
            ("spiffe://cluster.local", "needs a path"),
            ("spiffe://cluster.local/vm//db", "name is empty"),
            ("spiffe://cluster.local/vm/d b", "holds ' '"),
            // Under /ns/ or with the DNS marker, the workload form is checked as before.
            ("spiffe://cluster.local/ns/x", "not of the form"),
            (
                "web.serviceaccount.identity.linkerd.cluster.local",
                "needs <service-account>",
            ),
        ];
        for (input, reason) in cases {
            let err = check_peer_name(input).unwrap_err();
            assert!(
                err.to_string().contains(reason),
                "{input:?}: {err} should say {reason:?}"
            );
        }
    }
}
