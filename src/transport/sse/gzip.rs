//! `Content-Encoding: gzip` for SSE streams, with no compressor per stream.
//!
//! A stream's body is **one** gzip member (RFC 1952): the 10-byte header,
//! then a DEFLATE stream (RFC 1951) built event by event out of pieces
//! that each end on a byte boundary, so every event is decodable as soon
//! as it is written:
//!
//! * what only this stream sends (`retry:`, `id:`, `event:`, the `data: `
//!   prefix, the closing blank line, keepalive comments, `welcome`,
//!   `subscribed`, `error`, `lagged`) as **stored** blocks: at a byte
//!   boundary a stored block is the byte `00` (BFINAL 0, BTYPE 00, five
//!   bits of padding), LEN and NLEN (little-endian), then the bytes; at
//!   most 65,535 bytes a block;
//! * a data frame's JSON text as the **same bytes** a WebSocket connection
//!   with permessage-deflate writes (compressed once per frame, without
//!   context, sync-flushed: `transport::ws::deflate`), with the
//!   `00 00 ff ff` that permessage-deflate takes off put back: it is the
//!   rest of the empty stored block a sync flush ends with, so the stream
//!   is back on a byte boundary. A frame that goes plain there (under 512
//!   bytes, or one that did not shrink) goes as a stored block.
//!
//! A compressed piece refers only to its own bytes (it was made without
//! context), which any inflater reading the member as one stream accepts.
//! When the server ends the stream (shutdown, `lagged`, the token's
//! expiry) the member is finished: an empty final block (`03 00`: BFINAL 1,
//! fixed Huffman, end of block) and the trailer, the CRC-32 and the length
//! (mod 2^32) of everything the member inflates to.
//!
//! So a stream keeps [`Member`], 8 bytes: the running CRC-32 and length. A
//! frame's CRC-32 is computed once per frame (cached on the
//! [`Frame`](crate::protocol::Frame), like its compressed form) and folded
//! into each stream's with CRC-32 combination (zlib's `crc32_combine`, as
//! `crc32fast` implements it): no stream hashes a shared frame's text.

use bytes::{BufMut, BytesMut};
use crc32fast::Hasher;

use crate::protocol::Frame;
use crate::transport::ws::deflate;

/// The gzip header: magic, CM 8 (deflate), no flags, no mtime, no extra
/// flags, OS 255 (unknown).
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The rest of the empty stored block a sync flush ends with (LEN 0,
/// NLEN 0xffff), which permessage-deflate's shared bytes leave off.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An empty final block at a byte boundary: BFINAL 1, BTYPE 01 (fixed
/// Huffman), the end-of-block code (seven zero bits), padding.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The most a stored block holds (LEN is 16 bits).
pub const MAX_STORED: usize = 65_535;

/// What a stream keeps for its gzip member: the CRC-32 and the length
/// (mod 2^32, as ISIZE is) of everything written so far, uncompressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Member {
    crc: u32,
    len: u32,
}

impl Member {
    /// Writes `bytes` (this stream's own) as stored blocks.
    pub fn stored(&mut self, out: &mut BytesMut, bytes: &[u8]) {
        stored_blocks(out, bytes);
        self.hash(bytes);
    }

    /// Writes an event made of this stream's `prefix`, a shared frame's
    /// text and this stream's `suffix`: the frame as its compressed bytes
    /// when it has some, the whole event as stored blocks when not. The
    /// frame's CRC-32 is combined in, not computed here.
    pub fn event(&mut self, out: &mut BytesMut, prefix: &[u8], frame: &Frame, suffix: &[u8]) {
        let z = deflate::raw_deflate(frame);
        write_event(out, prefix, frame.as_bytes(), z.as_deref(), suffix);
        self.hash(prefix);
        self.combine(frame.crc32(), frame.len());
        self.hash(suffix);
    }

    /// The end of the member: an empty final block, then the CRC-32 and
    /// ISIZE, little-endian.
    pub fn finish(self, out: &mut BytesMut) {
        out.reserve(FINAL_BLOCK.len() + 8);
        out.put_slice(&FINAL_BLOCK);
        out.put_u32_le(self.crc);
        out.put_u32_le(self.len);
    }

