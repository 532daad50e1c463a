//! The rule plan: which iptables commands bring a nat table from what it holds now to what
//! the mesh needs. Pure, so the rules are tested as tables of cases without root.

use std::collections::BTreeSet;

use clap::ValueEnum;

pub(crate) use super::cmd::Cmd;
use super::ports::PortRange;
use super::state::{Created, NatState, Presence};

/// Inbound TCP arriving at the pod jumps here from `PREROUTING`.
pub(crate) const REDIRECT_CHAIN: &str = "MESH_INIT_REDIRECT";
/// Outbound TCP leaving the pod's processes jumps here from `OUTPUT`.
pub(crate) const OUTPUT_CHAIN: &str = "MESH_INIT_OUTPUT";

/// The multiport match takes at most 15 ports per rule, a range counting as two.
const MULTIPORT_LIMIT: usize = 15;

/// The built-in chain each of our chains hangs from.
pub(crate) const JUMPS: [(&str, &str); 2] =
    [("PREROUTING", REDIRECT_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

/// What `mesh init` redirects where, and what it leaves alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RulesConfig {
    pub(crate) inbound_port: u16,
    pub(crate) outbound_port: u16,
    pub(crate) admin_port: u16,
    pub(crate) proxy_uid: u32,
    pub(crate) skip_inbound: Vec<PortRange>,
    pub(crate) skip_outbound: Vec<PortRange>,
}

/// Which iptables backend programs the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// nf_tables, through `iptables-nft` / `ip6tables-nft`.
    Nft,
    /// The legacy xtables interface, through `iptables-legacy` / `ip6tables-legacy`.
    Legacy,
}

/// IPv4 or IPv6: which loopback network stays off the redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// The commands that install our rules over `state`, with `mode`'s iptables for `family`.
///
/// Our chains are created, or flushed when they exist, then filled; the jumps into them are
/// added only when absent. Running it twice thus leaves the same rules as running it once,
/// and a changed configuration replaces the old rules instead of piling up beside them.
pub(crate) fn install(
    config: &RulesConfig,
    family: Family,
    mode: Mode,
    state: &NatState,
) -> Vec<Cmd> {
    let program = mode.iptables(family);
    let nat = |args: &[&str]| Cmd::nat(program, args);
    let mut cmds = our_chains(program, mode, state);

    // Inbound: connections to the proxy's own ports reach the proxy as they are; redirecting
    // them would hand the inbound proxy a connection "to" itself (or to the outbound proxy).
    let mut inbound_skips = vec![
        PortRange::single(config.inbound_port),
        PortRange::single(config.outbound_port),
        PortRange::single(config.admin_port),
    ];
    inbound_skips.extend(config.skip_inbound.iter().copied());
    cmds.extend(skip_ports(program, REDIRECT_CHAIN, &inbound_skips));
    cmds.push(redirect(program, REDIRECT_CHAIN, config.inbound_port));

    // Outbound: the proxy's own connections must leave as they are, or they would loop back
    // into the proxy.
    let uid = config.proxy_uid.to_string();
    cmds.push(nat(&[
        "-A",
        OUTPUT_CHAIN,
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "RETURN",
    ]));
    // Loopback destinations are the pod talking to itself (and the app reaching the proxy on
    // 127.0.0.1): never redirected. Traffic on `lo` to the pod's own non-loopback address is
    // still redirected, so an app calling its own Service IP or pod IP goes through the proxy
    // like any other call.
    cmds.push(nat(&[
        "-A",
        OUTPUT_CHAIN,
        "-o",
        "lo",
        "-d",
        family.loopback(),
        "-j",
        "RETURN",
    ]));
    cmds.extend(skip_ports(program, OUTPUT_CHAIN, &config.skip_outbound));
    cmds.push(redirect(program, OUTPUT_CHAIN, config.outbound_port));

    for ((from, chain), present) in JUMPS.into_iter().zip(state.jumps) {
        if present == 0 {
            cmds.push(nat(&["-A", from, "-j", chain]));
        }
    }
    cmds
}

