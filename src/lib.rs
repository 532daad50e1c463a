//! `mesh`: a service mesh in a crate.
//!
//! This facade re-exports the library crates: [`core`] (policy as data and pure decisions),
//! [`identity`] (trust and certificates) and [`tower`] (the Tower layers).
#![warn(missing_docs)]

pub use mesh_core as core;
pub use mesh_identity as identity;
pub use mesh_tower as tower;

// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// So is mesh-tower's in-process teaser, written with the facade's paths.
#[cfg(doctest)]
#[doc = include_str!("../mesh-tower/README.md")]
struct TowerReadmeDoctests;
