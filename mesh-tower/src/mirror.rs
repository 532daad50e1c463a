//! Mirrored requests (Gateway API `RequestMirror`): fire-and-forget copies of a request to
//! another backend, through the same split and balance path as the original.
//!
//! A copy never delays or fails the original. The original's body streams through untouched
//! while a copy of its chunks is kept (a tee); the copy is sent once the original body has
//! ended, so nothing waits for the mirror. What is bounded, and counted in
//! [`MIRROR_TOTAL`]`{result}`:
//! - `dropped`: more than [`MirrorConfig::max_in_flight`] copies in flight;
//! - `skipped`: the body grew past [`MirrorConfig::body_limit`], or the original body never
//!   ended (the backend answered without reading it, or it failed);
//! - `failed`: the copy got no answer (no endpoint, connect failure, or
//!   [`MirrorConfig::timeout`]);
//! - `sent`: the copy was answered (any status; answers are discarded).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Label};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tower::ServiceExt;
use tower_service::Service;

use crate::BoxError;
use crate::body::ReplayBody;
use crate::dispatch::Dispatch;
use crate::metrics::Registry;
use crate::route::RouteTarget;

/// The counter of mirrored copies, labelled `result` (`sent`, `dropped`, `skipped`, `failed`).
pub const MIRROR_TOTAL: &str = "outbound_http_mirror_total";

/// Bounds on mirroring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Copies in flight (waiting for the original body, or sent and unanswered) at most;
    /// more are dropped.
    pub max_in_flight: usize,
    /// The largest body copied; requests with larger bodies are not mirrored.
    pub body_limit: usize,
    /// How long a copy may wait for its answer before it counts as failed and frees its slot.
    pub timeout: Duration,
}

/// What became of a mirrored copy: the `result` label of [`MIRROR_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorResult {
    /// Sent and answered.
    Sent,
    /// Not sent: too many copies in flight.
    Dropped,
    /// Not sent: the body could not be copied.
    Skipped,
    /// Sent, not answered.
    Failed,
}

pin_project! {
    /// The request body below the filter layer: the client's, streamed through (and copied
    /// for mirrors when some are waiting for it), or a mirror's copy.
    pub struct FilterBody<B> {
        #[pin]
        inner: ReplayBody<B>,
        tee: Option<Tee>,
    }
}

/// A buffered copy of a body.
#[derive(Clone, Debug, Default)]
struct Copied {
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

/// Keeps the chunks of a body streaming through, up to a limit, and hands them over at its
/// end. Dropped (so its receiver sees the sender gone) when the body cannot be copied.
#[derive(Debug)]
struct Tee {
    copied: Copied,
    len: usize,
    limit: usize,
    done: oneshot::Sender<Copied>,
}

/// Sends copies; shared by every clone of a filter layer.
#[derive(Debug)]
pub(crate) struct Mirrors {
    config: MirrorConfig,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct Counters {
    sent: Counter,
    dropped: Counter,
    skipped: Counter,
    failed: Counter,
}

// === impl MirrorConfig ===

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            body_limit: 64 * 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

// === impl MirrorResult ===

impl MirrorResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Dropped => "dropped",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

// === impl Counters ===

impl Counters {
    fn new(registry: &Registry) -> Self {
        registry.describe(
            MIRROR_TOTAL,
            "Total count of mirrored HTTP requests, by result.",
        );
        let c = |r: MirrorResult| {
            registry.counter(MIRROR_TOTAL, vec![Label::new("result", r.as_str())])
        };
        Self {
            sent: c(MirrorResult::Sent),
            dropped: c(MirrorResult::Dropped),
            skipped: c(MirrorResult::Skipped),
            failed: c(MirrorResult::Failed),
        }
    }

    fn count(&self, r: MirrorResult) {
        match r {
            MirrorResult::Sent => &self.sent,
            MirrorResult::Dropped => &self.dropped,
            MirrorResult::Skipped => &self.skipped,
            MirrorResult::Failed => &self.failed,
        }
        .increment(1);
    }
}

// === impl Mirrors ===

impl Mirrors {
    pub(crate) fn new(registry: &Registry, config: MirrorConfig) -> Self {
        Self {
            config,
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            counters: Arc::new(Counters::new(registry)),
        }
    }

