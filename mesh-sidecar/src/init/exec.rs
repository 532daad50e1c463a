//! Running iptables: finding the binaries, choosing a backend, reading the nat table and
//! executing a plan's commands.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::plan::{Cmd, Family, Mode};
use super::state::{self, NatState};

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(
        "`{program}` was not found in PATH, /usr/sbin or /sbin; install the `iptables` package \
         (Debian/Ubuntu: `apt-get install iptables`, Alpine: `apk add iptables`, \
         Fedora/RHEL: `dnf install iptables-nft`)"
    )]
    NotInstalled { program: String },

    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// Directories searched after PATH: iptables lives in sbin, which a non-root PATH (or a
/// minimal container's) often lacks.
const SBIN: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Picks the backend when none was asked for: the one that already holds rules (so ours sit
/// beside the ones the kernel actually evaluates, as Kubernetes' iptables-wrapper does),
/// else nft when installed, else legacy.
pub(crate) fn detect() -> Mode {
    let rules = |mode: Mode| -> usize {
        let save = mode.save(Family::V4);
        if which(&save).is_none() {
            return 0;
        }
        // Unreadable (e.g. not root) counts as empty: the later commands report the error.
        run(&Cmd::new(&save, &[])).map_or(0, |out| {
            out.lines().filter(|l| l.starts_with("-A ")).count()
        })
    };
    let (nft, legacy) = (rules(Mode::Nft), rules(Mode::Legacy));
    if legacy > nft || (nft == 0 && legacy == 0 && which(Mode::Nft.iptables(Family::V4)).is_none())
    {
        Mode::Legacy
    } else {
        Mode::Nft
    }
}

/// Reads what the nat table holds of ours.
pub(crate) fn read_state(mode: Mode, family: Family) -> Result<NatState, Error> {
    // Not `-t nat`: asked for one table, iptables-nft-save prints it even where it does not
    // exist, and iptables-legacy-save brings it into being. Without `-t`, both print the
    // tables that exist and nothing else.
    let out = run(&Cmd::new(&mode.save(family), &[]))?;
    let mut state = NatState::parse(&out);
    match mode {
        // A legacy table always holds all of its built-in chains.
        Mode::Legacy => state.settle_builtins(|_| true),
        Mode::Nft => {
            if let Some(chains) = nft_chains(family) {
                state.settle_builtins(|chain| chains.contains(chain));
            }
        }
    }
    Ok(state)
}

/// The chains nf_tables holds in `family`'s nat table, asked of `nft` because
/// iptables-nft-save prints a table's built-in chains whether they exist or not. `None`
/// when `nft` is not installed or cannot tell; then those chains count as existing.
fn nft_chains(family: Family) -> Option<std::collections::BTreeSet<String>> {
    let listing = run(&Cmd::new("nft", &["list", "table", family.nft(), "nat"])).ok()?;
    Some(state::nft_chains(&listing))
}

/// Runs `cmd` to completion and returns its stdout.
pub(crate) fn run(cmd: &Cmd) -> Result<String, Error> {
    let path = which(&cmd.program).ok_or_else(|| Error::NotInstalled {
        program: cmd.program.clone(),
    })?;
    let spawn_error = |source| Error::Spawn {
        command: cmd.to_string(),
        source,
    };
    let stdin = if cmd.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = Command::new(path)
        .args(&cmd.args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    // Dropping the pipe after writing closes it, so the program sees the end of input. A
    // program that fails before reading it all says more than the broken pipe would, so
    // its status is looked at first.
    let written = match (&cmd.stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => pipe.write_all(input.as_bytes()),
        _ => Ok(()),
    };
    let out = child.wait_with_output().map_err(spawn_error)?;
    if !out.status.success() {
        return Err(Error::Failed {
            command: cmd.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    written.map_err(spawn_error)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds `program` in PATH, then in the sbin directories.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_package() {
        let err = run(&Cmd::new("iptables-mesh-test-absent", &[])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NotInstalled { .. }), "{msg}");
        assert!(
            msg.contains("`iptables-mesh-test-absent` was not found"),
            "{msg}"
        );
        assert!(msg.contains("install the `iptables` package"), "{msg}");
    }

    #[test]
    fn a_failing_command_carries_its_line_and_stderr() {
        let err = run(&Cmd::new("sh", &["-c", "echo nope >&2; exit 3", "it's"])).unwrap_err();
        assert!(matches!(err, Error::Failed { .. }));
        assert_eq!(
            err.to_string(),
            r#"`sh -c 'echo nope >&2; exit 3' 'it'\''s'` failed (exit status: 3): nope"#
        );
    }

    #[test]
    fn stdin_reaches_the_program() {
        let cmd = Cmd::new("sh", &["-c", "tr a-z A-Z"]).with_stdin("*nat\nCOMMIT\n");
        assert_eq!(run(&cmd).unwrap(), "*NAT\nCOMMIT\n");
    }
}
