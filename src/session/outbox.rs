//! A connection's outbox: everything queued for the client, flushed in one gathering
//! write.
//!
//! Why: docs/DESIGN.md §1 "write coalescing" — one vectored `sendmsg` per wakeup instead of one
//! syscall per message. Small frames are copied into a contiguous tail (cheaper than an
//! iovec and an allocation each); large payloads are queued as the `Bytes` they already
//! are, so a push fanned out to many clients stays one shared allocation. An empty
//! outbox releases its memory, keeping idle connections small.
//!
//! The outbox knows where each queued frame ends, for two reasons. The byte bound of a
//! slow client (docs/DESIGN.md §6) is on its *backlog* — the frames queued behind the one being
//! written — so one large answer to a client that reads it is never mistaken for a
//! backlog ([`Outbox::backlog`]). And a close on overflow must never follow half a
//! frame: [`Outbox::drop_backlog`] keeps the rest of a frame already partly written
//! and drops only whole frames.
//!
//! **Per-key conflation** (docs/DESIGN.md §6) lives here too, because the outbox is the
//! only place that knows what this client has not received yet. A keyed frame (a topic
//! message with a key, say an NPC id) is queued as an entry of its own, never copied
//! into the tail; while it is unsent, a newer frame with the same key takes its place
//! ([`Outbox::push_keyed`]). The key → position map exists only while keyed frames
//! are queued (an outbox that drains drops it), so a client that keeps up pays nothing,
//! and a slow one holds one frame per key rather than publish rate × lag. A frame
//! already partly written is never replaced.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};

use crate::rt::sys::Nb;
use crate::tls::Wire;

/// Payloads up to this size are copied into the tail rather than queued by reference.
const COPY_THRESHOLD: usize = 512;
/// At most this many slices per `sendmsg`.
const MAX_IOV: usize = 64;
/// The tail's first allocation: room for a batch of small responses at once, so it is
/// not regrown (and copied) several times per batch.
const TAIL_FIRST_ALLOC: usize = 2048;
/// Past this many bytes written, the offsets are rebased (they are `u32`).
const REBASE_AT: u32 = 1 << 30;

/// Bytes queued for one client.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Bytes>,
    tail: BytesMut,
    /// Bytes queued and written since the outbox was last empty (or rebased): `pushed
    /// - sent` are waiting. Stream offsets, so frame ends stay valid while writes
    /// advance; `u32`, rebased past 1 GiB written, to keep an idle connection small.
    pushed: u32,
    sent: u32,
    /// Where the frames not yet wholly written end (stream offsets, ascending).
    ends: VecDeque<u32>,
    /// Where the first of them starts (the end of the last frame wholly written).
    front_start: u32,
    /// Bytes up to this offset are never dropped (the upgrade's `101`).
    floor: u32,
    /// The largest frame queued behind the front one (its end and length), left out
    /// of the backlog: one large answer queued behind a small unwritten one is still
    /// one message, not a backlog.
    spare_end: u32,
    spare_len: u32,
    /// Where the unsent keyed frames are; present only while some are queued.
    keyed: Option<Box<Keyed>>,
}

/// The keyed frames queued, by key. Positions are counted from when the map was made
/// (queue entries and frames popped since then are counted), so they stay valid while
/// the front of the queue is written and popped.
#[derive(Debug, Default)]
struct Keyed {
    at: HashMap<Bytes, KeyedAt, ahash::RandomState>,
    entries_popped: u32,
    frames_done: u32,
}

/// Where one keyed frame sits: its queue entry and its frame (its index in `ends`).
#[derive(Debug, Clone, Copy)]
struct KeyedAt {
    entry: u32,
    frame: u32,
}

/// What [`Outbox::push_keyed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedPush {
    /// Queued behind everything else.
    Queued,
    /// An unsent frame with the same key was replaced in place.
    Replaced,
}

/// Whether a flush emptied the outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything was written (or nothing was queued).
    Empty,
    /// The socket buffer is full; wait for writability and flush again.
    Blocked,
}

