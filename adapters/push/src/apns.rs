//! Apple Push Notification service: HTTP/2, token (JWT) authentication.
//!
//! The a2 crate cannot be pointed at another host, so requests are built here on reqwest.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use switchboard_config::ApnsConfig;
use switchboard_gateway::DeviceRegistration;

use crate::notification::{Aps, Notification};
use crate::provider::{Delivery, Provider};
use crate::{NOTIFICATION_TTL, PushError};

/// Apple refuses provider tokens older than an hour and renewals more often than every 20
/// minutes: one token is used for 50.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

pub struct Apns {
    base: String,
    topic: String,
    team_id: String,
    header: Header,
    key: EncodingKey,
    http: reqwest::Client,
    token: std::sync::Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub fn new(config: &ApnsConfig, http: reqwest::Client) -> Result<Self, PushError> {
        let pem = std::fs::read(&config.key).map_err(|source| PushError::File { key: "push.apns.key", path: config.key.clone(), source })?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|e| PushError::Invalid { key: "push.apns.key", message: format!("not a PKCS#8 EC key (.p8): {e}") })?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(config.key_id.clone());
        let apns = Self {
            base: config.base_url().trim_end_matches('/').to_owned(),
            topic: config.topic.clone(),
            team_id: config.team_id.clone(),
            header,
            key,
            http,
            token: std::sync::Mutex::new(None),
        };
        apns.provider_token(None).map_err(|message| PushError::Invalid { key: "push.apns.key", message })?;
        Ok(apns)
    }

    /// The cached provider token, renewed when it is old or when it is `stale` (the one Apple
    /// just called expired). Concurrent requests refused with the same token renew it once:
    /// Apple answers TooManyProviderTokenUpdates to renewals within 20 minutes.
    fn provider_token(&self, stale: Option<&str>) -> Result<String, String> {
        let mut cached = self.token.lock().map_err(|_| "token cache poisoned".to_owned())?;
        if let Some((token, issued)) = cached.as_ref()
            && issued.elapsed() < TOKEN_LIFETIME
            && stale != Some(token.as_str())
        {
            return Ok(token.clone());
        }
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let token = jsonwebtoken::encode(&self.header, &Claims { iss: &self.team_id, iat }, &self.key)
            .map_err(|e| format!("cannot sign the provider token: {e}"))?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    async fn deliver(&self, device: &DeviceRegistration, notification: &Notification) -> Delivery {
        let mut stale: Option<String> = None;
        loop {
            let token = match self.provider_token(stale.as_deref()) {
                Ok(token) => token,
                Err(reason) => return Delivery::Unauthorized(reason),
            };
            let expiration = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + NOTIFICATION_TTL.as_secs();
            let response = self
                .http
                .post(format!("{}/3/device/{}", self.base, device.token))
                .header("authorization", format!("bearer {token}"))
                .header("apns-topic", &self.topic)
                .header("apns-push-type", "alert")
                .header("apns-priority", "10")
                .header("apns-expiration", expiration.to_string())
                .header("apns-collapse-id", crate::COLLAPSE_ID)
                .json(&payload(notification))
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(e) => return Delivery::Retry { after: None, reason: e.to_string() },
            };
            let delivery = classify(response).await;
            match delivery {
                // Our clock or a long pause made the token stale: one renewal, then retry.
                Delivery::Unauthorized(ref reason) if reason.contains("ExpiredProviderToken") && stale.is_none() => {
                    stale = Some(token);
                }
                other => return other,
            }
        }
    }
}

impl Provider for Apns {
    fn name(&self) -> &'static str {
        "push.apns"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn send<'a>(&'a self, device: &'a DeviceRegistration, notification: &'a Notification) -> BoxFuture<'a, Delivery> {
        Box::pin(self.deliver(device, notification))
    }
}

/// `aps` and the app's custom keys beside it, serialised straight into the request body.
fn payload(notification: &Notification) -> Payload<'_> {
    Payload { aps: notification.aps(), data: &notification.data }
}

#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    #[serde(flatten)]
    data: &'a std::collections::BTreeMap<&'static str, String>,
}

#[derive(Deserialize)]
struct Reason {
    reason: String,
}

/// Apple's documented answers (Handling notification responses from APNs).
async fn classify(response: reqwest::Response) -> Delivery {
    let status = response.status();
    if status.is_success() {
        return Delivery::Sent;
    }
    let after = crate::http::retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<Reason>(&text).map(|r| r.reason).unwrap_or(text);
    let described = format!("{status} {reason}");
    match (status.as_u16(), reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Delivery::DeviceGone(described),
        (403, _) => Delivery::Unauthorized(described),
        _ if crate::http::is_transient(status) => Delivery::Retry { after, reason: described },
        _ => Delivery::Refused(described),
    }
}
