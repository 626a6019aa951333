//! JSON Web Tokens: verifying the ones clients present and minting the ones
//! `herald token` prints.
//!
//! The algorithm is pinned by configuration (HS256 with a secret, or one
//! asymmetric algorithm with a public key): a token that names another
//! algorithm, `none` included, is refused. This module never logs a token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a token's keys could not be loaded; the caller names the setting.
#[derive(Debug)]
pub enum JwtKeyError {
    Algorithm(String),
    PublicKey(String),
    PrivateKey(String),
}

/// Why a presented token was refused. The variants are the codes clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid_token")]
    Invalid,
    #[error("token_expired")]
    Expired,
}

/// The claims herald reads. Unknown claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

/// A verified token: whose it is and until when it is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Keys and rules for tokens.
#[derive(Clone)]
pub struct JwtConfig {
    algorithm: Algorithm,
    decoding: DecodingKey,
    /// Present for HS256, or when a private key file was given.
    encoding: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

impl std::fmt::Debug for JwtConfig {
    // Keys stay out of every Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtConfig {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        }
    }

    /// RS256, ES256 or EdDSA with a PEM public key (and optionally the
    /// private key, for `herald token`).
    pub fn asymmetric(
        algorithm: &str,
        public_pem: &[u8],
        private_pem: Option<&[u8]>,
    ) -> Result<Self, JwtKeyError> {
        let algorithm = match algorithm.trim() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            other => {
                return Err(JwtKeyError::Algorithm(format!(
                    "{other:?} is not one of RS256, ES256, EdDSA"
                )));
            }
        };
        let public = |e: jsonwebtoken::errors::Error| {
            JwtKeyError::PublicKey(format!("not a PEM {algorithm:?} public key ({e})"))
        };
        let private = |e: jsonwebtoken::errors::Error| {
            JwtKeyError::PrivateKey(format!("not a PEM {algorithm:?} private key ({e})"))
        };
        let (decoding, encoding) = match algorithm {
            Algorithm::RS256 => (
                DecodingKey::from_rsa_pem(public_pem).map_err(public)?,
                private_pem
                    .map(EncodingKey::from_rsa_pem)
                    .transpose()
                    .map_err(private)?,
            ),
            Algorithm::ES256 => (
                DecodingKey::from_ec_pem(public_pem).map_err(public)?,
                private_pem
                    .map(EncodingKey::from_ec_pem)
                    .transpose()
                    .map_err(private)?,
            ),
            _ => (
                DecodingKey::from_ed_pem(public_pem).map_err(public)?,
                private_pem
                    .map(EncodingKey::from_ed_pem)
                    .transpose()
                    .map_err(private)?,
            ),
        };
        Ok(Self {
            algorithm,
            decoding,
            encoding,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        })
    }

    pub fn with_claims(
        mut self,
        issuer: Option<&str>,
        audience: Option<&str>,
        leeway: Duration,
    ) -> Self {
        self.issuer = issuer.map(str::to_owned);
        self.audience = audience.map(str::to_owned);
        self.leeway = leeway;
        self
    }

    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `iss` and `aud`, and that
    /// `sub` is a user id.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user_id = Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::Invalid)?;
        Ok(VerifiedToken {
            user_id,
            expires_at: data.claims.exp,
        })
    }

    /// Mints a token for `user_id` that expires after `ttl`.
    pub fn sign(&self, user_id: Uuid, ttl: Duration) -> anyhow::Result<String> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "signing needs JWT_SECRET, or JWT_PRIVATE_KEY_FILE beside JWT_PUBLIC_KEY_FILE"
            )
        })?;
        let now = unix_now();
        let claims = Claims {
            sub: user_id.to_string(),
            exp: now + ttl.as_secs().max(1),
            iat: Some(now),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &claims,
            key,
        )?)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-enough-length";

    fn encode(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn signed_token_verifies() {
        let jwt = JwtConfig::hs256(SECRET);
        let user = Uuid::new_v4();
        let token = jwt.sign(user, Duration::from_secs(60)).unwrap();
        assert_eq!(jwt.verify(&token).unwrap().user_id, user);
    }

    #[test]
    fn expired_beyond_leeway_is_token_expired() {
        let jwt = JwtConfig::hs256(SECRET);
        let exp = unix_now() - 30;
        let token = encode(
            serde_json::json!({"sub": Uuid::new_v4(), "exp": exp}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(jwt.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn expired_within_leeway_is_accepted() {
        let jwt = JwtConfig::hs256(SECRET);
        let exp = unix_now() - 2;
        let token = encode(
            serde_json::json!({"sub": Uuid::new_v4(), "exp": exp}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(jwt.verify(&token).is_ok());
    }

    #[test]
    fn other_algorithms_and_keys_are_invalid() {
        let jwt = JwtConfig::hs256(SECRET);
        let claims = serde_json::json!({"sub": Uuid::new_v4(), "exp": unix_now() + 60});
        assert_eq!(
            jwt.verify(&encode(claims.clone(), Algorithm::HS384, SECRET)),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            jwt.verify(&encode(
                claims.clone(),
                Algorithm::HS256,
                b"another-secret-entirely"
            )),
            Err(TokenError::Invalid)
        );
        // alg "none": header {"alg":"none"}, no signature.
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(&serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(jwt.verify(&unsigned), Err(TokenError::Invalid));
    }

    #[test]
    fn future_nbf_missing_exp_and_non_uuid_sub_are_invalid() {
        let jwt = JwtConfig::hs256(SECRET);
        let now = unix_now();
        let cases = [
            serde_json::json!({"sub": Uuid::new_v4(), "exp": now + 600, "nbf": now + 300}),
            serde_json::json!({"sub": Uuid::new_v4()}),
            serde_json::json!({"sub": "alice", "exp": now + 60}),
        ];
        for claims in cases {
            assert_eq!(
                jwt.verify(&encode(claims.clone(), Algorithm::HS256, SECRET)),
                Err(TokenError::Invalid),
                "{claims}"
            );
        }
        assert_eq!(jwt.verify("not a token"), Err(TokenError::Invalid));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let jwt = JwtConfig::hs256(SECRET).with_claims(
            Some("herald-tests"),
            Some("inbox"),
            Duration::from_secs(5),
        );
        let now = unix_now();
        let good = serde_json::json!({"sub": Uuid::new_v4(), "exp": now + 60, "iss": "herald-tests", "aud": "inbox"});
        let wrong_iss = serde_json::json!({"sub": Uuid::new_v4(), "exp": now + 60, "iss": "elsewhere", "aud": "inbox"});
        let no_aud =
            serde_json::json!({"sub": Uuid::new_v4(), "exp": now + 60, "iss": "herald-tests"});
        assert!(jwt.verify(&encode(good, Algorithm::HS256, SECRET)).is_ok());
        assert_eq!(
            jwt.verify(&encode(wrong_iss, Algorithm::HS256, SECRET)),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            jwt.verify(&encode(no_aud, Algorithm::HS256, SECRET)),
            Err(TokenError::Invalid)
        );
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
