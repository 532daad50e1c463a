//! Test support for end-to-end tests: network namespaces, veth pairs between them, child
//! processes and small TCP probes, all removed again when dropped, even when a test fails.
//!
//! Everything a test does happens inside namespaces it made: addresses come from
//! 10.213.0.0/16 and exist only on the test's veth pairs, and probes connect only to those
//! addresses or to loopback, a bounded number of times, each with a timeout.
//!
//! ```ignore
//! mod support;
//! use support::{Netns, skip_unless_root_and_netns};
//!
//! #[test]
//! fn example() {
//!     if !skip_unless_root_and_netns() {
//!         return;
//!     }
//!     let (pod, peer) = (Netns::new(), Netns::new());
//!     let link = support::veth(&pod, &peer, 0);
//!     let _server = peer.listen("server", &[9090]);
//!     let reply = pod.connect(None, (link.b, 9090)).unwrap();
//!     assert_eq!(reply.label, "server");
//! }
//! ```

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) mod apiserver;
pub(crate) mod controller;
pub(crate) mod issuer;
pub(crate) mod loopback;
pub(crate) mod pods;
/// The mesh binary's own port picker (`src/ports.rs`), shared rather than copied.
#[path = "../../src/ports.rs"]
pub(crate) mod ports;
pub(crate) mod procfs;
pub(crate) mod prometheus;

/// Every namespace a test makes is named `mesh-test-<pid>-<n>`, so leftovers of a test
/// process that was killed can be recognised and removed.
const PREFIX: &str = "mesh-test-";

/// How long a listener may take to start, and a probe to connect and read its answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT_SECS: u32 = 5;
/// Listeners exit by themselves after this long, in case nothing else stops them.
const LISTENER_LIFETIME_SECS: u32 = 120;

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace of our own, deleted (with every process inside it) on drop.
#[derive(Debug)]
pub(crate) struct Netns {
    name: String,
}

/// A child process whose output the test reads, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child that stops children of its own on Ctrl-C (`mesh demo`): interrupted on drop, so its
/// proxies do not outlive the test, and killed if it has not exited within a few seconds.
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) Child);

/// Reads `from` to its end on a thread: join it once the writer has exited, for a failure
/// message.
pub(crate) fn read_all(
    mut from: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = from.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    })
}

impl Drop for Interrupted {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id())
            && matches!(self.0.try_wait(), Ok(None))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
            for _ in 0..100 {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// Spawns `cmd` with stdout piped (read it from `.0.stdout` once it exits) and its stderr
    /// lines sent, as they come, to the receiver.
    pub(crate) fn spawn(cmd: &mut Command) -> (Self, std::sync::mpsc::Receiver<String>) {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the command starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        (Self(child), rx)
    }
}

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    child: Child,
    what: String,
}

/// The two ends of a veth pair: `a` is the address in the first namespace, `b` in the second,
/// on interface [`VETH`] in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VethPair {
    pub(crate) a: Ipv4Addr,
    pub(crate) b: Ipv4Addr,
}

/// What a [`Netns::listen`] listener answers: its label, the port it accepted on, and the
/// connection's original destination (`SO_ORIGINAL_DST`, which differs from the local
/// address when iptables redirected the connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) label: String,
    pub(crate) port: u16,
    pub(crate) original_dst: SocketAddrV4,
}

/// The veth interface's name, the same in every namespace (names are per namespace).
pub(crate) const VETH: &str = "veth-mesh";

/// Answers each connection with `<label> <local port> <original dst>` and closes it.
const LISTENER_PY: &str = r#"
import selectors, signal, socket, struct, sys
label, ports, lifetime = sys.argv[1], sys.argv[2], int(sys.argv[3])
signal.alarm(lifetime)
sel = selectors.DefaultSelector()
for p in ports.split(','):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(p)))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ)
print('ready', flush=True)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        local = c.getsockname()
        try:
            d = c.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST
            orig = '%s:%d' % (socket.inet_ntoa(d[4:8]), struct.unpack('!H', d[2:4])[0])
        except OSError:
            orig = '%s:%d' % local
        c.sendall(('%s %d %s\n' % (label, local[1], orig)).encode())
        c.close()
"#;

/// Connects once, prints the first line it reads, or `error: ...`.
const CONNECT_PY: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=int(sys.argv[3]))
    data = b''
    while not data.endswith(b'\n'):
        chunk = s.recv(256)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip())
except OSError as e:
    print('error: %s: %s' % (type(e).__name__, e))
"#;

/// The `mesh` binary under test: `$MESH_TEST_BIN` when set, else the one Cargo built for
/// this test. The override exists because worktrees sharing one `CARGO_TARGET_DIR` also
/// share `target/debug/mesh`, which another worktree's build can replace mid-run.
pub(crate) fn mesh_bin() -> PathBuf {
    std::env::var_os("MESH_TEST_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mesh")), PathBuf::from)
}

/// Whether end-to-end tests can run here: root, `ip netns` and an iptables. Prints why not.
pub(crate) fn skip_unless_root_and_netns() -> bool {
    if !is_root() {
        println!("skipping: needs root (network namespaces and iptables)");
        return false;
    }
    if which("ip").is_none() {
        println!("skipping: `ip` (iproute2) is not installed");
        return false;
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipping: `ip netns` is unavailable: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return false;
        }
        Err(e) => {
            println!("skipping: cannot run `ip netns list`: {e}");
            return false;
        }
    }
    if which("iptables-nft").is_none() && which("iptables-legacy").is_none() {
        println!("skipping: neither iptables-nft nor iptables-legacy is installed");
        return false;
    }
    true
}

