//! The NPC state message: what the NPC world (`backends::npc_world`) publishes to topic
//! `npc.{id}` each time an NPC decides, and what an observer (`scenario::observers`)
//! reads back out of the push. About 200 bytes of JSON, shaped like a Bannou push
//! (`eventName` first), e.g.
//!
//! ```json
//! {"eventName":"npc.state","npc":17,"seq":42,"t":1765090000123456789,"x":-120.52,
//!  "y":88.07,"heading":271,"hp":87,"mood":"curious","action":"patrol","target":512,
//!  "zone":"market-district-01","faction":"city-watch"}
//! ```
//!
//! `t` is the decision's wall-clock time in unix nanoseconds (receipt − `t` is the
//! observer's latency); `seq` counts the NPC's decisions from 1 (a jump is a state the
//! observer never got: a conflation); the rest is made up, to give the message a real
//! size and shape.
//!
//! Why it exists: the backend and the observers must agree on these bytes; one file
//! holds the format for both (they may not import each other).

use serde::{Deserialize, Serialize};

/// The event name of an NPC state push.
pub const EVENT: &str = "npc.state";
/// The topic an NPC publishes to.
pub fn topic(npc: u32) -> String {
    format!("npc.{npc}")
}

const MOODS: [&str; 6] = ["calm", "curious", "wary", "angry", "bored", "cheerful"];
const ACTIONS: [&str; 6] = ["idle", "patrol", "trade", "chase", "flee", "talk"];
const FACTIONS: [&str; 4] = ["river-traders", "city-watch", "night-market", "free-folk"];

/// One decision of one NPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NpcState {
    pub event_name: String,
    pub npc: u32,
    pub seq: u64,
    pub t: u64,
    pub x: f32,
    pub y: f32,
    pub heading: u16,
    pub hp: u8,
    pub mood: String,
    pub action: String,
    pub target: u32,
    pub zone: String,
    pub faction: String,
}

impl NpcState {
    /// A made-up state for decision `seq` of NPC `npc` at `t`, its fields drawn from
    /// `r` (a pseudo-random number).
    pub fn made_up(npc: u32, seq: u64, t: u64, r: u64, npcs: u32) -> NpcState {
        let b = r.to_le_bytes();
        NpcState {
            event_name: EVENT.to_owned(),
            npc,
            seq,
            t,
            x: (i16::from_le_bytes([b[0], b[1]]) as f32) / 100.0,
            y: (i16::from_le_bytes([b[2], b[3]]) as f32) / 100.0,
            heading: u16::from_le_bytes([b[4], b[5]]) % 360,
            hp: b[6] % 101,
            mood: MOODS[b[7] as usize % MOODS.len()].to_owned(),
            action: ACTIONS[(b[6] >> 4) as usize % ACTIONS.len()].to_owned(),
            target: (r >> 40) as u32 % npcs.max(1),
            zone: format!("market-district-{:02}", npc % 16),
            faction: FACTIONS[npc as usize % FACTIONS.len()].to_owned(),
        }
    }

    /// The JSON bytes published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain fields always serialize")
    }
}

/// What an observer needs of a state push (the other fields are skipped, not built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Head {
    pub npc: u32,
    pub seq: u64,
    pub t: u64,
}

impl Head {
    /// The head of a state push's JSON; `None` if it is not one.
    pub fn parse(json: &[u8]) -> Option<Head> {
        serde_json::from_slice(json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_round_trips_through_its_json() {
        let s = NpcState::made_up(
            17,
            42,
            1_765_090_000_123_456_789,
            0xDEAD_BEEF_1234_5678,
            1000,
        );
        let json = s.to_json();
        let back: NpcState = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            Head::parse(&json),
            Some(Head {
                npc: 17,
                seq: 42,
                t: 1_765_090_000_123_456_789
            })
        );
        assert!(json.starts_with(br#"{"eventName":"npc.state","npc":17,"seq":42,"#));
    }

    #[test]
    fn a_state_is_about_200_bytes() {
        for (npc, r) in [(0, 0u64), (999, u64::MAX), (123, 0x0102_0304_0506_0708)] {
            let s = NpcState::made_up(
                npc,
                u64::from(npc) * 1000,
                1_765_090_000_000_000_000,
                r,
                1000,
            );
            let n = s.to_json().len();
            assert!((180..=240).contains(&n), "{n} bytes: {s:?}");
        }
    }

    #[test]
    fn other_pushes_are_not_states() {
        assert_eq!(
            Head::parse(br#"{"eventName":"connect.capability-manifest"}"#),
            None
        );
        assert_eq!(Head::parse(b"not json"), None);
        assert_eq!(topic(7), "npc.7");
    }
}
