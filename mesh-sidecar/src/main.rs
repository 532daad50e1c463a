//! The `mesh` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod inject;
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
    /// Add the mesh to every workload of a YAML stream (files, directories or `-`).
    Inject(inject::InjectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(args) => policy::run(args),
        Command::Inject(args) => inject::run(args),
    }
}
