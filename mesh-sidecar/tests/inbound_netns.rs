//! Protocols survive both sidecars: a gRPC server that speaks only HTTP/2 (tonic) sits behind
//! pod b's `mesh proxy`, and a gRPC client in pod a calls it through pod a's proxy, the mesh's
//! mTLS hop and pod b's proxy. Unary and server-streaming calls succeed, trailers arrive intact
//! and an error status reaches the client exactly as the server sent it. Beside it, an HTTP/1
//! request through the same proxies reaches an HTTP/1-only app as HTTP/1.1.
//!
//! The server and client run on threads of this test that enter the pods' network namespaces
//! (`setns`); a socket stays in the namespace it was made in. Needs root, `ip netns`,
//! iptables and python3 (the pod harness's probes); skips with a printed reason elsewhere.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use support::pods::{Trust, link, metric_line, start_pod, write_config};
use support::{Netns, python3, skip_unless_root_and_netns};

const GRPC_PORT: u16 = 50051;
const H1_PORT: u16 = 8080;
/// Every call, and the whole conversation, ends within this.
const DEADLINE: Duration = Duration::from_secs(30);

/// The one message both ways: a text and how many replies to stream.
#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

type Codec = ProstCodec<Echo, Echo>;

fn detail(why: &str) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert("x-detail", why.parse().unwrap());
    m
}

/// `/test.Echo/Unary` answers `hello <text>`, or fails when the text is `fail`;
/// `/test.Echo/Stream` sends `count` replies, then fails when the text is `fail`.
async fn grpc_app(
    req: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let mut grpc = tonic::server::Grpc::new(Codec::default());
    let rsp = match req.uri().path() {
        "/test.Echo/Unary" => {
            let svc = tower::service_fn(|r: tonic::Request<Echo>| async move {
                let m = r.into_inner();
                if m.text == "fail" {
                    return Err(Status::with_metadata(
                        Code::PermissionDenied,
                        "nope: not for you ✗ 100%",
                        detail("unary"),
                    ));
                }
                Ok(tonic::Response::new(Echo {
                    text: format!("hello {}", m.text),
                    count: 1,
                }))
            });
            grpc.unary(svc, req).await
        }
        "/test.Echo/Stream" => {
            let svc = tower::service_fn(|r: tonic::Request<Echo>| async move {
                let m = r.into_inner();
                let mut items: Vec<Result<Echo, Status>> = (0..m.count)
                    .map(|i| {
                        Ok(Echo {
                            text: format!("{} #{i}", m.text),
                            count: i,
                        })
                    })
                    .collect();
                if m.text == "fail" {
                    items.push(Err(Status::with_metadata(
                        Code::ResourceExhausted,
                        "enough for today",
                        detail("stream"),
                    )));
                }
                Ok::<_, Status>(tonic::Response::new(futures_util::stream::iter(items)))
            });
            grpc.server_streaming(svc, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    };
    Ok(rsp)
}

/// Runs `f` on a new thread inside the network namespace `ns`, on a runtime of its own.
fn in_netns<T, F>(ns: &str, f: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
}

/// An HTTP/1-only app: answers with the version the request arrived in and whether the mesh's
/// `l5d-orig-proto` marker reached it.
async fn h1_app(req: http::Request<Incoming>) -> Result<http::Response<String>, Infallible> {
    let marked = req.headers().contains_key("l5d-orig-proto");
    Ok(http::Response::new(format!(
        "{:?} marked={marked}",
        req.version()
    )))
}

/// Inside `ns`, where pod b's proxy forwards to: the gRPC server on 127.0.0.1:50051 (HTTP/2
/// only) and [`h1_app`] on 127.0.0.1:8080 (HTTP/1 only), until `stop` fires.
fn serve_apps(
    ns: &str,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>) {
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let server = in_netns(ns, move || async move {
        let grpc = tokio::net::TcpListener::bind(("127.0.0.1", GRPC_PORT))
            .await
            .unwrap();
        let h1 = tokio::net::TcpListener::bind(("127.0.0.1", H1_PORT))
            .await
            .unwrap();
        ready_tx.send(()).unwrap();
        let grpc = async {
            while let Ok((tcp, _)) = grpc.accept().await {
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(grpc_app))
                        .await;
                });
            }
        };
        let h1 = async {
            while let Ok((tcp, _)) = h1.accept().await {
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(h1_app))
                        .await;
                });
            }
        };
        tokio::select! {
            () = grpc => {}
            () = h1 => {}
            _ = stop => {}
        }
    });
    (server, ready)
}

