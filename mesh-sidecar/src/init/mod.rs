//! `mesh init`: the iptables rules that steer a pod's TCP through its proxy, as linkerd-init
//! installs them.
//!
//! Inbound TCP is redirected from `PREROUTING` (chain `MESH_INIT_REDIRECT`) to the proxy's
//! inbound port; outbound TCP from `OUTPUT` (chain `MESH_INIT_OUTPUT`) to its outbound port,
//! except the proxy's own connections (by UID) and loopback destinations. The plan is built
//! by pure functions in [`plan`] over what [`state`] reads back from the ruleset; [`exec`]
//! reads the table and runs the plan.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{ArgAction, Args};

use self::plan::{Family, Mode, RulesConfig};
use self::ports::{PortList, PortRange};
// `mesh check --proxy` reads the rules back the way `--uninstall` does.
pub(crate) use self::state::NatState;

mod cmd;
pub(crate) mod exec;
pub(crate) mod plan;
mod ports;
mod state;

/// Install (or remove) the iptables rules that redirect the pod's TCP through the proxy.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The proxy's inbound port: inbound TCP is redirected here.
    #[arg(long, env = "MESH_INIT_INBOUND_PORT", default_value_t = 4143, value_parser = clap::value_parser!(u16).range(1..))]
    inbound_port: u16,
    /// The proxy's outbound port: outbound TCP is redirected here.
    #[arg(long, env = "MESH_INIT_OUTBOUND_PORT", default_value_t = 4140, value_parser = clap::value_parser!(u16).range(1..))]
    outbound_port: u16,
    /// The proxy's admin port: never redirected inbound.
    #[arg(long, env = "MESH_INIT_ADMIN_PORT", default_value_t = 4191, value_parser = clap::value_parser!(u16).range(1..))]
    admin_port: u16,
    /// The UID the proxy runs as: its outbound connections are not redirected.
    #[arg(long, env = "MESH_INIT_PROXY_UID", default_value_t = 2102)]
    proxy_uid: u32,
    /// Inbound ports that bypass the proxy: a comma list of ports and ranges (25,4000-5000).
    #[arg(long, env = "MESH_INIT_SKIP_INBOUND_PORTS", value_name = "PORTS")]
    skip_inbound_ports: Vec<PortList>,
    /// Outbound ports that bypass the proxy: a comma list of ports and ranges (3306,6379-6380).
    #[arg(long, env = "MESH_INIT_SKIP_OUTBOUND_PORTS", value_name = "PORTS")]
    skip_outbound_ports: Vec<PortList>,
    /// The iptables backend [default: the one already holding rules, else nft if installed,
    /// else legacy].
    #[arg(long, env = "MESH_INIT_IPTABLES_MODE", value_enum)]
    iptables_mode: Option<Mode>,
    /// Also program IPv6 with ip6tables, when it is installed.
    #[arg(long, env = "MESH_INIT_IPV6", default_value_t = true, action = ArgAction::Set,
        num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    ipv6: bool,
    /// Print the commands, one per line and shell-quoted, without changing anything.
    #[arg(long, env = "MESH_INIT_DRY_RUN")]
    dry_run: bool,
    /// Remove what `mesh init` added (our chains, the jumps to them, and the nat table and
    /// built-in chains it created once they are empty), nothing else.
    #[arg(long, env = "MESH_INIT_UNINSTALL")]
    uninstall: bool,
}

pub(crate) fn run(args: InitArgs) -> ExitCode {
    match init(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn init(args: &InitArgs) -> Result<(), exec::Error> {
    let config = RulesConfig {
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        admin_port: args.admin_port,
        proxy_uid: args.proxy_uid,
        skip_inbound: flatten(&args.skip_inbound_ports),
        skip_outbound: flatten(&args.skip_outbound_ports),
    };
    let mode = args.iptables_mode.unwrap_or_else(exec::detect);

    let mut families = vec![Family::V4];
    if args.ipv6 {
        let v6 = mode.iptables(Family::V6);
        if exec::which(v6).is_some() {
            families.push(Family::V6);
        } else {
            eprintln!("note: `{v6}` is not installed; IPv6 is left as it is");
        }
    }

    let mut stdout = std::io::stdout().lock();
    for family in families {
        let state = match exec::read_state(mode, family) {
            Ok(state) => state,
            // A dry run is for reading the plan, often without root or iptables at hand.
            Err(e) if args.dry_run => {
                eprintln!("note: cannot read the current rules ({e}); assuming there are none");
                Default::default()
            }
            Err(e) => return Err(e),
        };
        let cmds = if args.uninstall {
            plan::uninstall(family, mode, &state)
        } else {
            plan::install(&config, family, mode, &state)
        };
        for cmd in cmds {
            // Printing is best effort: a closed stdout must not stop the rules going in.
            let _ = writeln!(stdout, "{cmd}");
            if !args.dry_run {
                exec::run(&cmd)?;
            }
        }
    }
    Ok(())
}

fn flatten(lists: &[PortList]) -> Vec<PortRange> {
    lists.iter().flat_map(|l| l.0.iter().copied()).collect()
}