/// Whether every program in `programs` is installed. Prints which is missing.
pub(crate) fn require(programs: &[&str]) -> bool {
    for p in programs {
        if which(p).is_none() {
            println!("skipping: `{p}` is not installed");
            return false;
        }
    }
    true
}

/// Finds `program` in PATH or the sbin directories.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A python3 that any UID can run: system locations come first because a per-user install
/// (pyenv under /root) is unreadable once a probe drops to another UID.
pub(crate) fn python3() -> Option<PathBuf> {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| which("python3"))
}

/// Joins `a` and `b` with a veth pair addressed `10.213.<subnet>.1/24` in `a` and `.2` in
/// `b`. The pair is made inside `a` and its peer moved straight to `b`, so the host's
/// namespace never holds either end; it goes away with the namespaces.
pub(crate) fn veth(a: &Netns, b: &Netns, subnet: u8) -> VethPair {
    let pair = VethPair {
        a: Ipv4Addr::new(10, 213, subnet, 1),
        b: Ipv4Addr::new(10, 213, subnet, 2),
    };
    run_ok(Command::new("ip").args([
        "-n", &a.name, "link", "add", VETH, "type", "veth", "peer", "name", VETH, "netns", &b.name,
    ]));
    for (ns, addr) in [(a, pair.a), (b, pair.b)] {
        run_ok(Command::new("ip").args([
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            VETH,
        ]));
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", VETH, "up"]));
    }
    pair
}

/// Runs `cmd` to completion and returns its stdout; panics with its stderr if it fails.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` (stdin closed, output captured) and waits at most `limit` for it: a hung
/// command fails the test instead of hanging it.
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{cmd:?} did not finish in {limit:?}");
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Deletes namespaces left by test processes that no longer exist (killed before their
/// `Drop` ran).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            kill_all_in(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn kill_all_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

// === impl Netns ===

impl Netns {
    /// Makes a fresh namespace with `lo` up. Panics if it cannot.
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // From here on, Drop removes it, even if bringing up lo fails.
        let ns = Self { name };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `program`, to be run inside the namespace (through `ip netns exec`, which execs it,
    /// so the child's PID is the program's own).
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args` inside the namespace and returns its stdout; panics if it fails.
    pub(crate) fn run_ok(&self, program: &str, args: &[&str]) -> String {
        run_ok(self.command(program).args(args))
    }

    /// Starts `cmd` (made with [`Netns::command`]) in the background.
    pub(crate) fn spawn(&self, cmd: Command, what: &str) -> ChildGuard {
        ChildGuard::spawn(cmd, what)
    }

    /// Starts a TCP listener on `ports` (all addresses) that answers each connection with a
    /// [`Reply`] labelled `label`, and waits until it listens.
    pub(crate) fn listen(&self, label: &str, ports: &[u16]) -> ChildGuard {
        let python = python3().expect("python3 is installed");
        let ports = ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = self.command(python);
        cmd.args(["-c", LISTENER_PY, label, &ports])
            .arg(LISTENER_LIFETIME_SECS.to_string())
            .stdout(Stdio::piped());
        let mut guard = self.spawn(
            cmd,
            &format!("listener {label} on {ports} in {}", self.name),
        );
        guard.wait_for_line("ready", READY_TIMEOUT);
        guard
    }

    /// Connects once to `dst` from inside the namespace, as `uid` (through `setpriv`) or as
    /// the test's own user, and returns the listener's [`Reply`], or the error as text
    /// (refused, timed out, ...).
    pub(crate) fn connect(
        &self,
        uid: Option<u32>,
        dst: impl Into<SocketAddrV4>,
    ) -> Result<Reply, String> {
        let dst = dst.into();
        let python = python3().expect("python3 is installed");
        let mut cmd = match uid {
            Some(uid) => {
                let mut cmd = self.command("setpriv");
                cmd.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
                    .args(["--clear-groups"])
                    .arg(python);
                cmd
            }
            None => self.command(python),
        };
        cmd.args(["-c", CONNECT_PY])
            .arg(dst.ip().to_string())
            .arg(dst.port().to_string())
            .arg(PROBE_TIMEOUT_SECS.to_string());
        let line = run_ok(&mut cmd);
        Reply::parse(line.trim())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// === impl ChildGuard ===

impl ChildGuard {
    /// Starts `cmd` in the background, with no standard input.
    pub(crate) fn spawn(mut cmd: Command, what: &str) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what: what.to_owned(),
        }
    }

    /// Waits until the child prints `want` on a line of its stdout; panics after `timeout`.
    pub(crate) fn wait_for_line(&mut self, want: &str, timeout: Duration) {
        let stdout = self
            .child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{}: stdout is not piped", self.what));
        let (tx, rx) = mpsc::channel();
        let want = want.to_owned();
        // The reader thread ends when the child does (its stdout closes).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == want {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(timeout).is_err() {
            let status = self.child.try_wait();
            panic!(
                "{} not ready after {timeout:?} (status {status:?})",
                self.what
            );
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's stderr, if it was piped and not taken yet.
    pub(crate) fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The child's exit status, if it has exited.
    pub(crate) fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === impl Reply ===

impl Reply {
    fn parse(line: &str) -> Result<Self, String> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some(label), Some(port), Some(dst), None) if label != "error:" => Ok(Self {
                label: label.to_owned(),
                port: port.parse().map_err(|_| line.to_owned())?,
                original_dst: dst.parse().map_err(|_| line.to_owned())?,
            }),
            _ => Err(line.to_owned()),
        }
    }
}
