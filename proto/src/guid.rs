//! Salted endpoint GUIDs: unique per session, unforgeable, stable for the session's life
//! (also across a reconnection), with no per-session table.
//!
//! Why this shape (docs/DESIGN.md §4): a GUID is the AES-128 encryption, under a per-session key,
//! of a 16-byte block `(kind, stable id, zero tag)`. Decrypting a GUID the client sends
//! gives back the route; a non-zero tag or unknown kind means the GUID was never issued
//! to this session (forged, or another session's) and the caller answers code 30. The
//! per-session key is derived from a gateway-wide secret and the session id, so the same
//! session (a reconnection, even on another instance sharing the secret) gets the same
//! GUIDs, and a session holds only its 16-byte key whatever the number of endpoints.
//!
//! ```text
//! endpoint block: 0x01 | id u32 | 11 zero bytes          (88-bit tag)
//! peer block:     0x02 | shard u16 | slot u32 | gen u32 | 5 zero bytes
//! ```

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Aes128Dec};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const KIND_ENDPOINT: u8 = 0x01;
const KIND_PEER: u8 = 0x02;
const DERIVE_LABEL: &[u8] = b"ringgate guid key v1\0";
/// Label of the gateway-wide peer key. It differs from `DERIVE_LABEL` within that
/// label's length, so no session id gives a session the peer key.
const PEER_LABEL: &[u8] = b"ringgate peer key v1\0";

/// What a GUID decrypts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidTarget {
    /// A service endpoint, by its stable id.
    Endpoint(u32),
    /// Another client connection (peer-to-peer routing).
    Peer {
        shard: u16,
        slot: u32,
        generation: u32,
    },
}

/// The per-session GUID key (16 bytes; expanded on use, so an idle session stores only
/// the raw key).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionKey([u8; 16]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// Derives the key of `session_id` from the gateway-wide `secret`.
    pub fn derive(secret: &[u8; 32], session_id: &str) -> SessionKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(DERIVE_LABEL);
        mac.update(session_id.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&out[..16]);
        SessionKey(key)
    }

    /// The gateway-wide key of peer GUIDs. A peer GUID names a connection (shard,
    /// slot, generation), and any session that is handed it may address that
    /// connection, so it cannot be sealed under a session's own key: every shard opens
    /// it with this one. Unforgeable all the same (the tag), and no table is kept.
    pub fn derive_peer_key(secret: &[u8; 32]) -> SessionKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(PEER_LABEL);
        let out = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&out[..16]);
        SessionKey(key)
    }

    fn cipher(&self) -> Aes128 {
        Aes128::new(GenericArray::from_slice(&self.0))
    }

    /// The decryption half alone: what opening needs, half the expansion and size.
    fn decipher(&self) -> Aes128Dec {
        Aes128Dec::new(GenericArray::from_slice(&self.0))
    }

    fn seal(&self, block: [u8; 16]) -> [u8; 16] {
        let mut b = GenericArray::from(block);
        self.cipher().encrypt_block(&mut b);
        b.into()
    }

    /// The GUID this session uses for endpoint `id`.
    pub fn endpoint_guid(&self, id: u32) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[0] = KIND_ENDPOINT;
        block[1..5].copy_from_slice(&id.to_be_bytes());
        self.seal(block)
    }

    /// A cipher for minting many GUIDs at once (a manifest), expanding the key once.
    pub fn minter(&self) -> GuidMinter {
        GuidMinter(self.cipher())
    }

    /// The GUID this session uses to address a peer connection.
    pub fn peer_guid(&self, shard: u16, slot: u32, generation: u32) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[0] = KIND_PEER;
        block[1..3].copy_from_slice(&shard.to_be_bytes());
        block[3..7].copy_from_slice(&slot.to_be_bytes());
        block[7..11].copy_from_slice(&generation.to_be_bytes());
        self.seal(block)
    }

    /// What a GUID sent by this session addresses; `None` if this session was never
    /// given it (the tag does not verify).
    pub fn open(&self, guid: &[u8; 16]) -> Option<GuidTarget> {
        open_with(&self.decipher(), guid)
    }
}

