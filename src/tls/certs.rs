//! Certificates and roots: the server's chain and key from PEM files, swapped in place
//! on a reload, and the roots the client side (backends, links) verifies against.
//!
//! Why a resolver and not a new `ServerConfig` per reload: every shard holds the config
//! its accepts start sessions with; swapping the certified key behind one shared
//! resolver reaches all of them at once, with no message to each shard, and a
//! connection already up keeps the certificate it was served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// What the connections' handshakes offer: HTTP/1.1, the only protocol a WebSocket
/// upgrade is made in (a client offering only `h2` is refused by the handshake).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why TLS could not be set up. Each names the file it is about; the caller names the
/// config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("the private key in {path} cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: no usable CA certificate ({reason})")]
    BadCa { path: PathBuf, reason: String },
    #[error("no system root certificates found ({0}); install ca-certificates or name a CA file (`tls.ca_file`)")]
    NoSystemRoots(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// Whether the error is about the file at `path` (so the caller names its key).
    pub fn is_about(&self, path: &Path) -> bool {
        match self {
            TlsError::Read { path: p, .. }
            | TlsError::NoCertificate { path: p }
            | TlsError::NoKey { path: p }
            | TlsError::BadKey { path: p, .. }
            | TlsError::BadCa { path: p, .. } => p == path,
            TlsError::KeyMismatch { key, .. } => key == path,
            TlsError::NoSystemRoots(_) | TlsError::Rustls(_) => false,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server side of `wss://`: one config every shard's handshakes share, whose
/// certificate a reload replaces ([`ServerTls::reload`]).
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    current: Arc<CurrentCert>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// The certified key handshakes are served now.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // (A poisoned lock still holds a whole key: a writer only swaps an `Arc`.)
        Some(match self.0.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        })
    }
}

impl ServerTls {
    /// Loads the chain and key (PEM) and builds the config: TLS 1.3 and 1.2, ALPN
    /// `http/1.1`, no client certificates.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let key = load_certified(&provider, cert_path, key_path)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            current,
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        })
    }

    /// Reads the files again (the same paths) and serves the new certificate from the
    /// next handshake on; on an error the one served now stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified(&provider(), &self.cert_path, &self.key_path)?;
        match self.current.0.write() {
            Ok(mut k) => *k = Arc::new(key),
            Err(p) => *p.into_inner() = Arc::new(key),
        }
        Ok(())
    }

    /// The config new server sessions are made with.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

fn load_certified(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.to_owned(),
        },
        source => TlsError::Read {
            path: key_path.to_owned(),
            source,
        },
    })?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    })?;
    Ok(certified)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The client side's config (https backends, wss links): verified against the CAs in
/// `ca_file` if one is named, else the system's roots; ALPN `http/1.1`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::BadCa {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none installed".to_string(), |e| e.to_string());
                return Err(TlsError::NoSystemRoots(why));
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}
