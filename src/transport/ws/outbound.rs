//! The WebSocket response body: the writer half of a connection.
//!
//! actix-web writes a response body by polling it. This body polls the
//! session's [`Mailbox`] directly: a frame queued by the hub wakes the
//! connection's HTTP dispatcher, which takes everything queued, frames it
//! (one buffer, one write for the whole batch) and writes it. The
//! session's own task is not involved in fan-out at all: it handles what
//! the client sends and queues replies as [`Control`] frames. Compared with
//! a channel between the two tasks, a frame costs one task wake instead of
//! two, and an idle connection holds no channel.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use actix_web::body::{BodySize, MessageBody};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;

use crate::app::AppState;
use crate::hub::{Control, Mailbox, Outgoing, Take};
use crate::protocol::{to_frame, Reply};
use crate::time::now_micros;

use super::close;

pub struct Outbound {
    state: Arc<AppState>,
    mailbox: Arc<Mailbox>,
    codec: Codec,
    batch: Outgoing,
    /// A close frame went out: the body ends at the next poll.
    closed: bool,
}

impl Outbound {
    pub fn new(state: Arc<AppState>, mailbox: Arc<Mailbox>) -> Outbound {
        Outbound {
            state,
            mailbox,
            codec: Codec::new(),
            batch: Outgoing::default(),
            closed: false,
        }
    }

    fn encode(&mut self, msg: Message, buf: &mut BytesMut) {
        // Encoding into a BytesMut cannot fail for server frames.
        let _ = self.codec.encode(msg, buf);
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
            .sum();
        let mut buf = BytesMut::with_capacity(size + 128);
        let mut frames = 0u64;
        let control = std::mem::take(&mut self.batch.control);
        for c in control {
            frames += 1;
            match c {
                Control::Text(f) => self.encode(Message::Text(f), &mut buf),
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
                m.delivery_lag[d.stream as usize].observe((now - d.ts).max(0) as f64 / 1e6);
            }
            for d in data {
                self.encode(Message::Text(d.frame), &mut buf);
            }
            frames += n;
            m.data_frames_out.inc_by(n);
        }
        if let Some(l) = self.batch.lagged.take() {
            let frame = to_frame(&Reply::Lagged {
                team: self.state.hub.team_name(l.team),
                stream: l.stream,
                last_seq: l.last_seq,
            });
            self.encode(Message::Text(frame), &mut buf);
            let reason = format!("slow consumer: {} queue overflowed", l.stream);
            self.write_close(close::SLOW_CONSUMER, reason, &mut buf);
            frames += 2;
        }
        self.mailbox.count_sent(frames);
        buf.freeze()
    }

    fn write_close(&mut self, code: u16, reason: String, buf: &mut BytesMut) {
        self.mailbox.mark_ended(Some((code, reason.clone())));
        let description = (!reason.is_empty()).then_some(reason);
        let reason = CloseReason {
            code: CloseCode::from(code),
            description,
        };
        self.encode(Message::Close(Some(reason)), buf);
        self.closed = true;
    }
}

impl MessageBody for Outbound {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(None);
        }
        match this.mailbox.poll_take(cx, &mut this.batch) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Take::Finished) => {
                this.mailbox.mark_ended(None);
                Poll::Ready(None)
            }
            // Ending the body ends an upgraded connection. (An error would
            // do the same, but actix logs every body error at ERROR.)
            Poll::Ready(Take::Aborted) => {
                this.mailbox.mark_ended(None);
                Poll::Ready(None)
            }
            Poll::Ready(Take::Ready) => Poll::Ready(Some(Ok(this.frame_batch()))),
        }
    }
}

impl Drop for Outbound {
    /// The dispatcher drops the body when the connection ends, however it
    /// ends: the session learns it here.
    fn drop(&mut self) {
        self.mailbox.mark_ended(None);
    }
}
