//! A `mesh proxy` in explicit mode on loopback, in front of a tiny HTTP/1.1 app: no root,
//! no namespaces. Killed and reaped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The request lines an app was sent, in order.
pub(crate) type Seen = Arc<Mutex<Vec<String>>>;

/// The proxy under test and its three listeners.
pub(crate) struct LoopbackProxy {
    child: Child,
    pub(crate) inbound: SocketAddr,
    pub(crate) outbound: SocketAddr,
    pub(crate) admin: SocketAddr,
}

impl Drop for LoopbackProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LoopbackProxy {
    /// Starts `mesh proxy --mode explicit` forwarding inbound to `app`, with `extra` flags,
    /// and waits until it is ready (its listeners serve).
    pub(crate) fn start(app: SocketAddr, extra: &[&str]) -> Self {
        Self::start_until(app, extra, "/ready", None)
    }

    /// As [`LoopbackProxy::start`], waiting only until `/live` answers.
    pub(crate) fn start_live(app: SocketAddr, extra: &[&str]) -> Self {
        Self::start_until(app, extra, "/live", None)
    }

    /// As [`LoopbackProxy::start`], with the proxy's log (at `info`) written to `log`.
    pub(crate) fn start_logged(app: SocketAddr, extra: &[&str], log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).expect("create the proxy's log");
        Self::start_until(app, extra, "/ready", Some(file))
    }

    fn start_until(
        app: SocketAddr,
        extra: &[&str],
        path: &str,
        log: Option<std::fs::File>,
    ) -> Self {
        let mut cmd = Command::new(super::mesh_bin());
        if let Some(log) = log {
            cmd.env("RUST_LOG", "info").stderr(log);
        } else {
            cmd.stderr(Stdio::null());
        }
        let (inbound, outbound, admin) = (free_port(), free_port(), free_port());
        let child = cmd
            .args(["proxy", "--mode", "explicit"])
            .args(["--inbound-addr", &inbound.to_string()])
            .args(["--outbound-addr", &outbound.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--inbound-forward", &app.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("the mesh binary starts");
        let p = Self {
            child,
            inbound,
            outbound,
            admin,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !get(p.admin, path).starts_with("HTTP/1.1 200") {
            assert!(Instant::now() < deadline, "proxy: no 200 from {path}");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// The proxy's process id, for /proc.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `within` for the proxy to exit: its status, or `None`
    /// if it is still running.
    pub(crate) fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).ok()?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A loopback address nothing listens on (yet).
pub(crate) fn free_port() -> SocketAddr {
    super::ports::unused_loopback_port().expect("a free loopback port")
}

/// A plain HTTP/1.1 app that answers "ok" to every request (pipelined or not), a thread per
/// connection, reading at most 10 s of silence.
pub(crate) fn app() -> SocketAddr {
    recording_app().0
}

/// [`app`], which also keeps the request line of every request it was sent.
pub(crate) fn recording_app() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the app");
    let addr = l.local_addr().expect("the app's address");
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || answer_ok(s, &log));
        }
    });
    (addr, seen)
}

fn answer_ok(mut s: TcpStream, log: &Mutex<Vec<String>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            log.lock()
                .push(head.lines().next().unwrap_or_default().to_owned());
            buf.drain(..end + 4);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
        if !out.is_empty() && s.write_all(&out).is_err() {
            return;
        }
    }
}

/// One request on a fresh connection; the whole response as text.
pub(crate) fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends `bytes` on a fresh connection and reads until the peer closes (at most 5 s).
pub(crate) fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    slow_exchange(addr, b"", Duration::ZERO, bytes)
}

/// Sends `first`, waits `pause`, sends `rest`; the whole answer as text (at most 5 s after).
pub(crate) fn slow_exchange(
    addr: SocketAddr,
    first: &[u8],
    pause: Duration,
    rest: &[u8],
) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(first);
    std::thread::sleep(pause);
    let _ = s.write_all(rest);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The sum of the samples of `name` in the Prometheus `text` whose labels contain `label`.