/// Decrypts `guid` with an expanded key and checks its tag.
fn open_with(cipher: &Aes128Dec, guid: &[u8; 16]) -> Option<GuidTarget> {
    let mut b = GenericArray::clone_from_slice(guid);
    cipher.decrypt_block(&mut b);
    let block: [u8; 16] = b.into();
    match block[0] {
        KIND_ENDPOINT if block[5..].iter().all(|&x| x == 0) => Some(GuidTarget::Endpoint(
            u32::from_be_bytes(block[1..5].try_into().expect("4 bytes")),
        )),
        KIND_PEER if block[11..].iter().all(|&x| x == 0) => Some(GuidTarget::Peer {
            shard: u16::from_be_bytes([block[1], block[2]]),
            slot: u32::from_be_bytes(block[3..7].try_into().expect("4 bytes")),
            generation: u32::from_be_bytes(block[7..11].try_into().expect("4 bytes")),
        }),
        _ => None,
    }
}

/// The last session key expanded, for opening GUIDs (one per shard).
///
/// Why: expanding an AES key costs more than the decryption itself (the profile at the
/// gateway's peak showed it at 2 % of its CPU), and an idle session cannot afford to
/// keep its expanded key. But the requests of one read batch all come from one
/// connection, so remembering only the last key expanded saves all but one expansion
/// per batch. Only the decryption keys are expanded and kept (`Aes128Dec`): a miss,
/// which is every request when each read holds one, costs half an `Aes128`.
///
/// It also keeps the last GUID that opened under that key and what it opened to: a
/// client calling one endpoint in a loop sends the same 16 bytes each time, and a
/// compare is cheaper than a decryption (the decryption and its checks were ~3 % of
/// the gateway's samples on the link path at max). A GUID maps to the same target under
/// the same key every time, and a new key forgets it, so an answer from here is always
/// the one [`SessionKey::open`] would give.
#[derive(Default)]
pub struct OpenCache(Option<Opened>);

struct Opened {
    key: [u8; 16],
    cipher: Aes128Dec,
    last: Option<([u8; 16], GuidTarget)>,
}

impl OpenCache {
    /// Same as [`SessionKey::open`], expanding `key` only if it is not the last one.
    pub fn open(&mut self, key: &SessionKey, guid: &[u8; 16]) -> Option<GuidTarget> {
        let o = match &mut self.0 {
            Some(o) if o.key == key.0 => o,
            slot => slot.insert(Opened {
                key: key.0,
                cipher: key.decipher(),
                last: None,
            }),
        };
        if let Some((g, target)) = &o.last {
            if g == guid {
                return Some(*target);
            }
        }
        let target = open_with(&o.cipher, guid)?;
        o.last = Some((*guid, target));
        Some(target)
    }
}

impl std::fmt::Debug for OpenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenCache")
    }
}

/// An expanded session key for minting many endpoint GUIDs.
pub struct GuidMinter(Aes128);

impl GuidMinter {
    /// Same as [`SessionKey::endpoint_guid`].
    pub fn endpoint_guid(&self, id: u32) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[0] = KIND_ENDPOINT;
        block[1..5].copy_from_slice(&id.to_be_bytes());
        let mut b = GenericArray::from(block);
        self.0.encrypt_block(&mut b);
        b.into()
    }
}

/// The canonical string form (8-4-4-4-12 lowercase hex) of GUID bytes in RFC 4122 order.
pub fn format_guid(g: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, &b) in g.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let [hi, lo] = super::hex_pair(b);
        s.push(char::from(hi));
        s.push(char::from(lo));
    }
    s
}

