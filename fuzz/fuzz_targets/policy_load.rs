//! Any byte string given to the policy loader yields a snapshot or errors, never a panic, and
//! decisions on whatever compiled never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::{MeshPolicy, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match MeshPolicy::from_yaml(text) {
        Ok(policy) => {
            if let Ok(req) = Request::new("GET", "http://web.default:80/api?x=1") {
                let d = policy.outbound(&req);
                let _ = d.pick(u64::MAX / 3);
                let _ = d.classify(503, None);
                let (target, _) = policy.inbound_target("web.default", 80);
                let _ = policy.authorize(&target, &mesh_core::Peer::default(), &req);
            }
        }
        Err(errors) => {
            // Every error renders.
            let _ = errors.to_string();
        }
    }
});
