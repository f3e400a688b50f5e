//! `[tls]`: the certificate the client listener serves `wss://` with, and the CAs
//! `https://` backends and `wss://` links are verified against.
//!
//! Why only paths here: the files are read where TLS is set up (`tls::certs`, at start
//! and on SIGHUP), whose errors name the file; this checks what can be checked without
//! reading them, naming the key.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// `[tls]`; every key optional. `cert_file` and `key_file` together turn the client
/// listener into `wss://` (TLS 1.3 and 1.2, ALPN `http/1.1`); their contents are read
/// again on SIGHUP (the paths are fixed at start).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that `https://` backends and `wss://` links must chain
    /// to; absent = the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether the client listener serves TLS.
    pub fn serves(&self) -> bool {
        self.cert_file.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(ConfigError::key(
                "tls.key_file",
                "must be set when tls.cert_file is (the certificate's private key)",
            )),
            (None, Some(_)) => Err(ConfigError::key(
                "tls.cert_file",
                "must be set when tls.key_file is (the certificate chain the key belongs to)",
            )),
            _ => Ok(()),
        }
    }
}
