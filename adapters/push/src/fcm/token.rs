//! OAuth2 access tokens for FCM from a service account: an RS256 JWT grant (RFC 7523) posted
//! to the account's `token_uri`, cached until shortly before it expires.
//!
//! Written on jsonwebtoken rather than pulling gcp_auth or yup-oauth2: it is one signed POST,
//! and owning it keeps the token URL, the timeouts and the error mapping in our hands.

use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::PushError;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google issues tokens for an hour; renewing a minute early keeps requests from racing expiry.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct Grant {
    access_token: String,
    expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint refused the grant: the service account is wrong or disabled.
    #[error("access token refused: {0}")]
    Refused(String),
    #[error("access token unavailable: {0}")]
    Unavailable(String),
}

pub struct AccessTokens {
    account: ServiceAccount,
    key: EncodingKey,
    http: reqwest::Client,
    /// Held across a fetch, so concurrent senders wait for one grant instead of each asking.
    cached: Mutex<Option<(String, Instant)>>,
}

impl AccessTokens {
    pub fn from_file(path: &Path, http: reqwest::Client) -> Result<Self, PushError> {
        const KEY: &str = "push.fcm.service_account";
        let text = std::fs::read_to_string(path).map_err(|source| PushError::File { key: KEY, path: path.to_owned(), source })?;
        let account: ServiceAccount = serde_json::from_str(&text)
            .map_err(|e| PushError::Invalid { key: KEY, message: format!("not a service-account JSON: {e}") })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| PushError::Invalid { key: KEY, message: format!("private_key: {e}") })?;
        if !(account.token_uri.starts_with("https://") || account.token_uri.starts_with("http://")) {
            return Err(PushError::Invalid { key: KEY, message: "token_uri must be an http(s) URL".into() });
        }
        Ok(Self { account, key, http, cached: Mutex::new(None) })
    }

    pub async fn get(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + RENEW_BEFORE < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// The provider said the token is no good (revoked, clock skew): fetch a new one next time.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<(String, Duration), TokenError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| TokenError::Refused(format!("cannot sign the grant: {e}")))?;
        let response = self
            .http
            .post(&self.account.token_uri)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", assertion.as_str())])
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            let grant: Grant = response.json().await.map_err(|e| TokenError::Unavailable(format!("unreadable grant: {e}")))?;
            // Google grants an hour; anything else is clamped so a strange answer can neither
            // overflow a deadline nor make every request fetch a token.
            return Ok((grant.access_token, Duration::from_secs(grant.expires_in.clamp(120, 3600))));
        }
        let body = response.text().await.unwrap_or_default();
        if crate::http::is_transient(status) {
            Err(TokenError::Unavailable(format!("{status}: {body}")))
        } else {
            Err(TokenError::Refused(format!("{status}: {body}")))
        }
    }
}
