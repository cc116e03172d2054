//! The writer half of a WebSocket.
//!
//! Metrics frames usually never come here: the hub's fan-out writes them
//! straight to the socket (see `hub::mailbox`). The writer puts on the
//! wire everything that was queued instead: the session's replies
//! ([`Control`]), log and alert frames, metrics frames that found the way
//! blocked, and the rest of a frame the fan-out could write only part of.
//! It takes everything queued at once, frames it into one buffer and
//! writes that with as few `write(2)`s as the socket allows; it never
//! waits on the socket while holding the mailbox, and the mailbox keeps
//! the fan-out off the socket while a batch is on its way.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

use super::deflate;
use crate::app::AppState;
use crate::hub::{Control, Mailbox, Outgoing, Take};
use crate::protocol::{close, Frame};
use crate::time::now_micros;

/// Batches one poll of the writer writes at most.
const BATCHES_PER_POLL: usize = 16;

/// How the writer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// It wrote this close frame (the session's, or 4008 after `lagged`).
    Closed(u16, String),
    /// Closed and empty, or aborted: no close frame.
    Dropped,
    /// The socket failed.
    Lost,
}

pub struct Outbound {
    state: Arc<AppState>,
    mailbox: Arc<Mailbox>,
    codec: Codec,
    batch: Outgoing,
    /// Framed bytes not yet on the wire.
    pending: Bytes,
    /// The close frame inside `pending`: once it is written, the writer
    /// is done.
    closing: Option<(u16, String)>,
    /// The connection negotiated permessage-deflate: text frames from
    /// the size up go out compressed (each frame's shared compressed form).
    deflate: bool,
}

impl Outbound {
    pub fn new(state: Arc<AppState>, mailbox: Arc<Mailbox>, deflate: bool) -> Outbound {
        Outbound {
            state,
            mailbox,
            codec: Codec::new(),
            batch: Outgoing::default(),
            pending: Bytes::new(),
            closing: None,
            deflate,
        }
    }

    /// Writes until the writer is done; cancel-safe (the state is here).
    pub async fn run(&mut self, io: &TcpStream) -> Ended {
        poll_fn(|cx| self.poll_write(cx, io)).await
    }

    /// Writes what is queued; Pending when everything is written (parked
    /// on the mailbox) or the socket is full (parked on writability).
    fn poll_write(&mut self, cx: &mut Context<'_>, io: &TcpStream) -> Poll<Ended> {
        // Writes to a fast socket never block, and a flood of log frames
        // would keep this loop going: after a few batches, let the other
        // connections of this worker run.
        let mut batches = 0;
        loop {
            while !self.pending.is_empty() {
                match io.try_write(&self.pending) {
                    Ok(n) => self.pending.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match io.poll_write_ready(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(())) => {}
                            Poll::Ready(Err(_)) => return Poll::Ready(self.end(Ended::Lost)),
                        }
                    }
                    Err(_) => return Poll::Ready(self.end(Ended::Lost)),
                }
            }
            // All written: let the batch's buffer go (an advanced `Bytes`
            // still holds it), so an idle connection keeps none.
            self.pending = Bytes::new();
            if let Some((code, reason)) = self.closing.take() {
                return Poll::Ready(self.end(Ended::Closed(code, reason)));
            }
            if batches == BATCHES_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            batches += 1;
            match self.mailbox.poll_take(cx, &mut self.batch) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Take::Finished | Take::Aborted) => {
                    return Poll::Ready(self.end(Ended::Dropped))
                }
                Poll::Ready(Take::Ready) => self.pending = self.frame_batch(),
            }
        }
    }

    fn end(&mut self, how: Ended) -> Ended {
        let close = match &how {
            Ended::Closed(code, reason) => Some((*code, reason.clone())),
            _ => None,
        };
        self.mailbox.mark_ended(close);
        how
    }

    fn encode(&mut self, msg: Message, buf: &mut BytesMut) {
        // Encoding into a BytesMut cannot fail for server frames.
        let _ = self.codec.encode(msg, buf);
    }

    /// A text frame, compressed when the connection negotiated deflate
    /// and the frame is big enough (compressed once per frame, whichever
    /// connection needs it first).
    fn text(&mut self, f: Frame, buf: &mut BytesMut) {
        match self.deflate.then(|| deflate::deflated(&f)).flatten() {
            Some(bytes) => buf.extend_from_slice(bytes),
            None => self.encode(Message::Text(f.text().clone()), buf),
        }
    }

    /// Frames everything taken into one buffer. A close ends the batch:
    /// nothing is written after it.
    fn frame_batch(&mut self) -> Bytes {
        let size: usize = self
            .batch
            .control
            .iter()
            .map(|c| match c {
                Control::Text(f) => f.len() + 10,
                Control::Ping(b) | Control::Pong(b) => b.len() + 2,
                Control::Close(_, r) => r.len() + 4,
            })
            .chain(self.batch.data.iter().map(|d| d.frame.len() + 10))
            .sum::<usize>()
            + self.batch.owed.as_ref().map_or(0, |b| b.len());
        let mut buf = BytesMut::with_capacity(size + 128);
        if let Some(owed) = self.batch.owed.take() {
            buf.extend_from_slice(&owed);
        }
        let mut frames = 0u64;
        let control = std::mem::take(&mut self.batch.control);
        for c in control {
            frames += 1;
            match c {
                Control::Text(f) => self.text(f, &mut buf),
                Control::Ping(b) => self.encode(Message::Ping(b), &mut buf),
                Control::Pong(b) => self.encode(Message::Pong(b), &mut buf),
                Control::Close(code, reason) => {
                    self.write_close(code, reason, &mut buf);
                    self.batch.data.clear();
                    self.batch.lagged = None;
                    self.mailbox.count_sent(frames);
                    return buf.freeze();
                }
            }
        }
        let m = self.state.metrics.clone();
        if !self.batch.data.is_empty() {
            // One clock read per batch: a batch is framed in microseconds.
            let now = now_micros();
            let n = self.batch.data.len() as u64;
            let data = std::mem::take(&mut self.batch.data);
            for d in &data {
                crate::session::delivered(&self.state, d, now);
            }
            for d in data {
                self.text(d.frame, &mut buf);
            }
            frames += n;
            m.data_frames_out.inc_by(n);
        }
        if let Some(l) = self.batch.lagged.take() {
            let frame = crate::session::lagged_frame(&self.state, &l);
            self.text(frame, &mut buf);
            let reason = format!("slow consumer: {} queue overflowed", l.stream);
            self.write_close(close::SLOW_CONSUMER, reason, &mut buf);
            frames += 2;
        }
        self.mailbox.count_sent(frames);
        buf.freeze()
    }

    fn write_close(&mut self, code: u16, reason: String, buf: &mut BytesMut) {
        let description = (!reason.is_empty()).then(|| reason.clone());
        let close = CloseReason {
            code: CloseCode::from(code),
            description,
        };
        self.encode(Message::Close(Some(close)), buf);
        self.closing = Some((code, reason));
    }
}