/// One HTTP/1.1 request from inside pod a (as root: redirected to its outbound proxy) to
/// [`h1_app`] in pod b; the answer's body.
async fn call_h1(dst: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect((dst.as_str(), H1_PORT))
        .await
        .unwrap();
    let req = format!("GET /v HTTP/1.1\r\nHost: {dst}:{H1_PORT}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// A status as the client received it: code, message and the `x-detail` metadata.
type Received = (Code, String, Option<String>);
/// The messages of a stream, then how it ended.
type Streamed = (Vec<String>, Result<(), Received>);

/// What the client saw of each call.
#[derive(Debug)]
struct Seen {
    unary: Result<String, Received>,
    unary_fail: Result<String, Received>,
    stream: Streamed,
    stream_fail: Streamed,
}

fn status(s: &Status) -> Received {
    let detail = s
        .metadata()
        .get("x-detail")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (s.code(), s.message().to_owned(), detail)
}

/// Calls the server at `dst` through the mesh from inside `ns` (as root, so the
/// connection is redirected to pod a's outbound proxy).
async fn call_all(dst: String) -> Seen {
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<tonic::body::Body>();
    let origin = format!("http://{dst}:{GRPC_PORT}").parse().unwrap();
    let mut grpc = tonic::client::Grpc::with_origin(http, origin);
    let unary_path = PathAndQuery::from_static("/test.Echo/Unary");
    let stream_path = PathAndQuery::from_static("/test.Echo/Stream");

    let mut unary = async |text: &str| {
        grpc.ready().await.unwrap();
        let req = tonic::Request::new(Echo {
            text: text.to_owned(),
            count: 1,
        });
        grpc.unary(req, unary_path.clone(), Codec::default())
            .await
            .map(|r| r.into_inner().text)
            .map_err(|s| status(&s))
    };
    let ok = unary("world").await;
    let fail = unary("fail").await;

    let mut streamed = async |text: &str, count| {
        grpc.ready().await.unwrap();
        let req = tonic::Request::new(Echo {
            text: text.to_owned(),
            count,
        });
        let mut stream = match grpc
            .server_streaming(req, stream_path.clone(), Codec::default())
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return (Vec::new(), Err(status(&s))),
        };
        let mut got = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(m)) => got.push(m.text),
                Ok(None) => return (got, Ok(())),
                Err(s) => return (got, Err(status(&s))),
            }
        }
    };
    let stream = streamed("tick", 5).await;
    let stream_fail = streamed("fail", 3).await;
    Seen {
        unary: ok,
        unary_fail: fail,
        stream,
        stream_fail,
    }
}

#[test]
fn grpc_and_http1_through_both_sidecars_keep_their_protocols() {
    if !skip_unless_root_and_netns() || !support::require(&["setpriv"]) || python3().is_none() {
        return;
    }
    let trust = Trust::new();
    trust.issue(&["client", "grpc"]);
    let (a, b) = (Netns::new(), Netns::new());
    let (ip_a, ip_b) = link(&a, "to-grpc", &b, "eth0", 7);

    // Pod a knows pod b's address as a meshed endpoint with identity `grpc`.
    let client_cfg = trust.dir.join("client.yaml");
    write_config(
        &client_cfg,
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{ name: grpc, namespace: default }}
spec: {{ ports: [{{ name: grpc, port: {GRPC_PORT} }}, {{ name: http, port: {H1_PORT} }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: grpc-x
  namespace: default
  labels: {{ kubernetes.io/service-name: grpc }}
  annotations: {{ mesh.io/service-account: grpc }}
addressType: IPv4
ports: [{{ name: grpc, port: {GRPC_PORT} }}, {{ name: http, port: {H1_PORT} }}]
endpoints: [{{ addresses: ["{ip_b}"] }}]
"#
        ),
    );
    // Pod b admits only meshed clients: a call that arrives proves it came over mTLS.
    let server_cfg = trust.dir.join("server.yaml");
    write_config(
        &server_cfg,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  annotations: { config.linkerd.io/default-inbound-policy: all-authenticated }\n",
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (server, ready) = serve_apps(b.name(), stop_rx);
    ready
        .recv_timeout(DEADLINE)
        .expect("the gRPC server did not start");
    let pod_b = start_pod(b, ip_b.clone(), &trust.certs("grpc"), &server_cfg, None);
    let pod_a = start_pod(a, ip_a, &trust.certs("client"), &client_cfg, None);

    let dst = ip_b.clone();
    let (seen, h1) = in_netns(pod_a.ns.name(), move || async move {
        let grpc = tokio::time::timeout(DEADLINE, call_all(dst.clone())).await;
        let h1 = tokio::time::timeout(DEADLINE, call_h1(dst)).await;
        (grpc, h1)
    })
    .join()
    .unwrap();
    let seen = seen.expect("the gRPC calls did not finish in time");
    let h1 = h1.expect("the HTTP/1 call did not finish in time");
    let _ = stop_tx.send(());
    server.join().unwrap();

    assert_eq!(seen.unary, Ok("hello world".to_owned()), "{seen:?}");
    assert_eq!(
        seen.unary_fail,
        Err((
            Code::PermissionDenied,
            "nope: not for you ✗ 100%".to_owned(),
            Some("unary".to_owned())
        )),
        "{seen:?}"
    );
    let ticks: Vec<String> = (0..5).map(|i| format!("tick #{i}")).collect();
    assert_eq!(seen.stream, (ticks, Ok(())), "{seen:?}");
    let fails: Vec<String> = (0..3).map(|i| format!("fail #{i}")).collect();
    assert_eq!(
        seen.stream_fail,
        (
            fails,
            Err((
                Code::ResourceExhausted,
                "enough for today".to_owned(),
                Some("stream".to_owned())
            ))
        ),
        "{seen:?}"
    );

    // HTTP/1 crossed the mesh over HTTP/2 and reached its app as HTTP/1.1, unmarked.
    assert_eq!(h1, "HTTP/1.1 marked=false");

    // Pod b saw every call over mTLS from `client`, on connections labelled with it.
    let client_id = "client_id=\"client.default.serviceaccount.identity.linkerd.cluster.local\"";
    let m = pod_b.metrics();
    let calls: u64 = m
        .lines()
        .filter(|l| {
            l.starts_with("request_total{")
                && ["direction=\"inbound\"", "tls=\"true\"", client_id]
                    .iter()
                    .all(|p| l.contains(p))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(calls, 5, "pod b's inbound metrics:\n{m}");
    assert!(
        metric_line(
            &m,
            "tcp_open_total",
            &["direction=\"inbound\"", "tls=\"true\"", client_id]
        )
        .is_some(),
        "inbound tcp_* without client_id:\n{m}"
    );
    drop((pod_a, pod_b, trust));
}
