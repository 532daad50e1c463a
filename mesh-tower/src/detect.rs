//! Protocol detection on accepted connections, and an I/O wrapper that replays the bytes
//! read to decide.
//!
//! [`classify`] is pure: it looks at what has arrived and either decides or asks for more.
//! Its contract, which [`detect`] relies on to stop reading at the first answer, is that a
//! decision is final: once some prefix of a stream is classified, every longer prefix is
//! classified the same (the `detect_classify` fuzz target checks this).
//!
//! # Examples
//!
//! ```
//! use mesh_tower::detect::{Protocol, classify};
//!
//! assert_eq!(classify(b"GET / HT"), None);
//! assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
//! assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Opaque));
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// Anything else: proxied byte for byte.
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What follows the request target of an HTTP/1 request line.
const H1_VERSION: &[u8] = b"HTTP/1.";
/// Detection reads at most this much before calling the bytes opaque: a request line longer
/// than this (hyper's own header limit is larger) is rare, and its connection is then
/// authorized as opaque, never more loosely than its requests.
pub const MAX_DETECT: usize = 16 * 1024;

/// An I/O whose first bytes were read for detection and are replayed before the rest.
#[derive(Debug)]
pub struct Prefixed<T> {
    prefix: BytesMut,
    io: T,
}

/// Classifies what has been read so far: `Some` when the bytes decide, `None` when more are
/// needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    request_line(buf)
}

/// Whether `buf` opens an HTTP/1 request line, `token SP request-target SP "HTTP/1."` (RFC 9112
/// section 3): any token is a method (hyper serves extension methods such as PROPFIND), so
/// detection must not fall back to opaque for a method it does not know.
fn request_line(buf: &[u8]) -> Option<Protocol> {
    let method = buf.iter().take_while(|b| is_tchar(**b)).count();
    let rest = &buf[method..];
    // Undecided until the byte after the method has arrived.
    let (&sp, rest) = rest.split_first()?;
    if method == 0 || sp != b' ' {
        return Some(Protocol::Opaque);
    }
    // The target: anything visible. hyper judges it once the port is HTTP.
    let target = rest
        .iter()
        .take_while(|b| **b > b' ' && **b != 0x7f)
        .count();
    let rest = &rest[target..];
    let (&sp, version) = rest.split_first()?;
    if target == 0 || sp != b' ' {
        return Some(Protocol::Opaque);
    }
    let n = version.len().min(H1_VERSION.len());
    if version[..n] != H1_VERSION[..n] {
        return Some(Protocol::Opaque);
    }
    (n == H1_VERSION.len()).then_some(Protocol::Http1)
}

/// RFC 9110 `tchar`: the characters of a token such as a method.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads until the protocol is known, the peer stops sending, or `timeout` passes (then it is
/// opaque: a server-speaks-first protocol must not stall).
pub async fn detect<T: AsyncRead + Unpin>(
    io: T,
    timeout: Duration,
) -> io::Result<(Protocol, Prefixed<T>)> {
    let (p, io) = read_until(io, timeout, MAX_DETECT, classify).await?;
    Ok((p.unwrap_or(Protocol::Opaque), io))
}

/// Reads `io` into a buffer of at most `max` bytes until `decide` answers, the peer stops
/// sending, or `timeout` passes (`None` then); the bytes read are replayed by the returned
/// stream. Each read waits on the socket's readiness, so a client that sends a byte and
/// falls silent costs one wake-up, not a poll loop.
pub async fn read_until<T, D>(
    mut io: T,
    timeout: Duration,
    max: usize,
    decide: impl Fn(&[u8]) -> Option<D>,
) -> io::Result<(Option<D>, Prefixed<T>)>
where
    T: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(64);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(d) = decide(&buf) {
            return Ok((Some(d), Prefixed { prefix: buf, io }));
        }
        if buf.len() >= max {
            return Ok((None, Prefixed { prefix: buf, io }));
        }
        // Never read past `max`: what is beyond it belongs to whoever reads next.
        let mut limited = (&mut io).take((max - buf.len()) as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => return Ok((None, Prefixed { prefix: buf, io })),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

impl<T> Prefixed<T> {
    /// Wraps `io` with nothing to replay.
    pub fn new(io: T) -> Self {
        Self {
            prefix: BytesMut::new(),
            io,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(&[u8], Option<Protocol>)] = &[
            (b"", None),
            (b"G", None),
            (b"GET / HTTP/1.1\r\n", Some(Protocol::Http1)),
            (b"GET /x HTTP/1.0\r\n", Some(Protocol::Http1)),
            (b"POST ", None),
            (b"POST /api HTTP/1.", Some(Protocol::Http1)),
            // Any token is a method: WebDAV, cache purges, whatever a client makes up.
            (
                b"PROPFIND /admin/secret HTTP/1.1\r\n",
                Some(Protocol::Http1),
            ),
            (b"PURGE /admin/secret HTTP/1.1\r\n", Some(Protocol::Http1)),
            (b"GEX / HTTP/1.1", Some(Protocol::Http1)),
            (b"GEX", None),
            (b"M-SEARCH * HTTP/1.1", Some(Protocol::Http1)),
            (
                b"GET http://a.example/x?y=1 HTTP/1.1",
                Some(Protocol::Http1),
            ),
            (b"PRI * HTTP/2.0\r\n", None),
            (H2_PREFACE, Some(Protocol::Http2)),
            (b"\x16\x03\x01", Some(Protocol::Opaque)),
            (b"*1\r\n$4\r\nPING\r\n", Some(Protocol::Opaque)),
            (b"SSH-2.0-OpenSSH_9.6\r\n", Some(Protocol::Opaque)),
            (b"GET  / HTTP/1.1", Some(Protocol::Opaque)),
            (b"GET / HTTP/2.0", Some(Protocol::Opaque)),
            (b"GET /\r\n", Some(Protocol::Opaque)),
            (b"G\x00", Some(Protocol::Opaque)),
        ];
        for (input, want) in cases {
            assert_eq!(classify(input), *want, "{input:?}");
            // Detection stops at the first decision, so no prefix may decide otherwise.
            for n in 0..input.len() {
                let early = classify(&input[..n]);
                assert!(
                    early.is_none() || early == *want,
                    "{input:?} at {n}: {early:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn silence_is_opaque_after_the_timeout_and_bytes_are_replayed() {
        let (client, server) = tokio::io::duplex(64);
        let (p, _io) = detect(server, Duration::from_millis(20)).await.unwrap();
        assert_eq!(p, Protocol::Opaque);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let (p, mut io) = detect(server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        let mut first = [0u8; 4];
        io.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"GET ");
    }
}
