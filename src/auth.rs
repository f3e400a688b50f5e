//! JWT authentication of WebSocket clients, sans-IO and clock-free.
//!
//! Why this exists: the gateway must decide, during the upgrade handshake and
//! on every core without coordination, whether a bearer token is genuine and
//! who it names. [`Authenticator`] is built once from [`AuthSettings`], is
//! `Send + Sync`, and is then shared read-only by all worker threads. It never
//! reads the clock: the caller passes `now_unix`, which keeps expiry logic
//! deterministic and testable, and lets a core reuse its cached coarse clock.
//!
//! Security rules enforced here:
//! * The algorithm is pinned by configuration. The token header's `alg` only
//!   selects among the keys that were configured (`HS256` ↔ `hs256_secret`,
//!   `RS256`/`ES256`/`EdDSA` ↔ their public keys). Anything else (`none`,
//!   `HS384`, `RS256` when only a secret is configured — the classic
//!   public-key-as-HMAC-secret confusion) is [`AuthError::AlgorithmNotAllowed`]
//!   before any cryptography runs.
//! * `exp` is required and checked here against `now_unix`: the token is
//!   valid while `now_unix < exp + leeway_secs` (RFC 7519 §4.1.4: "before").
//!   `nbf`, if present, must satisfy `nbf <= now_unix + leeway_secs`.
//!   jsonwebtoken's own clock-based checks are switched off.
//! * `iss` / `aud` are checked only when configured; then they are required.
//!   An `aud` claim is ignored when no audience is configured.
//! * Tokens carrying a `crit` header are refused as malformed (we implement no
//!   JWS extensions, RFC 7515 §4.1.11).
//! * No error, `Debug` or `Display` output ever contains a token or the HMAC
//!   secret.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Tokens longer than this are rejected as malformed without being decoded.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Minimum HS256 secret length (RFC 7518 §3.2: key ≥ hash output size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Authentication configuration, mapped by the integrator from TOML
/// (`[auth]`). `Debug` redacts the HMAC secret.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// Shared HS256 secret, used as raw UTF-8 bytes (not base64-decoded).
    /// Must be at least [`MIN_HS256_SECRET_BYTES`] long.
    pub hs256_secret: Option<String>,
    /// RS256 public key, PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE`).
    pub rs256_public_key_pem: Option<Vec<u8>>,
    /// ES256 (P-256) public key, PEM (`PUBLIC KEY`).
    pub es256_public_key_pem: Option<Vec<u8>>,
    /// EdDSA (Ed25519) public key, PEM (`PUBLIC KEY`).
    pub eddsa_public_key_pem: Option<Vec<u8>>,
    /// Required `iss` value, if set.
    pub issuer: Option<String>,
    /// Required `aud` value (string or member of the array), if set.
    pub audience: Option<String>,
    /// Clock skew tolerated for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Whether [`Authenticator::anonymous`] hands out identities.
    pub allow_anonymous: bool,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pem = |p: &Option<Vec<u8>>| p.as_ref().map(|b| format!("<{} bytes of PEM>", b.len()));
        f.debug_struct("AuthSettings")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("rs256_public_key_pem", &pem(&self.rs256_public_key_pem))
            .field("es256_public_key_pem", &pem(&self.es256_public_key_pem))
            .field("eddsa_public_key_pem", &pem(&self.eddsa_public_key_pem))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

/// Why [`Authenticator::new`] refused the settings. Display names the config
/// key, e.g. `auth.rs256_public_key: invalid PEM (expected an RSA public key)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// One setting is unusable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Config key, e.g. `auth.hs256_secret`.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No key configured and anonymous access disabled: nobody could connect.
    #[error(
        "auth: no verification key configured (hs256_secret, rs256_public_key, \
         es256_public_key, eddsa_public_key) and allow_anonymous is false"
    )]
    NothingConfigured,
}

