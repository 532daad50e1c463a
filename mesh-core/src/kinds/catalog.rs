//! Every kind the mesh reads, described once: its group, plural, scope and versions, which of
//! them a cluster serves and how each one is laid out.
//!
//! The compiler identifies documents with this table ([`by_group_kind`], [`infer`]),
//! `mesh install --crds` prints a CustomResourceDefinition for every row that is a
//! [`Definition::Crd`], and `mesh proxy --kube` watches rows at their [`KindInfo::storage`]
//! version.
//!
//! ```
//! use mesh_core::kinds::catalog::{self, Family, Layout};
//!
//! let group = catalog::by_group_kind("specs.smi-spec.io", "HTTPRouteGroup").unwrap();
//! assert_eq!(group.family, Family::HttpRouteGroup);
//! assert_eq!(group.version("v1alpha2").unwrap().layout, Layout::TopLevel);
//! assert_eq!(group.version("v1alpha4").unwrap().layout, Layout::Spec);
//! assert_eq!(catalog::infer("Server"), Some(("policy.linkerd.io", "v1beta3")));
//! ```

pub use super::status::StatusSchema;

/// How the compiler reads a kind: one variant per reader, so several kinds may share one
/// (the workload kinds all carry a pod template).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Family {
    /// SMI TrafficSplit.
    TrafficSplit,
    /// SMI HTTPRouteGroup.
    HttpRouteGroup,
    /// Gateway API HTTPRoute.
    HttpRoute,
    /// Linkerd's policy.linkerd.io HTTPRoute.
    LinkerdHttpRoute,
    /// Gateway API GRPCRoute.
    GrpcRoute,
    /// Linkerd ServiceProfile.
    ServiceProfile,
    /// Linkerd Server.
    Server,
    /// Linkerd ServerAuthorization.
    ServerAuthorization,
    /// Linkerd AuthorizationPolicy.
    AuthorizationPolicy,
    /// Linkerd MeshTLSAuthentication.
    MeshTlsAuthentication,
    /// Linkerd NetworkAuthentication.
    NetworkAuthentication,
    /// Linkerd HTTPLocalRateLimitPolicy.
    RateLimitPolicy,
    /// mesh's Canary: progressive delivery of one route's backend.
    Canary,
    /// mesh's FaultInjection: aborts and delays an `ExtensionRef` route filter names.
    FaultInjection,
    /// Service.
    Service,
    /// EndpointSlice.
    EndpointSlice,
    /// Namespace.
    Namespace,
    /// A kind whose spec holds a pod template: Deployment, StatefulSet, DaemonSet, ReplicaSet, Job.
    Workload,
    /// CronJob: its pod template sits one level deeper, under `jobTemplate`.
    CronJob,
    /// Pod.
    Pod,
}

/// Whether objects of a kind live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// In a namespace.
    Namespaced,
    /// Cluster-wide.
    Cluster,
}

/// Who defines a kind in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Definition {
    /// Kubernetes itself (core, apps, batch, discovery.k8s.io).
    BuiltIn,
    /// A CRD that `mesh install --crds` prints (SMI and Linkerd kinds).
    Crd,
    /// A Gateway API CRD, printed by `mesh install --crds` unless told that the cluster
    /// already has Gateway API (whose own release then owns the schema).
    GatewayApiCrd,
}

/// Where a version keeps its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Under `spec`, as almost every kind.
    Spec,
    /// Beside `metadata`, with no `spec` (SMI HTTPRouteGroup v1alpha1 and v1alpha2: `matches`).
    TopLevel,
}

/// How one version differs from the Rust type that reads every version of its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quirk {
    /// The field (a path such as `spec.rules[].timeouts`) does not exist in this version.
    Without(&'static str),
    /// The field is an integer in this version, where another version also takes a
    /// quantity string (SMI TrafficSplit weights: `900m` in v1alpha1, integers after).
    IntegerOnly(&'static str),
}

/// One version of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    /// `v1beta3`.
    pub name: &'static str,
    /// A cluster serves it (our CRD, or Kubernetes for built-in kinds). The compiler reads
    /// every listed version, served or not, so old manifests still load in CI.
    pub served: bool,
    /// The version objects are stored (and watched) at; exactly one per kind.
    pub storage: bool,
    /// Served with a deprecation warning.
    pub deprecated: bool,
    /// Where its fields are.
    pub layout: Layout,
    /// How it differs from the shared Rust type.
    pub quirks: &'static [Quirk],
}

