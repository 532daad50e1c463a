//! The metrics layer records as Linkerd does: `request_total` when the request is sent,
//! `response_latency_ms` at the response headers, `response_total` and its classification at
//! the end of the response stream (trailers, body error, end, or drop). Asserted on what
//! `/metrics` would show.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Empty, StreamBody};
use mesh_tower::BoxError;
use mesh_tower::accepted::Accepted;
use mesh_tower::discover::Endpoint;
use mesh_tower::metrics::{Direction, MetricsLayer, Registry, Sent, TargetAddr};
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

type Frames = Vec<Result<http_body::Frame<Bytes>, BoxError>>;
type Body = StreamBody<stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, BoxError>>>>;

fn data(s: &'static str) -> Result<http_body::Frame<Bytes>, BoxError> {
    Ok(http_body::Frame::data(Bytes::from_static(s.as_bytes())))
}

fn trailers(grpc: &str) -> Result<http_body::Frame<Bytes>, BoxError> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", grpc.parse().unwrap());
    Ok(http_body::Frame::trailers(t))
}

/// An inbound request as `MeshServer` sees it.
fn request() -> Request<Empty<Bytes>> {
    let mut req = Request::post("http://web.shop/pkg.Svc/Call")
        .body(Empty::new())
        .unwrap();
    Accepted::get_mut(req.extensions_mut()).target_addr =
        Some(TargetAddr("10.0.0.1:8080".parse().unwrap()));
    req
}

/// Sends one request through the inbound metrics layer to an app answering `headers` and
/// `frames`; returns the response, body unread.
async fn call(
    registry: &Registry,
    grpc_header: Option<&'static str>,
    frames: Frames,
) -> Response<mesh_tower::metrics::ResponseBody<Body>> {
    let layer = MetricsLayer::new(registry.clone(), Direction::Inbound);
    // Called once: the frames move into the one response.
    let frames = parking_lot::Mutex::new(Some(frames));
    let app = tower::service_fn(move |_: Request<Empty<Bytes>>| {
        let frames = frames.lock().take().unwrap_or_default();
        async move {
            let mut rsp = Response::new(StreamBody::new(stream::iter(frames)));
            if let Some(g) = grpc_header {
                rsp.headers_mut().insert("grpc-status", g.parse().unwrap());
            }
            Ok::<_, Infallible>(rsp)
        }
    });
    layer.layer(app).oneshot(request()).await.unwrap()
}

fn responses(registry: &Registry, labels: &[(&str, &str)]) -> u64 {
    registry.counter_sum("response_total", labels)
}

#[tokio::test]
async fn a_grpc_error_in_the_trailers_is_a_failure_once_the_stream_ends() {
    let registry = Registry::new();
    let rsp = call(&registry, None, vec![data("msg"), trailers("14")]).await;
    // Headers alone say nothing yet: no response is counted, the latency is.
    assert_eq!(responses(&registry, &[]), 0, "{}", registry.render());
    assert!(registry.render().contains("response_latency_ms_count{"));
    rsp.into_body().collect().await.unwrap();
    let text = registry.render();
    assert_eq!(
        responses(
            &registry,
            &[("classification", "failure"), ("grpc_status", "14")]
        ),
        1,
        "{text}"
    );
    assert!(
        text.contains("status_code=\"200\",classification=\"failure\",grpc_status=\"14\"} 1"),
        "{text}"
    );
    assert_eq!(responses(&registry, &[("classification", "success")]), 0);
}

/// OK, and the codes linkerd2-proxy counts as the caller's mistakes (NOT_FOUND,
/// INVALID_ARGUMENT, UNAUTHENTICATED), are successes, so success rates match `linkerd viz`'s.
#[tokio::test]
async fn grpc_ok_and_caller_errors_in_the_trailers_are_successes() {
    for code in ["0", "5", "3", "16"] {
        let registry = Registry::new();
        let rsp = call(&registry, None, vec![data("msg"), trailers(code)]).await;
        rsp.into_body().collect().await.unwrap();
        assert_eq!(
            responses(
                &registry,
                &[("classification", "success"), ("grpc_status", code)]
            ),
            1,
            "{}",
            registry.render()
        );
    }
}

#[tokio::test]
async fn a_trailers_only_grpc_error_is_a_failure() {
    let registry = Registry::new();
    let rsp = call(&registry, Some("14"), vec![]).await;
    drop(rsp);
    assert_eq!(
        responses(
            &registry,
            &[("classification", "failure"), ("grpc_status", "14")]
        ),
        1,
        "{}",
        registry.render()
    );
}

#[tokio::test]
async fn a_body_that_fails_after_a_200_is_a_failure_with_an_error() {
    let registry = Registry::new();
    let rsp = call(
        &registry,
        None,
        vec![data("partial"), Err("connection reset".into())],
    )
    .await;
    assert_eq!(rsp.status(), 200);
    assert!(rsp.into_body().collect().await.is_err());
    let text = registry.render();
    assert_eq!(
        responses(
            &registry,
            &[
                ("status_code", "200"),
                ("classification", "failure"),
                ("error", "unclassified")
            ]
        ),
        1,
        "{text}"
    );
    assert_eq!(responses(&registry, &[("classification", "success")]), 0);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_is_classified_by_what_was_known() {
    // As Linkerd: the client went away; the stream is classified as if it ended there.
    let registry = Registry::new();
    let rsp = call(&registry, None, vec![data("a"), data("b")]).await;
    drop(rsp);
    assert_eq!(
        responses(&registry, &[("classification", "success")]),
        1,
        "{}",
        registry.render()
    );
}

#[tokio::test]
async fn requests_are_counted_when_sent_not_when_answered() {
    for direction in [Direction::Inbound, Direction::Outbound] {
        let registry = Registry::new();
        let (tx, rx) = oneshot::channel::<()>();
        let rx = parking_lot::Mutex::new(Some(rx));
        let endpoint = Endpoint::new("10.1.0.7:8080".parse().unwrap());
        let ep = endpoint.clone();
        // Where the balancer would choose the endpoint and send, then wait for an answer.
        let app = tower::service_fn(move |req: Request<Empty<Bytes>>| {
            if let Some(sent) = Sent::of(req.extensions()) {
                sent.record(Some(&ep), None);
            }
            let rx = rx.lock().take();
            async move {
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let mut svc = MetricsLayer::new(registry.clone(), direction).layer(app);
        let fut = svc.ready().await.unwrap().call(request());
        let task = tokio::spawn(fut);
        tokio::task::yield_now().await;
        let counted = registry.counter_sum("request_total", &[("target_addr", "10.0.0.1:8080")])
            + registry.counter_sum("request_total", &[("target_addr", "10.1.0.7:8080")]);
        assert_eq!(counted, 1, "{direction:?}: {}", registry.render());
        assert_eq!(responses(&registry, &[]), 0, "{direction:?}");
        tx.send(()).unwrap();
        let rsp = task.await.unwrap().unwrap();
        drop(rsp);
        assert_eq!(
            registry.counter_sum("request_total", &[]),
            1,
            "{direction:?}"
        );
        assert_eq!(responses(&registry, &[]), 1, "{direction:?}");
    }
}
