//! The `mesh` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod identity;

/// A service mesh in a crate.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trust anchors, the issuer service and workload certificates.
    Identity(identity::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Identity(args) => identity::run(args),
    }
}
