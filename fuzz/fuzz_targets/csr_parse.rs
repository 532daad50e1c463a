//! The issuer signs CSRs sent by anyone holding a token: parsing a request (PEM or DER) and
//! checking its SANs must never panic, and whatever is signed names exactly the identity the
//! caller proved, whatever the request asked for.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mesh_identity::ca::{Issuer, TrustAnchor};
use mesh_identity::{Identity, cert};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn issuer() -> &'static (Issuer, Identity) {
    static ISSUER: OnceLock<(Issuer, Identity)> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let anchor = TrustAnchor::generate("cluster.local", DAY).expect("an anchor");
        let issuer = Issuer::generate(&anchor, DAY).expect("an issuer");
        let web = Identity::new("cluster.local", "emojivoto", "web").expect("an identity");
        (issuer, web)
    })
}

fuzz_target!(|data: &[u8]| {
    let (issuer, entitled) = issuer();
    let Ok(chain) = issuer.sign_csr(data, entitled, Duration::from_secs(3600)) else {
        return;
    };
    assert_eq!(chain.len(), 2);
    assert_eq!(cert::identity_of(&chain[0]).ok().as_ref(), Some(entitled));
});
