//! Mesh identity: trust anchors, an issuer, rotating workload certificates and rustls configs.
#![warn(missing_docs)]