/// Creates our chains, or flushes them when they exist, and records in the output chain what
/// the first install created (see [`created`]).
///
/// Chains are filled before anything jumps to them, so a fresh pod never sees a half-built
/// chain. Re-running over existing chains flushes them first; the jump then already exists,
/// so for that instant the pod's traffic is not redirected, which is the state it was in
/// before the first run anyway.
fn our_chains(program: &str, mode: Mode, state: &NatState) -> Vec<Cmd> {
    let mut cmds: Vec<Cmd> = JUMPS
        .iter()
        .map(|(_, chain)| {
            let verb = if state.chains.contains(*chain) {
                "-F"
            } else {
                "-N"
            };
            Cmd::nat(program, &[verb, chain])
        })
        .collect();
    let created = created(mode, state);
    if !created.is_empty() {
        // A rule with no target only counts packets: the marker changes no verdict.
        let comment = created.comment();
        let args = ["-A", OUTPUT_CHAIN, "-m", "comment", "--comment", &comment];
        cmds.push(Cmd::nat(program, &args));
    }
    cmds
}

/// What the install over `state` brings into being that was not there before `mesh init`
/// first ran, and that `--uninstall` can take away again.
fn created(mode: Mode, state: &NatState) -> Created {
    // Reinstalling: our chain holds what the first install recorded, and the table and
    // built-in chains now exist because of it.
    if state.chains.contains(OUTPUT_CHAIN) {
        return state.created;
    }
    match mode {
        // The kernel keeps a legacy table, built-in chains and all, until the namespace
        // goes away: no command removes it, so there is nothing to record.
        Mode::Legacy => Created::default(),
        Mode::Nft => Created {
            table: !state.table,
            // An existence `iptables-save` could not settle counts as existing: never
            // remove what may have been there before.
            chains: state.builtins.map(|p| p == Presence::Absent),
        },
    }
}

/// The commands that remove exactly what [`install`] added: our jumps (every copy) and our
/// chains, then the table and built-in chains the install created, when nothing else is in
/// them. Nothing else in the table is touched; over a table without our rules it is empty.
pub(crate) fn uninstall(family: Family, mode: Mode, state: &NatState) -> Vec<Cmd> {
    let created = match mode {
        Mode::Nft => state.created,
        // Legacy tables and built-in chains cannot be deleted (see `created`).
        Mode::Legacy => Created::default(),
    };
    if created.table && !state.foreign {
        // iptables-nft-restore replaces each table it reads by deleting it first, so a nat
        // section with nothing in it deletes the table: ours, all at once.
        return vec![Cmd::new(&mode.restore(family), &[]).with_stdin("*nat\nCOMMIT\n")];
    }
    let program = mode.iptables(family);
    let nat = |args: &[&str]| Cmd::nat(program, args);
    let mut cmds = Vec::new();
    // A chain can only be deleted once nothing jumps to it.
    for ((from, chain), present) in JUMPS.into_iter().zip(state.jumps) {
        for _ in 0..present {
            cmds.push(nat(&["-D", from, "-j", chain]));
        }
    }
    for (_, chain) in JUMPS {
        if state.chains.contains(chain) {
            cmds.push(nat(&["-F", chain]));
            cmds.push(nat(&["-X", chain]));
        }
    }
    // iptables-nft deletes an empty built-in chain as it does any other.
    for (((from, _), created), busy) in JUMPS.iter().zip(created.chains).zip(state.busy) {
        if created && !busy {
            cmds.push(nat(&["-X", from]));
        }
    }
    cmds
}

