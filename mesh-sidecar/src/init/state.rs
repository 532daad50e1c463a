//! What a nat table holds, read back from the ruleset itself: our chains and jumps, whether
//! anything else is there, and what an earlier `mesh init` recorded that it created. Pure,
//! so it is tested on dumps without root.
//!
//! Nothing is kept outside the kernel's ruleset: what `init` created (the table, built-in
//! chains) is written as a comment on the first rule of our own chain, so `--uninstall` in
//! another process, container or boot of the pod reads it back from `iptables-save`.

use std::collections::BTreeSet;

use super::plan::{JUMPS, OUTPUT_CHAIN, REDIRECT_CHAIN};

/// The marker comment starts so; what follows names what was created, comma-separated:
/// `nat` for the table, then built-in chains by name.
const CREATED_MARK: &str = "mesh-init-created:";
/// How the table is named in the marker.
const TABLE: &str = "nat";

/// What `mesh init` brought into being that was not there before it, and so what
/// `--uninstall` takes away again once nothing else is in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Created {
    /// The nat table itself.
    pub(crate) table: bool,
    /// The built-in chains our jumps hang from, in the order of `JUMPS`.
    pub(crate) chains: [bool; 2],
}

/// Whether a built-in chain exists. `iptables-nft-save` prints every built-in chain of a
/// table whether nf_tables holds it or not, so an empty one with an ACCEPT policy is
/// `Unknown` until something that can tell (`nft`) has been asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Presence {
    #[default]
    Absent,
    Present,
    Unknown,
}

/// What the nat table holds that concerns us, read from `iptables-save -t nat`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NatState {
    /// Whether the table exists at all.
    pub(crate) table: bool,
    /// Which of our chains exist.
    pub(crate) chains: BTreeSet<String>,
    /// How many times each of our jump rules (`-A PREROUTING -j MESH_INIT_REDIRECT`, ...)
    /// appears, in the order of `JUMPS`.
    pub(crate) jumps: [usize; 2],
    /// Whether each built-in chain of `JUMPS` exists.
    pub(crate) builtins: [Presence; 2],
    /// Built-in chains of `JUMPS` that hold something besides our jumps: another rule, or a
    /// policy other than ACCEPT.
    pub(crate) busy: [bool; 2],
    /// Whether the table holds anything that is not ours: another chain, another rule, a
    /// policy other than ACCEPT.
    pub(crate) foreign: bool,
    /// What an earlier install recorded that it created.
    pub(crate) created: Created,
}

/// The names of the chains in an `nft list table` listing.
pub(crate) fn nft_chains(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain ")?.strip_suffix(" {"))
        .map(str::to_owned)
        .collect()
}

fn is_ours(chain: &str) -> bool {
    chain == REDIRECT_CHAIN || chain == OUTPUT_CHAIN
}

/// Which of `JUMPS`' built-in chains `chain` is.
fn builtin_index(chain: &str) -> Option<usize> {
    JUMPS.iter().position(|(from, _)| *from == chain)
}

// === impl Created ===

impl Created {
    pub(crate) fn is_empty(self) -> bool {
        self == Self::default()
    }

    /// The marker comment recording `self`.
    pub(crate) fn comment(self) -> String {
        let table = self.table.then_some(TABLE);
        let chains = JUMPS
            .iter()
            .zip(self.chains)
            .filter_map(|((from, _), created)| created.then_some(*from));
        let names: Vec<&str> = table.into_iter().chain(chains).collect();
        format!("{CREATED_MARK}{}", names.join(","))
    }

    /// Reads a marker comment back; `None` when `comment` is not one.
    fn parse(comment: &str) -> Option<Self> {
        let names = comment.strip_prefix(CREATED_MARK)?;
        let mut created = Self::default();
        for name in names.split(',') {
            if name == TABLE {
                created.table = true;
            } else if let Some(i) = builtin_index(name) {
                created.chains[i] = true;
            }
        }
        Some(created)
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
                in_nat = table == TABLE;
                state.table |= in_nat;
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                state.declare(decl);
            } else if let Some(rule) = line.strip_prefix("-A ") {
                state.rule(rule);
            }
        }
        for (presence, busy) in state.builtins.iter_mut().zip(state.busy) {
            *presence = match (state.table, busy) {
                (false, _) => Presence::Absent,
                (true, true) => Presence::Present,
                (true, false) => Presence::Unknown,
            };
        }
        state
    }

    /// Settles the built-in chains `iptables-save` could not tell about, by `exists`.
    pub(crate) fn settle_builtins(&mut self, exists: impl Fn(&str) -> bool) {
        for ((from, _), presence) in JUMPS.iter().zip(&mut self.builtins) {
            if *presence == Presence::Unknown {
                *presence = if exists(from) {
                    Presence::Present
                } else {
                    Presence::Absent
                };
            }
        }
    }

    /// `:NAME POLICY [packets:bytes]`, where a user chain's policy is `-`.
    fn declare(&mut self, decl: &str) {
        let mut words = decl.split_whitespace();
        let (Some(name), Some(policy)) = (words.next(), words.next()) else {
            return;
        };
        if is_ours(name) {
            self.chains.insert(name.to_owned());
        } else if policy != "ACCEPT" {
            // Another user chain (policy `-`), or a built-in chain that does not ACCEPT.
            self.foreign = true;
            if let Some(i) = builtin_index(name) {
                self.busy[i] = true;
            }
        }
    }

    /// A rule, without its leading `-A `.
    fn rule(&mut self, rule: &str) {
        let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
        if is_ours(chain) {
            if chain == OUTPUT_CHAIN
                && let Some(created) = marker_comment(spec).and_then(Created::parse)
            {
                self.created = created;
            }
            return;
        }
        if let Some(i) = JUMPS
            .iter()
            .position(|(from, to)| *from == chain && spec == format!("-j {to}"))
        {
            self.jumps[i] += 1;
            return;
        }
        self.foreign = true;
        if let Some(i) = builtin_index(chain) {
            self.busy[i] = true;
        }
    }
}

