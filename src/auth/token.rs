//! Access tokens: JWT signed with HS256, claims `sub`, `role`, `iat`, `exp`.
//!
//! Only HS256 is accepted when verifying; `alg: none`, any other algorithm, a
//! bad signature, a missing claim or an expired token are all rejected.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::user::Role;

/// Seconds of clock skew tolerated on `exp` between engine processes.
const LEEWAY_S: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

/// An access token and its lifetime, as returned to clients.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_s: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid access token: {0}")]
pub struct InvalidToken(String);

impl TokenService {
    pub fn new(secret: &SecretString, ttl_s: u64) -> TokenService {
        let key = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        TokenService {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl_s,
        }
    }

    pub fn issue(&self, user_id: Uuid, role: Role) -> anyhow::Result<IssuedToken> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl_s).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: user_id,
            role,
            iat: now,
            exp: now.saturating_add(ttl),
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(|e| anyhow::anyhow!("signing access token: {e}"))?;
        Ok(IssuedToken {
            access_token,
            expires_in: self.ttl_s,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| InvalidToken(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(secret: &str) -> TokenService {
        TokenService::new(&SecretString::from(secret.to_owned()), 3600)
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn issued_token_verifies_with_its_claims() {
        let tokens = service("a-test-secret-of-sufficient-length-000");
        let id = Uuid::now_v7();
        let issued = tokens.issue(id, Role::Admin).unwrap();
        let claims = tokens.verify(&issued.access_token).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn token_signed_with_another_key_is_rejected() {
        let issued = service("secret-one-secret-one-secret-one-1")
            .issue(Uuid::now_v7(), Role::Customer)
            .unwrap();
        assert!(service("secret-two-secret-two-secret-two-2")
            .verify(&issued.access_token)
            .is_err());
    }

    #[test]
    fn alg_none_is_rejected() {
        let tokens = service("a-test-secret-of-sufficient-length-000");
        let now = chrono::Utc::now().timestamp();
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(format!(
            r#"{{"sub":"{}","role":"admin","iat":{now},"exp":{}}}"#,
            Uuid::now_v7(),
            now + 600
        )
        .as_bytes());
        assert!(tokens.verify(&format!("{header}.{body}.")).is_err());
    }

    #[test]
    fn expired_token_is_rejected() {
        let tokens = service("a-test-secret-of-sufficient-length-000");
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: Uuid::now_v7(),
            role: Role::Customer,
            iat: now - 7200,
            exp: now - 3600,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding)
            .unwrap();
        assert!(tokens.verify(&token).is_err());
    }

    #[test]
    fn another_hmac_algorithm_is_rejected() {
        let tokens = service("a-test-secret-of-sufficient-length-000");
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: Uuid::now_v7(),
            role: Role::Admin,
            iat: now,
            exp: now + 600,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &tokens.encoding)
            .unwrap();
        assert!(tokens.verify(&token).is_err());
    }
}
