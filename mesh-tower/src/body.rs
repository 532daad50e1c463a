//! Bodies the mesh produces: responses that may be the application's or the mesh's own, and
//! request bodies that can be replayed for retries.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// A response body: the inner service's, or one the mesh wrote (an error message).
    #[project = ResponseBodyProj]
    #[allow(missing_docs)] // Variant fields: the variants are documented.
    pub enum ResponseBody<B> {
        /// The inner service's body.
        Inner {
            #[pin]
            body: B,
        },
        /// A body the mesh wrote.
        Full {
            data: Option<Bytes>,
        },
    }
}

pin_project! {
    /// A request body that retries can replay: either fully buffered (small bodies), or streamed
    /// through once (large or unknown bodies, which are then not retried).
    #[project = ReplayBodyProj]
    #[allow(missing_docs)] // Variant fields: the variants are documented.
    pub enum ReplayBody<B> {
        /// Buffered: cheap to clone.
        Buffered {
            data: VecDeque<Bytes>,
            trailers: Option<HeaderMap>,
        },
        /// Streamed: what was read while trying to buffer, then the rest.
        Stream {
            prefix: VecDeque<Bytes>,
            #[pin]
            rest: B,
        },
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        Self::Inner { body }
    }

    /// A body the mesh wrote.
    pub fn full(data: Bytes) -> Self {
        Self::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::Full { data: None }
    }
}

impl<B> Body for ResponseBody<B>
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
        match self.project() {
            ResponseBodyProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

// === impl ReplayBody ===

impl<B> ReplayBody<B> {
    /// An empty, replayable body.
    pub fn empty() -> Self {
        Self::Buffered {
            data: VecDeque::new(),
            trailers: None,
        }
    }

    /// A body that is streamed through once.
    pub fn stream(body: B) -> Self {
        Self::Stream {
            prefix: VecDeque::new(),
            rest: body,
        }
    }

    /// A copy for another attempt, if the body was buffered.
    pub fn try_clone(&self) -> Option<Self> {
        match self {
            Self::Buffered { data, trailers } => Some(Self::Buffered {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            Self::Stream { .. } => None,
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads `body` into memory if it ends within `limit` bytes; otherwise returns a body that
    /// streams what was read followed by the rest, unbuffered.
    pub async fn buffer(mut body: B, limit: usize) -> Result<Self, BoxError> {
        use http_body_util::BodyExt;
        if body.size_hint().lower() > limit as u64 {
            return Ok(Self::stream(body));
        }
        let mut data = VecDeque::new();
        let mut len = 0usize;
        loop {
            if body.is_end_stream() {
                return Ok(Self::Buffered {
                    data,
                    trailers: None,
                });
            }
            match body.frame().await {
                None => {
                    return Ok(Self::Buffered {
                        data,
                        trailers: None,
                    });
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        len += chunk.len();
                        data.push_back(chunk);
                        if len > limit {
                            return Ok(Self::Stream {
                                prefix: data,
                                rest: body,
                            });
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Ok(Self::Buffered {
                                data,
                                trailers: Some(trailers),
                            });
                        }
                    }
                },
            }
        }
    }
}

impl<B> Body for ReplayBody<B>
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
        match self.project() {
            ReplayBodyProj::Buffered { data, trailers } => {
                if let Some(chunk) = data.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            ReplayBodyProj::Stream { prefix, rest } => {
                if let Some(chunk) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                rest.poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Buffered { data, trailers } => data.is_empty() && trailers.is_none(),
            Self::Stream { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Buffered { data, .. } => {
                SizeHint::with_exact(data.iter().map(|d| d.len() as u64).sum())
            }
            Self::Stream { prefix, rest } => {
                let pre: u64 = prefix.iter().map(|d| d.len() as u64).sum();
                let mut h = rest.size_hint();
                h.set_lower(h.lower() + pre);
                if let Some(u) = h.upper() {
                    h.set_upper(u + pre);
                }
                h
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn small_bodies_are_buffered_and_replayable() {
        let b = ReplayBody::buffer(Full::new(Bytes::from_static(b"hello")), 64)
            .await
            .unwrap();
        let copy = b.try_clone().expect("buffered");
        assert_eq!(b.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn large_bodies_stream_through_unchanged() {
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..10)
            .map(|i| Ok(Frame::data(Bytes::from(vec![b'a' + i as u8; 10]))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let b = ReplayBody::buffer(body, 25).await.unwrap();
        assert!(b.try_clone().is_none());
        let all = b.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 100);
        assert_eq!(&all[..10], b"aaaaaaaaaa");
        assert_eq!(&all[90..], b"jjjjjjjjjj");
    }
}
