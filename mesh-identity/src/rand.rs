//! Randomness from the one crypto library in the build.

use ring::rand::{SecureRandom, SystemRandom};

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), ring::error::Unspecified> {
    SystemRandom::new().fill(buf)
}

/// A uniform fraction in `[0, 1)`, for jitter. Falls back to 0.5 if the OS RNG fails, which
/// only makes the jitter less spread, never wrong.
pub(crate) fn fraction() -> f64 {
    let mut b = [0u8; 8];
    match fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}
