//! The gRPC API of `mesh controller`, generated from `proto/mesh/controller/v1/controller.proto`.
//!
//! Three server-streaming services, in the shape of Linkerd's destination and policy APIs:
//! [`v1::destination_client::DestinationClient`] (a Service's endpoints, incremental),
//! [`v1::outbound_policies_client::OutboundPoliciesClient`] (a Service's or an address's
//! outbound policy) and [`v1::inbound_policies_client::InboundPoliciesClient`] (the caller's own
//! inbound policy). Policy travels as the accepted Kubernetes objects it is written in; the
//! client compiles them with `mesh-core`, as `mesh policy check` does.
//!
//! The clients and servers are generic over the HTTP/2 service underneath: bring a
//! connection with mesh mTLS (as `mesh-tower` and `mesh-sidecar` do).
//!
//! The generated code is checked in (`src/gen`); `mesh-api/codegen` regenerates it with
//! `protoc` and, with `--check`, verifies it is current.

/// Version 1 of the API (`mesh.controller.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod v1 {
    include!("gen/mesh.controller.v1.rs");
}
