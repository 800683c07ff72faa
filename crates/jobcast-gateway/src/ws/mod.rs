//! A server-side WebSocket over any upgraded stream (plain TCP or TLS), built so that an idle
//! connection holds no buffers.
//!
//! Reads go into one buffer per thread, as uWebSockets does, not one per connection: a read
//! decodes every whole frame in it at once, and only the start of a frame still arriving is
//! copied into the connection's own `carry` (freed once the frame completes). Writes are
//! encoded into a per-connection buffer that exists only until it is flushed. Both halves are
//! cancel-safe: a read either takes bytes and decodes them in the same poll or takes nothing,
//! and a flush remembers how much it wrote.
//!
//! Chosen over `tokio-websockets` on the server for memory: it keeps an 8 KiB read buffer per
//! connection for the connection's life (docs/decisions.md, docs/benchmarks.md).

pub mod codec;

use codec::{Decoder, Incoming, Violation, op};
use std::{
    cell::RefCell,
    collections::VecDeque,
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of each thread's read buffer.
const READ_BUF: usize = 64 * 1024;

thread_local! {
    static READ: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF].into_boxed_slice());
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The client broke the protocol: close with this code.
    Violation(Violation),
    /// The socket failed.
    Io(io::Error),
}

/// One upgraded connection, server side.
pub struct WsStream<S> {
    io: S,
    decoder: Decoder,
    /// The start of a frame that has not fully arrived (empty, unallocated, between frames).
    carry: Vec<u8>,
    /// Encoded frames not yet written, and how much of them was written.
    out: Vec<u8>,
    written: usize,
    /// Whether `out` holds a frame that must not wait: anything but a text message queued as
    /// one that may (see [`feed_text`](Self::feed_text)).
    urgent: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Wraps an upgraded stream; messages over `max_message` bytes close it with 1009.
    pub fn new(io: S, max_message: usize) -> Self {
        Self {
            io,
            decoder: Decoder::new(max_message),
            carry: Vec::new(),
            out: Vec::new(),
            written: 0,
            urgent: false,
        }
    }

    /// Waits for bytes, then decodes every whole message they complete into `into`. Returns
    /// `Ok(false)` at end of stream. Pongs and close replies are queued for the next
    /// [`flush`](Self::flush); [`wants_flush`](Self::wants_flush) says so.
    pub async fn read(&mut self, into: &mut VecDeque<Incoming>) -> Result<bool, ReadError> {
        poll_fn(|cx| self.poll_read(cx, into)).await
    }

    /// [`read`](Self::read) as a poll: bytes are taken and decoded in the same call, or none
    /// are taken.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Incoming>,
    ) -> Poll<Result<bool, ReadError>> {
        READ.with_borrow_mut(|buf| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(ReadError::Io(e))),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Ok(false)),
                Poll::Ready(Ok(())) => Poll::Ready(self.take(rb.filled(), into).map(|()| true)),
            }
        })
    }

    /// Decodes freshly read bytes, carrying an unfinished frame over to the next read.
    fn take(&mut self, fresh: &[u8], into: &mut VecDeque<Incoming>) -> Result<(), ReadError> {
        let queued = self.out.len();
        let decoded = self.decode(fresh, into);
        // A reply (pong, close) answers the peer: it must not wait.
        self.urgent |= self.out.len() > queued;
        decoded
    }

    fn decode(&mut self, fresh: &[u8], into: &mut VecDeque<Incoming>) -> Result<(), ReadError> {
        let replies = &mut self.out;
        if self.carry.is_empty() {
            let used = self
                .decoder
                .decode(fresh, into, replies)
                .map_err(ReadError::Violation)?;
            self.carry.extend_from_slice(&fresh[used..]);
        } else {
            self.carry.extend_from_slice(fresh);
            let used = self
                .decoder
                .decode(&self.carry, into, replies)
                .map_err(ReadError::Violation)?;
            if used == self.carry.len() {
                self.carry = Vec::new();
            } else {
                self.carry.drain(..used);
            }
        }
        Ok(())
    }

    /// Makes room for `frames` more frames carrying `payload` bytes in all, so that queuing
    /// many frames grows the buffer once, not once per doubling.
    pub fn reserve(&mut self, frames: usize, payload: usize) {
        self.out.reserve(payload + frames * codec::MAX_HEADER);
    }

    /// Queues a text message; `urgent` false when it may wait for a later write (a topic
    /// message the session holds back).
    pub fn feed_text(&mut self, text: &[u8], urgent: bool) {
        codec::encode(op::TEXT, text, &mut self.out);
        self.urgent |= urgent;
    }

    /// Queues a ping.
    pub fn feed_ping(&mut self) {
        codec::encode(op::PING, &[], &mut self.out);
        self.urgent = true;
    }

    /// Queues a close frame.
    pub fn feed_close(&mut self, code: u16, reason: &str) {
        codec::encode_close(code, reason, &mut self.out);
        self.urgent = true;
    }

    /// Whether anything queued must not wait: a frame other than a text message queued as one
    /// that may, including the replies reading queued.
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// Whether frames are queued (for example a pong answering a ping just read) and not yet
    /// written and flushed.
    pub fn wants_flush(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes everything queued, then frees the buffer.
    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// [`flush`](Self::flush) as a poll; it remembers how much was written.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Everything is written, but a TLS stream may hold some of it until it is flushed: the
        // buffer stays until then, so `wants_flush` keeps saying so.
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.out = Vec::new();
                self.written = 0;
                self.urgent = false;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn client_text(text: &str) -> Vec<u8> {
        codec::client_frame(0x81, text.as_bytes(), [9, 8, 7, 6])
    }

    #[tokio::test]
    async fn frames_split_across_reads_and_many_per_read() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut ws = WsStream::new(server, 1 << 20);
        let big = "y".repeat(1000);
        let mut bytes = client_text(&big);
        bytes.extend(client_text("a"));
        bytes.extend(client_text("b"));
        let writer = tokio::spawn(async move {
            // Tiny writes: every frame arrives in pieces, and pieces hold several frames.
            for chunk in bytes.chunks(7) {
                client.write_all(chunk).await.unwrap();
            }
            client
        });
        let mut got = VecDeque::new();
        while got.len() < 3 {
            assert!(ws.read(&mut got).await.unwrap());
        }
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![
                Incoming::Text(big),
                Incoming::Text("a".into()),
                Incoming::Text("b".into())
            ]
        );
        assert!(ws.carry.is_empty() && ws.carry.capacity() == 0);
        let mut client = writer.await.unwrap();
        // Writing: queued frames go out in one flush and the buffer is freed.
        ws.feed_text(b"hi", false);
        assert!(ws.wants_flush() && !ws.urgent());
        ws.feed_ping();
        assert!(ws.urgent());
        ws.flush().await.unwrap();
        assert_eq!(ws.out.capacity(), 0);
        let mut back = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut back)
            .await
            .unwrap();
        assert_eq!(back, [0x81, 2, b'h', b'i', 0x89, 0]);
        drop(client);
        assert!(!ws.read(&mut VecDeque::new()).await.unwrap());
    }
}
