//! Reconnection tokens: what a client presents (`Authorization: Reconnect <token>`)
//! to resume its session after a drop (docs/DESIGN.md §7).
//!
//! Why self-describing rather than a random key into a table: a token names where its
//! session is kept — the shard, the slot and generation of the shard's session table
//! — and which connection of the session it was issued to (its `life`), under an
//! HMAC. So the gateway needs no token table (no memory per session, nothing to
//! expire), any shard can tell at once which shard to hand the connection to, and a
//! token is single-use without being stored: a resume starts the session's next life,
//! and a token of an earlier life no longer matches. The MAC key is random per
//! process, so a token from an earlier run of the gateway (whose slots and
//! generations mean other sessions now) never opens.
//!
//! Format: 32 bytes — shard u16 · slot u32 · generation u32 · life u32 · the first 18
//! bytes of HMAC-SHA256(key, those 14 bytes) — in unpadded base64url (43 characters,
//! safe in a header, a query string and a `Sec-WebSocket-Protocol` entry).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const FIELDS_LEN: usize = 14;
const MAC_LEN: usize = 18;
/// A token's length in characters.
pub const TOKEN_LEN: usize = 43;

/// What a reconnection token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePlace {
    /// The shard holding the session.
    pub shard: u16,
    /// Its place in that shard's session table.
    pub slot: u32,
    pub generation: u32,
    /// Which connection of the session the token was issued to (0 = the first); a
    /// resume starts the next.
    pub life: u32,
}

/// Mints and opens reconnection tokens with one process's key.
#[derive(Clone)]
pub struct ResumeKey([u8; 32]);

impl std::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKey(<redacted>)")
    }
}

impl ResumeKey {
    /// A key from 32 random bytes (the caller draws them: this crate has no RNG).
    pub fn new(random: [u8; 32]) -> ResumeKey {
        ResumeKey(random)
    }

    fn mac(&self, fields: &[u8; FIELDS_LEN]) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(fields);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The token naming `place`.
    pub fn mint(&self, place: ResumePlace) -> String {
        let fields = encode_fields(place);
        let mut raw = [0u8; FIELDS_LEN + MAC_LEN];
        raw[..FIELDS_LEN].copy_from_slice(&fields);
        raw[FIELDS_LEN..].copy_from_slice(&self.mac(&fields));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// What `token` names, if this key minted it (else `None`: malformed, forged, or
    /// from another process).
    pub fn open(&self, token: &str) -> Option<ResumePlace> {
        if token.len() != TOKEN_LEN {
            return None;
        }
        let mut raw = [0u8; FIELDS_LEN + MAC_LEN + 2];
        let n = URL_SAFE_NO_PAD
            .decode_slice(token.as_bytes(), &mut raw)
            .ok()?;
        if n != FIELDS_LEN + MAC_LEN {
            return None;
        }
        let fields: [u8; FIELDS_LEN] = raw[..FIELDS_LEN].try_into().ok()?;
        let want = self.mac(&fields);
        // Constant time: a forger learns nothing from how long a refusal took.
        let diff = want
            .iter()
            .zip(&raw[FIELDS_LEN..FIELDS_LEN + MAC_LEN])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| decode_fields(&fields))
    }
}

fn encode_fields(p: ResumePlace) -> [u8; FIELDS_LEN] {
    let mut f = [0u8; FIELDS_LEN];
    f[0..2].copy_from_slice(&p.shard.to_be_bytes());
    f[2..6].copy_from_slice(&p.slot.to_be_bytes());
    f[6..10].copy_from_slice(&p.generation.to_be_bytes());
    f[10..14].copy_from_slice(&p.life.to_be_bytes());
    f
}

fn decode_fields(f: &[u8; FIELDS_LEN]) -> ResumePlace {
    let u32_at = |i: usize| u32::from_be_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
    ResumePlace {
        shard: u16::from_be_bytes([f[0], f[1]]),
        slot: u32_at(2),
        generation: u32_at(6),
        life: u32_at(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place() -> ResumePlace {
        ResumePlace {
            shard: 3,
            slot: 70_000,
            generation: 0xdead_beef,
            life: 2,
        }
    }

    #[test]
    fn a_minted_token_opens_to_the_place_it_names() {
        let k = ResumeKey::new([7; 32]);
        let t = k.mint(place());
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(k.open(&t), Some(place()));
    }

    #[test]
    fn a_token_of_another_key_or_altered_or_malformed_does_not_open() {
        let k = ResumeKey::new([7; 32]);
        let t = k.mint(place());
        assert_eq!(ResumeKey::new([8; 32]).open(&t), None, "another process");
        let mut altered = t.clone().into_bytes();
        altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.open(std::str::from_utf8(&altered).unwrap()), None);
        for bad in ["", "short", &t[..42], &format!("{t}A"), &"!".repeat(43)] {
            assert_eq!(k.open(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_life_of_a_session_has_its_own_token() {
        let k = ResumeKey::new([1; 32]);
        let next = ResumePlace { life: 3, ..place() };
        assert_ne!(k.mint(place()), k.mint(next));
    }
}
