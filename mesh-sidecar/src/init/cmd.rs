//! One command of a plan: a program, its arguments and, for the `*-restore` tools, what it
//! reads on stdin. Printed as one shell line, so a dry run is a script that does the same.

use std::borrow::Cow;
use std::fmt;

/// One command line: a program and its arguments, never passed through a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cmd {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    /// Fed to the program's stdin (for `iptables-restore`); `None` leaves stdin empty.
    pub(crate) stdin: Option<String>,
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

/// `text` as a `printf` format that prints it back, newlines as `\n` so it stays one line.
fn printf_format(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('%', "%%")
        .replace('\n', r"\n")
}

// === impl Cmd ===

impl Cmd {
    pub(crate) fn new(program: &str, args: &[&str]) -> Self {
        Self {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            stdin: None,
        }
    }

    /// `program -t nat args…`.
    pub(crate) fn nat(program: &str, args: &[&str]) -> Self {
        let mut cmd = Self::new(program, &["-t", "nat"]);
        cmd.args.extend(args.iter().map(|a| (*a).to_owned()));
        cmd
    }

    pub(crate) fn with_stdin(mut self, input: &str) -> Self {
        self.stdin = Some(input.to_owned());
        self
    }
}

/// The command as a shell would take it, one line; stdin comes from a `printf` pipe.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(input) = &self.stdin {
            write!(f, "printf {} | ", shell_quote(&printf_format(input)))?;
        }
        f.write_str(&shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_print_shell_quoted() {
        let cmd = Cmd::new(
            "/usr/sbin/iptables",
            &[
                "-m",
                "comment",
                "--comment",
                "it's mesh",
                "",
                "a$b",
                "4000:5000",
            ],
        );
        assert_eq!(
            cmd.to_string(),
            r#"/usr/sbin/iptables -m comment --comment 'it'\''s mesh' '' 'a$b' 4000:5000"#
        );
    }

    #[test]
    fn stdin_prints_as_one_printf_pipe() {
        let cmd = Cmd::new("iptables-nft-restore", &[]).with_stdin("*nat\n50% \\o/ it's\nCOMMIT\n");
        assert_eq!(
            cmd.to_string(),
            r"printf '*nat\n50%% \\o/ it'\''s\nCOMMIT\n' | iptables-nft-restore"
        );
    }
}