/// One kind: everything about it that does not depend on a version, and its versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KindInfo {
    /// How the compiler reads it.
    pub family: Family,
    /// API group, `""` for core.
    pub group: &'static str,
    /// `HTTPRoute`.
    pub kind: &'static str,
    /// `httproutes`.
    pub plural: &'static str,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-wide.
    pub scope: Scope,
    /// Who defines it in a cluster.
    pub definition: Definition,
    /// A manifest naming only this kind (no `apiVersion`, as the SMI spec's examples) is
    /// read as this row, at its storage version.
    pub bare_kind: bool,
    /// Every version the compiler reads, in the order its messages list them.
    pub versions: &'static [Version],
    /// The `status` subresource and its shape, where the upstream CRD has one.
    pub status: Option<StatusSchema>,
}

const fn v(name: &'static str) -> Version {
    Version {
        name,
        served: true,
        storage: false,
        deprecated: false,
        layout: Layout::Spec,
        quirks: &[],
    }
}

const fn stored(name: &'static str) -> Version {
    Version {
        storage: true,
        ..v(name)
    }
}

const fn deprecated(name: &'static str) -> Version {
    Version {
        deprecated: true,
        ..v(name)
    }
}

/// Read by the compiler (old manifests), no longer served by clusters.
const fn removed(name: &'static str) -> Version {
    Version {
        served: false,
        deprecated: true,
        ..v(name)
    }
}

const fn quirks(version: Version, quirks: &'static [Quirk]) -> Version {
    Version { quirks, ..version }
}

/// A row of the table with the defaults most rows share.
const fn row(
    family: Family,
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    versions: &'static [Version],
) -> KindInfo {
    KindInfo {
        family,
        group,
        kind,
        plural,
        short_names: &[],
        scope: Scope::Namespaced,
        definition: Definition::BuiltIn,
        bare_kind: false,
        versions,
        status: None,
    }
}

const fn crd(info: KindInfo, short_names: &'static [&'static str]) -> KindInfo {
    KindInfo {
        definition: Definition::Crd,
        bare_kind: true,
        short_names,
        ..info
    }
}

const V1: &[Version] = &[stored("v1")];

/// SMI TrafficSplit v1alpha1 weights are quantities; `matches` arrived in v1alpha3.
const TRAFFIC_SPLIT: &[Version] = &[
    quirks(v("v1alpha1"), &[Quirk::Without("spec.matches")]),
    quirks(
        v("v1alpha2"),
        &[
            Quirk::Without("spec.matches"),
            Quirk::IntegerOnly("spec.backends[].weight"),
        ],
    ),
    quirks(
        v("v1alpha3"),
        &[Quirk::IntegerOnly("spec.backends[].weight")],
    ),
    quirks(
        stored("v1alpha4"),
        &[Quirk::IntegerOnly("spec.backends[].weight")],
    ),
];

/// SMI HTTPRouteGroup moved `matches` under `spec` in v1alpha3.
const HTTP_ROUTE_GROUP: &[Version] = &[
    Version {
        layout: Layout::TopLevel,
        ..v("v1alpha1")
    },
    Version {
        layout: Layout::TopLevel,
        ..v("v1alpha2")
    },
    v("v1alpha3"),
    stored("v1alpha4"),
];

/// Linkerd's HTTPRoute gained typed backendRefs in v1beta2 and timeouts in v1beta3. None of
/// its versions has rule names or Gateway API's later filters.
const LINKERD_HTTP_ROUTE: &[Version] = &[
    quirks(v("v1alpha1"), BEFORE_V1BETA2),
    quirks(v("v1beta1"), BEFORE_V1BETA2),
    quirks(v("v1beta2"), BEFORE_V1BETA3),
    quirks(stored("v1beta3"), &GATEWAY_ONLY),
];

/// What Linkerd's HTTPRoute never had of Gateway API's.
const GATEWAY_ONLY: [Quirk; 8] = [
    Quirk::Without("spec.rules[].name"),
    Quirk::Without("spec.rules[].filters[].responseHeaderModifier"),
    Quirk::Without("spec.rules[].filters[].requestMirror"),
    Quirk::Without("spec.rules[].filters[].urlRewrite"),
    Quirk::Without("spec.rules[].filters[].extensionRef"),
    Quirk::Without("spec.rules[].backendRefs[].filters[].requestMirror"),
    Quirk::Without("spec.rules[].backendRefs[].filters[].urlRewrite"),
    Quirk::Without("spec.rules[].backendRefs[].filters[].extensionRef"),
];

