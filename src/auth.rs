//! JSON Web Tokens: verifying the ones clients present and minting the ones
//! `herald token` prints.
//!
//! Every key pins one algorithm: HS256 for a secret, the configured one for
//! a public key file, and for keys from an identity provider the algorithm
//! the JWK names ([`jwks`]). A token that names another algorithm, `none`
//! included, is refused. This module never logs a token.

pub mod jwks;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
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

/// The claim that names the user unless `JWT_USER_CLAIM` says otherwise.
pub const DEFAULT_USER_CLAIM: &str = "sub";

/// A verified token: whose it is and until when it is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A key that verifies signatures of exactly one algorithm.
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// Where verifying keys come from.
#[derive(Clone)]
enum Keys {
    /// A secret or a public key file: one key, one algorithm.
    Pinned(Arc<VerifyingKey>),
    /// An identity provider's JWKS document, chosen by `kid`.
    Jwks(Arc<jwks::KeySet>),
}

/// Keys and rules for tokens.
#[derive(Clone)]
pub struct JwtConfig {
    keys: Keys,
    /// Present for HS256, or when a private key file was given.
    encoding: Option<(Algorithm, EncodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    user_claim: String,
}

impl std::fmt::Debug for JwtConfig {
    // Keys stay out of every Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::Pinned(key) => format!("{:?}", key.algorithm),
            Keys::Jwks(set) => format!("JWKS at {}", set.url()),
        };
        f.debug_struct("JwtConfig")
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

impl JwtConfig {
    fn with_keys(keys: Keys, encoding: Option<(Algorithm, EncodingKey)>) -> Self {
        Self {
            keys,
            encoding,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            user_claim: DEFAULT_USER_CLAIM.to_owned(),
        }
    }

    fn pinned(algorithm: Algorithm, decoding: DecodingKey, encoding: Option<EncodingKey>) -> Self {
        Self::with_keys(
            Keys::Pinned(Arc::new(VerifyingKey {
                algorithm,
                decoding,
            })),
            encoding.map(|key| (algorithm, key)),
        )
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::pinned(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
        )
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
        Ok(Self::pinned(algorithm, decoding, encoding))
    }

