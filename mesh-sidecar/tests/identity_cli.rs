//! `mesh identity init | serve | issue` as a user runs them: real processes, real files.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::time::Duration;

use mesh_identity::{Identity, cert};

mod support;

use support::loopback;

const MESH: &str = env!("CARGO_BIN_EXE_mesh");

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("mesh-cli-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `mesh identity serve`, killed on drop even if the test fails.
struct Server {
    _child: support::Killed,
    url: String,
}

impl Server {
    fn start(dir: &Path, tokens: &Path) -> Self {
        let (child, url) = support::issuer::serve(dir, tokens, &[]);
        Self { _child: child, url }
    }
}

fn mesh(args: &[&str]) -> Output {
    support::output_within(Command::new(MESH).args(args), Duration::from_secs(30))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn init_writes_the_anchor_and_issuer_with_private_keys_0600() {
    let tmp = TempDir::new("init");
    let out = tmp.path("ca");
    let o = mesh(&[
        "identity",
        "init",
        "--trust-domain",
        "cluster.local",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, want) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("issuer.crt", 0o644),
        ("issuer.key", 0o600),
    ] {
        assert_eq!(mode(&out.join(name)), want, "{name}");
    }
    // The issuer chains to the anchor.
    let anchor = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let issuer = std::fs::read_to_string(out.join("issuer.crt")).unwrap();
    assert!(anchor.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(anchor, issuer);
    let key = std::fs::read_to_string(out.join("ca.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

    // Never overwrite without --force.
    let o = mesh(&["identity", "init", "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("ca.key")).unwrap(), key);

    // With --force, new keys, still 0600.
    let o = mesh(&["identity", "init", "--out", s(&out), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read_to_string(out.join("ca.key")).unwrap(), key);
    assert_eq!(mode(&out.join("ca.key")), 0o600);
    assert_eq!(mode(&out.join("issuer.key")), 0o600);

    // A bad trust domain is refused with a reason.
    let o = mesh(&[
        "identity",
        "init",
        "--trust-domain",
        "Not A Domain",
        "--out",
        s(&tmp.path("x")),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid trust domain"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_and_issue_end_to_end() {
    let tmp = TempDir::new("e2e");
    let ca = tmp.path("ca");
    let o = mesh(&[
        "identity",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        s(&ca),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tokens = tmp.path("tokens");
    std::fs::write(
        &tokens,
        "# bootstrap tokens\nweb-secret emojivoto/web\napi-secret emojivoto/api # api\n",
    )
    .unwrap();
    let server = Server::start(&ca, &tokens);

    let token = tmp.path("web.token");
    std::fs::write(&token, "web-secret\n").unwrap();
    let out = tmp.path("web");
    let o = mesh(&[
        "identity",
        "issue",
        "--issuer",
        &server.url,
        "--token-file",
        s(&token),
        "--trust-anchors",
        s(&ca.join("ca.crt")),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&out.join("tls.key")), 0o600);
    let chain =
        cert::certs_from_pem(&std::fs::read_to_string(out.join("tls.crt")).unwrap()).unwrap();
    assert_eq!(chain.len(), 2, "leaf, then issuer");
    assert_eq!(
        cert::identity_of(&chain[0]).unwrap(),
        Identity::new("example.org", "emojivoto", "web").unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(out.join("ca.crt")).unwrap(),
        std::fs::read_to_string(ca.join("ca.crt")).unwrap()
    );
    let issuer_pem = std::fs::read_to_string(ca.join("issuer.crt")).unwrap();
    assert_eq!(chain[1], cert::certs_from_pem(&issuer_pem).unwrap()[0]);

    // Issuing again renews in place.
    let o = mesh(&[
        "identity",
        "issue",
        "--issuer",
        &server.url,
        "--token-file",
        s(&token),
        "--trust-anchors",
        s(&ca.join("ca.crt")),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_refused_issue_exits_non_zero_with_the_issuers_reason() {
    let tmp = TempDir::new("refused");
    let ca = tmp.path("ca");
    assert!(
        mesh(&["identity", "init", "--out", s(&ca)])
            .status
            .success()
    );
    let tokens = tmp.path("tokens");
    std::fs::write(&tokens, "web-secret emojivoto/web\n").unwrap();
    let server = Server::start(&ca, &tokens);
    let token = tmp.path("bad.token");
    std::fs::write(&token, "not-a-token").unwrap();
    let issue = |url: &str| {
        mesh(&[
            "identity",
            "issue",
            "--issuer",
            url,
            "--token-file",
            s(&token),
            "--trust-anchors",
            s(&ca.join("ca.crt")),
            "--out",
            s(&tmp.path("out")),
        ])
    };

    let o = issue(&server.url);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("401") && err.contains("unknown token"),
        "{err}"
    );
    assert!(!tmp.path("out").join("tls.key").exists());

    // Nobody listening: a clear error too.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = issue(&format!("https://127.0.0.1:{port}"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot reach the issuer"),
        "{}",
        stderr(&o)
    );

    // Not https.
    let o = issue("http://127.0.0.1:1");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("https://"), "{}", stderr(&o));
}

/// The issuer's admin port serves its probes and counts its answers by result and a fixed
/// reason; what callers sent (their tokens) is in neither its metrics nor its log, even at
/// debug level.
#[test]
fn the_issuer_counts_answers_on_its_admin_port_and_never_logs_a_token() {
    let tmp = TempDir::new("admin");
    let ca = tmp.path("ca");
    assert!(
        mesh(&["identity", "init", "--out", s(&ca)])
            .status
            .success()
    );
    let (good, bad) = ("web-secret-4f1c", "not-a-token-9d2e");
    let tokens = tmp.path("tokens");
    std::fs::write(&tokens, format!("{good} emojivoto/web\n")).unwrap();
    let admin = loopback::free_port();
    let log = tmp.path("issuer.log");
    let extra = ["--admin-addr", &admin.to_string()];
    let (_issuer, url) = support::issuer::serve_logged(&ca, &tokens, &extra, &log);
    for (name, token) in [("good", good), ("bad", bad)] {
        let file = tmp.path(&format!("{name}.token"));
        std::fs::write(&file, token).unwrap();
        let o = mesh(&[
            "identity",
            "issue",
            "--issuer",
            &url,
            "--token-file",
            s(&file),
            "--trust-anchors",
            s(&ca.join("ca.crt")),
            "--out",
            s(&tmp.path(name)),
        ]);
        assert_eq!(o.status.success(), name == "good", "{}", stderr(&o));
    }

    assert!(loopback::get(admin, "/ready").starts_with("HTTP/1.1 200"));
    assert!(loopback::get(admin, "/live").starts_with("HTTP/1.1 200"));
    let metrics = loopback::get(admin, "/metrics");
    let requests = "identity_certificate_requests_total";
    assert_eq!(
        loopback::metric(&metrics, requests, r#"result="issued""#),
        1.0,
        "{metrics}"
    );
    let refused = r#"reason="unknown_token""#;
    assert_eq!(
        loopback::metric(&metrics, requests, refused),
        1.0,
        "{metrics}"
    );
    // The issuer's own serving certificate, as a proxy reports its own.
    assert!(
        metrics.contains("\nidentity_cert_expiration_timestamp_seconds "),
        "{metrics}"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("refused a CSR"),
        "the refusal is logged: {logs}"
    );
    for secret in [good, bad] {
        assert!(
            !metrics.contains(secret) && !logs.contains(secret),
            "{logs}"
        );
    }
}

#[test]
fn serve_refuses_a_bad_token_file_with_the_line() {
    let tmp = TempDir::new("tokens");
    let ca = tmp.path("ca");
    assert!(
        mesh(&["identity", "init", "--out", s(&ca)])
            .status
            .success()
    );
    let tokens = tmp.path("tokens");
    std::fs::write(
        &tokens,
        "# ok\ngood emojivoto/web\nbad-line-without-identity\n",
    )
    .unwrap();
    let o = mesh(&[
        "identity",
        "serve",
        "--dir",
        s(&ca),
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        s(&tokens),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
}
