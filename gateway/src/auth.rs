//! JWT verification for every adapter that logs users in, and minting for `switchboard token`.
//!
//! The key decides the algorithm (CONTRACT §8): a shared secret means HS256 only; a public key
//! means RS256 or ES256 by the key's type, never HS256, so a token signed with the public key as
//! an HMAC secret is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::address::UserId;
use crate::envelope::Timestamp;

const LEEWAY_SECS: u64 = 30;
const GENERATED_SECRET_FILE: &str = "jwt_secret";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token refused: {0}")]
    Invalid(String),
    #[error("token refused: its subject is not a valid user name")]
    BadSubject,
    #[error("cannot mint tokens: the gateway only holds a public key (auth.jwt_public_key)")]
    CannotMint,
    #[error("auth.jwt_public_key: cannot use {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot read or create the generated secret {path}: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// A verified token: who, and until when a session opened with it may last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub user: UserId,
    /// The token's `exp` plus the leeway it was accepted with.
    pub valid_until: std::time::SystemTime,
}

#[derive(Clone)]
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    algorithm: Algorithm,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
            algorithm: Algorithm::HS256,
        }
    }

    /// RS256 for an RSA key, ES256 for a P-256 key.
    pub fn from_public_key_file(path: &Path) -> Result<Self, AuthError> {
        let pem = std::fs::read(path).map_err(|e| AuthError::Key {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let (decoding, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            (key, Algorithm::ES256)
        } else {
            return Err(AuthError::Key {
                path: path.to_owned(),
                reason: "not an RSA or EC public key in PEM form".into(),
            });
        };
        Ok(Self {
            decoding,
            encoding: None,
            algorithm,
        })
    }

    /// The configured secret or key; with neither, a random secret kept in `data_dir` so that
    /// `run` and `token` agree without any setup.
    pub fn from_config(
        auth: &switchboard_config::AuthConfig,
        data_dir: &Path,
    ) -> Result<Self, AuthError> {
        if let Some(path) = &auth.jwt_public_key {
            return Self::from_public_key_file(path);
        }
        if let Some(secret) = &auth.jwt_secret {
            return Ok(Self::from_secret(secret.expose().as_bytes()));
        }
        let secret = generated_secret(data_dir)?;
        Ok(Self::from_secret(secret.as_bytes()))
    }

    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.login(token).map(|login| login.user)
    }

    /// [`Authenticator::verify`], keeping the expiry for sessions that must end with their token.
    pub fn login(&self, token: &str) -> Result<Login, AuthError> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let now = u64::try_from(Timestamp::now().0 / 1000).unwrap_or(0);
        if data.claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(AuthError::Invalid("issued in the future".into()));
        }
        let user = UserId::parse(&data.claims.sub).map_err(|_| AuthError::BadSubject)?;
        let valid_until = std::time::UNIX_EPOCH + Duration::from_secs(data.claims.exp.saturating_add(LEEWAY_SECS));
        Ok(Login { user, valid_until })
    }

    pub fn mint(&self, user: &UserId, ttl: Duration) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        let now = u64::try_from(Timestamp::now().0 / 1000).unwrap_or(0);
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