const BEFORE_V1BETA3: &[Quirk] =
    &concat::<8, 1, 9>(GATEWAY_ONLY, [Quirk::Without("spec.rules[].timeouts")]);

const BEFORE_V1BETA2: &[Quirk] = &concat::<8, 4, 12>(
    GATEWAY_ONLY,
    [
        Quirk::Without("spec.rules[].timeouts"),
        Quirk::Without("spec.rules[].backendRefs[].group"),
        Quirk::Without("spec.rules[].backendRefs[].kind"),
        Quirk::Without("spec.rules[].backendRefs[].weight"),
    ],
);

/// Two quirk lists as one, at compile time (`N` must be `A + B`, checked when evaluated).
const fn concat<const A: usize, const B: usize, const N: usize>(
    a: [Quirk; A],
    b: [Quirk; B],
) -> [Quirk; N] {
    assert!(A + B == N);
    let mut out = [Quirk::Without(""); N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

/// Linkerd's Server gained externalWorkloadSelector in v1beta2 and accessPolicy in v1beta3.
const SERVER: &[Version] = &[
    quirks(deprecated("v1alpha1"), BEFORE_EXTERNAL_WORKLOADS),
    quirks(deprecated("v1beta1"), BEFORE_EXTERNAL_WORKLOADS),
    quirks(v("v1beta2"), &[Quirk::Without("spec.accessPolicy")]),
    stored("v1beta3"),
];

const BEFORE_EXTERNAL_WORKLOADS: &[Quirk] = &[
    Quirk::Without("spec.accessPolicy"),
    Quirk::Without("spec.externalWorkloadSelector"),
];

/// A policy's target is in its own namespace: the shared reference type's `namespace` is
/// for authentication and client references only.
const LOCAL_TARGET: &[Quirk] = &[Quirk::Without("spec.targetRef.namespace")];

/// The table. Order is stable: it is the order `mesh install --crds` prints in.
static CATALOG: &[KindInfo] = &[
    crd(
        row(
            Family::TrafficSplit,
            "split.smi-spec.io",
            "TrafficSplit",
            "trafficsplits",
            TRAFFIC_SPLIT,
        ),
        &["ts"],
    ),
    crd(
        row(
            Family::HttpRouteGroup,
            "specs.smi-spec.io",
            "HTTPRouteGroup",
            "httproutegroups",
            HTTP_ROUTE_GROUP,
        ),
        &["htr"],
    ),
    KindInfo {
        definition: Definition::GatewayApiCrd,
        bare_kind: true,
        status: Some(StatusSchema::RouteParents),
        ..row(
            Family::HttpRoute,
            "gateway.networking.k8s.io",
            "HTTPRoute",
            "httproutes",
            &[stored("v1"), v("v1beta1"), removed("v1alpha2")],
        )
    },
    KindInfo {
        definition: Definition::GatewayApiCrd,
        bare_kind: true,
        status: Some(StatusSchema::RouteParents),
        ..row(
            Family::GrpcRoute,
            "gateway.networking.k8s.io",
            "GRPCRoute",
            "grpcroutes",
            &[stored("v1"), removed("v1alpha2")],
        )
    },
    KindInfo {
        bare_kind: false,
        status: Some(StatusSchema::RouteParents),
        ..crd(
            row(
                Family::LinkerdHttpRoute,
                "policy.linkerd.io",
                "HTTPRoute",
                "httproutes",
                LINKERD_HTTP_ROUTE,
            ),
            &[],
        )
    },
    crd(
        row(
            Family::ServiceProfile,
            "linkerd.io",
            "ServiceProfile",
            "serviceprofiles",
            &[v("v1alpha1"), stored("v1alpha2")],
        ),
        &["sp"],
    ),
    crd(
        row(
            Family::Server,
            "policy.linkerd.io",
            "Server",
            "servers",
            SERVER,
        ),
        &["srv"],
    ),
    crd(
        row(
            Family::ServerAuthorization,
            "policy.linkerd.io",
            "ServerAuthorization",
            "serverauthorizations",
            &[deprecated("v1alpha1"), stored("v1beta1")],
        ),
        &["saz", "serverauthz"],
    ),
    crd(
        row(
            Family::AuthorizationPolicy,
            "policy.linkerd.io",
            "AuthorizationPolicy",
            "authorizationpolicies",
            &[quirks(stored("v1alpha1"), LOCAL_TARGET)],
        ),
        &["authzpolicy"],
    ),
    crd(
        row(
            Family::MeshTlsAuthentication,
            "policy.linkerd.io",
            "MeshTLSAuthentication",
            "meshtlsauthentications",
            &[stored("v1alpha1")],
        ),
        &["meshtlsauthn"],
    ),
    crd(
        row(
            Family::NetworkAuthentication,
            "policy.linkerd.io",
            "NetworkAuthentication",
            "networkauthentications",
            &[stored("v1alpha1")],
        ),
        &["netauthn", "networkauthn"],
    ),
    KindInfo {
        status: Some(StatusSchema::TargetConditions),
        ..crd(
            row(
                Family::RateLimitPolicy,
                "policy.linkerd.io",
                "HTTPLocalRateLimitPolicy",
                "httplocalratelimitpolicies",
                &[quirks(stored("v1alpha1"), LOCAL_TARGET)],
            ),
            &[],
        )
    },
    KindInfo {
        status: Some(StatusSchema::Canary),
        ..crd(
            row(
                Family::Canary,
                "policy.mesh.io",
                "Canary",
                "canaries",
                &[stored("v1alpha1")],
            ),
            &[],
        )
    },
    crd(
        row(
            Family::FaultInjection,
            "policy.mesh.io",
            "FaultInjection",
            "faultinjections",
            &[stored("v1alpha1")],
        ),
        &[],
    ),
    row(Family::Service, "", "Service", "services", V1),
    row(
        Family::EndpointSlice,
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        V1,
    ),
    KindInfo {
        scope: Scope::Cluster,
        ..row(Family::Namespace, "", "Namespace", "namespaces", V1)
    },
    row(Family::Pod, "", "Pod", "pods", V1),
    row(Family::Workload, "apps", "Deployment", "deployments", V1),
    row(Family::Workload, "apps", "StatefulSet", "statefulsets", V1),
    row(Family::Workload, "apps", "DaemonSet", "daemonsets", V1),
    row(Family::Workload, "apps", "ReplicaSet", "replicasets", V1),
    row(Family::Workload, "batch", "Job", "jobs", V1),
    row(
        Family::CronJob,
        "batch",
        "CronJob",
        "cronjobs",
        &[stored("v1"), removed("v1beta1")],
    ),
];

/// Every kind the mesh reads, in a stable order.
pub fn iter() -> impl Iterator<Item = &'static KindInfo> {
    CATALOG.iter()
}

/// The kind of `group` (`""` for core) named `kind`, if the mesh reads it.
pub fn by_group_kind(group: &str, kind: &str) -> Option<&'static KindInfo> {
    CATALOG.iter().find(|k| k.group == group && k.kind == kind)
}

