//! `mesh init` end to end: real iptables (nft and legacy) inside network namespaces the tests
//! make, real connections redirected (or not) by the rules it installs.
//!
//! Each test skips, saying why, when not root or when `ip netns`, iptables or the backend it
//! exercises is missing. Namespaces and processes are removed on drop, also on failure.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Output;

use support::{Netns, Reply, VethPair, require, skip_unless_root_and_netns, stderr, stdout};

const PROXY_UID: u32 = 2102;
/// Any UID other than the proxy's: the app.
const APP_UID: u32 = 1234;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Nft,
    Legacy,
}

// === impl Mode ===

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Nft => "nft",
            Self::Legacy => "legacy",
        }
    }

    fn iptables(self) -> String {
        format!("iptables-{}", self.name())
    }

    /// Whether this backend can be tested here; prints why not.
    fn available(self) -> bool {
        skip_unless_root_and_netns() && require(&[&self.iptables()])
    }
}

/// One `#[test]` per backend, `nft::NAME` and `legacy::NAME`, for each scenario
/// `fn NAME(mode: Mode)`.
macro_rules! per_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod nft {
            $(#[test]
            fn $scenario() {
                super::$scenario(super::Mode::Nft);
            })+
        }
        mod legacy {
            $(#[test]
            fn $scenario() {
                super::$scenario(super::Mode::Legacy);
            })+
        }
    };
}

per_backend!(
    install_idempotent_and_uninstall_restores,
    uninstall_restores_a_fresh_namespace,
    a_rule_added_after_init_survives_uninstall,
    redirects_real_connections,
);

/// Runs `mesh init args` inside `ns`.
fn mesh_init(ns: &Netns, args: &[&str]) -> Output {
    ns.command(support::mesh_bin())
        .arg("init")
        .args(args)
        .output()
        .expect("run mesh init")
}

