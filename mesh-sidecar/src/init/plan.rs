//! The rule plan: which iptables commands bring a nat table from what it holds now to what
//! the mesh needs. Pure, so the rules are tested as tables of cases without root.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Inbound TCP arriving at the pod jumps here from `PREROUTING`.
pub(crate) const REDIRECT_CHAIN: &str = "MESH_INIT_REDIRECT";
/// Outbound TCP leaving the pod's processes jumps here from `OUTPUT`.
pub(crate) const OUTPUT_CHAIN: &str = "MESH_INIT_OUTPUT";

/// The multiport match takes at most 15 ports per rule, a range counting as two.
const MULTIPORT_LIMIT: usize = 15;

/// The built-in chain each of our chains hangs from.
const JUMPS: [(&str, &str); 2] = [("PREROUTING", REDIRECT_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

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

/// A port or an inclusive range of ports, written `80` or `4000-5000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PortRange {
    first: u16,
    last: u16,
}

/// A comma-separated list of ports and ranges, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PortList(pub(crate) Vec<PortRange>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid port or range {0:?}: expected a port 1-65535 or a range like 4000-5000")]
pub(crate) struct InvalidPort(String);

/// IPv4 or IPv6: which loopback network stays off the redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// One command line: a program and its arguments, never passed through a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cmd {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
}

/// What the nat table holds that concerns us, read from `iptables-save -t nat`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NatState {
    chains: BTreeSet<String>,
    /// How many times each of our jump rules (`-A PREROUTING -j MESH_INIT_REDIRECT`, ...)
    /// appears, in the order of `JUMPS`.
    jumps: [usize; 2],
}

/// The commands that install our rules over `state`, with `program` (e.g. `iptables-nft`).
///
/// Our chains are created, or flushed when they exist, then filled; the jumps into them are
/// added only when absent. Running it twice thus leaves the same rules as running it once,
/// and a changed configuration replaces the old rules instead of piling up beside them.
pub(crate) fn install(
    config: &RulesConfig,
    family: Family,
    program: &str,
    state: &NatState,
) -> Vec<Cmd> {
    let nat = |args: &[&str]| Cmd::nat(program, args);
    let mut cmds = Vec::new();

    // Chains are filled before anything jumps to them, so a fresh pod never sees a
    // half-built chain. Re-running over existing chains flushes them first; the jump then
    // already exists, so for that instant the pod's traffic is not redirected, which is the
    // state it was in before the first run anyway.
    for (_, chain) in JUMPS {
        let verb = if state.chains.contains(chain) {
            "-F"
        } else {
            "-N"
        };
        cmds.push(nat(&[verb, chain]));
    }

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

/// The commands that remove exactly what [`install`] added: our jumps (every copy) and our
/// chains. Nothing else in the table is touched; over a table without our rules it is empty.
pub(crate) fn uninstall(program: &str, state: &NatState) -> Vec<Cmd> {
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

/// Quotes `arg` for a POSIX shell, leaving plain words as they are so output stays readable.
fn shell_quote(arg: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&b);
    if !arg.is_empty() && arg.bytes().all(plain) {
        Cow::Borrowed(arg)
    } else {
        Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")))
    }
}

// === impl PortRange ===

impl PortRange {
    pub(crate) fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// How many of the multiport match's 15 slots this takes.
    fn weight(self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }
}

impl FromStr for PortRange {
    type Err = InvalidPort;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPort(s.to_owned());
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid()),
            Ok(p) => Ok(p),
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(invalid());
        }
        Ok(Self { first, last })
    }
}

/// iptables' own syntax, `4000:5000`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

// === impl PortList ===

impl FromStr for PortList {
    type Err = InvalidPort;

    /// Empty items are allowed, so `""` and `"80,"` (as templates tend to produce) parse.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

// === impl Family ===

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.0/8",
            Self::V6 => "::1/128",
        }
    }
}

// === impl Cmd ===

impl Cmd {
    fn nat(program: &str, args: &[&str]) -> Self {
        Self {
            program: program.to_owned(),
            args: ["-t", "nat"]
                .iter()
                .chain(args)
                .map(|a| (*a).to_owned())
                .collect(),
        }
    }
}

/// The command as a shell would take it, one line.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

// === impl NatState ===

