//! The `mesh` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod identity;
mod init;
mod policy;

/// A service mesh in a crate.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policy manifests and explain the decisions taken on them.
    Policy(policy::PolicyArgs),
    /// Trust anchors, the issuer service and workload certificates.
    Identity(identity::Args),
    /// Install the iptables rules that redirect the pod's TCP through the proxy.
    Init(init::InitArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(args) => policy::run(args),
        Command::Identity(args) => identity::run(args),
        Command::Init(args) => init::run(args),
    }
}
