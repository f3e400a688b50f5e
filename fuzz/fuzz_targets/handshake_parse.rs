//! cargo-fuzz target: `ringgate_proto::fuzz_checks::handshake_parse` (the checks live in the
//! crate, so `cargo test` replays the committed corpus with them too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringgate_proto::fuzz_checks::handshake_parse::check(data));
