//! The fuzz check of the upgrade parser: arbitrary bytes must never panic
//! `parse_upgrade`, every error must carry a 4xx status, and an accepted request must
//! have consumed no more than it was given.
use crate::handshake::{parse_upgrade, switching_protocols};

/// The check the fuzzer runs on every input (and `cargo test` on the committed corpus).
pub fn check(data: &[u8]) {
    match parse_upgrade(data, "/connect") {
        Ok(Some((req, used))) => {
            assert!(used <= data.len());
            let resp = switching_protocols(&req);
            assert!(resp.starts_with(b"HTTP/1.1 101"));
        }
        Ok(None) => {}
        Err(e) => assert!((400..500).contains(&e.status())),
    }
}