/// Why a token was rejected. Carries no token data: safe to log and to use
/// as a metrics label via [`AuthError::as_str`]. Every variant should be
/// answered with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    /// Not a compact JWS, bad base64/JSON, oversized, or a `crit` header.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not one of the configured algorithms.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// Signature does not verify with the configured key.
    #[error("bad token signature")]
    BadSignature,
    /// No `exp` claim.
    #[error("token has no exp claim")]
    MissingExp,
    /// `exp` (plus leeway) is not in the future.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` missing or not the configured issuer.
    #[error("token issuer not accepted")]
    BadIssuer,
    /// `aud` missing or not containing the configured audience.
    #[error("token audience not accepted")]
    BadAudience,
    /// A claim we read (`exp`, `nbf`, `sub`, `sid`, `roles`) has the wrong type.
    #[error("token claim `{0}` has an invalid type")]
    InvalidClaim(&'static str),
}

impl AuthError {
    /// Stable snake_case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::BadSignature => "bad_signature",
            AuthError::MissingExp => "missing_exp",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadIssuer => "bad_issuer",
            AuthError::BadAudience => "bad_audience",
            AuthError::InvalidClaim(_) => "invalid_claim",
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub` claim.
    pub account_id: Option<String>,
    /// `roles` claim: array of strings, or one string (→ one role).
    pub roles: Vec<String>,
    /// `sid` claim for tokens; the caller's session id for anonymous.
    pub session_id: Option<String>,
    /// When the token stops being accepted: `exp` plus the configured leeway. The
    /// handshake refuses it from this second on and the session sweep closes the
    /// session (4001) at the same second: one rule for both. `None` only for
    /// anonymous.
    pub expires_at: Option<u64>,
    /// True only for identities from [`Authenticator::anonymous`].
    pub anonymous: bool,
}

/// One configured verification key and the (clock-free) validation settings
/// pinned to its single algorithm.
struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    fn new(alg: Algorithm, key: DecodingKey) -> Self {
        let mut validation = Validation::new(alg);
        // Time, issuer and audience are checked in `Authenticator::verify`
        // against the caller's clock; jsonwebtoken only verifies the signature.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Verifier { key, validation }
    }
}

/// Verifies JWTs against the configured keys. Build once, share by reference
/// (or `Arc`) across threads.
pub struct Authenticator {
    hs256: Option<Verifier>,
    rs256: Option<Verifier>,
    es256: Option<Verifier>,
    eddsa: Option<Verifier>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    allow_anonymous: bool,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("es256", &self.es256.is_some())
            .field("eddsa", &self.eddsa.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

const KEY_HS256: &str = "auth.hs256_secret";
const KEY_RS256: &str = "auth.rs256_public_key";
const KEY_ES256: &str = "auth.es256_public_key";
const KEY_EDDSA: &str = "auth.eddsa_public_key";

impl Authenticator {
    /// Validates the settings and parses the keys.
    ///
    /// Key PEMs are parsed structurally here (wrong key type or a private key
    /// is refused). Note the RSA key itself is only fully checked by the
    /// crypto backend at verify time: e.g. an RSA key under 2048 bits loads
    /// but makes every RS256 token fail with `BadSignature`.
    pub fn new(s: &AuthSettings) -> Result<Self, AuthConfigError> {
        let hs256 = match &s.hs256_secret {
            None => None,
            Some(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
                return Err(AuthConfigError::Invalid {
                    key: KEY_HS256,
                    reason: "must be at least 32 bytes",
                })
            }
            Some(secret) => Some(Verifier::new(
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            )),
        };
        let rs256 = public_key(
            &s.rs256_public_key_pem,
            KEY_RS256,
            Algorithm::RS256,
            DecodingKey::from_rsa_pem,
            "invalid PEM (expected an RSA public key)",
        )?;
        let es256 = public_key(
            &s.es256_public_key_pem,
            KEY_ES256,
            Algorithm::ES256,
            DecodingKey::from_ec_pem,
            "invalid PEM (expected an EC P-256 public key)",
        )?;
        let eddsa = public_key(
            &s.eddsa_public_key_pem,
            KEY_EDDSA,
            Algorithm::EdDSA,
            DecodingKey::from_ed_pem,
            "invalid PEM (expected an Ed25519 public key)",
        )?;
        if s.issuer.as_deref() == Some("") {
            return Err(AuthConfigError::Invalid {
                key: "auth.issuer",
                reason: "must not be empty (omit it to skip the check)",
            });
        }
        if s.audience.as_deref() == Some("") {
            return Err(AuthConfigError::Invalid {
                key: "auth.audience",
                reason: "must not be empty (omit it to skip the check)",
            });
        }
        let any_key = hs256.is_some() || rs256.is_some() || es256.is_some() || eddsa.is_some();
        if !any_key && !s.allow_anonymous {
            return Err(AuthConfigError::NothingConfigured);
        }
        Ok(Authenticator {
            hs256,
            rs256,
            es256,
            eddsa,
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            leeway_secs: s.leeway_secs,
            allow_anonymous: s.allow_anonymous,
        })
    }

    /// Verifies `token` (compact JWS) at time `now_unix` (seconds since the
    /// Unix epoch) and returns who it names.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let verifier = match header_alg(token)? {
            "HS256" => self.hs256.as_ref(),
            "RS256" => self.rs256.as_ref(),
            "ES256" => self.es256.as_ref(),
            "EdDSA" => self.eddsa.as_ref(),
            _ => None,
        }
        .ok_or(AuthError::AlgorithmNotAllowed)?;

        let claims =
            jsonwebtoken::decode::<Map<String, Value>>(token, &verifier.key, &verifier.validation)
                .map_err(map_jwt_error)?
                .claims;

        let exp = match claims.get("exp") {
            None | Some(Value::Null) => return Err(AuthError::MissingExp),
            Some(v) => numeric_date(v, false).ok_or(AuthError::InvalidClaim("exp"))?,
        };
        let expires_at = exp.saturating_add(self.leeway_secs);
        if now_unix >= expires_at {
            return Err(AuthError::Expired);
        }
        if let Some(v) = claims.get("nbf").filter(|v| !v.is_null()) {
            let nbf = numeric_date(v, true).ok_or(AuthError::InvalidClaim("nbf"))?;
            if nbf > now_unix.saturating_add(self.leeway_secs) {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(AuthError::BadIssuer);
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::BadAudience);
            }
        }

        Ok(Identity {
            account_id: optional_string(&claims, "sub")?,
            roles: roles(&claims)?,
            session_id: optional_string(&claims, "sid")?,
            expires_at: Some(expires_at),
            anonymous: false,
        })
    }

    /// An anonymous identity for a client that presented no credential, or
    /// `None` when `allow_anonymous` is off (then answer 401).
    pub fn anonymous(&self, session_id: String) -> Option<Identity> {
        self.allow_anonymous.then(|| Identity {
            account_id: None,
            roles: Vec::new(),
            session_id: Some(session_id),
            expires_at: None,
            anonymous: true,
        })
    }
}

fn public_key(
    pem: &Option<Vec<u8>>,
    key: &'static str,
    alg: Algorithm,
    parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
    invalid: &'static str,
) -> Result<Option<Verifier>, AuthConfigError> {
    let Some(pem) = pem else { return Ok(None) };
    if contains(pem, b"PRIVATE KEY-----") {
        // Refuse rather than derive: private keys do not belong on the edge.
        return Err(AuthConfigError::Invalid {
            key,
            reason: "is a private key; configure the public key",
        });
    }
    let decoding = parse(pem).map_err(|_| AuthConfigError::Invalid {
        key,
        reason: invalid,
    })?;
    Ok(Some(Verifier::new(alg, decoding)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `alg` of a compact JWS header, without trusting anything else in it.
fn header_alg(token: &str) -> Result<&'static str, AuthError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        #[serde(default)]
        crit: Option<Value>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    // serde would also accept `["HS256"]` for a struct; a JOSE header is an
    // object. Duplicate members are refused by the derived impl.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(AuthError::Malformed);
    }
    let raw: RawHeader = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if raw.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    // Map to static names so nothing attacker-controlled flows onward.
    Ok(match raw.alg.as_str() {
        "HS256" => "HS256",
        "RS256" => "RS256",
        "ES256" => "ES256",
        "EdDSA" => "EdDSA",
        _ => "",
    })
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        JwtErrorKind::InvalidSignature => AuthError::BadSignature,
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::MissingAlgorithm => {
            AuthError::AlgorithmNotAllowed
        }
        JwtErrorKind::InvalidToken
        | JwtErrorKind::Base64(_)
        | JwtErrorKind::Json(_)
        | JwtErrorKind::Utf8(_) => AuthError::Malformed,
        // Key or provider trouble: fail closed.
        _ => AuthError::BadSignature,
    }
}

/// RFC 7519 NumericDate as whole seconds. Fractions round toward the stricter
/// side (`exp` down, `nbf` up). `None` for non-numbers and negatives.
fn numeric_date(v: &Value, round_up: bool) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    // `as` saturates for values above u64::MAX.
    Some(if round_up { f.ceil() } else { f.floor() } as u64)
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

fn roles(claims: &Map<String, Value>) -> Result<Vec<String>, AuthError> {
    match claims.get("roles") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| {
                r.as_str()
                    .map(str::to_owned)
                    .ok_or(AuthError::InvalidClaim("roles"))
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidClaim("roles")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

    const RSA_PRIVATE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_only_rsa2048_private.pem"
    ));
    const RSA_PUBLIC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_only_rsa2048_public.pem"
    ));
    const RSA_OTHER_PRIVATE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_only_rsa2048_other_private.pem"
    ));
    const EC_PRIVATE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_only_ec_p256_private.pem"
    ));
    const EC_PUBLIC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_only_ec_p256_public.pem"
    ));
    const ED_PRIVATE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_only_ed25519_private.pem"
    ));
    const ED_PUBLIC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_only_ed25519_public.pem"
    ));

    fn hs_only() -> AuthSettings {
        AuthSettings {
            hs256_secret: Some(SECRET.into()),
            ..AuthSettings::default()
        }
    }

    fn all_algs() -> AuthSettings {
        AuthSettings {
            hs256_secret: Some(SECRET.into()),
            rs256_public_key_pem: Some(RSA_PUBLIC.to_vec()),
            es256_public_key_pem: Some(EC_PUBLIC.to_vec()),
            eddsa_public_key_pem: Some(ED_PUBLIC.to_vec()),
            ..AuthSettings::default()
        }
    }

    fn auth(s: AuthSettings) -> Authenticator {
        Authenticator::new(&s).expect("valid settings")
    }

    fn mint(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).expect("mint")
    }

    fn hs(claims: &Value) -> String {
        mint(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn std_claims() -> Value {
        json!({ "sub": "acct-42", "sid": "sess-9", "roles": ["player", "mod"], "exp": NOW + 300 })
    }

    #[test]
    fn authenticator_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Authenticator>();
    }

    #[test]
    fn hs256_token_is_accepted_and_claims_mapped() {
        let id = auth(hs_only()).verify(&hs(&std_claims()), NOW).unwrap();
        assert_eq!(
            id,
            Identity {
                account_id: Some("acct-42".into()),
                roles: vec!["player".into(), "mod".into()],
                session_id: Some("sess-9".into()),
                expires_at: Some(NOW + 300),
                anonymous: false,
            }
        );
    }

    #[test]
    fn rs256_token_is_accepted() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let token = mint(Algorithm::RS256, &key, &std_claims());
        let id = auth(all_algs()).verify(&token, NOW).unwrap();
        assert_eq!(id.account_id.as_deref(), Some("acct-42"));
    }

    #[test]
    fn es256_token_is_accepted() {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
        let token = mint(Algorithm::ES256, &key, &std_claims());
        let id = auth(all_algs()).verify(&token, NOW).unwrap();
        assert_eq!(id.session_id.as_deref(), Some("sess-9"));
    }

    #[test]
    fn eddsa_token_is_accepted() {
        let key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
        let token = mint(Algorithm::EdDSA, &key, &std_claims());
        let id = auth(all_algs()).verify(&token, NOW).unwrap();
        assert_eq!(id.expires_at, Some(NOW + 300));
    }

    #[test]
    fn expired_token_is_rejected_without_leeway() {
        let a = auth(hs_only());
        let token = hs(&json!({ "exp": NOW - 10 }));
        assert_eq!(a.verify(&token, NOW), Err(AuthError::Expired));
        // exp is exclusive: a token is dead at exactly `exp`.
        let token = hs(&json!({ "exp": NOW }));
        assert_eq!(a.verify(&token, NOW), Err(AuthError::Expired));
        assert!(a.verify(&token, NOW - 1).is_ok());
    }

    #[test]
    fn leeway_tolerates_small_skew_only() {
        let a = auth(AuthSettings {
            leeway_secs: 30,
            ..hs_only()
        });
        let token = hs(&json!({ "exp": NOW - 10 }));
        assert!(a.verify(&token, NOW).is_ok());
        assert_eq!(a.verify(&token, NOW + 20), Err(AuthError::Expired));
    }

    #[test]
    fn the_session_deadline_is_the_second_the_handshake_stops_accepting_the_token() {
        let a = auth(AuthSettings {
            leeway_secs: 30,
            ..hs_only()
        });
        let token = hs(&json!({ "exp": NOW + 300 }));
        let deadline = a.verify(&token, NOW).unwrap().expires_at.unwrap();
        assert_eq!(deadline, NOW + 330, "exp plus the leeway");
        assert!(a.verify(&token, deadline - 1).is_ok());
        assert_eq!(a.verify(&token, deadline), Err(AuthError::Expired));
    }

    #[test]
    fn missing_exp_is_rejected() {
        let a = auth(hs_only());
        let token = hs(&json!({ "sub": "acct" }));
        assert_eq!(a.verify(&token, NOW), Err(AuthError::MissingExp));
        let token = hs(&json!({ "sub": "acct", "exp": null }));
        assert_eq!(a.verify(&token, NOW), Err(AuthError::MissingExp));
    }

    #[test]
    fn non_numeric_exp_is_invalid_claim() {
        let a = auth(hs_only());
        for exp in [json!("soon"), json!(-5), json!(true)] {
            let token = hs(&json!({ "exp": exp }));
            assert_eq!(a.verify(&token, NOW), Err(AuthError::InvalidClaim("exp")));
        }
        let token = hs(&json!({ "exp": (NOW + 60) as f64 + 0.5 }));
        assert_eq!(a.verify(&token, NOW).unwrap().expires_at, Some(NOW + 60));
    }

    #[test]
    fn future_nbf_is_rejected_unless_within_leeway() {
        let token = hs(&json!({ "exp": NOW + 300, "nbf": NOW + 20 }));
        assert_eq!(
            auth(hs_only()).verify(&token, NOW),
            Err(AuthError::NotYetValid)
        );
        let lenient = auth(AuthSettings {
            leeway_secs: 30,
            ..hs_only()
        });
        assert!(lenient.verify(&token, NOW).is_ok());
        let token = hs(&json!({ "exp": NOW + 300, "nbf": NOW }));
        assert!(auth(hs_only()).verify(&token, NOW).is_ok());
    }

    #[test]
    fn alg_none_is_not_allowed() {
        let header = b64(&json!({ "alg": "none", "typ": "JWT" }));
        let payload = b64(&std_claims());
        let a = auth(all_algs());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            assert_eq!(a.verify(&token, NOW), Err(AuthError::AlgorithmNotAllowed));
        }
        let header = b64(&json!({ "alg": "None" }));
        let token = format!("{header}.{payload}.");
        assert_eq!(a.verify(&token, NOW), Err(AuthError::AlgorithmNotAllowed));
    }

    #[test]
    fn unconfigured_hmac_variant_is_not_allowed() {
        let token = mint(
            Algorithm::HS384,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &std_claims(),
        );
        assert_eq!(
            auth(all_algs()).verify(&token, NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn rs256_token_with_only_hs256_configured_is_not_allowed() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let token = mint(Algorithm::RS256, &key, &std_claims());
        assert_eq!(
            auth(hs_only()).verify(&token, NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn hs256_token_signed_with_rsa_public_key_is_rejected() {
        // Key confusion: attacker uses the (public) RSA PEM as HMAC secret.
        let forged = mint(
            Algorithm::HS256,
            &EncodingKey::from_secret(RSA_PUBLIC),
            &std_claims(),
        );
        let rs_only = auth(AuthSettings {
            rs256_public_key_pem: Some(RSA_PUBLIC.to_vec()),
            ..AuthSettings::default()
        });
        assert_eq!(
            rs_only.verify(&forged, NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
        // With an HS256 secret configured too, HS256 is allowed but the
        // signature is checked against the real secret only.
        assert_eq!(
            auth(all_algs()).verify(&forged, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn wrong_key_is_bad_signature() {
        let wrong_secret = EncodingKey::from_secret(b"another-test-only-secret-0123456789");
        let token = mint(Algorithm::HS256, &wrong_secret, &std_claims());
        assert_eq!(
            auth(hs_only()).verify(&token, NOW),
            Err(AuthError::BadSignature)
        );
        let other_rsa = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).unwrap();
        let token = mint(Algorithm::RS256, &other_rsa, &std_claims());
        assert_eq!(
            auth(all_algs()).verify(&token, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let token = hs(&std_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let evil = b64(&json!({ "sub": "admin", "roles": "admin", "exp": NOW + 300 }));
        parts[1] = &evil;
        assert_eq!(
            auth(hs_only()).verify(&parts.join("."), NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let a = auth(all_algs());
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        let valid = hs(&std_claims());
        let crit = format!(
            "{}.{}",
            b64(&json!({ "alg": "HS256", "crit": ["exp"] })),
            valid.split_once('.').unwrap().1
        );
        for token in [
            "",
            "not-a-jwt",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "....",
            "%%%.e30.sig",
            &format!("{}.e30.sig", b64(&json!(["alg"]))),
            &format!("{}.e30.sig", b64(&json!({ "typ": "JWT" }))),
            &format!(
                "{}.e30.sig",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","alg":"none"}"#)
            ),
            &format!("{valid}.extra"),
            &huge,
            &crit,
        ] {
            assert_eq!(
                a.verify(token, NOW),
                Err(AuthError::Malformed),
                "{token:.40}"
            );
        }
    }

    #[test]
    fn correctly_signed_non_json_payload_is_malformed() {
        let header = b64(&json!({ "alg": "HS256", "typ": "JWT" }));
        let payload = URL_SAFE_NO_PAD.encode(b"not json");
        let message = format!("{header}.{payload}");
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            auth(hs_only()).verify(&format!("{message}.{sig}"), NOW),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn roles_may_be_string_array_or_absent() {
        let a = auth(hs_only());
        let roles = |r: Option<Value>| {
            let mut c = json!({ "exp": NOW + 60 });
            if let Some(r) = r {
                c["roles"] = r;
            }
            a.verify(&hs(&c), NOW).map(|id| id.roles)
        };
        assert_eq!(roles(Some(json!("admin"))), Ok(vec!["admin".to_string()]));
        assert_eq!(
            roles(Some(json!(["a", "b"]))),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(roles(Some(json!([]))), Ok(vec![]));
        assert_eq!(roles(None), Ok(vec![]));
        assert_eq!(roles(Some(json!(7))), Err(AuthError::InvalidClaim("roles")));
        assert_eq!(
            roles(Some(json!(["a", 1]))),
            Err(AuthError::InvalidClaim("roles"))
        );
    }

    #[test]
    fn sid_and_sub_map_to_identity_and_extra_claims_are_ignored() {
        let a = auth(hs_only());
        let token = hs(&json!({
            "exp": NOW + 60, "sub": "acct-1", "sid": "s-1",
            "iat": NOW, "jti": "x", "custom": { "nested": [1, 2] }
        }));
        let id = a.verify(&token, NOW).unwrap();
        assert_eq!(id.account_id.as_deref(), Some("acct-1"));
        assert_eq!(id.session_id.as_deref(), Some("s-1"));
        let id = a.verify(&hs(&json!({ "exp": NOW + 60 })), NOW).unwrap();
        assert_eq!((id.account_id, id.session_id), (None, None));
        let token = hs(&json!({ "exp": NOW + 60, "sid": 5 }));
        assert_eq!(a.verify(&token, NOW), Err(AuthError::InvalidClaim("sid")));
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let a = auth(AuthSettings {
            issuer: Some("bannou-auth".into()),
            audience: Some("ringgate".into()),
            ..hs_only()
        });
        let ok = |c: Value| a.verify(&hs(&c), NOW);
        let exp = NOW + 60;
        assert!(ok(json!({ "exp": exp, "iss": "bannou-auth", "aud": "ringgate" })).is_ok());
        assert!(ok(json!({ "exp": exp, "iss": "bannou-auth", "aud": ["x", "ringgate"] })).is_ok());
        assert_eq!(
            ok(json!({ "exp": exp, "iss": "evil", "aud": "ringgate" })),
            Err(AuthError::BadIssuer)
        );
        assert_eq!(
            ok(json!({ "exp": exp, "aud": "ringgate" })),
            Err(AuthError::BadIssuer)
        );
        assert_eq!(
            ok(json!({ "exp": exp, "iss": "bannou-auth", "aud": ["x"] })),
            Err(AuthError::BadAudience)
        );
        assert_eq!(
            ok(json!({ "exp": exp, "iss": "bannou-auth" })),
            Err(AuthError::BadAudience)
        );
        // Unconfigured: aud / iss are ignored.
        let token = hs(&json!({ "exp": exp, "iss": "any", "aud": "other" }));
        assert!(auth(hs_only()).verify(&token, NOW).is_ok());
    }

    #[test]
    fn anonymous_only_when_allowed() {
        assert_eq!(auth(hs_only()).anonymous("s-1".into()), None);
        let a = auth(AuthSettings {
            allow_anonymous: true,
            ..AuthSettings::default()
        });
        assert_eq!(
            a.anonymous("s-1".into()),
            Some(Identity {
                account_id: None,
                roles: vec![],
                session_id: Some("s-1".into()),
                expires_at: None,
                anonymous: true,
            })
        );
        // No keys configured: every token is refused before any crypto.
        assert_eq!(
            a.verify(&hs(&std_claims()), NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn no_algorithm_and_no_anonymous_is_config_error() {
        let err = Authenticator::new(&AuthSettings::default()).unwrap_err();
        assert_eq!(err, AuthConfigError::NothingConfigured);
    }

    #[test]
    fn config_errors_name_the_offending_key() {
        let cases: [(AuthSettings, &str); 7] = [
            (
                AuthSettings {
                    rs256_public_key_pem: Some(b"not a pem".to_vec()),
                    ..AuthSettings::default()
                },
                "auth.rs256_public_key: invalid PEM",
            ),
            (
                AuthSettings {
                    rs256_public_key_pem: Some(EC_PUBLIC.to_vec()),
                    ..AuthSettings::default()
                },
                "auth.rs256_public_key: invalid PEM",
            ),
            (
                AuthSettings {
                    es256_public_key_pem: Some(RSA_PUBLIC.to_vec()),
                    ..AuthSettings::default()
                },
                "auth.es256_public_key: invalid PEM",
            ),
            (
                AuthSettings {
                    eddsa_public_key_pem: Some(ED_PRIVATE.to_vec()),
                    ..AuthSettings::default()
                },
                "auth.eddsa_public_key: is a private key",
            ),
            (
                AuthSettings {
                    hs256_secret: Some("short".into()),
                    ..AuthSettings::default()
                },
                "auth.hs256_secret: must be at least 32 bytes",
            ),
            (
                AuthSettings {
                    issuer: Some(String::new()),
                    ..hs_only()
                },
                "auth.issuer: must not be empty",
            ),
            (
                AuthSettings {
                    audience: Some(String::new()),
                    ..hs_only()
                },
                "auth.audience: must not be empty",
            ),
        ];
        for (settings, want) in cases {
            let err = Authenticator::new(&settings).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn errors_and_debug_never_contain_token_or_secret() {
        let a = auth(hs_only());
        let tokens = [
            hs(&json!({ "exp": NOW - 1 })),
            hs(&json!({})),
            format!("{}x", hs(&std_claims())),
            "secret-garbage-token".to_string(),
        ];
        for token in &tokens {
            let err = a.verify(token, NOW).unwrap_err();
            let shown = format!("{err} {err:?} {}", err.as_str());
            for part in token.split('.').filter(|p| p.len() > 8) {
                assert!(!shown.contains(part), "{shown}");
            }
        }
        let dbg = format!("{:?} {:?}", hs_only(), a);
        assert!(!dbg.contains(SECRET), "{dbg}");
    }
}
