//! `mesh init` end to end: real iptables (nft and legacy) inside network namespaces the tests
//! make, real connections redirected (or not) by the rules it installs.
//!
//! Each test skips, saying why, when not root or when `ip netns`, iptables or the backend it
//! exercises is missing. Namespaces and processes are removed on drop, also on failure.

mod support;

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

/// Every table of both families, as `iptables-save` prints them, without the timestamps and
/// counters that differ between two otherwise equal dumps.
///
/// A table without rules whose built-in chains all ACCEPT is left out: it filters nothing,
/// exactly as if it were absent, and iptables has no command that removes a table once
/// something (such as `ip6tables-nft -t nat -N`) brought it into being.
fn ruleset(ns: &Netns, mode: Mode) -> String {
    let mut all = String::new();
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
            table.push(format!("{family} {line}"));
            if done {
                let empty = table.iter().all(|l| {
                    let l = l.split_once(' ').map_or("", |(_, l)| l);
                    l.starts_with('*')
                        || l == "COMMIT"
                        || (l.starts_with(':') && l.ends_with(" ACCEPT"))
                });
                if !empty {
                    all.extend(table.iter().map(|l| format!("{l}\n")));
                }
                table.clear();
            }
        }
    }
    all
}

fn install_idempotent_and_uninstall_restores(mode: Mode) {
    if !mode.available() {
        return;
    }
    let ns = Netns::new();
    let ipt = mode.iptables();
    // Someone else's rules, which init and uninstall must leave alone.
    ns.run_ok(&ipt, &["-t", "nat", "-N", "OTHER"]);
    ns.run_ok(
        &ipt,
        &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "OTHER"],
    );
    ns.run_ok(
        &ipt,
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
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
            .all(|l| l.starts_with(&ipt) || l.starts_with("ip6tables-"))
    );
    ns.run_ok("sh", &["-ec", &script]);
    let by_script = ruleset(&ns, mode);
    mesh_init_ok(&ns, &["--uninstall", "--iptables-mode", mode.name()]);
    assert_eq!(ruleset(&ns, mode), before);

    mesh_init_ok(&ns, &args);
    let installed = ruleset(&ns, mode);
    assert_eq!(installed, by_script, "the dry run printed other commands");
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
        assert!(installed.contains(want), "missing {want:?} in\n{installed}");
    }
    if support::which(&format!("ip6tables-{}", mode.name())).is_some() {
        assert!(installed.contains("ip6tables -A MESH_INIT_OUTPUT -d ::1/128 -o lo -j RETURN"));
        assert!(installed.contains("ip6tables -A OUTPUT -j MESH_INIT_OUTPUT"));
    }

    mesh_init_ok(&ns, &args);
    assert_eq!(
        ruleset(&ns, mode),
        installed,
        "a second run changed the rules"
    );

    mesh_init_ok(&ns, &["--uninstall", "--iptables-mode", mode.name()]);
    assert_eq!(ruleset(&ns, mode), before, "uninstall left a difference");
    let again = mesh_init_ok(&ns, &["--uninstall", "--iptables-mode", mode.name()]);
    assert_eq!(again, "", "a second uninstall had something to do");
    assert_eq!(ruleset(&ns, mode), before);
}

#[test]
fn nft_install_is_idempotent_and_uninstall_restores() {
    install_idempotent_and_uninstall_restores(Mode::Nft);
}

#[test]
fn legacy_install_is_idempotent_and_uninstall_restores() {
    install_idempotent_and_uninstall_restores(Mode::Legacy);
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
fn nft_redirects_real_connections() {
    redirects_real_connections(Mode::Nft);
}

#[test]
fn legacy_redirects_real_connections() {
    redirects_real_connections(Mode::Legacy);
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
    assert!(ruleset(&ns, Mode::Legacy).contains("-A OUTPUT -j MESH_INIT_OUTPUT"));
    assert!(!ruleset(&ns, Mode::Nft).contains("MESH_INIT"));

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