fn generated_secret(data_dir: &Path) -> Result<String, AuthError> {
    let path = data_dir.join(GENERATED_SECRET_FILE);
    let io_error = |source| AuthError::SecretFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io_error)?;
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, secret.as_bytes()).map_err(io_error)?;
            Ok(secret)
        }
        // Another process (a `token` beside a starting `run`) won the race: use its secret.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(io_error),
        Err(e) => Err(io_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid")
    }

    #[test]
    fn minted_tokens_verify_and_name_the_user() {
        let auth = Authenticator::from_secret(b"0123456789abcdef");
        let token = auth.mint(&alice(), Duration::from_secs(60)).expect("mint");
        assert_eq!(auth.verify(&token).expect("verify"), alice());
    }

    #[test]
    fn wrong_secret_and_expired_tokens_are_refused() {
        let auth = Authenticator::from_secret(b"0123456789abcdef");
        let other = Authenticator::from_secret(b"fedcba9876543210");
        let token = other.mint(&alice(), Duration::from_secs(60)).expect("mint");
        assert!(auth.verify(&token).is_err());

        let now = u64::try_from(Timestamp::now().0 / 1000).expect("clock");
        let claims = Claims { sub: "alice".into(), exp: now - 120, iat: None, nbf: None };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef"),
        )
        .expect("encode");
        assert!(auth.verify(&expired).is_err());
    }

    #[test]
    fn tokens_without_exp_or_with_a_bad_subject_are_refused() {
        let key = EncodingKey::from_secret(b"0123456789abcdef");
        let auth = Authenticator::from_secret(b"0123456789abcdef");
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "alice"}),
            &key,
        )
        .expect("encode");
        assert!(auth.verify(&no_exp).is_err());
        let bad_sub = auth.mint(&alice(), Duration::from_secs(60)).expect("mint");
        assert!(auth.verify(&bad_sub).is_ok());
        let now = u64::try_from(Timestamp::now().0 / 1000).expect("clock");
        let spoof = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "Not A User!", "exp": now + 60}),
            &key,
        )
        .expect("encode");
        assert!(matches!(auth.verify(&spoof), Err(AuthError::BadSubject)));
    }

    #[test]
    fn generated_secret_is_shared_between_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = switchboard_config::AuthConfig::default();
        let first = Authenticator::from_config(&config, dir.path()).expect("first");
        let second = Authenticator::from_config(&config, dir.path()).expect("second");
        let token = first.mint(&alice(), Duration::from_secs(60)).expect("mint");
        assert_eq!(second.verify(&token).expect("verify"), alice());
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../push-fakes/fixtures").join(name)
    }

    fn now() -> u64 {
        u64::try_from(Timestamp::now().0 / 1000).expect("clock")
    }

    #[test]
    fn unsigned_tokens_are_refused_whatever_the_key() {
        let hs_token = Authenticator::from_secret(b"0123456789abcdef").mint(&alice(), Duration::from_secs(60)).expect("mint");
        let claims = hs_token.split('.').nth(1).expect("claims segment");
        // Base64url of {"alg":"none","typ":"JWT"}, with the signature left empty.
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
        let hs = Authenticator::from_secret(b"0123456789abcdef");
        let rs = Authenticator::from_public_key_file(&fixture("fcm-service-account.pub.pem")).expect("RSA key");
        assert!(hs.verify(&unsigned).is_err());
        assert!(rs.verify(&unsigned).is_err());
    }

    #[test]
    fn the_key_pins_the_algorithm_so_a_public_key_cannot_be_used_as_an_hmac_secret() {
        let public_pem = std::fs::read(fixture("fcm-service-account.pub.pem")).expect("public key");
        let private_pem = std::fs::read(fixture("fcm-service-account.key.pem")).expect("private key");
        let rs = Authenticator::from_public_key_file(&fixture("fcm-service-account.pub.pem")).expect("RSA key");
        let claims = Claims { sub: "alice".into(), exp: now() + 60, iat: None, nbf: None };

        let genuine = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private_pem).expect("RSA private key"),
        )
        .expect("encode");
        assert_eq!(rs.verify(&genuine).expect("RS256 with the right key"), alice());

        // The classic confusion: HS256 "signed" with the server's public key as the secret.
        let forged =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&public_pem)).expect("encode");
        assert!(rs.verify(&forged).is_err());

        // And an HS256 gateway takes no RS256 token.
        let hs = Authenticator::from_secret(&public_pem);
        assert!(hs.verify(&genuine).is_err());
    }

    #[test]
    fn not_before_and_expiry_are_checked_with_a_small_leeway() {
        let key = EncodingKey::from_secret(b"0123456789abcdef");
        let auth = Authenticator::from_secret(b"0123456789abcdef");
        let token = |exp: u64, nbf: Option<u64>| {
            let claims = Claims { sub: "alice".into(), exp, iat: None, nbf };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode")
        };
        let now = now();
        assert!(auth.verify(&token(now + 600, Some(now + 10))).is_ok(), "a clock 10 s ahead is tolerated");
        assert!(auth.verify(&token(now + 600, Some(now + 120))).is_err(), "not valid for two more minutes");
        assert!(auth.verify(&token(now - 10, None)).is_ok(), "expired 10 s ago: within the leeway");
        assert!(auth.verify(&token(now - 120, None)).is_err());
    }
}