pub(crate) fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` until it holds (`true`) or `limit` has passed (`false`).
pub(crate) fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A Service `name.shop:80` whose one endpoint is `addr`, as `--config` YAML.
pub(crate) fn service(name: &str, addr: SocketAddr) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{ name: {name}, namespace: shop }}
spec: {{ ports: [{{ name: http, port: 80 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: {name}-x, namespace: shop, labels: {{ kubernetes.io/service-name: {name} }} }}
addressType: IPv4
ports: [{{ name: http, port: {port} }}]
endpoints: [{{ addresses: [\"{ip}\"] }}]
",
        port = addr.port(),
        ip = addr.ip()
    )
}

/// A proxy serving `--config` from a file of its own, removed with it.
pub(crate) struct ConfiguredProxy {
    pub(crate) proxy: LoopbackProxy,
    path: PathBuf,
}

impl Drop for ConfiguredProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ConfiguredProxy {
    /// Starts a proxy (inbound to [`app`]) serving `config`, written to a file named after
    /// `name` and this process.
    pub(crate) fn start(name: &str, config: &str) -> Self {
        Self::start_in_front_of(name, app(), config)
    }

    /// As [`ConfiguredProxy::start`], with the proxy's inbound side forwarding to `app`.
    pub(crate) fn start_in_front_of(name: &str, app: SocketAddr, config: &str) -> Self {
        let path = std::env::temp_dir().join(format!("mesh-{name}-{}.yaml", std::process::id()));
        std::fs::write(&path, config).expect("write the config");
        let proxy = LoopbackProxy::start(app, &["--config", path.to_str().unwrap_or_default()]);
        Self { proxy, path }
    }
}

/// An HTTP/1.1 app answering each request with the status line `status(path)` gives (e.g.
/// `"500 Internal Server Error"`) and the body "ok", a thread per connection.
pub(crate) fn status_app(
    status: impl Fn(&str) -> &'static str + Send + Sync + 'static,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the app");
    let addr = l.local_addr().expect("the app's address");
    let status = Arc::new(status);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let status = Arc::clone(&status);
            std::thread::spawn(move || answer_status(s, &*status));
        }
    });
    addr
}

fn answer_status(s: TcpStream, status: &dyn Fn(&str) -> &'static str) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let mut first = String::new();
        if r.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let path = first.split(' ').nth(1).unwrap_or_default();
        let rsp = format!("HTTP/1.1 {}\r\nContent-Length: 2\r\n\r\nok", status(path));
        if w.write_all(rsp.as_bytes()).is_err() {
            return;
        }
    }
}

/// `--config` for a caller of Service `api.default:80` at `endpoint`, meshed as service
/// account `api`, with an HTTPRoute `api-route` sending everything to it; written to
/// `dir/mesh.yaml`.
pub(crate) fn meshed_api_config(dir: &std::path::Path, endpoint: SocketAddr) {
    let yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: api, namespace: default }}
spec: {{ ports: [{{ name: http, port: 80 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-1
  namespace: default
  labels: {{ kubernetes.io/service-name: api }}
  annotations: {{ mesh.io/service-account: api }}
addressType: IPv4
ports: [{{ name: http, port: {port} }}]
endpoints: [{{ addresses: [\"{ip}\"] }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: api-route, namespace: default }}
spec:
  parentRefs: [{{ name: api, kind: Service, group: core, port: 80 }}]
  rules: [{{ backendRefs: [{{ name: api, port: 80 }}] }}]
",
        port = endpoint.port(),
        ip = endpoint.ip()
    );
    std::fs::create_dir_all(dir).expect("the config directory");
    std::fs::write(dir.join("mesh.yaml"), yaml).expect("write the config");
}

/// One gRPC call (an empty message) over h2c to `http://web.shop:80{path}` through the proxy
/// listener at `addr`, with `headers` (`(name, value)`): the response, within 5 s.
pub(crate) fn grpc_call(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut req = http::Request::post(format!("http://web.shop:80{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\0",
        )))
        .expect("a request");
    rt.block_on(async move {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("answered in time")
            .expect("a response")
    })
}

/// A one-thread runtime for an in-test app and a loopback listener bound on it: the app is
/// spawned on the runtime and ends when the runtime is dropped.
pub(crate) fn app_runtime() -> (tokio::runtime::Runtime, tokio::net::TcpListener) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the app");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the app's loopback port");
    (rt, listener)
}