    fn hash(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut h = Hasher::new_with_initial(self.crc);
        h.update(bytes);
        self.crc = h.finalize();
        self.len = self.len.wrapping_add(bytes.len() as u32);
    }

    /// Appends `len` bytes whose CRC-32 is `crc`, without reading them.
    fn combine(&mut self, crc: u32, len: usize) {
        let mut h = Hasher::new_with_initial_len(self.crc, u64::from(self.len));
        h.combine(&Hasher::new_with_initial_len(crc, len as u64));
        self.crc = h.finalize();
        // ISIZE is the length mod 2^32.
        self.len = self.len.wrapping_add(len as u32);
    }
}

/// `prefix`, then `text` as `z` (its raw DEFLATE, sync-flushed, without
/// the tail) when given, else stored, then `suffix`.
fn write_event(out: &mut BytesMut, prefix: &[u8], text: &[u8], z: Option<&[u8]>, suffix: &[u8]) {
    match z {
        Some(z) => {
            // Short lines: one block each.
            out.reserve(prefix.len() + z.len() + SYNC_TAIL.len() + suffix.len() + 10);
            stored_blocks(out, prefix);
            out.put_slice(z);
            out.put_slice(&SYNC_TAIL);
            stored_blocks(out, suffix);
        }
        None => {
            let len = prefix.len() + text.len() + suffix.len();
            // One block for the three while they fit in one.
            if len <= MAX_STORED {
                out.reserve(len + 5);
                put_stored_header(out, len);
                out.put_slice(prefix);
                out.put_slice(text);
                out.put_slice(suffix);
            } else {
                stored_blocks(out, prefix);
                stored_blocks(out, text);
                stored_blocks(out, suffix);
            }
        }
    }
}

/// A stored block's header at a byte boundary: BFINAL 0 and BTYPE 00 in
/// the low bits of one byte (the rest padding), LEN, NLEN.
fn put_stored_header(out: &mut BytesMut, len: usize) {
    debug_assert!(len <= MAX_STORED);
    let len = len as u16;
    out.put_u8(0x00);
    out.put_u16_le(len);
    out.put_u16_le(!len);
}

