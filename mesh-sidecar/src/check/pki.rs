//! Certificate checks, pure over PEM text and the time given: trust anchors and issuer
//! validity, the issuer's chain to the anchors, and the webhook's caBundle against the
//! injector's serving certificate. Verification is rustls-webpki's, through rustls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::identity::Identity;
use mesh_identity::{ca, cert};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::report::Outcome;

/// Certificates closer than this to their end are warned about, as `linkerd check` does.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(60 * 24 * 3600);

const ROTATE_ANCHORS: &str = "make a new anchor and issuer with `mesh identity init --out DIR`, \
    add the new anchor to the trust bundle beside the old one, roll the proxies, then \
    `mesh install --identity-dir DIR | kubectl apply -f -`";
const ROTATE_ISSUER: &str = "put a new issuer signed by the trust anchor in DIR (or a new \
    anchor and issuer: `mesh identity init --out DIR`) and apply it with \
    `mesh install --identity-dir DIR | kubectl apply -f -`";

/// Whether every certificate of `pem` is valid at `now`, warning when one ends within
/// [`EXPIRY_WARNING`]. `what` names them in the message ("trust anchor").
pub(crate) fn validity(pem: &str, what: &str, now: SystemTime) -> Outcome {
    let hint = if what.contains("anchor") {
        ROTATE_ANCHORS
    } else {
        ROTATE_ISSUER
    };
    let certs = match cert::certs_from_pem(pem) {
        Ok(c) => c,
        Err(e) => return Outcome::error(format!("the {what} is not PEM: {e}"), hint),
    };
    let mut warning = None;
    for c in &certs {
        let v = match cert::validity_of(c) {
            Ok(v) => v,
            Err(e) => return Outcome::error(format!("a {what} is not readable: {e}"), hint),
        };
        if v.not_after < now {
            let when = httpdate::fmt_http_date(v.not_after);
            return Outcome::error(format!("the {what} expired on {when}"), hint);
        }
        if v.not_before > now {
            let when = httpdate::fmt_http_date(v.not_before);
            let msg = format!("the {what} is not valid before {when}; is this clock right?");
            return Outcome::error(msg, hint);
        }
        if warning.is_none() && v.not_after < now + EXPIRY_WARNING {
            let when = httpdate::fmt_http_date(v.not_after);
            warning = Some(Outcome::warning(
                format!("the {what} expires on {when}, in less than 60 days"),
                hint,
            ));
        }
    }
    warning.unwrap_or(Outcome::Success)
}

/// Whether the issuer can sign certificates the proxies accept: a leaf it signs now
/// verifies up to `anchors_pem`. (webpki verifies chains from a leaf only, and the issuer's
/// key is at hand in its Secret.)
pub(crate) fn issuer_signed_by(
    anchors_pem: &str,
    issuer_crt: &str,
    issuer_key: &str,
    now: SystemTime,
) -> Outcome {
    let fail = |e: String| Outcome::error(e, ROTATE_ISSUER);
    let issuer = match ca::Issuer::from_pem(issuer_crt, issuer_key) {
        Ok(i) => i,
        Err(e) => return fail(format!("the issuer certificate and key do not load: {e}")),
    };
    let probe = Identity::new(issuer.trust_domain(), "mesh-check", "mesh-check");
    let leaf = probe.map_err(|e| e.to_string()).and_then(|id| {
        (issuer.issue_local(&id, Duration::from_secs(300))).map_err(|e| e.to_string())
    });
    let leaf = match leaf {
        Ok(l) => l,
        Err(e) => return fail(format!("the issuer cannot sign a certificate: {e}")),
    };
    let Some((end, intermediates)) = leaf.chain().split_first() else {
        return fail("the issuer signed an empty chain".to_owned());
    };
    let roots = match roots(anchors_pem) {
        Ok(r) => r,
        Err(e) => return Outcome::error(e, ROTATE_ANCHORS),
    };
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots, mesh_identity::tls::provider()).build();
    let result = verifier.map_err(|e| e.to_string()).and_then(|v| {
        v.verify_client_cert(end, intermediates, unix(now))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(_) => Outcome::Success,
        Err(e) => fail(format!(
            "the issuer is not signed by the trust anchors: {e}"
        )),
    }
}

