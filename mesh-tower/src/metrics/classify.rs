//! How a response stream ended, as Linkerd labels it: `classification`, plus `grpc_status`
//! when the stream carried one, or `error` when it ended in an error rather than a status.
//!
//! The decision is taken at the end of the stream, not at the response headers: a gRPC status
//! normally arrives in the trailers. Route-defined response classes (ServiceProfile
//! `responseClasses`, through [`mesh_core::classify`]) still decide for HTTP statuses.
//!
//! We keep this small decision type rather than `tower-http`'s `classify` traits: theirs report
//! a success as `Ok(())`, so the `grpc_status="0"` Linkerd puts on successes would have to be
//! read from the trailers a second time, and their error classes are formatted `String`s,
//! where ours are a fixed set of label values (bounded cardinality, no allocation). See
//! `benches/README.md`.

use std::error::Error;
use std::sync::Arc;

use http::HeaderMap;
use mesh_core::classify::Class;
use mesh_core::policy::Route;

use crate::errors::{BackendTimeout, RequestTimeout, find, is_caused_by};

/// The `grpc-status` of a header map (a trailers-only response's headers, or trailers).
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Why a stream ended in an error: the `error` label, with Linkerd's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StreamError {
    /// A mesh timeout fired.
    Timeout,
    /// The HTTP/2 stream was reset (or the connection went away) with this reason.
    H2(&'static str),
    /// Anything else: a connection closed mid-body, a failed connect.
    Unclassified,
}

/// How a response ended: everything `response_total`'s outcome labels depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Outcome {
    pub(crate) class: Class,
    pub(crate) grpc: Option<u32>,
    pub(crate) error: Option<StreamError>,
}

/// What is known at the response headers, waiting for the end of the stream to decide.
#[derive(Clone, Debug)]
pub(crate) struct Eos {
    status: u16,
    /// A trailers-only gRPC response carries its status in the headers.
    header_grpc: Option<u32>,
    route: Option<Arc<Route>>,
}

// === impl StreamError ===

impl StreamError {
    /// Classifies an error by its cause chain.
    pub(crate) fn of(err: &(dyn Error + 'static)) -> Self {
        if is_caused_by::<RequestTimeout>(err) || is_caused_by::<BackendTimeout>(err) {
            return Self::Timeout;
        }
        find::<h2::Error>(err)
            .and_then(h2::Error::reason)
            .map_or(Self::Unclassified, |r| Self::H2(reason(r)))
    }

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::H2(r) => r,
            Self::Unclassified => "unclassified",
        }
    }
}

/// Linkerd prints `h2(<reason as in RFC 9113>)`. A peer may send any code; unknown ones share
/// one value, so a peer cannot grow the series.
fn reason(r: h2::Reason) -> &'static str {
    match r {
        h2::Reason::NO_ERROR => "h2(NO_ERROR)",
        h2::Reason::PROTOCOL_ERROR => "h2(PROTOCOL_ERROR)",
        h2::Reason::INTERNAL_ERROR => "h2(INTERNAL_ERROR)",
        h2::Reason::FLOW_CONTROL_ERROR => "h2(FLOW_CONTROL_ERROR)",
        h2::Reason::SETTINGS_TIMEOUT => "h2(SETTINGS_TIMEOUT)",
        h2::Reason::STREAM_CLOSED => "h2(STREAM_CLOSED)",
        h2::Reason::FRAME_SIZE_ERROR => "h2(FRAME_SIZE_ERROR)",
        h2::Reason::REFUSED_STREAM => "h2(REFUSED_STREAM)",
        h2::Reason::CANCEL => "h2(CANCEL)",
        h2::Reason::COMPRESSION_ERROR => "h2(COMPRESSION_ERROR)",
        h2::Reason::CONNECT_ERROR => "h2(CONNECT_ERROR)",
        h2::Reason::ENHANCE_YOUR_CALM => "h2(ENHANCE_YOUR_CALM)",
        h2::Reason::INADEQUATE_SECURITY => "h2(INADEQUATE_SECURITY)",
        h2::Reason::HTTP_1_1_REQUIRED => "h2(HTTP_1_1_REQUIRED)",
        _ => "h2(unknown)",
    }
}

