//! A running `mesh identity serve` for end-to-end tests, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Killed;

/// Starts `mesh identity serve` on a free loopback port with the CA in `ca` and the token
/// file `tokens`, plus `extra` flags; returns it with the `https://` URL it printed.
pub(crate) fn serve(ca: &Path, tokens: &Path, extra: &[&str]) -> (Killed, String) {
    serve_with_stderr(ca, tokens, extra, Stdio::null())
}

/// [`serve`], its log (at debug level) written to `log`.
pub(crate) fn serve_logged(
    ca: &Path,
    tokens: &Path,
    extra: &[&str],
    log: &Path,
) -> (Killed, String) {
    let file = std::fs::File::create(log).expect("create the issuer's log");
    serve_with_stderr(ca, tokens, extra, Stdio::from(file))
}

fn serve_with_stderr(ca: &Path, tokens: &Path, extra: &[&str], stderr: Stdio) -> (Killed, String) {
    let mut child = Command::new(super::mesh_bin())
        .env("RUST_LOG", "debug")
        .args(["identity", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(ca)
        .arg("--tokens")
        .arg(tokens)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("run mesh identity serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Killed(child);
    // Read the address it prints, with a time limit.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("mesh identity serve printed its address");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (child, url)
}
