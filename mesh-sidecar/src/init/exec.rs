//! Running iptables: finding the binaries, choosing a backend, reading the nat table and
//! executing a plan's commands.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use clap::ValueEnum;

use super::plan::{Cmd, Family, NatState};

/// Which iptables backend programs the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// nf_tables, through `iptables-nft` / `ip6tables-nft`.
    Nft,
    /// The legacy xtables interface, through `iptables-legacy` / `ip6tables-legacy`.
    Legacy,
}

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
        if which(save).is_none() {
            return 0;
        }
        // Unreadable (e.g. not root) counts as empty: the later commands report the error.
        run(&Cmd {
            program: save.to_owned(),
            args: Vec::new(),
        })
        .map_or(0, |out| {
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
    // Asking legacy iptables for its nat table creates the table in this namespace; when the
    // kernel lists no such table there is nothing of ours in it, and a dry run or an
    // uninstall should not leave one behind.
    if mode == Mode::Legacy && !legacy_nat_exists(family) {
        return Ok(NatState::default());
    }
    let out = run(&Cmd {
        program: mode.save(family).to_owned(),
        args: vec!["-t".to_owned(), "nat".to_owned()],
    })?;
    Ok(NatState::parse(&out))
}

/// Whether the kernel holds a legacy nat table for `family` in this namespace.
fn legacy_nat_exists(family: Family) -> bool {
    let names = match family {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    };
    // Unreadable means the legacy modules are not loaded, so no table exists either.
    std::fs::read_to_string(names).is_ok_and(|s| s.lines().any(|t| t.trim() == "nat"))
}

/// Runs `cmd` to completion and returns its stdout.
pub(crate) fn run(cmd: &Cmd) -> Result<String, Error> {
    let path = which(&cmd.program).ok_or_else(|| Error::NotInstalled {
        program: cmd.program.clone(),
    })?;
    let out = Command::new(path)
        .args(&cmd.args)
        .output()
        .map_err(|source| Error::Spawn {
            command: cmd.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Failed {
            command: cmd.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
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

    fn save(self, family: Family) -> &'static str {
        match (self, family) {
            (Self::Nft, Family::V4) => "iptables-nft-save",
            (Self::Nft, Family::V6) => "ip6tables-nft-save",
            (Self::Legacy, Family::V4) => "iptables-legacy-save",
            (Self::Legacy, Family::V6) => "ip6tables-legacy-save",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_package() {
        let err = run(&Cmd {
            program: "iptables-mesh-test-absent".to_owned(),
            args: Vec::new(),
        })
        .unwrap_err();
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
        let err = run(&Cmd {
            program: "sh".to_owned(),
            args: ["-c", "echo nope >&2; exit 3", "it's"]
                .map(str::to_owned)
                .to_vec(),
        })
        .unwrap_err();
        assert!(matches!(err, Error::Failed { .. }));
        assert_eq!(
            err.to_string(),
            r#"`sh -c 'echo nope >&2; exit 3' 'it'\''s'` failed (exit status: 3): nope"#
        );
    }
}
