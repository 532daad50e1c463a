//! Mesh policy as data.
//!
//! `mesh-core` reads the Kubernetes resources users already apply — SMI `TrafficSplit` and
//! `HTTPRouteGroup`, Gateway API `HTTPRoute` and `GRPCRoute`, Linkerd's `ServiceProfile`,
//! `Server`, `ServerAuthorization`, `AuthorizationPolicy`, `MeshTLSAuthentication`,
//! `NetworkAuthentication`, `HTTPLocalRateLimitPolicy`, and `Service`s and workloads — and
//! compiles them into one immutable [`MeshPolicy`]. Every decision the mesh takes is a pure
//! function of that snapshot and a described request, so a team can test its canary split,
//! retry and access rules in plain `cargo test`:
//!
//! ```
//! use mesh_core::{MeshPolicy, Request};
//!
//! let policy = MeshPolicy::from_yaml(r#"
//! apiVersion: gateway.networking.k8s.io/v1
//! kind: HTTPRoute
//! metadata: { name: web-canary, namespace: emojivoto }
//! spec:
//!   parentRefs: [{ name: web-svc, kind: Service, group: core, port: 80 }]
//!   rules:
//!   - matches: [{ headers: [{ name: x-canary, value: "1" }] }]
//!     backendRefs: [{ name: web-svc-v2, port: 80 }]
//!   - backendRefs:
//!     - { name: web-svc, port: 80, weight: 90 }
//!     - { name: web-svc-v2, port: 80, weight: 10 }
//! "#)?;
//!
//! let canary = Request::new("GET", "http://web-svc.emojivoto/api/vote")?.header("x-canary", "1");
//! assert_eq!(policy.sample_backends(&canary, 1_000, 7).share("web-svc-v2"), 1.0);
//!
//! let everyone = Request::new("GET", "http://web-svc.emojivoto/api/vote")?;
//! let share = policy.sample_backends(&everyone, 10_000, 7).share("web-svc-v2");
//! assert!((0.08..0.12).contains(&share));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Underneath, a [`PolicyIndex`] holds objects one at a time, as a live source (a Kubernetes
//! watch) delivers them: each is accepted or refused on its own, and an apply or delete relinks
//! only what depends on it. [`MeshPolicy::from_yaml`] is all-or-nothing on top of it.
//!
//! Nothing here does I/O or reads a clock or a random generator of its own: time and
//! randomness are arguments.
#![warn(missing_docs)]

pub mod authz;
pub mod canary;
pub mod classify;
mod compile;
pub mod destination;
pub mod error;
pub mod filter;
pub mod identity;
pub mod index;
pub mod kinds;
pub mod manifest;
pub mod policy;
pub mod retry;
pub mod route;
pub mod split;
pub mod values;

pub use authz::{AuthzDecision, InboundTarget, Peer};
pub use destination::{Destination, NameContext};
pub use error::{LoadError, LoadErrors, Note};
pub use identity::Identity;
pub use index::{ApplyError, Changes, ObjectRef, ObjectStatus, PolicyIndex};
pub use policy::{MeshPolicy, OutboundDecision, PolicyConfig, Samples};
pub use route::{Request, RequestFacts};
