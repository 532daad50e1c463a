//! Tracing: a `tracing` span per request, and trace-context propagation.
//!
//! An incoming W3C `traceparent` (or B3, as `b3` or `x-b3-*` headers) is continued: the request
//! goes on with a new span id whose parent is the caller's, so a tracing backend sees the mesh
//! hop. Without a context, a new trace is started only if the layer is told to.

use std::fmt::Write as _;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

/// A trace context: ids and the sampled flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 128-bit trace id.
    pub trace_id: u128,
    /// The span id of this hop.
    pub span_id: u64,
    /// The caller's span id.
    pub parent_id: Option<u64>,
    /// Whether the trace is sampled.
    pub sampled: bool,
}

/// See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer {
    start_new: bool,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    start_new: bool,
}

// === impl TraceContext ===

impl TraceContext {
    /// Reads the caller's context from `traceparent`, `b3` or `x-b3-*` headers.
    pub fn from_headers(h: &HeaderMap) -> Option<Self> {
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
        if let Some(tp) = get("traceparent") {
            let mut parts = tp.trim().split('-');
            let (Some(ver), Some(tid), Some(pid), Some(flags)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            if ver.len() != 2
                || ver == "ff"
                || tid.len() != 32
                || pid.len() != 16
                || flags.len() != 2
            {
                return None;
            }
            let trace_id = u128::from_str_radix(tid, 16).ok().filter(|t| *t != 0)?;
            let parent = u64::from_str_radix(pid, 16).ok().filter(|p| *p != 0)?;
            let flags = u8::from_str_radix(flags, 16).ok()?;
            return Some(Self {
                trace_id,
                span_id: parent,
                parent_id: None,
                sampled: flags & 1 == 1,
            });
        }
        if let Some(b3) = get("b3") {
            let mut parts = b3.trim().split('-');
            let tid = parts.next()?;
            let sid = parts.next()?;
            let sampled = parts.next().is_none_or(|s| s == "1" || s == "d");
            return Some(Self {
                trace_id: parse_b3_trace(tid)?,
                span_id: u64::from_str_radix(sid, 16).ok()?,
                parent_id: None,
                sampled,
            });
        }
        let tid = get("x-b3-traceid")?;
        let sid = get("x-b3-spanid")?;
        Some(Self {
            trace_id: parse_b3_trace(tid)?,
            span_id: u64::from_str_radix(sid, 16).ok()?,
            parent_id: None,
            sampled: get("x-b3-sampled").is_none_or(|s| s == "1") || get("x-b3-flags") == Some("1"),
        })
    }

    /// A child of this context: same trace, a new span whose parent is this one.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: nonzero_u64(),
            parent_id: Some(self.span_id),
            sampled: self.sampled,
        }
    }

    /// A new root context.
    pub fn new_root(sampled: bool) -> Self {
        Self {
            trace_id: (u128::from(nonzero_u64()) << 64) | u128::from(fastrand::u64(..)),
            span_id: nonzero_u64(),
            parent_id: None,
            sampled,
        }
    }

    /// The W3C `traceparent` value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// Writes this context into the headers, in the formats the caller used (W3C always; B3 if
    /// the request carried B3).
    pub fn inject(&self, h: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.traceparent()) {
            h.insert("traceparent", v);
        }
        if h.contains_key("b3") {
            let mut s = format!(
                "{:032x}-{:016x}-{}",
                self.trace_id,
                self.span_id,
                u8::from(self.sampled)
            );
            if let Some(p) = self.parent_id {
                let _ = write!(s, "-{p:016x}");
            }
            if let Ok(v) = HeaderValue::from_str(&s) {
                h.insert("b3", v);
            }
        }
        if h.contains_key("x-b3-traceid") {
            let pairs = [
                ("x-b3-traceid", format!("{:032x}", self.trace_id)),
                ("x-b3-spanid", format!("{:016x}", self.span_id)),
                ("x-b3-sampled", u8::from(self.sampled).to_string()),
            ];
            for (k, v) in pairs {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(k, v);
                }
            }
            if let Some(p) = self.parent_id
                && let Ok(v) = HeaderValue::from_str(&format!("{p:016x}"))
            {
                h.insert("x-b3-parentspanid", v);
            }
        }
    }
}

fn parse_b3_trace(s: &str) -> Option<u128> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|t| *t != 0)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

// === impl TraceLayer ===

impl TraceLayer {
    /// Continues incoming traces; starts none.
    pub fn new() -> Self {
        Self { start_new: false }
    }

    /// Also starts a (sampled) trace for requests that carry none.
    #[must_use]
    pub fn start_new_traces(mut self, yes: bool) -> Self {
        self.start_new = yes;
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            start_new: self.start_new,
        }
    }
}

// === impl Trace ===

impl<S> Trace<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ctx = match TraceContext::from_headers(req.headers()) {
            Some(parent) => Some(parent.child()),
            None if self.start_new => Some(TraceContext::new_root(true)),
            None => None,
        };
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            uri = %req.uri(),
            trace_id = tracing::field::Empty,
        );
        if let Some(ctx) = ctx {
            span.record(
                "trace_id",
                tracing::field::display(format_args!("{:032x}", ctx.trace_id)),
            );
            ctx.inject(req.headers_mut());
            req.extensions_mut().insert(ctx);
        }
        self.inner.call(req).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let parent = TraceContext::from_headers(&h).unwrap();
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert!(parent.sampled);
        let child = parent.child();
        child.inject(&mut h);
        let tp = h["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(!tp.contains("00f067aa0ba902b7"), "{tp}");
        assert_eq!(child.parent_id, Some(0x00f067aa0ba902b7));
    }

    #[test]
    fn b3_single_and_multi_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        let c = TraceContext::from_headers(&h).unwrap();
        assert_eq!(c.span_id, 0xe457b5a2e4d86bd1);
        c.child().inject(&mut h);
        assert!(h["b3"].to_str().unwrap().ends_with("-e457b5a2e4d86bd1"));

        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", HeaderValue::from_static("463ac35c9f6413ad"));
        h.insert("x-b3-spanid", HeaderValue::from_static("a2fb4a1d1a96d312"));
        h.insert("x-b3-sampled", HeaderValue::from_static("0"));
        let c = TraceContext::from_headers(&h).unwrap();
        assert!(!c.sampled);
        c.child().inject(&mut h);
        assert_eq!(h["x-b3-parentspanid"], "a2fb4a1d1a96d312");
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_str(bad).unwrap());
            assert!(TraceContext::from_headers(&h).is_none(), "{bad}");
        }
    }
}