    /// Starts a copy of `req` to each of `targets` through `svc`, and returns the request to
    /// forward. The copies wait (in a task of their own) for the original body to end.
    pub(crate) fn start<S, B>(
        &self,
        svc: &S,
        req: Request<B>,
        targets: Vec<RouteTarget>,
    ) -> Request<FilterBody<B>>
    where
        S: Service<Request<FilterBody<B>>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
    {
        let (parts, body) = req.into_parts();
        let admitted: Vec<(RouteTarget, OwnedSemaphorePermit)> = targets
            .into_iter()
            .filter_map(|t| match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => Some((t, p)),
                Err(_) => {
                    self.counters.count(MirrorResult::Dropped);
                    None
                }
            })
            .collect();
        if admitted.is_empty() {
            return Request::from_parts(parts, FilterBody::new(body));
        }
        let (tx, rx) = oneshot::channel();
        let body = FilterBody::teed(body, self.config.body_limit, tx);
        let mut copy_parts = parts.clone();
        // A copy is not the request: it must not count as the request being sent.
        if let Some(d) = copy_parts.extensions.get_mut::<Dispatch>() {
            d.sent = None;
        }
        let counters = Arc::clone(&self.counters);
        let timeout = self.config.timeout;
        let svc = svc.clone();
        tokio::spawn(async move {
            let Ok(copied) = rx.await else {
                for _ in &admitted {
                    counters.count(MirrorResult::Skipped);
                }
                return;
            };
            for (target, permit) in admitted {
                let mut parts = copy_parts.clone();
                Dispatch::get_mut(&mut parts.extensions).target = Some(target);
                let req = Request::from_parts(parts, FilterBody::copy(&copied));
                let (svc, counters) = (svc.clone(), Arc::clone(&counters));
                tokio::spawn(async move {
                    let answered = tokio::time::timeout(timeout, svc.oneshot(req)).await;
                    // The answer is dropped unread: a mirror's answer goes nowhere.
                    let result = match answered {
                        Ok(Ok(_)) => MirrorResult::Sent,
                        Ok(Err(_)) | Err(_) => MirrorResult::Failed,
                    };
                    counters.count(result);
                    drop(permit);
                });
            }
        });
        Request::from_parts(parts, body)
    }
}

// === impl FilterBody ===

impl<B> FilterBody<B> {
    /// The client's body, streamed through.
    pub fn new(body: B) -> Self {
        Self {
            inner: ReplayBody::stream(body),
            tee: None,
        }
    }

    fn copy(copied: &Copied) -> Self {
        Self {
            inner: ReplayBody::Buffered {
                data: copied.data.clone(),
                trailers: copied.trailers.clone(),
            },
            tee: None,
        }
    }
}

impl<B: Body> FilterBody<B> {
    fn teed(body: B, limit: usize, done: oneshot::Sender<Copied>) -> Self {
        let tee = Tee {
            copied: Copied::default(),
            len: 0,
            limit,
            done,
        };
        if body.is_end_stream() {
            // Nothing to read (a GET): the copy can go now.
            tee.finish(None);
            return Self::new(body);
        }
        let too_large = body.size_hint().lower() > limit as u64;
        Self {
            inner: ReplayBody::stream(body),
            tee: (!too_large).then_some(tee),
        }
    }
}

impl<B> Body for FilterBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(tee) = this.tee.take() {
            *this.tee = match &frame {
                Some(Ok(f)) => match (f.data_ref(), f.trailers_ref()) {
                    (Some(d), _) => tee.data(d),
                    (None, Some(t)) => tee.finish(Some(t.clone())),
                    (None, None) => Some(tee),
                },
                None => tee.finish(None),
                // A failed body is not copied; the tee is dropped.
                Some(Err(_)) => None,
            };
        }
        // A body of known length may not be polled again after its last chunk.
        if this.inner.is_end_stream()
            && let Some(tee) = this.tee.take()
        {
            tee.finish(None);
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

// === impl Tee ===

impl Tee {
    /// Keeps `chunk`; `None` (the tee dropped) once the limit is passed.
    fn data(mut self, chunk: &Bytes) -> Option<Self> {
        self.len += chunk.len();
        if self.len > self.limit {
            return None;
        }
        self.copied.data.push_back(chunk.clone());
        Some(self)
    }

    /// Hands the copy over; always `None`, for the caller's slot.
    fn finish(mut self, trailers: Option<HeaderMap>) -> Option<Self> {
        self.copied.trailers = trailers;
        // The receiver is gone only if the mirror task was, at shutdown.
        let _ = self.done.send(self.copied);
        None
    }
}