/// Classifies a status: the route's response classes first, then Linkerd's defaults.
fn class(route: Option<&Route>, status: u16, grpc: Option<u32>) -> Class {
    match route {
        Some(r) => r.classify(status, grpc),
        None => mesh_core::classify::classify(&[], status, grpc),
    }
}

// === impl Outcome ===

impl Outcome {
    /// A request that failed before its response, which the mesh answers with `status` (a
    /// redirect, a refusal, a 502 or 504): classified by that status, and a failure says why
    /// in `error`.
    pub(crate) fn answered(
        status: u16,
        route: Option<&Route>,
        err: &(dyn Error + 'static),
    ) -> Self {
        // A gRPC abort the mesh answers is classified by its grpc-status, as the app's would be.
        let grpc = crate::errors::grpc_status_for(err).map(u32::from);
        let class = class(route, status, grpc);
        Self {
            class,
            grpc,
            error: class.is_failure().then(|| StreamError::of(err)),
        }
    }

    /// Completes a tap event with this outcome, as the metrics labelled it.
    pub(crate) fn tap(self, capture: Box<crate::tap::Capture>) {
        capture.end(self.class, self.grpc, self.error.map(StreamError::as_str));
    }

    /// A stream that ended in an error is a failure, whatever its status said.
    pub(crate) fn failed(err: &(dyn Error + 'static)) -> Self {
        Self {
            class: Class::Failure,
            grpc: None,
            error: Some(StreamError::of(err)),
        }
    }
}

// === impl Eos ===

impl Eos {
    /// What the response headers say.
    pub(crate) fn new(status: u16, headers: &HeaderMap, route: Option<Arc<Route>>) -> Self {
        Self {
            status,
            header_grpc: grpc_status(headers),
            route,
        }
    }

    /// The outcome of a stream that ended (`trailers` if it had them) or that was dropped
    /// before its end (`None`). A status in the headers (trailers-only) decides; otherwise the
    /// trailers' does; otherwise the HTTP status.
    pub(crate) fn eos(self, trailers: Option<&HeaderMap>) -> Outcome {
        let grpc = self.header_grpc.or_else(|| trailers.and_then(grpc_status));
        Outcome {
            class: class(self.route.as_deref(), self.status, grpc),
            grpc,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(grpc: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", grpc.parse().unwrap());
        h
    }

    #[test]
    fn the_end_of_stream_decides() {
        let none = HeaderMap::new();
        let cases = [
            // (status, headers, trailers, class, grpc)
            (200, &none, Some(headers("14")), Class::Failure, Some(14)),
            (200, &none, Some(headers("0")), Class::Success, Some(0)),
            (200, &headers("14"), None, Class::Failure, Some(14)),
            (200, &none, None, Class::Success, None),
            (503, &none, None, Class::Failure, None),
            // A trailers-only status is the stream's; trailers do not follow it.
            (
                200,
                &headers("0"),
                Some(headers("2")),
                Class::Success,
                Some(0),
            ),
        ];
        for (status, h, trailers, class, grpc) in cases {
            let out = Eos::new(status, h, None).eos(trailers.as_ref());
            assert_eq!((out.class, out.grpc, out.error), (class, grpc, None));
        }
    }

    #[test]
    fn errors_are_labelled_by_cause() {
        let timeout: Box<dyn Error + Send + Sync> = Box::new(RequestTimeout(Default::default()));
        assert_eq!(StreamError::of(&*timeout).as_str(), "timeout");
        let reset: Box<dyn Error + Send + Sync> = Box::new(h2::Error::from(h2::Reason::CANCEL));
        assert_eq!(StreamError::of(&*reset).as_str(), "h2(CANCEL)");
        let odd: Box<dyn Error + Send + Sync> = Box::new(h2::Error::from(h2::Reason::from(99)));
        assert_eq!(StreamError::of(&*odd).as_str(), "h2(unknown)");
        let io: Box<dyn Error + Send + Sync> = "connection closed".into();
        assert_eq!(Outcome::failed(&*io).error, Some(StreamError::Unclassified));
    }
}
