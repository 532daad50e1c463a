//! Mesh policy as data.
#![warn(missing_docs)]

pub mod identity;
