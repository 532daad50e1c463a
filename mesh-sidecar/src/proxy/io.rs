//! Connection-level pieces: byte counting for `tcp_*` metrics, one I/O type for the
//! streams a listener may end up with, and the opaque splice that shutdown can cut short.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mesh_core::Identity;
use mesh_tower::metrics::Registry;
use metrics::{Counter, Gauge, Label};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Any stream a proxied connection runs over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed stream.
pub(crate) type BoxIo = Box<dyn Io>;

/// Linkerd's `tcp_*` metrics for one connection: opened when made, closed when dropped.
pub(crate) struct ConnMetrics {
    read: Counter,
    write: Counter,
    close: Counter,
    open: Gauge,
}

/// Counts the bytes that pass through `io`.
pub(crate) struct Counted<T> {
    io: T,
    metrics: ConnMetrics,
}

impl ConnMetrics {
    /// Counts a new connection.
    pub(crate) fn open(registry: &Registry, direction: &'static str, tls: bool) -> Self {
        let tls = if tls { "true" } else { "no_identity" };
        Self::with_labels(
            registry,
            vec![
                Label::new("direction", direction),
                Label::new("peer", "src"),
                Label::new("tls", tls),
            ],
        )
    }

    /// Counts a connection the inbound listener accepted, labelled with the client's verified
    /// identity in DNS form as Linkerd does (`client_id`, with `tls="true"`).
    pub(crate) fn accepted(
        registry: &Registry,
        client: Option<&Identity>,
        control_namespace: &str,
    ) -> Self {
        let mut labels = vec![
            Label::new("direction", "inbound"),
            Label::new("peer", "src"),
        ];
        match client {
            Some(id) => {
                labels.push(Label::new("tls", "true"));
                labels.push(Label::new("client_id", id.to_dns(control_namespace)));
            }
            None => labels.push(Label::new("tls", "no_identity")),
        }
        Self::with_labels(registry, labels)
    }

    fn with_labels(registry: &Registry, labels: Vec<Label>) -> Self {
        registry
            .counter("tcp_open_total", labels.clone())
            .increment(1);
        let open = registry.gauge("tcp_open_connections", labels.clone());
        open.increment(1.0);
        Self {
            read: registry.counter("tcp_read_bytes_total", labels.clone()),
            write: registry.counter("tcp_write_bytes_total", labels.clone()),
            close: registry.counter("tcp_close_total", labels),
            open,
        }
    }
}

impl Drop for ConnMetrics {
    fn drop(&mut self) {
        self.close.increment(1);
        self.open.decrement(1.0);
    }
}

impl<T> Counted<T> {
    pub(crate) fn new(io: T, metrics: ConnMetrics) -> Self {
        Self { io, metrics }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.metrics.read.increment(n as u64);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.metrics.write.increment(*n as u64);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &res {
            self.metrics.write.increment(*n as u64);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How long an opaque connection must have moved no bytes to count as idle when shutdown
/// begins. Short, so silent connections do not hold the drain; long enough that a brief
/// pause in a live exchange is not taken for idleness.
const OPAQUE_QUIET: Duration = Duration::from_secs(1);

/// Copies bytes both ways between `client` and `server` until either side ends. Once
/// `shutdown` begins, the connection is closed as soon as it has been quiet for
/// [`OPAQUE_QUIET`]; an active one goes on until then or until the drain's grace ends.
pub(crate) async fn splice<A, B>(
    client: &mut A,
    server: &mut B,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    // Every byte in either direction is read from or written to the client side.
    let mut client = Active {
        io: client,
        start,
        last: &last,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, server);
    tokio::pin!(copy);
    tokio::select! {
        r = &mut copy => return r.map(drop),
        () = super::stopped(&mut shutdown) => {}
    }
    loop {
        let moved = Duration::from_millis(last.load(Ordering::Relaxed));
        let quiet = start.elapsed().saturating_sub(moved);
        if quiet >= OPAQUE_QUIET {
            tracing::debug!("closing an idle opaque connection for shutdown");
            return Ok(());
        }
        tokio::select! {
            r = &mut copy => return r.map(drop),
            () = tokio::time::sleep(OPAQUE_QUIET - quiet) => {}
        }
    }
}

/// Notes when bytes last moved through `io`, in milliseconds since `start`.
struct Active<'a, T: ?Sized> {
    io: &'a mut T,
    start: Instant,
    last: &'a AtomicU64,
}

impl<T: ?Sized> Active<'_, T> {
    fn moved(&self) {
        // Milliseconds since the connection began fit in u64 for any connection's life.
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Active<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut *self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Active<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut *self.io).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}
