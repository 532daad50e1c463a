//! A command's output on stdout, where a reader that goes away early (`mesh policy explain … |
//! head`) ends the command quietly, as it ends `grep` or `kubectl`, instead of the panic
//! `print!` gives on a closed pipe (Rust ignores SIGPIPE, so the write fails instead).

use std::io::{self, Write};

/// The exit status of a command that a closed pipe stopped: 128 + SIGPIPE, what a shell shows
/// for `grep` stopped the same way.
const CLOSED_PIPE: i32 = 128 + 13;

/// Writes `text` to stdout and flushes it. When the reader has gone, the process exits at once
/// with [`CLOSED_PIPE`]; any other write error ends it with status 1 and the reason on stderr.
pub(crate) fn print(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_PIPE);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`print`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::print(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Runs a command's future on `runtime` (built by the caller, who picks its flavour) and turns
/// the outcome into the exit status: a runtime that could not be built or an error from the
/// future is printed as `error: …` (alternate form, so `anyhow` shows its causes).
pub(crate) fn block_on<E: std::fmt::Display>(
    runtime: io::Result<tokio::runtime::Runtime>,
    command: impl Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
