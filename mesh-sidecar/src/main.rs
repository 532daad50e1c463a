//! The `mesh` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod canary;
mod check;
mod controller;
mod crds;
mod dashboard;
mod demo;
mod files;
mod identity;
mod init;
mod inject;
mod injector;
mod install;
mod kube_watch;
mod out;
mod policy;
mod ports;
mod proxy;
mod server_limits;
mod stat;
mod tap;
mod tls_files;
mod tokenreview;
mod validate;
mod workload_identity;

/// A service mesh in a crate.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local mesh on loopback (issuer, proxies, apps, traffic) and watch it work.
    Demo(demo::DemoArgs),
    /// Check policy manifests and explain the decisions taken on them.
    Policy(policy::PolicyArgs),
    /// Serve policy and discovery from the cluster to the mesh's proxies.
    Controller(Box<controller::ControllerArgs>),
    /// Run the sidecar proxy (or `mesh proxy await` its readiness).
    Proxy(Box<proxy::ProxyCommand>),
    /// Trust anchors, the issuer service and workload certificates.
    Identity(identity::Args),
    /// Install the iptables rules that redirect the pod's TCP through the proxy.
    Init(init::InitArgs),
    /// Add the mesh to every workload of a YAML stream (files, directories or `-`).
    Inject(inject::InjectArgs),
    /// Serve the mutating admission webhook that injects pods as they are created.
    Injector(injector::InjectorArgs),
    /// Print the control plane (or with --crds its CRDs) for `kubectl apply -f -`.
    Install(install::InstallArgs),
    /// Print what `mesh install` created, for `kubectl delete -f -`.
    Uninstall(install::UninstallArgs),
    /// Check the health of the mesh, of a cluster before install (--pre) or of a pod (--proxy).
    Check(check::CheckArgs),
    /// Golden metrics per workload, from Prometheus or straight from the proxies.
    Stat(stat::StatArgs),
    /// Golden metrics per route (and backend) of a workload's or a Service's destinations.
    Routes(stat::RoutesArgs),
    /// Who calls whom, and whether over mTLS with which identities.
    Edges(stat::EdgesArgs),
    /// Serve a web page of the mesh: golden metrics, topology, routes, certificates, tap.
    Dashboard(dashboard::DashboardArgs),
    /// Live requests through the proxies (metadata only), from their mTLS tap listeners.
    Tap(Box<tap::TapCommand>),
    /// The busiest paths through the proxies, live, from tap.
    Top(Box<tap::TopCommand>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Controller(args) => controller::run(*args),
        Command::Proxy(cmd) => proxy::run(*cmd),
        Command::Identity(args) => identity::run(args),
        Command::Init(args) => init::run(args),
        Command::Inject(args) => inject::run(args),
        Command::Injector(args) => injector::run(args),
        Command::Install(args) => install::run_install(args),
        Command::Uninstall(args) => install::run_uninstall(args),
        Command::Check(args) => check::run(args),
        Command::Stat(args) => stat::run_stat(args),
        Command::Routes(args) => stat::run_routes(args),
        Command::Edges(args) => stat::run_edges(args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Tap(cmd) => tap::run_tap(*cmd),
        Command::Top(cmd) => tap::run_top(*cmd),
    }
}
