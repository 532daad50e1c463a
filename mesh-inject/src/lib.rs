//! Adding the mesh to a pod, as data: the pod patching `mesh inject` and `mesh injector` share,
//! and the injector's AdmissionReview answer.
//!
//! Pure: no I/O, no clock. The `mesh` binary serves [`review::review`] over HTTPS and runs
//! [`inject_pod`] over YAML streams; being a library, both can also be fuzzed (`fuzz/`).
//!
//! # Examples
//!
//! ```
//! use std::collections::BTreeMap;
//! use k8s_openapi::api::core::v1::{Container, PodSpec};
//! use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
//! use mesh_inject::{InjectConfig, Outcome, SidecarMode, inject_pod};
//!
//! let config = InjectConfig {
//!     image: "mesh:test".into(),
//!     sidecar: SidecarMode::Native,
//!     cni: false,
//!     identity_audience: "identity.mesh.io".into(),
//!     identity_addr: "mesh-identity.mesh.svc.cluster.local:8443".into(),
//!     controller_addr: "mesh-controller.mesh.svc.cluster.local:8090".into(),
//!     controller_service_account: "mesh/mesh-controller".into(),
//!     identity_service_account: "mesh/mesh-identity".into(),
//!     trust_domain: "cluster.local".into(),
//!     trust_anchors: None,
//!     inject_by_default: true,
//!     version: "0.0.0".into(),
//! };
//! let spec = PodSpec {
//!     containers: vec![Container { name: "app".into(), ..Container::default() }],
//!     ..PodSpec::default()
//! };
//! let out = inject_pod(&ObjectMeta::default(), &spec, &BTreeMap::new(), &config)?;
//! let Outcome::Injected { spec, .. } = out else { panic!("not injected") };
//! let init: Vec<_> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
//! assert_eq!(init, ["mesh-init", "mesh-proxy"]);
//! # Ok::<(), mesh_inject::InjectError>(())
//! ```
#![warn(missing_docs)]

mod annotations;
mod containers;
mod items;
pub mod pod;
pub mod review;

pub use pod::{AnnotationError, InjectConfig, InjectError, Outcome, SidecarMode, Skip, inject_pod};