/// Whether `ca_bundle` (the webhook configuration's) verifies the injector's serving
/// certificate `tls_crt` for `host`, as the API server does when it calls the webhook.
pub(crate) fn ca_bundle_verifies(
    ca_bundle: &str,
    tls_crt: &str,
    host: &str,
    now: SystemTime,
) -> Outcome {
    let hint = "the webhook configuration and the injector's Secret come from different \
        installs: re-apply both from one `mesh install | kubectl apply -f -`";
    let roots = match roots(ca_bundle) {
        Ok(r) => r,
        Err(e) => return Outcome::error(format!("the caBundle: {e}"), hint),
    };
    let chain = match cert::certs_from_pem(tls_crt) {
        Ok(c) => c,
        Err(e) => return Outcome::error(format!("the serving certificate: {e}"), hint),
    };
    let Some((end, intermediates)) = chain.split_first() else {
        return Outcome::error("the serving certificate is empty", hint);
    };
    let name = match ServerName::try_from(host.to_owned()) {
        Ok(n) => n,
        Err(e) => return Outcome::error(format!("{host}: {e}"), hint),
    };
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots, mesh_identity::tls::provider()).build();
    let result = verifier.map_err(|e| e.to_string()).and_then(|v| {
        v.verify_server_cert(end, intermediates, &name, &[], unix(now))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::error(
            format!("the caBundle does not verify the injector's certificate for {host}: {e}"),
            hint,
        ),
    }
}

/// Whether two PEM bundles hold the same certificates, whatever their order and spacing.
pub(crate) fn same_certs(a: &str, b: &str) -> bool {
    let set = |pem: &str| {
        let mut v: Vec<CertificateDer<'static>> = cert::certs_from_pem(pem).unwrap_or_default();
        v.sort_by(|x, y| x.as_ref().cmp(y.as_ref()));
        v
    };
    let (a, b) = (set(a), set(b));
    !a.is_empty() && a == b
}

fn roots(pem: &str) -> Result<Arc<RootCertStore>, String> {
    let certs = cert::certs_from_pem(pem).map_err(|e| e.to_string())?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err("no usable certificate".to_owned());
    }
    Ok(Arc::new(store))
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn anchor_and_issuer(issuer_days: u32) -> (ca::TrustAnchor, ca::Issuer) {
        let anchor = ca::TrustAnchor::generate("cluster.local", 365 * DAY).unwrap();
        let issuer = ca::Issuer::generate(&anchor, issuer_days * DAY).unwrap();
        (anchor, issuer)
    }

    #[test]
    fn validity_warns_under_60_days_and_fails_when_expired() {
        let (anchor, issuer) = anchor_and_issuer(30);
        let now = SystemTime::now();
        assert_eq!(
            validity(&anchor.cert_pem(), "trust anchor", now),
            Outcome::Success
        );
        let soon = validity(&issuer.cert_pem(), "issuer certificate", now);
        assert!(matches!(soon, Outcome::Warning(_)), "{soon:?}");
        let later = validity(&issuer.cert_pem(), "issuer certificate", now + 31 * DAY);
        assert!(later.is_error(), "{later:?}");
    }

    #[test]
    fn an_issuer_of_other_anchors_is_refused() {
        let (anchor, issuer) = anchor_and_issuer(90);
        let (other, _) = anchor_and_issuer(90);
        let now = SystemTime::now();
        let ok = issuer_signed_by(
            &anchor.cert_pem(),
            &issuer.cert_pem(),
            issuer.key_pem(),
            now,
        );
        assert_eq!(ok, Outcome::Success);
        let bad = issuer_signed_by(&other.cert_pem(), &issuer.cert_pem(), issuer.key_pem(), now);
        assert!(bad.is_error(), "{bad:?}");
        // A bundle holding both anchors, as during a rotation, still verifies.
        let both = format!("{}{}", other.cert_pem(), anchor.cert_pem());
        let rotating = issuer_signed_by(&both, &issuer.cert_pem(), issuer.key_pem(), now);
        assert_eq!(rotating, Outcome::Success);
        assert!(same_certs(
            &both,
            &format!("{}{}", anchor.cert_pem(), other.cert_pem())
        ));
        assert!(!same_certs(&both, &anchor.cert_pem()));
    }
}
