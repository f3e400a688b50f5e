//! The published payload: ~200 bytes of ASCII that carry the publish time (unix ns),
//! the step and a sequence number, and the parser that finds them again in whatever
//! each server delivers (the bytes verbatim, or inside a Socket.IO event).
//!
//! Why it exists: every target gets the very same bytes, and the receiver measures
//! latency from the time written into them; no quote or backslash appears, so a JSON
//! string carries it unescaped and the stamp is found at a fixed shape in every protocol.

/// The stamp's marker: the payload starts with it.
const MARK: &[u8] = b"@fo t=";

/// What a delivered payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publish time, unix nanoseconds.
    pub t_ns: u64,
    /// The step it was published in.
    pub step: u32,
    /// Its number within the step.
    pub seq: u64,
}

/// A payload of exactly `len` bytes (at least the stamp's own length), padded with `x`.
pub fn encode(out: &mut Vec<u8>, stamp: Stamp, len: usize) {
    let start = out.len();
    out.extend_from_slice(MARK);
    out.extend_from_slice(format!("{} s={} q={} ", stamp.t_ns, stamp.step, stamp.seq).as_bytes());
    while out.len() - start < len {
        out.push(b'x');
    }
}

/// Finds the stamp within the first bytes of `msg` (a payload, or a protocol line that
/// wraps it).
pub fn find(msg: &[u8]) -> Option<Stamp> {
    let head = &msg[..msg.len().min(64)];
    let at = head.windows(MARK.len()).position(|w| w == MARK)?;
    let mut rest = &msg[at + MARK.len()..];
    let t_ns = number(&mut rest)?;
    rest = rest.strip_prefix(b" s=")?;
    let step = number(&mut rest)?;
    rest = rest.strip_prefix(b" q=")?;
    let seq = number(&mut rest)?;
    Some(Stamp {
        t_ns,
        step: u32::try_from(step).ok()?,
        seq,
    })
}

fn number(rest: &mut &[u8]) -> Option<u64> {
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    let v = std::str::from_utf8(&rest[..n]).ok()?.parse().ok()?;
    *rest = &rest[n..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_has_the_asked_length_and_gives_its_stamp_back() {
        let s = Stamp {
            t_ns: 1_712_345_678_901_234_567,
            step: 3,
            seq: 42,
        };
        let mut p = Vec::new();
        encode(&mut p, s, 200);
        assert_eq!(p.len(), 200);
        assert!(!p.contains(&b'"') && !p.contains(&b'\\'));
        assert_eq!(find(&p), Some(s));
        // Wrapped in a Socket.IO event, as a JSON string.
        let mut wrapped = b"42[\"msg\",\"".to_vec();
        wrapped.extend_from_slice(&p);
        wrapped.extend_from_slice(b"\"]");
        assert_eq!(find(&wrapped), Some(s));
        assert_eq!(find(b"42[\"msg\",\"hello\"]"), None);
    }
}