/// The group and version a manifest that names only `kind` is read at.
pub fn infer(kind: &str) -> Option<(&'static str, &'static str)> {
    let info = CATALOG.iter().find(|k| k.bare_kind && k.kind == kind)?;
    Some((info.group, info.storage().name))
}

// === impl Family ===

impl Family {
    /// Inbound policy of a workload: a proxy needs only its own namespace's objects.
    pub fn is_inbound_policy(self) -> bool {
        matches!(
            self,
            Self::Server
                | Self::ServerAuthorization
                | Self::AuthorizationPolicy
                | Self::MeshTlsAuthentication
                | Self::NetworkAuthentication
                | Self::RateLimitPolicy
        )
    }

    /// Pod templates (and namespaces) that only the injector and `mesh policy` read: a live
    /// proxy learns about pods from the pods themselves.
    pub fn is_template(self) -> bool {
        matches!(self, Self::Workload | Self::CronJob | Self::Namespace)
    }
}

// === impl KindInfo ===

impl KindInfo {
    /// The version objects are stored at, which watchers ask for.
    pub fn storage(&self) -> &'static Version {
        // Every row has one storage version; the table's own test checks it. Falling back to
        // the first keeps this total rather than panicking.
        let versions = self.versions;
        versions.iter().find(|v| v.storage).unwrap_or(&versions[0])
    }

    /// One version by name (served or only read).
    pub fn version(&self, name: &str) -> Option<&'static Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The versions a cluster serves.
    pub fn served(&self) -> impl Iterator<Item = &'static Version> {
        self.versions.iter().filter(|v| v.served)
    }

    /// `apiVersion` of one version: `policy.linkerd.io/v1beta3`, or `v1` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The CRD's name, `plural.group`.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

#[cfg(test)]
mod tests;
