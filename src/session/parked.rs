//! A session that outlives its connection (docs/DESIGN.md §7): parked when its client
//! drops, kept with its subscriptions, shortcuts and the events pushed meanwhile, and
//! handed to the client's next connection, which supersedes it.
//!
//! Why the handle itself is parked, in its place in the shard's table: everything that
//! reaches a session — topic subscriptions, the directory, peer GUIDs, backends' pushes
//! — already names that place, so while parked it keeps receiving like any slow
//! client, into its own outbox (bounded here by `resume_buffer_bytes`, the oldest
//! dropped and counted; keyed messages conflated as always). A resume moves the client
//! to the session's shard and swaps a new handle into the same place
//! (`push::ShardPlane::replace`), so nothing addressed to the session is lost or
//! reordered in between.

use bytes::Bytes;

use crate::proto::bannou::{flags, REQUEST_HEADER_LEN};
use crate::proto::event::DISCONNECT_EVENT;
use crate::proto::frame::OpCode;

use super::handle::{CloseRequest, ConnShared};

/// The connection ended and the session waits for its client.
const PARKED: u8 = 1;
/// A newer connection took the session over: this handle's end ends nothing.
const SUPERSEDED: u8 = 2;
/// The session was ended on purpose (kick, expiry, a backend's CLOSE, a protocol
/// error, a newer connection with the same session id): it is not resumable.
const FINAL: u8 = 4;

impl ConnShared {
    fn has(&self, flag: u8) -> bool {
        self.life_flags.get() & flag != 0
    }

    fn set(&self, flag: u8) {
        self.life_flags.set(self.life_flags.get() | flag);
    }

    /// Whether the session waits for its client (its connection ended).
    pub fn is_parked(&self) -> bool {
        self.has(PARKED)
    }

    /// Whether a newer connection of the session took this one's place.
    pub fn is_superseded(&self) -> bool {
        self.has(SUPERSEDED)
    }

    /// Whether the session was ended on purpose and may not be resumed.
    pub fn is_final(&self) -> bool {
        self.has(FINAL)
    }

    /// Ends the session on purpose: the connection closes with `code` and the session
    /// is not kept (a parked one ends at the shard's next sweep).
    pub fn request_final_close(
        &self,
        code: u16,
        reason: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        self.set(FINAL);
        if !self.is_parked() {
            self.request_close(code, reason);
        }
    }

    /// Marks the session as not resumable, whatever ends its connection next (a
    /// protocol error).
    pub fn mark_final(&self) {
        self.set(FINAL);
    }

    /// Whether the session may outlive the connection that just ended.
    pub fn resumable(&self, unix_now: u64) -> bool {
        self.env.resume.is_some()
            && !self.has(FINAL | SUPERSEDED)
            && self.session.expires_at().is_none_or(|exp| unix_now < exp)
    }

    /// The connection ended (`now_secs`: the shard's clock): the session is kept for
    /// its reconnection window, receiving into its outbox, bounded by
    /// `resume_buffer_bytes`.
    pub fn park(&self, now_secs: u32) {
        self.set(PARKED);
        self.set_fd(-1);
        self.close.set(None);
        self.ping_sent.set(None);
        self.last_rx.set(now_secs);
        self.trim_parked();
    }

    /// When the session was parked (shard seconds), if it is.
    pub fn parked_since(&self) -> Option<u32> {
        self.is_parked().then(|| self.last_rx.get())
    }

    /// A newer connection took the session: this handle's task (if it still runs)
    /// closes with 1000 and its end unregisters nothing.
    pub fn supersede(&self) {
        self.set(SUPERSEDED);
        if self.is_parked() {
            self.gone.set(true);
        } else if !self.closing() {
            self.close.set(Some(CloseRequest::Close(
                crate::proto::frame::CLOSE_NORMAL,
                "New connection established".into(),
            )));
            self.notify.notify();
        }
    }

    /// The token that resumes this session from this connection, if sessions are
    /// resumable.
    pub fn reconnection_token(&self) -> Option<String> {
        self.env.token(self.at(), self.session.life)
    }

    /// Drops the oldest queued frames of a parked session past its buffer, counting
    /// them lost.
    pub(super) fn trim_parked(&self) {
        let bound = self.env.resume_buffer;
        let mut out = self.outbox.borrow_mut();
        let mut dropped = 0u32;
        while out.len() > bound && out.drop_front_frame() {
            dropped += 1;
        }
        drop(out);
        if dropped > 0 {
            self.lost.set(self.lost.get().saturating_add(dropped));
            crate::metrics::bump(&self.env.metrics.resume_events_lost, dropped as u64);
        }
    }

