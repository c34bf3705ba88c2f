//! The listener `rnnkit serve` accepts on: TCP connections that must deliver their first
//! request's header block (through the blank line, `\r\n\r\n`) within a deadline of being
//! accepted, or are answered `408 {"error": …}` and closed.
//!
//! ```text
//! accept → HeaderDeadline { stream, deadline = now + timeout }
//! poll_read: bytes read are scanned for "\r\n\r\n" (across reads: the last 3 bytes kept);
//!            once found, the deadline is off and reads pass straight through;
//!            past the deadline without it: write the 408 (best effort), fail the read
//! ```
//!
//! A client that opens connections and sends nothing, or dribbles a header a byte at a time
//! (slowloris), would otherwise hold each connection for ever: hyper has a header read timeout,
//! but `axum::serve` sets it no timer, which leaves it off, and on expiry hyper closes without
//! an answer. The deadline covers the first request of a connection; a request's body has
//! `--timeout` of its own (408 from the body reader). Later requests on a kept-alive connection
//! are not timed here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A [`TcpListener`] whose connections carry a [`HeaderDeadline`].
pub(super) struct DeadlineListener {
    pub(super) inner: TcpListener,
    pub(super) timeout: Duration,
}

impl axum::serve::Listener for DeadlineListener {
    type Io = HeaderDeadline;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => return (HeaderDeadline::new(stream, self.timeout), addr),
                // A connection that failed before it was accepted concerns no one else.
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors and the like: wait for some to close.
                Err(e) => {
                    eprintln!("accept error: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection whose first header block must arrive before a deadline.
pub(super) struct HeaderDeadline {
    stream: TcpStream,
    /// Until the header block is complete: the deadline, the seconds it allowed, and the last
    /// (up to 3) bytes read, to find `\r\n\r\n` split across reads.
    waiting: Option<Waiting>,
}

struct Waiting {
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    tail: Vec<u8>,
}

impl HeaderDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self {
            stream,
            waiting: Some(Waiting {
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
                tail: Vec::with_capacity(3),
            }),
        }
    }
}

/// Whether `new`, read after `tail` (the previous reads' last bytes), completes a header
/// block; updates `tail`.
fn ends_header(tail: &mut Vec<u8>, new: &[u8]) -> bool {
    let mut window = std::mem::take(tail);
    window.extend_from_slice(new);
    let found = window.windows(4).any(|w| w == b"\r\n\r\n");
    let keep = window.len().saturating_sub(3);
    *tail = window.split_off(keep);
    found
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let Some(w) = &mut this.waiting else {
            return read;
        };
        if let Poll::Ready(Ok(())) = &read {
            if ends_header(&mut w.tail, &buf.filled()[before..]) {
                this.waiting = None;
                return read;
            }
        }
        // Polled on every call (not only when the read is pending), so that a client sending
        // a byte at a time cannot keep the deadline from firing; registers the wake-up.
        if w.deadline.as_mut().poll(cx).is_pending() {
            return read;
        }
        let body = serde_json::json!({"error": format!(
            "the request's header did not arrive within {} s of connecting (--timeout)",
            w.timeout.as_secs_f64()
        )})
        .to_string();
        let response = format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        // Best effort: nothing else has been written to this connection yet, so a short
        // answer fits in the socket's send buffer; hyper then sees the read fail and closes.
        let _ = this.stream.try_write(response.as_bytes());
        this.waiting = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request header deadline passed",
        )))
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::ends_header;

    #[test]
    fn the_blank_line_is_found_across_reads() {
        let mut tail = Vec::new();
        assert!(!ends_header(&mut tail, b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!ends_header(&mut tail, b"\n"));
        assert!(!ends_header(&mut tail, b"\r"));
        assert!(ends_header(&mut tail, b"\n"));
        let mut tail = Vec::new();
        assert!(ends_header(&mut tail, b"GET / HTTP/1.1\r\n\r\n"));
        let mut tail = Vec::new();
        assert!(!ends_header(&mut tail, b"\r\n\r"));
        assert!(!ends_header(&mut tail, b""));
        assert!(ends_header(&mut tail, b"\n"));
    }
}
