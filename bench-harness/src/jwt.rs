//! Mints HS256 JWTs for simulated users.
//!
//! Why it exists: every simulated client must authenticate like a real one, with a token
//! the gateway verifies (`sub`, `roles`, `sid`, `exp`), signed with the gateway's
//! configured secret (taken from `--secret` or from the gateway's config file).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Signs tokens with one secret.
pub struct Minter {
    key: EncodingKey,
    header: Header,
    /// Seconds until the tokens expire.
    pub ttl_secs: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    sid: &'a str,
    roles: &'a [&'a str],
    iat: u64,
    exp: u64,
}

impl Minter {
    pub fn new(secret: &str) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            ttl_secs: 3600,
        }
    }

    /// A token for `sub` with session id `sid` and `roles`, valid for `ttl_secs`.
    pub fn mint(&self, sub: &str, sid: &str, roles: &[&str]) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = Claims {
            sub,
            sid,
            roles,
            iat: now,
            exp: now + self.ttl_secs,
        };
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.key)?)
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_with_the_gateway_authenticator() {
        let secret = "test-secret-0123456789-0123456789-abcdef";
        let token = Minter::new(secret)
            .mint("user-7", "s-7", &["user"])
            .unwrap();
        let auth = ringgate::auth::Authenticator::new(&ringgate::auth::AuthSettings {
            hs256_secret: Some(secret.into()),
            leeway_secs: 30,
            ..Default::default()
        })
        .unwrap();
        let id = auth.verify(&token, unix_now()).unwrap();
        assert_eq!(id.account_id.as_deref(), Some("user-7"));
        assert_eq!(id.session_id.as_deref(), Some("s-7"));
        assert_eq!(id.roles, vec!["user".to_string()]);
    }
}
