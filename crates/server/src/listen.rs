//! Accepting connections: the loop `everett serve` runs instead of `axum::serve`, for the
//! limits a public server needs. At most `max_connections` are open at once (further ones wait
//! in the kernel's backlog until one closes); a client has `header_timeout` to send a request's
//! headers, which also closes keep-alive connections left idle that long; HTTP/1.1 and HTTP/2
//! are both served. A request that carries both `Transfer-Encoding` and `Content-Length` (a
//! request-smuggling shape that HTTP/1.1 parsers disagree on) is refused with 400: hyper drops
//! the `Content-Length` before the router could see it, so the connection's bytes are watched
//! for it (`HeaderScan`). On `shutdown` the listener closes at once and open connections finish the
//! request they are on (the caller bounds how long that may take).

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What a connection may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers, and the longest a keep-alive connection stays idle.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then until every open connection
/// has finished its request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            () = &mut shutdown => break,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ambiguous = Arc::new(AtomicBool::new(false));
        let stream = Watched {
            inner: stream,
            scan: HeaderScan::default(),
            ambiguous: ambiguous.clone(),
        };
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let ambiguous = ambiguous.load(Ordering::Acquire);
            async move {
                if ambiguous {
                    return Ok(ambiguous_length());
                }
                app.oneshot(req.map(Body::new)).await
            }
        }));
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The 400 for a request with both `Transfer-Encoding` and `Content-Length`.
fn ambiguous_length() -> Response {
    tracing::warn!("request refused: both Transfer-Encoding and Content-Length");
    crate::error::ApiError::invalid(
        "headers",
        "the request has both Transfer-Encoding and Content-Length; send one of them",
    )
    .into_response()
}

/// Looks at header lines as bytes arrive: a header block (lines up to an empty one) naming both
/// `transfer-encoding` and `content-length` marks the connection. Bodies are scanned too, which
/// is harmless: a JSON body has no raw line breaks inside strings, so no line of it starts with
/// a header name.
#[derive(Default)]
struct HeaderScan {
    /// The start of the current line, lower-cased (enough to recognise the two names).
    line: Vec<u8>,
    transfer_encoding: bool,
    content_length: bool,
}

impl HeaderScan {
    const KEEP: usize = 20;

    /// Scans `bytes`; true once a block had both headers.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut found = false;
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < Self::KEEP {
                    self.line.push(b.to_ascii_lowercase());
                }
                continue;
            }
            let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
            if line.is_empty() {
                found |= self.transfer_encoding && self.content_length;
                self.transfer_encoding = false;
                self.content_length = false;
            } else if line.starts_with(b"transfer-encoding:") {
                self.transfer_encoding = true;
            } else if line.starts_with(b"content-length:") {
                self.content_length = true;
            }
            self.line.clear();
        }
        found
    }
}

/// A connection whose incoming bytes pass through a `HeaderScan`.
struct Watched {
    inner: TcpStream,
    scan: HeaderScan,
    ambiguous: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if self.scan.feed(&buf.filled()[before..]) {
                self.ambiguous.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderScan;

    #[test]
    fn a_header_block_with_both_lengths_is_found_across_reads() {
        let mut s = HeaderScan::default();
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Enc";
        assert!(!s.feed(req));
        assert!(s.feed(b"oding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
        let mut s = HeaderScan::default();
        let one = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let other = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(
            !s.feed(one) && !s.feed(other),
            "two requests, one header each"
        );
    }
}