impl Outbox {
    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        (self.pushed - self.sent) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.pushed == self.sent
    }

    /// Bytes queued behind the first unwritten frame, less the largest of them: what a
    /// client that stopped reading has let pile up. The frame at the front (being
    /// written, or next) and one large frame behind it do not count, so a single large
    /// message is not a backlog wherever it is queued.
    pub fn backlog(&self) -> usize {
        let front_end = self.front_end();
        let spare = if self.spare_end > front_end {
            self.spare_len
        } else {
            0
        };
        (self.pushed - front_end - spare) as usize
    }

    /// Where the first frame not yet wholly written ends.
    fn front_end(&self) -> u32 {
        self.ends.front().copied().unwrap_or(self.pushed)
    }

    /// Queues one frame: `head` (frame and protocol headers, copied) then `payload`.
    pub fn push(&mut self, head: &[u8], payload: Bytes) {
        self.push_inner(head, payload, false);
    }

    /// Queues one complete frame under `key`: if an unsent frame with the same key is
    /// still queued, `frame` takes its place (where it was, so the client gets the
    /// newest state of that key no later than it would have got the old one);
    /// otherwise it is queued at the back, as an entry of its own (shared, never
    /// copied). A frame already partly written is never replaced.
    pub fn push_keyed(&mut self, frame: Bytes, key: &Bytes) -> KeyedPush {
        if self.replace_keyed(&frame, key) {
            return KeyedPush::Replaced;
        }
        self.push_inner(&[], frame, true);
        let k = self.keyed.get_or_insert_with(Box::default);
        let at = KeyedAt {
            entry: k.entries_popped.wrapping_add(self.queue.len() as u32 - 1),
            frame: k.frames_done.wrapping_add(self.ends.len() as u32 - 1),
        };
        k.at.insert(key.clone(), at);
        KeyedPush::Queued
    }

    /// Replaces the unsent frame queued under `key` by `frame`; false if there is none
    /// (never queued, already written, or being written).
    fn replace_keyed(&mut self, frame: &Bytes, key: &Bytes) -> bool {
        let Some(k) = self.keyed.as_deref() else {
            return false;
        };
        let Some(at) = k.at.get(key) else {
            return false;
        };
        let entry = at.entry.wrapping_sub(k.entries_popped) as usize;
        let fi = at.frame.wrapping_sub(k.frames_done) as usize;
        if entry >= self.queue.len() || fi >= self.ends.len() {
            return false; // written since
        }
        let start = if fi == 0 {
            self.front_start
        } else {
            self.ends[fi - 1]
        };
        if start < self.sent {
            return false; // partly written: it goes out whole, as it is
        }
        let old_len = self.queue[entry].len() as u32;
        let new_len = frame.len() as u32;
        let old_end = self.ends[fi];
        self.queue[entry] = frame.clone();
        let shift = |v: u32| v.wrapping_add(new_len).wrapping_sub(old_len);
        for end in self.ends.iter_mut().skip(fi) {
            *end = shift(*end);
        }
        self.pushed = shift(self.pushed);
        if self.spare_end == old_end {
            // The largest frame behind the front was this one: now it is the new one
            // (perhaps no longer the largest; the bound stays approximately right).
            self.spare_end = shift(self.spare_end);
            self.spare_len = new_len;
        } else if self.spare_end > old_end {
            self.spare_end = shift(self.spare_end);
        }
        true
    }

    fn push_inner(&mut self, head: &[u8], payload: Bytes, own_entry: bool) {
        // Offsets stay below 2^31: `sent` is under 1 GiB after a rebase, and what is
        // queued is at most the frame being written, the backlog bound, the spare
        // frame and this one, each at most 256 MiB (the config caps
        // `max_outbox_bytes`, `max_response_bytes` and `max_message_bytes`).
        let len = (head.len() + payload.len()) as u32;
        if self.spare_end <= self.front_end() || len > self.spare_len {
            // The largest frame behind the front one is not counted as backlog.
            self.spare_end = self.pushed + len;
            self.spare_len = len;
        }
        self.pushed += len;
        self.ends.push_back(self.pushed);
        if !head.is_empty() || (payload.len() <= COPY_THRESHOLD && !own_entry) {
            if self.tail.capacity() == 0 {
                self.tail.reserve(TAIL_FIRST_ALLOC);
            }
            self.tail.extend_from_slice(head);
        }
        if payload.len() <= COPY_THRESHOLD && !own_entry {
            self.tail.extend_from_slice(&payload);
        } else {
            self.seal_tail();
            self.queue.push_back(payload);
        }
    }

    /// Queues a complete frame shared with other outboxes (a topic message, a
    /// broadcast) as an entry of its own, by reference: however small, it is not copied,
    /// and an outbox that only receives such frames never allocates its tail.
    pub fn push_shared(&mut self, frame: Bytes) {
        self.push_inner(&[], frame, true);
    }

    /// Queues bytes that are already a complete frame (or several).
    pub fn push_bytes(&mut self, frame: Bytes) {
        self.push(&[], frame);
    }

    /// Drops everything queued and gives the buffers back (the connection is gone, or
    /// everything was written: an idle connection keeps no buffer, and the offsets
    /// start again from zero).
    pub fn clear(&mut self) {
        *self = Outbox::default();
    }

    /// Drops every frame not yet started, keeping the rest of one already partly
    /// written, so a close frame queued next follows whole frames only (before a close
    /// on overflow or a protocol error: the client gets its close without waiting
    /// behind a backlog it cannot drain, and never a frame cut in the middle).
    pub fn drop_backlog(&mut self) {
        let mut keep_to = self.floor.max(self.sent);
        if let Some(&end) = self.ends.front() {
            if self.sent > self.front_start {
                keep_to = keep_to.max(end);
            }
        }
        let keep = (keep_to - self.sent) as usize;
        let mut left = keep;
        let mut kept = 0;
        for b in self.queue.iter_mut() {
            if left == 0 {
                break;
            }
            if b.len() > left {
                b.truncate(left);
            }
            left -= b.len();
            kept += 1;
        }
        self.queue.truncate(kept);
        self.tail.truncate(left);
        self.pushed = keep_to;
        self.ends.retain(|&end| end <= keep_to);
        self.spare_end = 0;
        self.spare_len = 0;
        self.keyed = None;
        if keep == 0 {
            self.clear();
        }
    }

    /// Marks everything queued so far as bytes that must reach the client even if
    /// the frames after them are dropped (the `101` that opens the connection).
    pub fn keep_queued(&mut self) {
        self.floor = self.pushed;
    }

    /// Counts `n` more bytes written: frames wholly written leave `ends`.
    fn count_sent(&mut self, n: usize) {
        self.sent += n as u32;
        while let Some(&end) = self.ends.front() {
            if end > self.sent {
                break;
            }
            self.front_start = end;
            self.ends.pop_front();
            if let Some(k) = self.keyed.as_deref_mut() {
                k.frames_done = k.frames_done.wrapping_add(1);
            }
        }
        if self.sent >= REBASE_AT {
            // Offsets count from where the frame being written starts again.
            let base = self.front_start;
            self.sent -= base;
            self.pushed -= base;
            self.front_start = 0;
            self.floor = self.floor.saturating_sub(base);
            self.spare_end = self.spare_end.saturating_sub(base);
            for end in self.ends.iter_mut() {
                *end -= base;
            }
        }
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.queue.push_back(self.tail.split().freeze());
        }
    }

    /// Writes as much as the socket takes, without blocking. Returns the bytes written
    /// and whether the outbox is now empty.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<(usize, Flush)> {
        self.flush_to(&mut Wire::plain(fd))
    }

    /// [`Outbox::flush`] to a wire (through its TLS session, if it has one): empty only
    /// once the TLS session holds nothing unsent either.
    pub fn flush_to(&mut self, wire: &mut Wire<'_>) -> io::Result<(usize, Flush)> {
        if self.queue.is_empty() {
            // Only small frames (the common case): write the tail where it is, with no
            // slice to freeze and no queue to allocate.
            let mut written = 0;
            while !self.tail.is_empty() {
                match wire.send_vectored(&[&self.tail])? {
                    Nb::Done(n) => {
                        written += n;
                        self.count_sent(n);
                        self.tail.advance(n);
                    }
                    Nb::WouldBlock => return Ok((written, Flush::Blocked)),
                }
            }
            self.clear();
            return Ok((written, drained(wire)?));
        }
        self.seal_tail();
        let mut written = 0;
        while !self.queue.is_empty() {
            let mut slices: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
            let mut k = 0;
            for (s, b) in slices.iter_mut().zip(self.queue.iter()) {
                *s = &b[..];
                k += 1;
            }
            let n = match wire.send_vectored(&slices[..k])? {
                Nb::Done(n) => n,
                Nb::WouldBlock => return Ok((written, Flush::Blocked)),
            };
            written += n;
            self.consume_front(n);
        }
        self.clear();
        Ok((written, drained(wire)?))
    }

    /// Takes `n` bytes off the front of the (sealed) queue: written, or discarded.
    fn consume_front(&mut self, n: usize) {
        self.count_sent(n);
        let mut left = n;
        while left > 0 {
            let Some(front) = self.queue.front_mut() else {
                break; // (never: `n` is at most what is queued)
            };
            if front.len() <= left {
                left -= front.len();
                self.queue.pop_front();
                if let Some(k) = self.keyed.as_deref_mut() {
                    k.entries_popped = k.entries_popped.wrapping_add(1);
                }
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }

    /// Discards the first frame not yet wholly written (the oldest queued; for a
    /// session whose client is away, nothing is being written). False if none is
    /// queued.
    pub fn drop_front_frame(&mut self) -> bool {
        let Some(&end) = self.ends.front() else {
            return false;
        };
        self.seal_tail();
        let n = (end - self.sent) as usize;
        self.consume_front(n);
        if self.is_empty() {
            self.clear();
        }
        true
    }

    /// Takes every whole frame queued and not yet started, in order (a frame the
    /// connection had partly written is left out: its start is gone), leaving the
    /// outbox empty. For a resume: what a dropped connection did not deliver.
    pub fn take_frames(&mut self) -> Vec<Bytes> {
        self.seal_tail();
        let mut all = BytesMut::with_capacity(self.len());
        for b in &self.queue {
            all.extend_from_slice(b);
        }
        let all = all.freeze();
        let mut frames = Vec::with_capacity(self.ends.len());
        let mut start = self.front_start;
        for &end in &self.ends {
            if start >= self.sent {
                frames.push(all.slice((start - self.sent) as usize..(end - self.sent) as usize));
            }
            start = end;
        }
        self.clear();
        frames
    }
}

/// Empty once the wire holds nothing unsent (a TLS session's encrypted bytes), else
/// blocked on the socket like any unsent byte.
fn drained(wire: &mut Wire<'_>) -> io::Result<Flush> {
    Ok(if wire.drain()? {
        Flush::Empty
    } else {
        Flush::Blocked
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn take_frames_returns_whole_unstarted_frames_in_order_and_leaves_the_outbox_empty() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        o.push(b"", Bytes::from(vec![1u8; 300_000]));
        o.push(b"h", Bytes::from_static(b"small"));
        o.push_keyed(Bytes::from_static(b"keyed-1"), &Bytes::from_static(b"k"));
        o.push(b"", Bytes::from(vec![2u8; 1000]));
        // The first frame is partly written: it is left out, the rest come whole.
        let _ = o.flush(a.as_raw_fd()).unwrap();
        let mut sink = vec![0u8; 1 << 16];
        let _ = b.read(&mut sink).unwrap();
        assert!(
            o.len() > 1000 + 6 + 7,
            "the first frame is still being written"
        );
        let frames = o.take_frames();
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"hsmall");
        assert_eq!(&frames[1][..], b"keyed-1");
        assert_eq!(frames[2], Bytes::from(vec![2u8; 1000]));
        assert!(o.is_empty());
    }

    #[test]
    fn dropping_the_front_frame_discards_the_oldest_and_keeps_keyed_replacement_working() {
        let mut o = Outbox::default();
        o.push(b"a", Bytes::from_static(b"1"));
        o.push_keyed(Bytes::from_static(b"k-old"), &Bytes::from_static(b"k"));
        o.push(b"c", Bytes::from_static(b"3"));
        assert!(o.drop_front_frame());
        assert_eq!(o.len(), 5 + 2);
        assert_eq!(
            o.push_keyed(Bytes::from_static(b"k-new"), &Bytes::from_static(b"k")),
            KeyedPush::Replaced
        );
        assert!(o.drop_front_frame());
        let frames = o.take_frames();
        assert_eq!(frames, [Bytes::from_static(b"c3")]);
        assert!(!o.drop_front_frame(), "nothing left");
    }

    #[test]
    fn small_frames_are_coalesced_and_flushed_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        o.push(b"h1", Bytes::from_static(b"small"));
        o.push(b"h2", Bytes::from(vec![b'x'; 2000]));
        o.push(b"h3", Bytes::from_static(b"end"));
        assert_eq!(o.len(), 2 + 5 + 2 + 2000 + 2 + 3);
        let (n, state) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!(state, Flush::Empty);
        assert_eq!(n, 2014);
        assert!(o.is_empty());
        let mut got = vec![0u8; n];
        b.read_exact(&mut got).unwrap();
        let mut want = b"h1smallh2".to_vec();
        want.extend(vec![b'x'; 2000]);
        want.extend_from_slice(b"h3end");
        assert_eq!(got, want);
    }

    #[test]
    fn a_full_socket_leaves_the_rest_queued() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        let big = Bytes::from(vec![7u8; 4 << 20]);
        o.push(b"", big);
        let (n, state) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!(state, Flush::Blocked);
        assert!(n < 4 << 20);
        assert_eq!(o.len(), (4 << 20) - n);
        // Drain the reader and finish.
        let reader = std::thread::spawn(move || {
            let mut total = 0;
            let mut buf = vec![0u8; 1 << 16];
            while total < 4 << 20 {
                total += b.read(&mut buf).unwrap();
            }
            total
        });
        let mut sent = n;
        loop {
            let (n, state) = o.flush(a.as_raw_fd()).unwrap();
            sent += n;
            if state == Flush::Empty {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(sent, 4 << 20);
        assert_eq!(reader.join().unwrap(), 4 << 20);
    }

    #[test]
    fn small_frames_past_a_full_socket_go_out_in_order_and_the_tail_is_released() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        let mut want = Vec::new();
        for i in 0..60_000u32 {
            let head = i.to_be_bytes();
            o.push(&head, Bytes::from_static(b"0123456789abcdef"));
            want.extend_from_slice(&head);
            want.extend_from_slice(b"0123456789abcdef");
        }
        let total = want.len();
        // Nobody reads yet: the first flush fills the socket (1.2 MB is far past a
        // socket buffer) and stops there.
        let (_, state) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!(state, Flush::Blocked, "the socket filled up");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            b.read_exact(&mut got).unwrap();
            got
        });
        loop {
            let (_, state) = o.flush(a.as_raw_fd()).unwrap();
            if state == Flush::Empty {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(reader.join().unwrap(), want);
        assert!(o.is_empty());
        assert_eq!(o.tail.capacity(), 0, "an empty outbox holds no buffer");
    }

    #[test]
    fn the_frame_at_the_front_is_not_counted_as_backlog() {
        let mut o = Outbox::default();
        o.push(b"hh", Bytes::from(vec![1u8; 8 << 20]));
        assert_eq!(o.backlog(), 0, "one large message alone is no backlog");
        o.push(b"h", Bytes::from_static(b"small"));
        o.push(b"h", Bytes::from_static(b"small"));
        assert_eq!(
            o.backlog(),
            6,
            "what queues behind it is (less its largest frame)"
        );
        assert_eq!(o.len(), 2 + (8 << 20) + 12);
    }

    #[test]
    fn one_large_frame_behind_small_unwritten_ones_is_not_a_backlog() {
        let mut o = Outbox::default();
        o.push(b"h", Bytes::from_static(b"small answer"));
        o.push(b"h", Bytes::from(vec![1u8; 8 << 20]));
        o.push(b"h", Bytes::from_static(b"another"));
        assert_eq!(o.backlog(), 8, "only the small frame behind the large one");
        // A second large frame is a backlog: only one is left out.
        o.push(b"", Bytes::from(vec![2u8; 1 << 20]));
        assert_eq!(o.backlog(), 8 + (1 << 20));
        // A frame larger than the one left out takes its place.
        o.push(b"", Bytes::from(vec![3u8; 9 << 20]));
        assert_eq!(o.backlog(), 8 + (1 << 20) + (8 << 20) + 1);
    }

    #[test]
    fn drop_backlog_keeps_the_rest_of_a_partly_written_frame_and_no_other() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        let big = vec![7u8; 4 << 20];
        o.push(b"BIG:", Bytes::from(big.clone()));
        let (n, state) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!(state, Flush::Blocked, "the socket took part of it");
        assert!(n > 4 && n < 4 << 20);
        for _ in 0..100 {
            o.push(b"next:", Bytes::from_static(b"queued behind"));
        }
        o.push(b"big2", Bytes::from(vec![9u8; 100_000]));
        o.drop_backlog();
        assert_eq!(
            o.len(),
            4 + (4 << 20) - n,
            "only the rest of the frame in flight"
        );
        assert_eq!(o.backlog(), 0);
        o.push_bytes(Bytes::from_static(b"CLOSE"));
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        while o.flush(a.as_raw_fd()).unwrap().1 == Flush::Blocked {
            std::thread::yield_now();
        }
        drop(a);
        let mut want = b"BIG:".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"CLOSE");
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the whole frame, then the close, nothing else");
    }

    #[test]
    fn offsets_are_rebased_past_a_gibibyte_and_keep_their_meaning() {
        let mut o = Outbox::default();
        let mib = Bytes::from(vec![0u8; 1 << 20]);
        for _ in 0..1500 {
            o.push(b"", mib.clone());
        }
        // 1,100.5 MiB written (as if by flushes): past the rebase point, mid-frame.
        o.count_sent((1100 << 20) + (1 << 19));
        assert!(o.sent < REBASE_AT, "rebased");
        assert_eq!(o.len(), (400 << 20) - (1 << 19));
        assert_eq!(
            o.backlog(),
            399 << 20,
            "the rest of the front frame is not backlog"
        );
        o.drop_backlog();
        assert_eq!(
            o.len(),
            1 << 19,
            "only the rest of the frame in flight is kept"
        );
    }

    #[test]
    fn drop_backlog_keeps_what_was_marked_to_be_kept() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        o.push_bytes(Bytes::from_static(b"HTTP/1.1 101\r\n\r\n"));
        o.keep_queued();
        o.push(b"h", Bytes::from(vec![0u8; 4096]));
        o.drop_backlog();
        o.push_bytes(Bytes::from_static(b"CLOSE"));
        o.flush(a.as_raw_fd()).unwrap();
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"HTTP/1.1 101\r\n\r\nCLOSE");
    }

    fn drain(o: &mut Outbox) -> Vec<u8> {
        let (a, mut b) = UnixStream::pair().unwrap();
        assert_eq!(o.flush(a.as_raw_fd()).unwrap().1, Flush::Empty);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn a_keyed_frame_not_yet_sent_is_replaced_in_place_by_a_newer_one() {
        let mut o = Outbox::default();
        let (ka, kb) = (Bytes::from_static(b"npc.1"), Bytes::from_static(b"npc.2"));
        assert_eq!(
            o.push_keyed(Bytes::from_static(b"[a1]"), &ka),
            KeyedPush::Queued
        );
        o.push(b"", Bytes::from_static(b"<u1>"));
        assert_eq!(
            o.push_keyed(Bytes::from_static(b"[b1]"), &kb),
            KeyedPush::Queued
        );
        assert_eq!(
            o.push_keyed(Bytes::from_static(b"[a2-longer]"), &ka),
            KeyedPush::Replaced
        );
        assert_eq!(
            o.push_keyed(Bytes::from_static(b"[b2]"), &kb),
            KeyedPush::Replaced
        );
        o.push(b"", Bytes::from_static(b"<u2>"));
        assert_eq!(o.len(), 11 + 4 + 4 + 4);
        assert_eq!(drain(&mut o), b"[a2-longer]<u1>[b2]<u2>");
    }

    #[test]
    fn a_slow_clients_outbox_grows_with_its_keys_not_with_the_publish_rate() {
        let mut o = Outbox::default();
        let keys: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("npc.{i}"))).collect();
        for round in 0..1000 {
            for k in &keys {
                o.push_keyed(Bytes::from(format!("{k:?}@{round:04}")), k);
            }
        }
        assert_eq!(o.ends.len(), 20, "one frame per key");
        let got = String::from_utf8(drain(&mut o)).unwrap();
        assert!(got.starts_with("b\"npc.0\"@0999"), "{got}");
        assert_eq!(got.matches("@0999").count(), 20);
    }

    #[test]
    fn a_keyed_frame_partly_written_is_not_replaced_and_one_written_is_not_touched() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut o = Outbox::default();
        let key = Bytes::from_static(b"k");
        let big = Bytes::from(vec![1u8; 4 << 20]);
        o.push_keyed(big.clone(), &key);
        let (n, state) = o.flush(a.as_raw_fd()).unwrap();
        assert_eq!(state, Flush::Blocked);
        assert!(n > 0 && n < big.len());
        assert_eq!(
            o.push_keyed(Bytes::from_static(b"NEW"), &key),
            KeyedPush::Queued,
            "the frame being written goes out whole; the new one queues behind it"
        );
        assert_eq!(
            o.push_keyed(Bytes::from_static(b"NEWER"), &key),
            KeyedPush::Replaced
        );
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        while o.flush(a.as_raw_fd()).unwrap().1 == Flush::Blocked {
            std::thread::yield_now();
        }
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), big.len() + 5);
        assert_eq!(&got[big.len()..], b"NEWER");
        assert!(o.keyed.is_none(), "an outbox that drained keeps no key map");
    }

    #[test]
    fn replacing_a_keyed_frame_keeps_the_backlog_and_frame_ends_exact() {
        let mut o = Outbox::default();
        let key = Bytes::from_static(b"k");
        o.push(b"", Bytes::from(vec![0u8; 100])); // the front frame
        o.push_keyed(Bytes::from(vec![1u8; 600]), &key);
        o.push(b"", Bytes::from(vec![2u8; 50]));
        assert_eq!(o.backlog(), 50, "the 600-byte frame is the spare");
        o.push_keyed(Bytes::from(vec![3u8; 700]), &key);
        assert_eq!(o.len(), 100 + 700 + 50);
        assert_eq!(o.backlog(), 50, "still one large frame behind the front");
        assert_eq!(o.ends.iter().copied().collect::<Vec<_>>(), [100, 800, 850]);
        o.drop_backlog();
        assert!(o.is_empty() && o.keyed.is_none());
    }

    #[test]
    fn drop_backlog_before_any_write_drops_every_frame_and_the_buffers() {
        let mut o = Outbox::default();
        o.push(b"h", Bytes::from_static(b"a"));
        o.push(b"h", Bytes::from(vec![0u8; 4096]));
        o.push(b"h", Bytes::from_static(b"b"));
        o.drop_backlog();
        assert!(o.is_empty());
        assert_eq!(o.tail.capacity(), 0);
        assert_eq!(o.queue.capacity(), 0);
    }
}
