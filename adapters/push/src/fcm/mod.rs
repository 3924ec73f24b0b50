//! Firebase Cloud Messaging, HTTP v1 API.
//!
//! The fcm-rs crate cannot be pointed at another host and sends a malformed Authorization
//! header, so the request is built here on reqwest.

mod token;

use futures::future::BoxFuture;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_config::FcmConfig;
use switchboard_gateway::DeviceRegistration;

use self::token::{AccessTokens, TokenError};
use crate::notification::{Aps, Notification, Shown};
use crate::provider::{Delivery, Provider};
use crate::{NOTIFICATION_TTL, PushError};

pub struct Fcm {
    url: String,
    tokens: AccessTokens,
    http: reqwest::Client,
}

impl Fcm {
    pub fn new(config: &FcmConfig, http: reqwest::Client) -> Result<Self, PushError> {
        let tokens = AccessTokens::from_file(&config.service_account, http.clone())?;
        let url = format!("{}/v1/projects/{}/messages:send", config.endpoint.trim_end_matches('/'), config.project_id);
        Ok(Self { url, tokens, http })
    }

    async fn post(&self, body: &SendRequest<'_>) -> Result<reqwest::Response, Delivery> {
        let token = self.tokens.get().await.map_err(|error| match error {
            TokenError::Refused(reason) => Delivery::Unauthorized(reason),
            TokenError::Unavailable(reason) => Delivery::Retry { after: None, reason },
        })?;
        self.http
            .post(&self.url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| Delivery::Retry { after: None, reason: e.to_string() })
    }

    async fn deliver(&self, device: &DeviceRegistration, notification: &Notification) -> Delivery {
        let body = message(&device.token, notification);
        let mut response = match self.post(&body).await {
            Ok(response) => response,
            Err(delivery) => return delivery,
        };
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            // An access token can be revoked before it expires: one fresh try before blaming
            // the credentials.
            self.tokens.invalidate().await;
            response = match self.post(&body).await {
                Ok(response) => response,
                Err(delivery) => return delivery,
            };
        }
        classify(response).await
    }
}

impl Provider for Fcm {
    fn name(&self) -> &'static str {
        "push.fcm"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.tokens.get().await.map(drop).map_err(|e| e.to_string()) })
    }

    fn send<'a>(&'a self, device: &'a DeviceRegistration, notification: &'a Notification) -> BoxFuture<'a, Delivery> {
        Box::pin(self.deliver(device, notification))
    }
}

/// The v1 `Message`: a notification Android shows by itself, `data` for the app, high priority
/// so a dozing phone wakes, and an APNs block for iOS apps that receive through FCM. Borrowed
/// and serialised straight into the request body.
fn message<'a>(token: &'a str, notification: &'a Notification) -> SendRequest<'a> {
    SendRequest {
        message: Message {
            token,
            notification: notification.title_and_body(),
            data: &notification.data,
            android: Android { priority: "high", ttl: format!("{}s", NOTIFICATION_TTL.as_secs()), collapse_key: crate::COLLAPSE_ID },
            apns: ApnsOverride {
                headers: ApnsHeaders { priority: "10", push_type: "alert", collapse_id: crate::COLLAPSE_ID },
                payload: ApnsPayload { aps: notification.aps() },
            },
        },
    }
}

#[derive(Serialize)]
struct SendRequest<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    notification: Shown<'a>,
    /// FCM wants every value a string.
    data: &'a BTreeMap<&'static str, String>,
    android: Android,
    apns: ApnsOverride<'a>,
}

#[derive(Serialize)]
struct Android {
    priority: &'static str,
    ttl: String,
    collapse_key: &'static str,
}

#[derive(Serialize)]
struct ApnsOverride<'a> {
    headers: ApnsHeaders,
    payload: ApnsPayload<'a>,
}

#[derive(Serialize)]
struct ApnsHeaders {
    #[serde(rename = "apns-priority")]
    priority: &'static str,
    #[serde(rename = "apns-push-type")]
    push_type: &'static str,
    #[serde(rename = "apns-collapse-id")]
    collapse_id: &'static str,
}

#[derive(Serialize)]
struct ApnsPayload<'a> {
    aps: Aps<'a>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl GoogleError {
    fn fcm_code(&self) -> Option<&str> {
        self.details.iter().find_map(|d| d.get("errorCode").and_then(Value::as_str))
    }

    /// INVALID_ARGUMENT is about the token only when the error says so; anything else is a
    /// problem with the message, and the device may be fine.
    fn names_the_token(&self) -> bool {
        let violation = self.details.iter().any(|d| {
            d.get("fieldViolations")
                .and_then(Value::as_array)
                .is_some_and(|v| v.iter().any(|f| f.get("field").and_then(Value::as_str) == Some("message.token")))
        });
        violation || self.message.to_ascii_lowercase().contains("registration token")
    }
}

/// FCM's documented errors: <https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode>.
async fn classify(response: reqwest::Response) -> Delivery {
    let status = response.status();
    if status.is_success() {
        return Delivery::Sent;
    }
    let after = crate::http::retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    let error = serde_json::from_str::<ErrorBody>(&text).ok().map(|b| b.error);
    let code = error.as_ref().and_then(GoogleError::fcm_code).unwrap_or_default().to_owned();
    let reason = match &error {
        Some(e) => format!("{status} {} {code}: {}", e.status, e.message),
        None => format!("{status}: {text}"),
    };
    match status.as_u16() {
        // Only FCM's own word removes a device: a 404 from a proxy or a wrong path must not.
        404 if code == "UNREGISTERED" => Delivery::DeviceGone(reason),
        400 if error.as_ref().is_some_and(GoogleError::names_the_token) => Delivery::DeviceGone(reason),
        // The app's APNs credentials in the Firebase console: that device cannot be reached, the
        // rest of FCM works.
        401 if code == "THIRD_PARTY_AUTH_ERROR" => Delivery::Refused(reason),
        // A token of another project: a misconfigured project id would make every device look
        // like that, so it is refused and logged rather than removed.
        403 if code == "SENDER_ID_MISMATCH" => Delivery::Refused(reason),
        401 | 403 => Delivery::Unauthorized(reason),
        _ if crate::http::is_transient(status) => Delivery::Retry { after, reason },
        _ => Delivery::Refused(reason),
    }
}

#[cfg(test)]
mod tests {
    use switchboard_gateway::UserId;
    use switchboard_gateway::wake::WakeKind;

    use super::*;

    #[test]
    fn the_message_wakes_android_and_ios_alike() {
        let notification = Notification {
            user: UserId::parse("alice").expect("valid"),
            kind: WakeKind::Message,
            count: 2,
            title: "bob@d".into(),
            body: String::new(),
            data: BTreeMap::from([("count", "2".to_owned())]),
        };
        let body = serde_json::to_value(message("tok", &notification)).expect("serialisable");
        let message = &body["message"];
        assert_eq!(message["token"], "tok");
        assert_eq!(message["android"]["priority"], "high");
        assert_eq!(message["data"]["count"], "2", "FCM data values are strings");
        assert_eq!(message["apns"]["payload"]["aps"]["badge"], 2);
        assert!(message["notification"].get("body").is_none(), "no empty body");
    }
}