/// Parses the canonical string form (case-insensitive) into RFC 4122-order bytes.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if s.len() != 36 || digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    #[test]
    fn same_endpoint_gets_different_guids_in_different_sessions() {
        let a = SessionKey::derive(&SECRET, "session-a");
        let b = SessionKey::derive(&SECRET, "session-b");
        assert_ne!(a.endpoint_guid(1), b.endpoint_guid(1));
    }

    #[test]
    fn guids_are_unique_across_many_sessions_and_endpoints() {
        let mut seen = std::collections::HashSet::new();
        for s in 0..200 {
            let k = SessionKey::derive(&SECRET, &format!("s{s}"));
            for id in 0..50 {
                assert!(seen.insert(k.endpoint_guid(id)));
            }
        }
    }

    #[test]
    fn guid_is_stable_for_a_session_id_and_opens_to_its_endpoint() {
        let k1 = SessionKey::derive(&SECRET, "sess");
        let k2 = SessionKey::derive(&SECRET, "sess");
        assert_eq!(k1.endpoint_guid(99), k2.endpoint_guid(99));
        assert_eq!(k1.minter().endpoint_guid(99), k1.endpoint_guid(99));
        assert_eq!(
            k2.open(&k1.endpoint_guid(99)),
            Some(GuidTarget::Endpoint(99))
        );
    }

    #[test]
    fn another_sessions_guid_is_rejected() {
        let mine = SessionKey::derive(&SECRET, "mine");
        let theirs = SessionKey::derive(&SECRET, "theirs");
        for id in 0..1000 {
            assert_eq!(mine.open(&theirs.endpoint_guid(id)), None);
        }
    }

    #[test]
    fn forged_guids_are_rejected() {
        let k = SessionKey::derive(&SECRET, "s");
        // Flipping any bit of a real GUID, or inventing one, must not open.
        let real = k.endpoint_guid(5);
        for bit in 0..128 {
            let mut g = real;
            g[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(k.open(&g), None, "bit {bit}");
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            let mut g = [0u8; 16];
            for chunk in g.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            assert_eq!(k.open(&g), None);
        }
        assert_eq!(k.open(&[0u8; 16]), None);
    }

    #[test]
    fn a_different_gateway_secret_gives_different_guids() {
        let a = SessionKey::derive(&SECRET, "s");
        let b = SessionKey::derive(&[8; 32], "s");
        assert_ne!(a.endpoint_guid(1), b.endpoint_guid(1));
        assert_eq!(b.open(&a.endpoint_guid(1)), None);
    }

    #[test]
    fn peer_guids_round_trip_and_differ_from_endpoint_guids() {
        let k = SessionKey::derive(&SECRET, "s");
        let g = k.peer_guid(3, 70_000, 9);
        assert_eq!(
            k.open(&g),
            Some(GuidTarget::Peer {
                shard: 3,
                slot: 70_000,
                generation: 9
            })
        );
        assert_ne!(g, k.endpoint_guid(3));
    }

    #[test]
    fn guid_string_keeps_rfc4122_byte_order() {
        let g = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let s = format_guid(&g);
        assert_eq!(s, "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(parse_guid(&s), Some(g));
        assert_eq!(parse_guid(&s.to_uppercase()), Some(g));
        assert_eq!(parse_guid("00112233-4455-6677-8899-aabbccddeef"), None);
        assert_eq!(parse_guid("0011223344556677-8899-aabbccddeeff"), None);
        assert_eq!(parse_guid("zz112233-4455-6677-8899-aabbccddeeff"), None);
    }

    #[test]
    fn session_key_debug_does_not_print_the_key() {
        let k = SessionKey::derive(&SECRET, "s");
        assert_eq!(format!("{k:?}"), "SessionKey(<redacted>)");
    }

    #[test]
    fn the_open_cache_opens_like_the_key_across_sessions_and_rejects_foreign_guids() {
        let a = SessionKey::derive(&[7; 32], "session-a");
        let b = SessionKey::derive(&[7; 32], "session-b");
        let mut cache = OpenCache::default();
        for _ in 0..2 {
            for (key, other) in [(&a, &b), (&b, &a), (&a, &b)] {
                let g = key.endpoint_guid(42);
                assert_eq!(cache.open(key, &g), Some(GuidTarget::Endpoint(42)));
                assert_eq!(cache.open(key, &g), key.open(&g));
                assert_eq!(cache.open(other, &g), None, "another session's GUID");
            }
        }
    }

    #[test]
    fn the_open_cache_answers_repeated_and_alternating_guids_as_the_key_does() {
        let a = SessionKey::derive(&[7; 32], "session-a");
        let mut cache = OpenCache::default();
        let g42 = a.endpoint_guid(42);
        let g7 = a.endpoint_guid(7);
        let peer = a.peer_guid(3, 9, 1);
        let mut forged = g42;
        forged[15] ^= 1;
        for g in [g42, g42, g7, g42, forged, g42, peer, peer, forged, g7] {
            assert_eq!(cache.open(&a, &g), a.open(&g), "{g:?}");
        }
        assert_eq!(cache.open(&a, &forged), None);
        assert_eq!(cache.open(&a, &g42), Some(GuidTarget::Endpoint(42)));
        assert_eq!(
            cache.open(&a, &peer),
            Some(GuidTarget::Peer {
                shard: 3,
                slot: 9,
                generation: 1
            })
        );
    }
}