/// `bytes` as stored blocks of at most [`MAX_STORED`] bytes each (none
/// for no bytes).
fn stored_blocks(out: &mut BytesMut, bytes: &[u8]) {
    out.reserve(bytes.len() + 5 * bytes.len().div_ceil(MAX_STORED));
    for piece in bytes.chunks(MAX_STORED) {
        put_stored_header(out, piece.len());
        out.put_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// A whole member: header, `body`, the end.
    fn member(body: &[u8], m: Member) -> Vec<u8> {
        let mut out = BytesMut::from(&HEADER[..]);
        out.put_slice(body);
        m.finish(&mut out);
        out.to_vec()
    }

    fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn stored_blocks_split_at_65535_bytes() {
        let data: Vec<u8> = (0..2 * MAX_STORED + 10).map(|i| (i % 251) as u8).collect();
        let mut out = BytesMut::new();
        let mut m = Member::default();
        m.stored(&mut out, &data);
        assert_eq!(out.len(), data.len() + 3 * 5, "three blocks");
        // The blocks: 65,535, 65,535, 10 bytes, each `00 LEN NLEN data`.
        let mut at = 0;
        for want in [MAX_STORED, MAX_STORED, 10] {
            assert_eq!(out[at], 0x00, "BFINAL 0, BTYPE 00 at {at}");
            let len = u16::from_le_bytes([out[at + 1], out[at + 2]]);
            let nlen = u16::from_le_bytes([out[at + 3], out[at + 4]]);
            assert_eq!((len as usize, nlen), (want, !len));
            at += 5 + want;
        }
        assert_eq!(at, out.len());
        // Exactly one block's worth is one block; nothing is no block.
        let mut one = BytesMut::new();
        stored_blocks(&mut one, &data[..MAX_STORED]);
        assert_eq!(one.len(), MAX_STORED + 5);
        let mut none = BytesMut::new();
        stored_blocks(&mut none, b"");
        assert!(none.is_empty());
        // flate2 reads the member, CRC and ISIZE included.
        assert_eq!(gunzip(&member(&out, m)).unwrap(), data);
    }

    #[test]
    fn a_combined_crc_is_the_crc_of_the_whole() {
        let a = b"id: logs:k3j9:41\nevent: log\ndata: ".as_slice();
        let b = "{\"type\":\"log\",\"seq\":41}".repeat(1000);
        let c = b"\n\n".as_slice();
        let mut m = Member::default();
        m.hash(a);
        m.combine(crc32fast::hash(b.as_bytes()), b.len());
        m.hash(c);
        let whole = [a, b.as_bytes(), c].concat();
        assert_eq!(m.crc, crc32fast::hash(&whole));
        assert_eq!(m.len as usize, whole.len());
        // From an empty start, and of an empty piece.
        let mut m = Member::default();
        m.combine(crc32fast::hash(b.as_bytes()), b.len());
        m.combine(crc32fast::hash(b""), 0);
        assert_eq!(m.crc, crc32fast::hash(b.as_bytes()));
        // ISIZE wraps at 2^32: the CRC does not care about the count.
        let mut m = Member {
            crc: crc32fast::hash(a),
            len: u32::MAX - 1,
        };
        m.hash(c);
        assert_eq!(m.len, 0);
    }

    #[test]
    fn events_decode_one_by_one_and_the_member_whole() {
        let big = Frame::from("{\"type\":\"metrics\",\"cpu\":12.5,\"host\":\"web-01\"}".repeat(40));
        let small = Frame::from("{\"type\":\"log\",\"seq\":1}");
        let mut m = Member::default();
        let mut out = BytesMut::from(&HEADER[..]);
        let mut plain = Vec::new();
        let mut inflater = flate2::write::GzDecoder::new(Vec::new());
        let mut fed = 0;
        let mut check = |out: &BytesMut, plain: &[u8]| {
            // Everything written so far inflates to everything so far.
            std::io::Write::write_all(&mut inflater, &out[fed..]).unwrap();
            std::io::Write::flush(&mut inflater).unwrap();
            fed = out.len();
            assert_eq!(inflater.get_ref(), plain);
        };
        m.stored(&mut out, b"retry: 3000\n\n");
        plain.extend_from_slice(b"retry: 3000\n\n");
        check(&out, &plain);
        for (i, f) in [&big, &small, &big].into_iter().enumerate() {
            let prefix = format!("id: logs:k3j9:{i}\nevent: x\ndata: ");
            let before = out.len();
            m.event(&mut out, prefix.as_bytes(), f, b"\n\n");
            if f.len() >= deflate::MIN_COMPRESSED_BYTES {
                // The shared bytes, the tail back on, between two
                // stored blocks.
                let z = deflate::raw_deflate(f).unwrap();
                let at = before + 5 + prefix.len();
                assert_eq!(&out[at..at + z.len()], &z[..]);
                assert_eq!(
                    &out[at + z.len()..],
                    &[0, 0, 0xff, 0xff, 0, 2, 0, 0xfd, 0xff, b'\n', b'\n']
                );
            } else {
                assert_eq!(out.len() - before, 5 + prefix.len() + f.len() + 2);
            }
            plain.extend_from_slice(prefix.as_bytes());
            plain.extend_from_slice(f.as_bytes());
            plain.extend_from_slice(b"\n\n");
            check(&out, &plain);
        }
        let whole = member(&out[HEADER.len()..], m);
        assert_eq!(gunzip(&whole).unwrap(), plain);
        assert_eq!(&whole[whole.len() - 10..whole.len() - 8], &FINAL_BLOCK);
        // A wrong CRC is caught: the trailer is what makes it valid.
        let mut bad = whole.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(gunzip(&bad).is_err());
    }

    #[test]
    fn an_uncompressed_event_past_one_stored_block() {
        // A frame that went plain (it did not shrink), longer than a
        // stored block: three pieces, the text split in blocks.
        let text: Vec<u8> = (0..150_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut m = Member::default();
        let mut out = BytesMut::new();
        write_event(&mut out, b"data: ", &text, None, b"\n\n");
        m.hash(b"data: ");
        m.combine(crc32fast::hash(&text), text.len());
        m.hash(b"\n\n");
        assert_eq!(out.len(), 6 + text.len() + 2 + 5 * (1 + 3 + 1));
        let plain = [b"data: ".as_slice(), &text, b"\n\n"].concat();
        assert_eq!(gunzip(&member(&out, m)).unwrap(), plain);
    }
}
