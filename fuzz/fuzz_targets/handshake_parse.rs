//! cargo-fuzz target for the upgrade parser: arbitrary bytes must never panic
//! `parse_upgrade`, every error must carry a 4xx status, and an accepted request must
//! have consumed no more than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate_proto::handshake::{parse_upgrade, switching_protocols};

fuzz_target!(|data: &[u8]| {
    match parse_upgrade(data, "/connect") {
        Ok(Some((req, used))) => {
            assert!(used <= data.len());
            let resp = switching_protocols(&req);
            assert!(resp.starts_with(b"HTTP/1.1 101"));
        }
        Ok(None) => {}
        Err(e) => assert!((400..500).contains(&e.status())),
    }
});