/// `RETURN` rules for `ports`, deduplicated and packed into as few multiport matches as the
/// kernel allows.
fn skip_ports(program: &str, chain: &str, ports: &[PortRange]) -> Vec<Cmd> {
    let mut seen = BTreeSet::new();
    let mut groups: Vec<Vec<PortRange>> = Vec::new();
    let mut weight = 0;
    for &p in ports {
        if !seen.insert(p) {
            continue;
        }
        match groups.last_mut() {
            Some(group) if weight + p.weight() <= MULTIPORT_LIMIT => group.push(p),
            _ => {
                groups.push(vec![p]);
                weight = 0;
            }
        }
        weight += p.weight();
    }
    groups
        .into_iter()
        .map(|group| {
            let dports = group
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            Cmd::nat(
                program,
                &[
                    "-A",
                    chain,
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &dports,
                    "-j",
                    "RETURN",
                ],
            )
        })
        .collect()
}

fn redirect(program: &str, chain: &str, port: u16) -> Cmd {
    Cmd::nat(
        program,
        &[
            "-A",
            chain,
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &port.to_string(),
        ],
    )
}

// === impl Mode ===

impl Mode {
    pub(crate) fn iptables(self, family: Family) -> &'static str {
        match (self, family) {
            (Self::Nft, Family::V4) => "iptables-nft",
            (Self::Nft, Family::V6) => "ip6tables-nft",
            (Self::Legacy, Family::V4) => "iptables-legacy",
            (Self::Legacy, Family::V6) => "ip6tables-legacy",
        }
    }

    pub(crate) fn save(self, family: Family) -> String {
        format!("{}-save", self.iptables(family))
    }

    fn restore(self, family: Family) -> String {
        format!("{}-restore", self.iptables(family))
    }
}

// === impl Family ===