/// The text of a rule that is only a comment, as iptables-save prints it (quoted or not).
fn marker_comment(spec: &str) -> Option<&str> {
    let text = spec.strip_prefix("-m comment --comment ")?;
    Some(
        text.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text),
    )
}

/// Dumps the tests of the plan read too.
#[cfg(test)]
pub(crate) mod fixtures {
    /// Our rules among someone else's, with a record that init created the OUTPUT chain.
    pub(crate) const INSTALLED: &str = "\
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
-A MESH_INIT_OUTPUT -m comment --comment \"mesh-init-created:OUTPUT\"
COMMIT
";

    /// Our rules alone in a table `init` made, as iptables-nft-save prints it.
    pub(crate) const OURS_ALONE: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MESH_INIT_OUTPUT - [0:0]
:MESH_INIT_REDIRECT - [0:0]
-A PREROUTING -j MESH_INIT_REDIRECT
-A OUTPUT -j MESH_INIT_OUTPUT
-A MESH_INIT_OUTPUT -m comment --comment \"mesh-init-created:nat,PREROUTING,OUTPUT\"
-A MESH_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 4140
-A MESH_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 4143
COMMIT
";
}

#[cfg(test)]
mod tests {
    use super::fixtures::{INSTALLED, OURS_ALONE};
    use super::*;

    #[test]
    fn state_counts_only_our_chains_and_exact_jumps_in_nat() {
        let state = NatState::parse(INSTALLED);
        assert_eq!(
            state.chains,
            BTreeSet::from([OUTPUT_CHAIN.to_owned(), REDIRECT_CHAIN.to_owned()])
        );
        assert_eq!(state.jumps, [1, 2]);
        assert!(state.table);
        assert_eq!(NatState::parse(""), NatState::default());
    }

    #[test]
    fn what_else_is_in_the_table_is_told_apart_from_ours() {
        let theirs = NatState::parse(INSTALLED);
        assert!(theirs.foreign);
        assert_eq!(theirs.busy, [true, true]);
        assert_eq!(theirs.builtins, [Presence::Present; 2]);

        let ours = NatState::parse(OURS_ALONE);
        assert!(!ours.foreign);
        assert_eq!(ours.busy, [false, false]);
        // Our jumps do not tell whether the chain was there before them.
        assert_eq!(ours.builtins, [Presence::Unknown; 2]);

        let cases = [
            (":OTHER - [0:0]", [false, false]),
            (":POSTROUTING DROP [0:0]", [false, false]),
            (":OUTPUT DROP [0:0]", [false, true]),
            ("-A PREROUTING -p udp -j ACCEPT", [true, false]),
            ("-A POSTROUTING -j MASQUERADE", [false, false]),
        ];
        for (line, busy) in cases {
            let save = OURS_ALONE.replace("COMMIT", &format!("{line}\nCOMMIT"));
            let state = NatState::parse(&save);
            assert!(state.foreign, "{line}");
            assert_eq!(state.busy, busy, "{line}");
        }
    }

    #[test]
    fn the_created_marker_reads_back() {
        assert_eq!(
            NatState::parse(INSTALLED).created,
            Created {
                table: false,
                chains: [false, true]
            }
        );
        let all = Created {
            table: true,
            chains: [true, true],
        };
        assert_eq!(NatState::parse(OURS_ALONE).created, all);
        for created in [
            all,
            Created::default(),
            Created {
                table: false,
                chains: [true, false],
            },
        ] {
            assert_eq!(Created::parse(&created.comment()), Some(created));
        }
        assert_eq!(all.comment(), "mesh-init-created:nat,PREROUTING,OUTPUT");
        assert_eq!(Created::parse("someone else's comment"), None);
    }

    #[test]
    fn builtins_settle_by_what_nft_lists() {
        let listing = "\
# Warning: table ip nat is managed by iptables-nft, do not touch!
table ip nat {
\tchain OUTPUT {
\t\ttype nat hook output priority -100; policy accept;
\t\tcounter packets 0 bytes 0 jump OTHER
\t}

\tchain OTHER {
\t}
}
";
        let chains = nft_chains(listing);
        assert_eq!(
            chains,
            BTreeSet::from(["OUTPUT".to_owned(), "OTHER".to_owned()])
        );
        let mut state = NatState::parse("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(state.builtins, [Presence::Unknown; 2]);
        state.settle_builtins(|c| chains.contains(c));
        assert_eq!(state.builtins, [Presence::Absent, Presence::Present]);
    }
}