impl NatState {
    /// Reads the output of `iptables-save -t nat` (any backend, IPv4 or IPv6).
    pub(crate) fn parse(save: &str) -> Self {
        let mut state = Self::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim_end) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next()
                    && JUMPS.iter().any(|(_, c)| *c == name)
                {
                    state.chains.insert(name.to_owned());
                }
            } else {
                for (i, (from, chain)) in JUMPS.into_iter().enumerate() {
                    if line == format!("-A {from} -j {chain}") {
                        state.jumps[i] += 1;
                    }
                }
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cmds = install(&config(), Family::V4, "iptables-nft", &NatState::default());
        assert_eq!(lines(&cmds), FRESH_V4);
    }

    #[test]
    fn ipv6_keeps_only_its_loopback_off_the_redirect() {
        let cmds = install(
            &config(),
            Family::V6,
            "ip6tables-legacy",
            &NatState::default(),
        );
        let want: Vec<String> = FRESH_V4
            .iter()
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
            "iptables",
            &NatState::default(),
        ));
        assert!(cmds.contains(&"iptables -t nat -A MESH_INIT_REDIRECT -p tcp -m multiport --dports 5143,5140,5191 -j RETURN".to_owned()));
        assert!(cmds.contains(
            &"iptables -t nat -A MESH_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 5143".to_owned()
        ));
        assert!(cmds.contains(
            &"iptables -t nat -A MESH_INIT_OUTPUT -m owner --uid-owner 0 -j RETURN".to_owned()
        ));
        assert!(cmds.contains(
            &"iptables -t nat -A MESH_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 5140".to_owned()
        ));
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
                "iptables",
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
                            "iptables -t nat -A {chain} -p tcp -m multiport --dports "
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
                let redirect =
                    format!("iptables -t nat -A {chain} -p tcp -j REDIRECT --to-ports {redirect}");
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
    fn port_ranges_parse() {
        let ok = [
            ("80", "80"),
            ("4000-5000", "4000:5000"),
            (" 7 - 7 ", "7"),
            ("65535", "65535"),
        ];
        for (input, shown) in ok {
            assert_eq!(
                input.parse::<PortRange>().unwrap().to_string(),
                shown,
                "{input}"
            );
        }
        for bad in [
            "0",
            "65536",
            "5000-4000",
            "http",
            "1-2-3",
            "",
            "-5",
            "80:90",
        ] {
            assert_eq!(
                bad.parse::<PortRange>(),
                Err(InvalidPort(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(ports(""), vec![]);
        assert_eq!(ports("80,"), vec![PortRange::single(80)]);
        assert!("80,x".parse::<PortList>().is_err());
    }

    const INSTALLED: &str = "\
# Generated by iptables-save v1.8.9 on Sun Nov 22 04:39:11 2026
*filter
:MESH_INIT_OUTPUT - [0:0]
-A OUTPUT -j MESH_INIT_OUTPUT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MESH_INIT_OUTPUT - [0:0]
:MESH_INIT_REDIRECT - [0:0]
:OTHER - [0:0]
-A PREROUTING -j MESH_INIT_REDIRECT
-A PREROUTING -s 10.0.0.0/8 -j MESH_INIT_REDIRECT
-A OUTPUT -j MESH_INIT_OUTPUT
-A OUTPUT -j MESH_INIT_OUTPUT
-A OUTPUT -j OTHER
COMMIT
";

    #[test]
    fn state_counts_only_our_chains_and_exact_jumps_in_nat() {
        let state = NatState::parse(INSTALLED);
        assert_eq!(
            state.chains,
            BTreeSet::from([OUTPUT_CHAIN.to_owned(), REDIRECT_CHAIN.to_owned()])
        );
        assert_eq!(state.jumps, [1, 2]);
        let empty = NatState::default();
        assert_eq!(
            NatState::parse("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"),
            empty
        );
        assert_eq!(NatState::parse(""), empty);
    }

    #[test]
    fn reinstall_flushes_our_chains_and_adds_no_jump() {
        let state = NatState::parse(INSTALLED);
        let cmds = lines(&install(&config(), Family::V4, "iptables-nft", &state));
        let want: Vec<String> = FRESH_V4[..FRESH_V4.len() - 2]
            .iter()
            .map(|l| l.replace(" -N ", " -F "))
            .collect();
        assert_eq!(cmds, want);
    }

    #[test]
    fn uninstall_removes_every_jump_then_the_chains() {
        let state = NatState::parse(INSTALLED);
        assert_eq!(
            lines(&uninstall("iptables-legacy", &state)),
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
        assert!(uninstall("iptables", &NatState::default()).is_empty());
    }

    #[test]
    fn commands_print_shell_quoted() {
        let cmd = Cmd {
            program: "/usr/sbin/iptables".to_owned(),
            args: [
                "-m",
                "comment",
                "--comment",
                "it's mesh",
                "",
                "a$b",
                "4000:5000",
            ]
            .map(str::to_owned)
            .to_vec(),
        };
        assert_eq!(
            cmd.to_string(),
            r#"/usr/sbin/iptables -m comment --comment 'it'\''s mesh' '' 'a$b' 4000:5000"#
        );
    }
}