impl Family {
    /// The nf_tables family of this family's tables, as `nft` names it.
    pub(crate) fn nft(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.0/8",
            Self::V6 => "::1/128",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::ports::PortList;
    use crate::init::state::fixtures::{INSTALLED, OURS_ALONE};

    fn config() -> RulesConfig {
        RulesConfig {
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            proxy_uid: 2102,
            skip_inbound: Vec::new(),
            skip_outbound: Vec::new(),
        }
    }

    fn lines(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(ToString::to_string).collect()
    }

    fn ports(s: &str) -> Vec<PortRange> {
        s.parse::<PortList>().unwrap().0
    }

    const FRESH_V4: &[&str] = &[
        "iptables-nft -t nat -N MESH_INIT_REDIRECT",
        "iptables-nft -t nat -N MESH_INIT_OUTPUT",
        "iptables-nft -t nat -A MESH_INIT_OUTPUT -m comment --comment mesh-init-created:nat,PREROUTING,OUTPUT",
        "iptables-nft -t nat -A MESH_INIT_REDIRECT -p tcp -m multiport --dports 4143,4140,4191 -j RETURN",
        "iptables-nft -t nat -A MESH_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 4143",
        "iptables-nft -t nat -A MESH_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN",
        "iptables-nft -t nat -A MESH_INIT_OUTPUT -o lo -d 127.0.0.0/8 -j RETURN",
        "iptables-nft -t nat -A MESH_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
        "iptables-nft -t nat -A PREROUTING -j MESH_INIT_REDIRECT",
        "iptables-nft -t nat -A OUTPUT -j MESH_INIT_OUTPUT",
    ];

    #[test]
    fn defaults_on_an_empty_table() {
        let cmds = install(&config(), Family::V4, Mode::Nft, &NatState::default());
        assert_eq!(lines(&cmds), FRESH_V4);
    }

    #[test]
    fn ipv6_keeps_only_its_loopback_off_the_redirect() {
        let cmds = install(&config(), Family::V6, Mode::Legacy, &NatState::default());
        // Nothing a legacy install creates can be removed again, so nothing is recorded.
        let want: Vec<String> = FRESH_V4
            .iter()
            .filter(|l| !l.contains("mesh-init-created"))
            .map(|l| {
                l.replace("iptables-nft", "ip6tables-legacy")
                    .replace("127.0.0.0/8", "::1/128")
            })
            .collect();
        assert_eq!(lines(&cmds), want);
    }

    #[test]
    fn flags_change_ports_and_uid() {
        let config = RulesConfig {
            inbound_port: 5143,
            outbound_port: 5140,
            admin_port: 5191,
            proxy_uid: 0,
            ..config()
        };
        let cmds = lines(&install(
            &config,
            Family::V4,
            Mode::Legacy,
            &NatState::default(),
        ));
        assert!(cmds.contains(&"iptables-legacy -t nat -A MESH_INIT_REDIRECT -p tcp -m multiport --dports 5143,5140,5191 -j RETURN".to_owned()));
        assert!(
            cmds.contains(
                &"iptables-legacy -t nat -A MESH_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 5143"
                    .to_owned()
            )
        );
        assert!(
            cmds.contains(
                &"iptables-legacy -t nat -A MESH_INIT_OUTPUT -m owner --uid-owner 0 -j RETURN"
                    .to_owned()
            )
        );
        assert!(
            cmds.contains(
                &"iptables-legacy -t nat -A MESH_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 5140"
                    .to_owned()
            )
        );
    }

    #[test]
    fn skipped_ports_return_before_the_redirect() {
        struct Case {
            inbound: &'static str,
            outbound: &'static str,
            want_inbound: &'static [&'static str],
            want_outbound: &'static [&'static str],
        }
        let cases = [
            Case {
                inbound: "",
                outbound: "",
                want_inbound: &["4143,4140,4191"],
                want_outbound: &[],
            },
            Case {
                inbound: "25,4000-5000",
                outbound: "3306, 6379-6380",
                want_inbound: &["4143,4140,4191,25,4000:5000"],
                want_outbound: &["3306,6379:6380"],
            },
            // Ports already skipped are not repeated.
            Case {
                inbound: "4191,80,80",
                outbound: "443,443",
                want_inbound: &["4143,4140,4191,80"],
                want_outbound: &["443"],
            },
            // 15 slots per rule: 3 + 12 singles fill the first, a range takes two.
            Case {
                inbound: "1,2,3,4,5,6,7,8,9,10,11,12,100-200",
                outbound: "1-2,3-4,5-6,7-8,9-10,11-12,13-14,15,16-17",
                want_inbound: &["4143,4140,4191,1,2,3,4,5,6,7,8,9,10,11,12", "100:200"],
                want_outbound: &["1:2,3:4,5:6,7:8,9:10,11:12,13:14,15", "16:17"],
            },
        ];
        for case in cases {
            let config = RulesConfig {
                skip_inbound: ports(case.inbound),
                skip_outbound: ports(case.outbound),
                ..config()
            };
            let cmds = lines(&install(
                &config,
                Family::V4,
                Mode::Legacy,
                &NatState::default(),
            ));
            for (chain, want, redirect) in [
                (REDIRECT_CHAIN, case.want_inbound, 4143),
                (OUTPUT_CHAIN, case.want_outbound, 4140),
            ] {
                let got: Vec<&str> = cmds
                    .iter()
                    .filter_map(|l| {
                        l.strip_prefix(&format!(
                            "iptables-legacy -t nat -A {chain} -p tcp -m multiport --dports "
                        ))?
                        .strip_suffix(" -j RETURN")
                    })
                    .collect();
                assert_eq!(
                    got, want,
                    "{chain} for {:?}/{:?}",
                    case.inbound, case.outbound
                );
                // Every skip comes before the chain's redirect.
                let redirect = format!(
                    "iptables-legacy -t nat -A {chain} -p tcp -j REDIRECT --to-ports {redirect}"
                );
                let at = cmds.iter().position(|l| *l == redirect).unwrap();
                assert!(
                    cmds.iter()
                        .skip(at)
                        .all(|l| !l.contains(&format!("{chain} -p tcp -m multiport")))
                );
            }
        }
    }

    #[test]
    fn reinstall_flushes_our_chains_keeps_the_record_and_adds_no_jump() {
        let state = NatState::parse(INSTALLED);
        let cmds = lines(&install(&config(), Family::V4, Mode::Nft, &state));
        let want: Vec<String> = FRESH_V4[..FRESH_V4.len() - 2]
            .iter()
            .map(|l| {
                l.replace(" -N ", " -F ")
                    .replace("created:nat,PREROUTING,OUTPUT", "created:OUTPUT")
            })
            .collect();
        assert_eq!(cmds, want);
    }

    #[test]
    fn install_records_only_what_was_not_there() {
        let marker = |cmds: &[Cmd]| {
            lines(cmds)
                .into_iter()
                .find_map(|l| l.split_once("--comment ").map(|(_, c)| c.to_owned()))
        };
        let mut existing = NatState::parse("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        // Without `nft` to ask, an empty built-in chain may have been there: not ours.
        let cmds = install(&config(), Family::V4, Mode::Nft, &existing);
        assert_eq!(marker(&cmds), None);
        existing.settle_builtins(|chain| chain == "OUTPUT");
        let cmds = install(&config(), Family::V4, Mode::Nft, &existing);
        assert_eq!(
            marker(&cmds).as_deref(),
            Some("mesh-init-created:PREROUTING")
        );
        let cmds = install(&config(), Family::V4, Mode::Legacy, &NatState::default());
        assert_eq!(marker(&cmds), None);
    }

    #[test]
    fn uninstall_removes_every_jump_then_the_chains() {
        let state = NatState::parse(INSTALLED);
        // The recorded OUTPUT chain stays: someone else's rule is in it.
        assert_eq!(
            lines(&uninstall(Family::V4, Mode::Legacy, &state)),
            [
                "iptables-legacy -t nat -D PREROUTING -j MESH_INIT_REDIRECT",
                "iptables-legacy -t nat -D OUTPUT -j MESH_INIT_OUTPUT",
                "iptables-legacy -t nat -D OUTPUT -j MESH_INIT_OUTPUT",
                "iptables-legacy -t nat -F MESH_INIT_REDIRECT",
                "iptables-legacy -t nat -X MESH_INIT_REDIRECT",
                "iptables-legacy -t nat -F MESH_INIT_OUTPUT",
                "iptables-legacy -t nat -X MESH_INIT_OUTPUT",
            ]
        );
        for mode in [Mode::Nft, Mode::Legacy] {
            assert!(uninstall(Family::V6, mode, &NatState::default()).is_empty());
        }
    }

    #[test]
    fn uninstall_deletes_a_table_it_created_when_only_ours_is_in_it() {
        let state = NatState::parse(OURS_ALONE);
        assert_eq!(
            lines(&uninstall(Family::V6, Mode::Nft, &state)),
            [r"printf '*nat\nCOMMIT\n' | ip6tables-nft-restore"]
        );

        // Someone else's rule arrived after init: the table stays, and so does the chain
        // holding their rule; the built-in chain init created and left empty goes.
        let theirs = OURS_ALONE.replace("COMMIT", "-A OUTPUT -p udp -j ACCEPT\nCOMMIT");
        let state = NatState::parse(&theirs);
        assert_eq!(
            lines(&uninstall(Family::V4, Mode::Nft, &state)),
            [
                "iptables-nft -t nat -D PREROUTING -j MESH_INIT_REDIRECT",
                "iptables-nft -t nat -D OUTPUT -j MESH_INIT_OUTPUT",
                "iptables-nft -t nat -F MESH_INIT_REDIRECT",
                "iptables-nft -t nat -X MESH_INIT_REDIRECT",
                "iptables-nft -t nat -F MESH_INIT_OUTPUT",
                "iptables-nft -t nat -X MESH_INIT_OUTPUT",
                "iptables-nft -t nat -X PREROUTING",
            ]
        );
    }
}