fn mesh_init_ok(ns: &Netns, args: &[&str]) -> String {
    let out = mesh_init(ns, args);
    assert!(
        out.status.success(),
        "mesh init {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// A namespace's whole ruleset as the tools print it: every table of both families from the
/// backend's `iptables-save`/`ip6tables-save`, and `nft list ruleset` where `nft` is
/// installed (it shows what iptables-nft-save cannot: whether a table's built-in chains
/// exist). Timestamps and counters, which differ between two otherwise equal dumps, are left
/// out.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ruleset {
    /// `"iptables nat"` → the table's lines, from `*nat` to `COMMIT`.
    tables: BTreeMap<String, Vec<String>>,
    nft: Option<String>,
}

fn ruleset(ns: &Netns, mode: Mode) -> Ruleset {
    let mut tables = BTreeMap::new();
    for family in ["iptables", "ip6tables"] {
        let save = format!("{family}-{}-save", mode.name());
        if support::which(&save).is_none() {
            continue;
        }
        let dump = ns.run_ok(&save, &[]);
        let mut table: Vec<String> = Vec::new();
        for line in dump.lines().filter(|l| !l.starts_with('#')) {
            // ":CHAIN POLICY [packets:bytes]" loses its counters.
            let line = match line.strip_prefix(':') {
                Some(decl) => format!(":{}", decl.rsplit_once(' ').map_or(decl, |(c, _)| c)),
                None => line.to_owned(),
            };
            let done = line == "COMMIT";
            table.push(line);
            if done {
                let name = table[0].trim_start_matches('*');
                tables.insert(format!("{family} {name}"), std::mem::take(&mut table));
            }
        }
    }
    let nft = support::which("nft").map(|_| {
        let dump = ns.run_ok("nft", &["list", "ruleset"]);
        dump.lines()
            .map(without_counters)
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ruleset { tables, nft }
}

/// `nft`'s `counter packets 12 bytes 720` as `counter packets _ bytes _`.
fn without_counters(line: &str) -> String {
    let mut words: Vec<&str> = line.split(' ').collect();
    for i in 1..words.len() {
        if matches!(words[i - 1], "packets" | "bytes") {
            words[i] = "_";
        }
    }
    words.join(" ")
}

// === impl Ruleset ===

impl Ruleset {
    /// Every table's lines, each after its family (`iptables -A OUTPUT ...`).
    fn text(&self) -> String {
        let mut all = String::new();
        for (name, lines) in &self.tables {
            let family = name.split(' ').next().unwrap_or_default();
            for line in lines {
                all.push_str(&format!("{family} {line}\n"));
            }
        }
        all
    }

    /// Asserts that `self` is `before` again.
    ///
    /// Under the legacy backend one difference is the kernel's, not ours: a legacy table,
    /// once something asks for it, stays until its namespace goes away, and no command
    /// deletes it. So a table that was not there before may remain, provided it holds no
    /// rule and every chain ACCEPTs: it filters nothing, exactly as if it were absent.
    fn assert_restored(&self, before: &Self, mode: Mode, what: &str) {
        let mut after = self.clone();
        if let Mode::Legacy = mode {
            after.tables.retain(|name, lines| {
                before.tables.contains_key(name)
                    || !lines.iter().all(|l| {
                        l.starts_with('*')
                            || l == "COMMIT"
                            || (l.starts_with(':') && l.ends_with(" ACCEPT"))
                    })
            });
        }
        assert_eq!(after, *before, "{what}");
    }
}

fn install_idempotent_and_uninstall_restores(mode: Mode) {
    if !mode.available() {
        return;
    }
    let ns = Netns::new();
    let ipt = mode.iptables();
    let ip6t = format!("ip6tables-{}", mode.name());
    // Someone else's rules, which init and uninstall must leave alone: a nat table with a
    // rule in OUTPUT (one of the chains init jumps from), a filter rule and, in IPv6, a nat
    // table whose only rule is in a chain init does not use.
    ns.run_ok(&ipt, &["-t", "nat", "-N", "OTHER"]);
    ns.run_ok(
        &ipt,
        &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "OTHER"],
    );
    ns.run_ok(
        &ipt,
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    let v6 = support::which(&ip6t).is_some();
    if v6 {
        ns.run_ok(
            &ip6t,
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-p",
                "udp",
                "-j",
                "ACCEPT",
            ],
        );
    }
    let before = ruleset(&ns, mode);

    let args = [
        "--iptables-mode",
        mode.name(),
        "--skip-inbound-ports",
        "25,4000-5000",
        "--skip-outbound-ports",
        "3306",
    ];

    // A dry run changes nothing, and its lines, run by a shell, are the install itself.
    let dry: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
    let script = mesh_init_ok(&ns, &dry);
    assert_eq!(ruleset(&ns, mode), before, "--dry-run changed the rules");
    assert!(
        script
            .lines()
            .all(|l| l.starts_with(&ipt) || l.starts_with(&ip6t)),
        "{script}"
    );
    ns.run_ok("sh", &["-ec", &script]);
    let by_script = ruleset(&ns, mode);
    mesh_init_ok(&ns, &["--uninstall", "--iptables-mode", mode.name()]);
    ruleset(&ns, mode).assert_restored(&before, mode, "uninstall after the dry run's script");

    mesh_init_ok(&ns, &args);
    let installed = ruleset(&ns, mode);
    assert_eq!(installed, by_script, "the dry run printed other commands");
    let text = installed.text();
    for want in [
        "iptables :MESH_INIT_REDIRECT",
        "iptables :MESH_INIT_OUTPUT",
        "iptables -A PREROUTING -j MESH_INIT_REDIRECT",
        "iptables -A OUTPUT -j MESH_INIT_OUTPUT",
        "iptables -A MESH_INIT_REDIRECT -p tcp -m multiport --dports 4143,4140,4191,25,4000:5000 -j RETURN",
        "iptables -A MESH_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 4143",
        "iptables -A MESH_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN",
        "iptables -A MESH_INIT_OUTPUT -d 127.0.0.0/8 -o lo -j RETURN",
        "iptables -A MESH_INIT_OUTPUT -p tcp -m multiport --dports 3306 -j RETURN",
        "iptables -A MESH_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    if v6 {
        assert!(text.contains("ip6tables -A MESH_INIT_OUTPUT -d ::1/128 -o lo -j RETURN"));
        assert!(text.contains("ip6tables -A OUTPUT -j MESH_INIT_OUTPUT"));
    }
    // The IPv4 table was there, and OUTPUT held a rule: neither is recorded as ours. Whether
    // PREROUTING was there only `nft` can tell; without it nothing is claimed.
    let marker = "iptables -A MESH_INIT_OUTPUT -m comment --comment \"mesh-init-created:";
    match (mode, installed.nft.is_some()) {
        (Mode::Nft, true) => assert!(text.contains(&format!("{marker}PREROUTING\"")), "{text}"),
        _ => assert!(!text.contains(&format!("\n{marker}")), "{text}"),
    }

    mesh_init_ok(&ns, &args);
    assert_eq!(
        ruleset(&ns, mode),
        installed,
        "a second run changed the rules"
    );

    mesh_init_ok(&ns, &["--uninstall", "--iptables-mode", mode.name()]);
    ruleset(&ns, mode).assert_restored(&before, mode, "uninstall left a difference");
    let again = mesh_init_ok(&ns, &["--uninstall", "--iptables-mode", mode.name()]);
    assert_eq!(again, "", "a second uninstall had something to do");
    ruleset(&ns, mode).assert_restored(&before, mode, "a second uninstall changed the rules");
}

/// In a namespace with no rules at all, `init` creates the nat tables (and their built-in
/// chains); `--uninstall` deletes them again, however often the two alternate.
fn uninstall_restores_a_fresh_namespace(mode: Mode) {
    if !mode.available() {
        return;
    }
    let ns = Netns::new();
    let before = ruleset(&ns, mode);
    let args = ["--iptables-mode", mode.name()];
    let uninstall = ["--uninstall", "--iptables-mode", mode.name()];

    let script = mesh_init_ok(&ns, &[&args[..], &["--dry-run"]].concat());
    assert!(script.contains("MESH_INIT_OUTPUT"), "{script}");
    // Not even the legacy table, which merely reading it would have brought into being.
    assert_eq!(ruleset(&ns, mode), before, "--dry-run changed the rules");

    for round in 1..=2 {
        mesh_init_ok(&ns, &args);
        let installed = ruleset(&ns, mode).text();
        assert!(
            installed.contains("-A OUTPUT -j MESH_INIT_OUTPUT"),
            "{installed}"
        );
        if let Mode::Nft = mode {
            // The record of what init created, in the ruleset itself.
            assert!(
                installed.contains(
                    "iptables -A MESH_INIT_OUTPUT -m comment \
                     --comment \"mesh-init-created:nat,PREROUTING,OUTPUT\""
                ),
                "{installed}"
            );
        }
        let dry = mesh_init_ok(&ns, &[&uninstall[..], &["--dry-run"]].concat());
        assert_ne!(dry, "", "round {round}: the uninstall plan is empty");
        // The second time, the printed plan does the uninstall: it is what would run.
        if round == 1 {
            mesh_init_ok(&ns, &uninstall);
        } else {
            ns.run_ok("sh", &["-ec", &dry]);
        }
        ruleset(&ns, mode).assert_restored(&before, mode, &format!("round {round}"));
        assert_eq!(mesh_init_ok(&ns, &uninstall), "", "round {round}: again");
    }
}

/// A rule someone adds to the nat table after `init` keeps the table, and the chain it sits
/// in, through `--uninstall`; what init created and left empty still goes.
fn a_rule_added_after_init_survives_uninstall(mode: Mode) {
    if !mode.available() {
        return;
    }
    let ipt = mode.iptables();
    let theirs = ["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "ACCEPT"];
    // What the namespace would hold had init never run.
    let expected = Netns::new();
    expected.run_ok(&ipt, &theirs);
    let want = ruleset(&expected, mode);

    let ns = Netns::new();
    mesh_init_ok(&ns, &["--iptables-mode", mode.name()]);
    ns.run_ok(&ipt, &theirs);
    mesh_init_ok(&ns, &["--uninstall", "--iptables-mode", mode.name()]);
    let got = ruleset(&ns, mode);
    assert!(
        got.text().contains("iptables -A OUTPUT -p udp -j ACCEPT"),
        "{}",
        got.text()
    );
    got.assert_restored(&want, mode, "uninstall after a foreign rule arrived");
}

/// A pod namespace joined to a peer namespace, with listeners standing in for the proxy's
/// ports, the app and a remote server.
struct Pod {
    pod: Netns,
    peer: Netns,
    link: VethPair,
    _listeners: Vec<support::ChildGuard>,
}

impl Pod {
    fn new() -> Self {
        let pod = Netns::new();
        let peer = Netns::new();
        let link = support::veth(&pod, &peer, 0);
        let listeners = vec![
            pod.listen("outbound-proxy", &[4140]),
            pod.listen("inbound-proxy", &[4143]),
            pod.listen("admin", &[4191]),
            pod.listen("app", &[8080, 8081]),
            peer.listen("peer", &[9090, 7070]),
        ];
        Self {
            pod,
            peer,
            link,
            _listeners: listeners,
        }
    }

    fn pod_addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.link.a, port)
    }

    fn peer_addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.link.b, port)
    }

    /// Connects from inside the pod as `uid`.
    fn outbound(&self, uid: u32, dst: SocketAddrV4) -> Reply {
        self.pod
            .connect(Some(uid), dst)
            .unwrap_or_else(|e| panic!("uid {uid} to {dst}: {e}"))
    }

    /// Connects from the peer into the pod.
    fn inbound(&self, port: u16) -> Reply {
        let dst = self.pod_addr(port);
        self.peer
            .connect(None, dst)
            .unwrap_or_else(|e| panic!("peer to {dst}: {e}"))
    }
}

