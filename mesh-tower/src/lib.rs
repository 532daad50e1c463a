//! The mesh as composable Tower layers, for in-process use and for the sidecar.
//!
//! Outbound, a request goes
//! `route → metrics → trace → filters → timeout → retry → split → balance → connect`;
//! inbound, `authorize → metrics → rate limit → the application`; and one edge layer,
//! [`errors::RespondLayer`], answers every failure with the right status and an
//! `l5d-proxy-error` header. Each layer is usable on its own; [`client::MeshClient`] and
//! [`server::MeshServer`] stack them with mTLS from `mesh-identity` for a Rust service that
//! wants the mesh without a sidecar.
#![warn(missing_docs)]

pub mod accepted;
pub mod accrual;
pub mod authz;
pub mod balance;
pub mod body;
pub mod client;
pub mod connect;
pub mod controller;
pub mod detect;
pub mod discover;
pub mod dispatch;
pub mod errors;
pub mod filter;
pub mod listeners;
pub mod metrics;
pub mod mirror;
pub mod policy;
pub mod pool;
pub mod rate_limit;
pub mod retry;
pub mod route;
pub mod server;
pub mod split;
pub mod tap;
pub mod timeout;
pub mod trace;

/// The error type the layers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use errors::is_caused_by;
pub use policy::PolicyHandle;