    /// Keys from an identity provider's JWKS document. Nothing is fetched
    /// until [`JwtConfig::start`]; such a config verifies but cannot sign.
    pub fn jwks(options: jwks::JwksOptions) -> Result<Self, jwks::JwksError> {
        Ok(Self::with_keys(
            Keys::Jwks(Arc::new(jwks::KeySet::new(options)?)),
            None,
        ))
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

    /// Reads the user id from `claim` instead of `sub`.
    pub fn with_user_claim(mut self, claim: &str) -> Self {
        self.user_claim = claim.to_owned();
        self
    }

    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Fetches the keys that come from an identity provider, once, before
    /// serving. Configured keys need nothing.
    pub async fn load_keys(&self) -> Result<(), jwks::StartError> {
        match &self.keys {
            Keys::Pinned(_) => Ok(()),
            Keys::Jwks(set) => set.load().await,
        }
    }

    /// The task that keeps an identity provider's keys fresh until `stop`;
    /// `None` for configured keys.
    pub fn refresh_keys(
        &self,
        stop: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        match &self.keys {
            Keys::Pinned(_) => None,
            Keys::Jwks(set) => Some(set.clone().run(stop)),
        }
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `iss` and `aud`, and that
    /// the user claim is a user id. With a JWKS this may wait for one fetch
    /// of the document, when the token names a key herald has not seen.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let token = token.trim();
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = match &self.keys {
            Keys::Pinned(key) => key.clone(),
            Keys::Jwks(set) => set
                .key_for(header.kid.as_deref(), header.alg)
                .await
                .ok_or(TokenError::Invalid)?,
        };
        // The key decides the algorithm, never the token: an HS256 token
        // "signed" with an RSA key's public material fails here.
        if header.alg != key.algorithm {
            return Err(TokenError::Invalid);
        }
        self.check(token, &key)
    }

    fn check(&self, token: &str, key: &VerifyingKey) -> Result<VerifiedToken, TokenError> {
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
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
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        let user_id = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or(TokenError::Invalid)?;
        let expires_at = claims
            .get("exp")
            .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|s| s as u64)))
            .ok_or(TokenError::Invalid)?;
        Ok(VerifiedToken {
            user_id,
            expires_at,
        })
    }

    /// Mints a token for `user_id` that expires after `ttl`: the id goes in
    /// `sub` and, when it is another claim, in the user claim too.
    pub fn sign(&self, user_id: Uuid, ttl: Duration) -> anyhow::Result<String> {
        let (algorithm, key) = self.encoding.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "signing needs JWT_SECRET, or JWT_PRIVATE_KEY_FILE beside JWT_PUBLIC_KEY_FILE"
            )
        })?;
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert("sub".into(), user_id.to_string().into());
        claims.insert(self.user_claim.clone(), user_id.to_string().into());
        claims.insert("exp".into(), (now + ttl.as_secs().max(1)).into());
        claims.insert("iat".into(), now.into());
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".into(), issuer.clone().into());
        }
        if let Some(audience) = &self.audience {
            claims.insert("aud".into(), audience.clone().into());
        }
        Ok(jsonwebtoken::encode(
            &Header::new(*algorithm),
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

    #[tokio::test]
    async fn signed_token_verifies() {
        let jwt = JwtConfig::hs256(SECRET);
        let user = Uuid::new_v4();
        let token = jwt.sign(user, Duration::from_secs(60)).unwrap();
        assert_eq!(jwt.verify(&token).await.unwrap().user_id, user);
    }

    #[tokio::test]
    async fn expired_beyond_leeway_is_token_expired() {
        let jwt = JwtConfig::hs256(SECRET);
        let exp = unix_now() - 30;
        let token = encode(
            serde_json::json!({"sub": Uuid::new_v4(), "exp": exp}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(jwt.verify(&token).await, Err(TokenError::Expired));
    }

    #[tokio::test]
    async fn expired_within_leeway_is_accepted() {
        let jwt = JwtConfig::hs256(SECRET);
        let exp = unix_now() - 2;
        let token = encode(
            serde_json::json!({"sub": Uuid::new_v4(), "exp": exp}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(jwt.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn other_algorithms_and_keys_are_invalid() {
        let jwt = JwtConfig::hs256(SECRET);
        let claims = serde_json::json!({"sub": Uuid::new_v4(), "exp": unix_now() + 60});
        assert_eq!(
            jwt.verify(&encode(claims.clone(), Algorithm::HS384, SECRET))
                .await,
            Err(TokenError::Invalid)
        );
        assert_eq!(
            jwt.verify(&encode(
                claims.clone(),
                Algorithm::HS256,
                b"another-secret-entirely"
            ))
            .await,
            Err(TokenError::Invalid)
        );
        // alg "none": header {"alg":"none"}, no signature.
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(&serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(jwt.verify(&unsigned).await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn future_nbf_missing_exp_and_non_uuid_sub_are_invalid() {
        let jwt = JwtConfig::hs256(SECRET);
        let now = unix_now();
        let cases = [
            serde_json::json!({"sub": Uuid::new_v4(), "exp": now + 600, "nbf": now + 300}),
            serde_json::json!({"sub": Uuid::new_v4()}),
            serde_json::json!({"sub": "alice", "exp": now + 60}),
        ];
        for claims in cases {
            assert_eq!(
                jwt.verify(&encode(claims.clone(), Algorithm::HS256, SECRET))
                    .await,
                Err(TokenError::Invalid),
                "{claims}"
            );
        }
        assert_eq!(jwt.verify("not a token").await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
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
        assert!(
            jwt.verify(&encode(good, Algorithm::HS256, SECRET))
                .await
                .is_ok()
        );
        assert_eq!(
            jwt.verify(&encode(wrong_iss, Algorithm::HS256, SECRET))
                .await,
            Err(TokenError::Invalid)
        );
        assert_eq!(
            jwt.verify(&encode(no_aud, Algorithm::HS256, SECRET)).await,
            Err(TokenError::Invalid)
        );
    }

    #[tokio::test]
    async fn the_user_claim_names_the_user() {
        let jwt = JwtConfig::hs256(SECRET).with_user_claim("uid");
        let user = Uuid::new_v4();
        let exp = unix_now() + 60;
        let token = encode(
            serde_json::json!({"sub": "alice@example.com", "uid": user, "exp": exp}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(jwt.verify(&token).await.unwrap().user_id, user);
        for claims in [
            serde_json::json!({"sub": user, "exp": exp}),
            serde_json::json!({"sub": user, "uid": "alice", "exp": exp}),
            serde_json::json!({"sub": user, "uid": 7, "exp": exp}),
        ] {
            assert_eq!(
                jwt.verify(&encode(claims.clone(), Algorithm::HS256, SECRET))
                    .await,
                Err(TokenError::Invalid),
                "{claims}"
            );
        }
        // herald's own tokens carry the claim it reads.
        let minted = jwt.sign(user, Duration::from_secs(60)).unwrap();
        assert_eq!(jwt.verify(&minted).await.unwrap().user_id, user);
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