fn reply(label: &str, port: u16, original_dst: SocketAddrV4) -> Reply {
    Reply {
        label: label.to_owned(),
        port,
        original_dst,
    }
}

fn redirects_real_connections(mode: Mode) {
    if !mode.available() || !require(&["setpriv"]) {
        return;
    }
    if support::python3().is_none() {
        println!("skipping: python3 (for the test's listeners and probes) is not installed");
        return;
    }
    let t = Pod::new();
    let direct = |label: &str, dst: SocketAddrV4| reply(label, dst.port(), dst);

    // Before init, everything goes where it is sent.
    let remote = t.peer_addr(9090);
    assert_eq!(t.outbound(APP_UID, remote), direct("peer", remote));
    assert_eq!(t.inbound(8080), direct("app", t.pod_addr(8080)));

    mesh_init_ok(
        &t.pod,
        &[
            "--iptables-mode",
            mode.name(),
            "--skip-inbound-ports",
            "8081",
            "--skip-outbound-ports",
            "7000-7100",
        ],
    );

    // Outbound: the app's connections land on the outbound proxy, which can read where they
    // were going; the proxy's own connections and skipped ports go out as they are.
    assert_eq!(
        t.outbound(APP_UID, remote),
        reply("outbound-proxy", 4140, remote)
    );
    assert_eq!(t.outbound(PROXY_UID, remote), direct("peer", remote));
    let skipped = t.peer_addr(7070);
    assert_eq!(t.outbound(APP_UID, skipped), direct("peer", skipped));
    // Loopback destinations stay local; the pod's own address, though reached over lo, is
    // redirected like any other destination.
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
    assert_eq!(t.outbound(APP_UID, local), direct("app", local));
    let own = t.pod_addr(8080);
    assert_eq!(t.outbound(APP_UID, own), reply("outbound-proxy", 4140, own));

    // Inbound: redirected to the inbound proxy, except skipped ports and the proxy's own.
    assert_eq!(
        t.inbound(8080),
        reply("inbound-proxy", 4143, t.pod_addr(8080))
    );
    assert_eq!(t.inbound(8081), direct("app", t.pod_addr(8081)));
    assert_eq!(t.inbound(4191), direct("admin", t.pod_addr(4191)));
    assert_eq!(t.inbound(4143), direct("inbound-proxy", t.pod_addr(4143)));

    // Uninstalled, connections go where they are sent again.
    mesh_init_ok(&t.pod, &["--uninstall", "--iptables-mode", mode.name()]);
    assert_eq!(t.outbound(APP_UID, remote), direct("peer", remote));
    assert_eq!(t.inbound(8080), direct("app", t.pod_addr(8080)));
}

