//! The response body that records `response_total` when its stream ends; see the
//! [module docs](super).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::classify::{Eos, Outcome};
use super::series::StatusSeries;
use crate::BoxError;
use crate::tap::Capture;

pin_project! {
    /// Response body of [`Metrics`](super::Metrics): the inner body, unchanged, recording the
    /// response's outcome once, at the first of its end, its trailers, its error, or its drop.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end (the client went away, or nobody read it): as Linkerd
            // does, the outcome is what was known so far, as if the stream had ended there.
            if let Some(p) = this.project().pending.take() {
                p.end(None);
            }
        }
    }
}

/// The series to record into and what decides the outcome.
pub(super) struct Pending {
    series: Arc<StatusSeries>,
    eos: Eos,
    /// The request's tap event, when anyone taps.
    tap: Option<Box<Capture>>,
}

// === impl Pending ===

impl Pending {
    pub(super) fn new(series: Arc<StatusSeries>, eos: Eos, tap: Option<Box<Capture>>) -> Self {
        Self { series, eos, tap }
    }

    pub(super) fn end(self, trailers: Option<&HeaderMap>) {
        let Self { series, eos, tap } = self;
        record(&series, eos.eos(trailers), tap);
    }

    fn fail(self, err: &BoxError) {
        record(&self.series, Outcome::failed(&**err), self.tap);
    }
}

fn record(series: &StatusSeries, outcome: Outcome, tap: Option<Box<Capture>>) {
    series.respond(outcome);
    if let Some(tap) = tap {
        outcome.tap(tap);
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    /// A body whose outcome is recorded when it ends.
    pub(super) fn pending(inner: B, pending: Pending) -> Self {
        Self {
            inner,
            pending: Some(pending),
        }
    }

    /// A body whose outcome was already recorded (it was empty).
    pub(super) fn recorded(inner: B) -> Self {
        Self {
            inner,
            pending: None,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx)).map(|f| f.map_err(Into::into));
        let ended = match &frame {
            Some(Ok(f)) => f.is_trailers() || this.inner.is_end_stream(),
            // An error, or the end.
            _ => true,
        };
        if ended && let Some(p) = this.pending.take() {
            match &frame {
                Some(Err(e)) => p.fail(e),
                Some(Ok(f)) => p.end(f.trailers_ref()),
                None => p.end(None),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}
