//! A tap event being filled in as a request goes through the metrics layer: the request's
//! facts at the call, the destination and latency at the response headers, the outcome at the
//! end of the stream (see [`crate::metrics`]).

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::Request;
use mesh_core::classify::Class;
use mesh_core::split::BackendRef;
use tokio::time::Instant;

use super::{Tap, TapEvent};
use crate::authz::ClientInfo;
use crate::discover::Endpoint;
use crate::metrics::{Direction, TargetAddr};
use crate::route::RouteTarget;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Capture {
    tap: Tap,
    start: Instant,
    event: TapEvent,
    /// For the DNS form of the server's identity, known at the response.
    control_ns: Box<str>,
}

// === impl Capture ===

impl Capture {
    /// The request's facts, when anyone taps (else nothing is built: one relaxed load).
    pub(crate) fn request<B>(
        tap: Option<&Tap>,
        direction: Direction,
        req: &Request<B>,
        control_ns: &str,
    ) -> Option<Box<Self>> {
        let tap = tap.filter(|t| t.is_active())?;
        let ext = req.extensions();
        let routed = RouteTarget::of(ext);
        let client = ClientInfo::of(ext);
        let authority = match routed {
            Some(t) => t.authority.to_string(),
            None => crate::route::destination(req)
                .map(|(h, p)| format!("{h}:{p}"))
                .unwrap_or_default(),
        };
        let config = tap.config();
        let headers: BTreeMap<String, String> = config
            .headers
            .iter()
            .filter_map(|name| {
                let v = req.headers().get(name)?;
                Some((
                    name.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into(),
                ))
            })
            .collect();
        let (namespace, workload) = match direction {
            Direction::Inbound => (config.namespace.clone(), config.workload.clone()),
            // Known at the response (the backend), or now for a pod called by its address.
            Direction::Outbound => routed
                .and_then(|t| t.pod.as_ref())
                .map(|p| (Some(p.namespace.clone()), Some(p.service.clone())))
                .unwrap_or_default(),
        };
        let event = TapEvent {
            direction,
            method: req.method().to_string(),
            authority,
            path: req.uri().path().to_owned(),
            status: None,
            grpc_status: None,
            latency_ms: 0.0,
            duration_ms: 0.0,
            classification: Class::Success,
            error: None,
            src_addr: client.map(|c| c.addr),
            dst_addr: TargetAddr::of(ext).map(|t| t.0),
            client_id: client
                .and_then(|c| c.identity.as_ref())
                .map(|id| id.to_dns(control_ns)),
            server_id: None,
            route: routed
                .and_then(|t| t.route.as_ref())
                .map(|r| r.name().to_owned()),
            backend: None,
            namespace,
            workload,
            timestamp_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            headers,
        };
        Some(Box::new(Self {
            tap: tap.clone(),
            start: Instant::now(),
            event,
            control_ns: control_ns.into(),
        }))
    }

    /// The response headers (or the mesh's answer) arrived with `status`, from `endpoint` of
    /// `backend` where the balancer sent the request.
    pub(crate) fn response(
        &mut self,
        status: u16,
        endpoint: Option<&Endpoint>,
        backend: Option<&BackendRef>,
    ) {
        let ev = &mut self.event;
        ev.status = Some(status);
        ev.latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if ev.direction == Direction::Inbound {
            return;
        }
        if let Some(e) = endpoint {
            ev.dst_addr = Some(e.addr);
            ev.server_id = e.identity.as_ref().map(|id| id.to_dns(&self.control_ns));
        }
        if let Some(b) = backend {
            ev.backend = Some(format!("{}.{}", b.name(), b.namespace()));
            ev.namespace = Some(b.namespace().to_owned());
            ev.workload = Some(b.name().to_owned());
        }
    }

    /// The stream ended so: the event is complete and offered to subscribers.
    pub(crate) fn end(mut self: Box<Self>, class: Class, grpc: Option<u32>, error: Option<&str>) {
        let ev = &mut self.event;
        ev.duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        ev.classification = class;
        ev.grpc_status = grpc;
        ev.error = error.map(str::to_owned);
        let Self { tap, event, .. } = *self;
        tap.publish(event);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::accepted::Accepted;
    use crate::metrics::{MetricsLayer, Registry};
    use crate::tap::{TapConfig, TapFilter, TapLimits};

    fn request() -> Request<()> {
        let mut req = Request::post("http://web.shop:80/books?secret=1")
            .header("x-request-id", "r1")
            .header("authorization", "Bearer s3cret")
            .body(())
            .unwrap();
        let id = mesh_core::Identity::new("cluster.local", "shop", "client").unwrap();
        Accepted::get_mut(req.extensions_mut()).client = Some(ClientInfo {
            identity: Some(id),
            addr: SocketAddr::from(([10, 0, 0, 9], 5000)),
        });
        req
    }

    fn tap() -> Tap {
        let config = TapConfig {
            headers: vec![http::HeaderName::from_static("x-request-id")],
            namespace: Some("shop".into()),
            workload: Some("web".into()),
            ..TapConfig::default()
        };
        Tap::new(config, &Registry::new())
    }

    #[test]
    fn nothing_is_built_without_a_subscriber() {
        let tap = tap();
        let req = request();
        assert!(Capture::request(Some(&tap), Direction::Inbound, &req, "linkerd").is_none());
        assert!(Capture::request(None, Direction::Inbound, &req, "linkerd").is_none());
        let _sub = tap.subscribe(TapFilter::default(), TapLimits::default());
        assert!(Capture::request(Some(&tap), Direction::Inbound, &req, "linkerd").is_some());
    }

    #[tokio::test]
    async fn the_metrics_layer_publishes_what_it_records() {
        let tap = tap();
        let mut sub = tap
            .subscribe(TapFilter::default(), TapLimits::default())
            .unwrap();
        let app = tower::service_fn(|_: Request<()>| async {
            let rsp = http::Response::builder()
                .status(503)
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"no")))
                .unwrap();
            Ok::<_, crate::BoxError>(rsp)
        });
        let layer = MetricsLayer::new(Registry::new(), Direction::Inbound).with_tap(tap);
        let rsp = layer.layer(app).oneshot(request()).await.unwrap();
        // The event is complete at the end of the stream, not at the headers.
        assert!(sub.rx.try_recv().is_err());
        http_body_util::BodyExt::collect(rsp.into_body())
            .await
            .unwrap();
        let ev = sub.recv().await.unwrap();
        assert_eq!(ev.status, Some(503));
        assert_eq!(ev.classification, Class::Failure);
        assert_eq!(ev.path, "/books");
        assert_eq!(ev.method, "POST");
        assert_eq!(
            ev.client_id.as_deref(),
            Some("client.shop.serviceaccount.identity.linkerd.cluster.local")
        );
        assert_eq!(ev.workload.as_deref(), Some("web"));
        assert_eq!(ev.src_addr, Some(SocketAddr::from(([10, 0, 0, 9], 5000))));
        // Only the configured header, never the others.
        assert_eq!(ev.headers.len(), 1);
        assert_eq!(ev.headers["x-request-id"], "r1");
    }
}