    /// What the client missed while away, for its next connection: the events and
    /// peer messages queued and not yet written (whole frames, in order), and how many
    /// were dropped past the buffer. Answers to the old connection's requests, control
    /// frames and the old connection's disconnect notice are not carried over. Leaves
    /// the outbox empty.
    pub fn take_missed(&self) -> (Vec<Bytes>, u32) {
        let frames = self.outbox.borrow_mut().take_frames();
        let kept = frames.into_iter().filter(|f| is_missed_event(f)).collect();
        (kept, self.lost.replace(0))
    }
}

/// Whether a queued frame is an event the client should still get after a resume: a
/// binary message that is a push or a peer message (not a response, not a request
/// from a backend, whose call was answered 31 when the client dropped), and not a
/// disconnect notice.
fn is_missed_event(frame: &[u8]) -> bool {
    let Some(body) = ws_payload(frame) else {
        return false;
    };
    let Some(&f) = body.first() else {
        return false;
    };
    if f & flags::RESPONSE != 0 || f & (flags::EVENT | flags::CLIENT) == 0 {
        return false;
    }
    let json = body.get(REQUEST_HEADER_LEN..).unwrap_or_default();
    let notice = format!("{{\"eventName\":\"{DISCONNECT_EVENT}\"");
    !json.starts_with(notice.as_bytes())
}

/// The payload of an unmasked, unfragmented binary frame the gateway queued.
fn ws_payload(frame: &[u8]) -> Option<&[u8]> {
    let (&b0, rest) = frame.split_first()?;
    if b0 != 0x80 | OpCode::Binary as u8 {
        return None;
    }
    let (&b1, rest) = rest.split_first()?;
    let skip = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    rest.get(skip..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::bannou::{RequestHeader, ResponseHeader};
    use crate::session::tests_support::{resumable, shared};

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut head = [0u8; 14];
        let n =
            crate::proto::frame::encode_header(&mut head, true, OpCode::Binary, None, body.len());
        [&head[..n], body].concat()
    }

    #[test]
    fn a_resume_carries_pushes_and_peer_messages_but_not_answers_requests_or_the_old_notice() {
        let push = frame(&[&RequestHeader::push(1).encode()[..], b"{\"n\":1}"].concat());
        let mut peer_head = RequestHeader::push(2);
        peer_head.flags = flags::CLIENT;
        let peer = frame(&[&peer_head.encode()[..], b"hi"].concat());
        let answer = frame(
            &ResponseHeader {
                flags: flags::RESPONSE,
                channel: 0,
                sequence: 0,
                message_id: 3,
                code: 0,
            }
            .encode(),
        );
        let mut call_head = RequestHeader::push(4);
        call_head.flags = flags::BINARY; // a backend's call to the client
        let call = frame(&call_head.encode());
        let c = shared(1 << 20);
        let notice = c.disconnect_notice("client too slow");
        for f in [&push, &answer, &call, &notice[..], &peer] {
            c.outbox.borrow_mut().push_bytes(Bytes::copy_from_slice(f));
        }
        c.outbox
            .borrow_mut()
            .push_bytes(crate::proto::ws::pong_frame(b"", None));
        let (missed, lost) = c.take_missed();
        assert_eq!(missed, [Bytes::from(push), Bytes::from(peer)]);
        assert_eq!(lost, 0);
        assert!(c.outbox.borrow().is_empty());
    }

    #[test]
    fn a_parked_session_keeps_its_newest_events_within_its_buffer_and_counts_the_rest() {
        let c = resumable(4096);
        assert!(c.resumable(0));
        c.park(5);
        assert!(c.is_parked());
        let bound = c.env.resume_buffer;
        let one = frame(&[&RequestHeader::push(1).encode()[..], &[b'x'; 200][..]].concat());
        let n = bound / one.len() + 10;
        for _ in 0..n {
            assert!(
                c.send_frame(Bytes::copy_from_slice(&one)),
                "queued while away"
            );
        }
        assert!(c.outbox.borrow().len() <= bound);
        let (missed, lost) = c.take_missed();
        assert_eq!(missed.len() + lost as usize, n);
        assert!(lost >= 10, "{lost}");
        assert!(missed.len() >= 10, "the newest kept: {}", missed.len());
        assert_eq!(
            c.close_request(),
            None,
            "never closed for slowness while away"
        );
    }
}
