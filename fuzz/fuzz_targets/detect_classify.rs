//! The first bytes of every proxied connection come from whoever connected: classifying them
//! must never panic, and a decision must be final. `detect` stops reading at the first
//! answer, so if a shorter prefix of a stream could be classified one way and a longer one
//! another, the same client would be served as HTTP or as opaque bytes (and authorized as
//! such) depending on how its bytes were split into packets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_tower::detect::{MAX_DETECT, classify};

fuzz_target!(|data: &[u8]| {
    // Detection never looks past MAX_DETECT bytes.
    let data = &data[..data.len().min(MAX_DETECT)];
    let mut decided = None;
    for n in 0..=data.len() {
        let now = classify(&data[..n]);
        if let Some(first) = decided {
            assert_eq!(now, Some(first), "decided {first:?}, then {now:?} at {n} bytes");
        } else {
            decided = now;
        }
    }
});
