//! The two link actions the NPC world sends that the library's link codec does not have
//! yet: PUBLISH (`0x84 · flags u8 · topic_len u16 · topic · key_len u16 · key ·
//! payload`) and SUBSCRIBE (`0x85 · addr · topic_len u16 · topic`, a link session's
//! address being `0x01 · session u64`), both big-endian (docs/DESIGN.md §6).
//!
//! Why it exists: the codec's `FromBackend::Publish` / `FromBackend::Subscribe` are being
//! written on another branch; until they land these bytes are written by hand, here
//! only, so that switching to the codec changes this one file.

use bytes::BufMut;

/// PUBLISH's kind byte.
const PUBLISH: u8 = 0x84;
/// SUBSCRIBE's kind byte.
const SUBSCRIBE: u8 = 0x85;
/// A link session's address tag.
const ADDR_LINK: u8 = 0x01;

/// Appends a PUBLISH of `payload` (JSON: flags 0) to `topic` with `key`.
pub(super) fn publish(out: &mut impl BufMut, topic: &str, key: &str, payload: &[u8]) {
    out.put_u8(PUBLISH);
    out.put_u8(0);
    put_str(out, topic);
    put_str(out, key);
    out.put_slice(payload);
}

/// Appends a SUBSCRIBE of link session `session` to `topic`.
pub(super) fn subscribe(out: &mut impl BufMut, session: u64, topic: &str) {
    out.put_u8(SUBSCRIBE);
    out.put_u8(ADDR_LINK);
    out.put_u64(session);
    put_str(out, topic);
}

fn put_str(out: &mut impl BufMut, s: &str) {
    let len = u16::try_from(s.len()).expect("topics and keys are short");
    out.put_u16(len);
    out.put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_subscribe_have_the_design_layouts() {
        let mut b = Vec::new();
        publish(&mut b, "npc.7", "7", b"{}");
        assert_eq!(
            b,
            [&[0x84, 0, 0, 5][..], b"npc.7", &[0, 1], b"7", b"{}"].concat()
        );
        let mut b = Vec::new();
        subscribe(&mut b, 0x0102, "npc.7");
        assert_eq!(
            b,
            [
                &[0x85, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 5][..],
                b"npc.7"
            ]
            .concat()
        );
    }
}
