//! `mesh controller` as a child process of a test, killed and reaped on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mesh_bin;
use super::pods::free_port;

/// How long the controller may take to become ready.
const WAIT: Duration = Duration::from_secs(15);

/// The controller process, killed and reaped on drop; its stderr goes to a log file.
pub(crate) struct Controller {
    child: Child,
    log: PathBuf,
    admin: SocketAddr,
}

impl Controller {
    pub(crate) fn start(kubeconfig: &Path, identity: &Path, grpc: SocketAddr, dir: &Path) -> Self {
        let admin = free_port();
        let log = dir.join("controller.log");
        let child = Command::new(mesh_bin())
            .args(["controller", "--grpc-addr", &grpc.to_string()])
            .args(["--admin-addr", &admin.to_string(), "--identity-dir"])
            .arg(identity)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log, admin }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GETs an admin path: (status code, body).
    pub(crate) fn admin(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((200, _)) = self.admin("/ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not become ready: {:?}\n{}",
                self.admin("/ready"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
