//! Identity names come from certificates and manifests written by others: parsing must never
//! panic, and whatever parses must print and re-parse to the same identity in both forms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::identity::Identity;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = s.parse::<Identity>() else {
        return;
    };
    let spiffe = id.to_string();
    assert_eq!(spiffe.parse::<Identity>().as_ref(), Ok(&id), "{spiffe}");
    for control_ns in ["linkerd", "mesh"] {
        let dns = id.to_dns(control_ns);
        assert_eq!(dns.parse::<Identity>().as_ref(), Ok(&id), "{dns}");
    }
});
