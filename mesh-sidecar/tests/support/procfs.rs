//! What a process under test holds, read from `/proc`: the bounds the hostile-input tests
//! (`tests/hostile_*.rs`) assert are the ones an operator sees in `kubectl top` and `ulimit`.

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status: has the process died?"))
}

/// The resident set size now, in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// The highest resident set size the process has had, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// How many file descriptors the process has open (sockets included).
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// The largest peak resident set size of any child this test process has waited for, in KiB
/// (`getrusage(RUSAGE_CHILDREN)`): the peak of a short-lived command, which polling `/proc`
/// could miss. nextest runs each test in a process of its own, so it is this test's children.
pub(crate) fn max_child_rss_kib() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    // Linux reports ru_maxrss in KiB.
    u64::try_from(usage.max_rss()).unwrap_or(0)
}