#[test]
fn auto_detect_follows_the_backend_that_has_rules() {
    if !(Mode::Nft.available() && Mode::Legacy.available()) {
        return;
    }
    let ns = Netns::new();
    ns.run_ok(
        "iptables-legacy",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    let out = mesh_init_ok(&ns, &["--ipv6=false"]);
    assert!(
        out.lines().all(|l| l.starts_with("iptables-legacy ")),
        "{out}"
    );
    assert!(
        ruleset(&ns, Mode::Legacy)
            .text()
            .contains("-A OUTPUT -j MESH_INIT_OUTPUT")
    );
    assert!(!ruleset(&ns, Mode::Nft).text().contains("MESH_INIT"));

    // With no rules anywhere, nft wins.
    let fresh = Netns::new();
    let out = mesh_init_ok(&fresh, &["--ipv6=false", "--dry-run"]);
    assert!(out.lines().all(|l| l.starts_with("iptables-nft ")), "{out}");
}

#[test]
fn failures_name_the_command_and_exit_non_zero() {
    if !Mode::Nft.available() {
        return;
    }
    let ns = Netns::new();
    // Someone else jumps into our chain in a way we did not add: uninstall must not touch
    // their rule, so deleting our chain fails, and says which command did.
    mesh_init_ok(&ns, &["--iptables-mode", "nft", "--ipv6=false"]);
    ns.run_ok(
        "iptables-nft",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "-j",
            "MESH_INIT_OUTPUT",
        ],
    );
    let out = mesh_init(
        &ns,
        &["--uninstall", "--iptables-mode", "nft", "--ipv6=false"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("`iptables-nft -t nat -X MESH_INIT_OUTPUT` failed"),
        "{err}"
    );

    // Bad flags are usage errors.
    let out = mesh_init(&ns, &["--skip-inbound-ports", "80,http", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid port or range \"http\""));
}

#[test]
fn env_vars_stand_in_for_flags() {
    // A dry run reads the table but changes nothing, so it runs without root too; as root it
    // still goes into a namespace of its own, since merely reading a legacy table can
    // instantiate it in the namespace that reads it.
    let ns = skip_unless_root_and_netns().then(Netns::new);
    let mut cmd = match &ns {
        Some(ns) => ns.command(support::mesh_bin()),
        None => std::process::Command::new(support::mesh_bin()),
    };
    let out = cmd
        .args(["init", "--iptables-mode", "legacy"])
        .env("MESH_INIT_PROXY_UID", "999")
        .env("MESH_INIT_SKIP_OUTBOUND_PORTS", "53,8000-8100")
        .env("MESH_INIT_IPV6", "false")
        .env("MESH_INIT_DRY_RUN", "true")
        .output()
        .expect("run mesh init");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = stdout(&out);
    for want in [
        "iptables-legacy -t nat -A MESH_INIT_OUTPUT -m owner --uid-owner 999 -j RETURN",
        "iptables-legacy -t nat -A MESH_INIT_OUTPUT -p tcp -m multiport --dports 53,8000:8100 -j RETURN",
    ] {
        assert!(out.lines().any(|l| l == want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("ip6tables"), "{out}");
}
