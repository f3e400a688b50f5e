//! The fuzz targets' checks (`fuzz/`): what must hold for any input to the decoders
//! and parsers that read untrusted bytes. They live here, not in the fuzz crate, so
//! that a plain `cargo test` (and so CI, which has no fuzzer) replays every input of
//! the committed corpora (`fuzz/corpus/<target>/`) through the same assertions.
//!
//! Built for tests and with the `fuzzing` feature (the fuzz crate turns it on).
//!
//! # Layout
//! One file per target: `ws_decode`, `handshake_parse`, `link_decode`,
//! `bannou_header`, `push_api_body`, each with `check(data)`.

pub mod bannou_header;
pub mod handshake_parse;
pub mod link_decode;
pub mod push_api_body;
pub mod ws_decode;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every file of `fuzz/corpus/<target>` (the seeds and what the fuzzer kept).
    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        files
            .into_iter()
            .map(|p| {
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect()
    }

    fn replay(target: &str, check: fn(&[u8])) {
        for (path, data) in corpus(target) {
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{target}: {} fails its check", path.display());
        }
    }

    #[test]
    fn the_ws_decode_corpus_passes_its_checks() {
        replay("ws_decode", super::ws_decode::check);
    }

    #[test]
    fn the_handshake_parse_corpus_passes_its_checks() {
        replay("handshake_parse", super::handshake_parse::check);
    }

    #[test]
    fn the_link_decode_corpus_passes_its_checks() {
        replay("link_decode", super::link_decode::check);
    }

    #[test]
    fn the_bannou_header_corpus_passes_its_checks() {
        replay("bannou_header", super::bannou_header::check);
    }

    #[test]
    fn the_push_api_body_corpus_passes_its_checks() {
        replay("push_api_body", super::push_api_body::check);
    }
}
