//! `mesh proxy --controller`: policy and discovery streamed from `mesh controller`, which
//! alone reads the cluster. The proxy asks only for what it uses: the Services its
//! application calls (on first use) and its own pod's inbound policy. It needs no RBAC.

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::Args;
use mesh_core::{MeshPolicy, PolicyConfig};
use mesh_tower::controller::{ControllerClient, ControllerConfig, Publish};
use mesh_tower::metrics::Registry;

use super::config::ConfigSource;
use crate::identity::IssuerAccount;

/// Why `--controller` alone is refused.
pub(super) const NEEDS_IDENTITY: &str = "--controller needs an identity (--identity-dir or \
     --identity-issuer): the controller is reached over mTLS";

/// The controller's service account, as `mesh install` runs it.
const CONTROLLER_ACCOUNT: &str = "mesh/mesh-controller";

#[derive(Debug, Args)]
pub(super) struct ControllerArgs {
    /// Policy and discovery from `mesh controller` at HOST:PORT, over mTLS (what `mesh
    /// inject` configures): Services are watched as the application first calls them, and
    /// this pod's inbound policy by MESH_POD_NAME.
    #[arg(
        long = "controller",
        env = "MESH_CONTROLLER_ADDR",
        value_name = "HOST:PORT",
        conflicts_with_all = ["config", "kube"]
    )]
    pub(super) addr: Option<String>,
    /// The namespace and service account the controller runs as; its certificate must name
    /// them.
    #[arg(
        long,
        env = "MESH_CONTROLLER_IDENTITY",
        value_name = "NAMESPACE/NAME",
        default_value = CONTROLLER_ACCOUNT
    )]
    controller_identity: IssuerAccount,
    /// This pod's name: with --controller, its inbound policy, labels, named ports and probes
    /// come from the controller (the injector sets it).
    #[arg(long, env = "MESH_POD_NAME")]
    pub(super) pod_name: Option<String>,
}

/// Snapshots from the controller go where `--config`'s would.
struct ToConfig(Arc<ConfigSource>);

impl Publish for ToConfig {
    fn publish(&self, policy: MeshPolicy, endpoints: &BTreeSet<(String, String)>) {
        self.0.serve(policy, Some(endpoints), "controller");
    }
}

/// What the controller client needs from the rest of the proxy's flags.
pub(super) struct Setup<'a> {
    pub(super) namespace: &'a str,
    pub(super) policy: PolicyConfig,
    pub(super) tls: Option<rustls::ClientConfig>,
    pub(super) config: Arc<ConfigSource>,
    pub(super) registry: Registry,
}

impl ControllerArgs {
    /// Starts the controller client, if `--controller` asks for one.
    pub(super) async fn start(&self, setup: Setup<'_>) -> Result<Option<ControllerClient>, String> {
        let Some(addr) = &self.addr else {
            return Ok(None);
        };
        let tls = setup.tls.ok_or(NEEDS_IDENTITY)?;
        // Resolved once: the controller's Service address does not move.
        let sock = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|e| format!("--controller {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("--controller {addr}: no address"))?;
        let td = setup.policy.inbound.trust_domain.clone();
        let identity = IssuerAccount::identity_of(Some(&self.controller_identity), &td, "")
            .map_err(|e| format!("--controller-identity: {e}"))?;
        let mut config = ControllerConfig::new(sock, identity);
        config.source_namespace = setup.namespace.to_owned();
        config.workload = (self.pod_name.clone()).map(|pod| (setup.namespace.to_owned(), pod));
        config.policy = setup.policy;
        if config.workload.is_none() {
            tracing::warn!(
                "--controller without MESH_POD_NAME: no inbound policy for this pod; the default policy applies"
            );
        }
        tracing::info!(controller = %addr, addr = %sock, "policy and discovery from the controller");
        let publish = ToConfig(setup.config);
        Ok(Some(ControllerClient::start(
            config,
            tls,
            publish,
            setup.registry,
        )))
    }

    /// The workload whose pod object describes this pod (`Pod/<name>`), with --controller.
    pub(super) fn workload(&self) -> Option<String> {
        self.addr.as_ref()?;
        self.pod_name.as_ref().map(|pod| format!("Pod/{pod}"))
    }
}
