//! Baidu Cloud Push, REST API v3 (`push/single_device`), for Android phones without Google
//! services. Every request is signed (see [`sign`]).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_config::BaiduConfig;
use switchboard_gateway::DeviceRegistration;

use crate::notification::Notification;
use crate::provider::{Delivery, Provider};
use crate::{NOTIFICATION_TTL, PushError};

const PATH: &str = "/rest/3.0/push/single_device";
const ANDROID: &str = "3";
const IOS: &str = "4";

pub struct Baidu {
    url: String,
    api_key: String,
    secret_key: String,
    http: reqwest::Client,
}

impl Baidu {
    pub fn new(config: &BaiduConfig, http: reqwest::Client) -> Result<Self, PushError> {
        Ok(Self {
            url: format!("{}{PATH}", config.endpoint.trim_end_matches('/')),
            api_key: config.api_key.clone(),
            secret_key: config.secret_key.expose().to_owned(),
            http,
        })
    }

    async fn deliver(&self, device: &DeviceRegistration, notification: &Notification) -> Delivery {
        let ios = device.os.as_deref().is_some_and(|os| os.eq_ignore_ascii_case("ios"));
        let msg = if ios { ios_message(notification) } else { android_message(notification) };
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut params = BTreeMap::from([
            ("apikey", self.api_key.clone()),
            ("timestamp", timestamp.to_string()),
            ("channel_id", device.token.clone()),
            ("device_type", if ios { IOS } else { ANDROID }.to_owned()),
            ("msg_type", "1".to_owned()),
            ("msg", msg.to_string()),
            ("msg_expires", NOTIFICATION_TTL.as_secs().to_string()),
        ]);
        params.insert("sign", sign(&self.url, &params, &self.secret_key));
        let response = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded;charset=utf-8")
            .body(form(&params))
            .send()
            .await;
        match response {
            Ok(response) => classify(response).await,
            Err(e) => Delivery::Retry { after: None, reason: e.to_string() },
        }
    }
}

impl Provider for Baidu {
    fn name(&self) -> &'static str {
        "push.baidu"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn send<'a>(&'a self, device: &'a DeviceRegistration, notification: &'a Notification) -> BoxFuture<'a, Delivery> {
        Box::pin(self.deliver(device, notification))
    }
}

/// A notification (msg_type 1) the Android SDK shows by itself; `custom_content` reaches the app.
fn android_message(notification: &Notification) -> Value {
    json!({
        "title": notification.title,
        "description": if notification.body.is_empty() { &notification.title } else { &notification.body },
        "custom_content": notification.data,
    })
}

fn ios_message(notification: &Notification) -> Value {
    let alert = if notification.body.is_empty() {
        notification.title.clone()
    } else {
        format!("{}: {}", notification.title, notification.body)
    };
    let mut msg = json!({ "aps": { "alert": alert, "badge": notification.count, "sound": "default" } });
    for (key, value) in &notification.data {
        msg[*key] = json!(value);
    }
    msg
}

/// Baidu's signature: MD5 over `POST` + the full URL + the sorted `key=value` pairs + the secret
/// key, URL-encoded the way PHP's `urlencode` does it (space as `+`, `*` encoded).
pub fn sign(url: &str, params: &BTreeMap<&str, String>, secret_key: &str) -> String {
    let mut base = format!("POST{url}");
    for (key, value) in params.iter().filter(|(key, _)| **key != "sign") {
        base.push_str(key);
        base.push('=');
        base.push_str(value);
    }
    base.push_str(secret_key);
    let encoded: String = form_urlencoded::byte_serialize(base.as_bytes()).collect::<String>().replace('*', "%2A");
    Md5::digest(encoded.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn form(params: &BTreeMap<&str, String>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in params {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    #[serde(default)]
    error_msg: String,
}

async fn classify(response: reqwest::Response) -> Delivery {
    let status = response.status();
    let after = crate::http::retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    let error = serde_json::from_str::<ErrorBody>(&text).ok();
    if status.is_success() && error.is_none() {
        return Delivery::Sent;
    }
    let Some(error) = error else {
        let reason = format!("{status}: {text}");
        return if crate::http::is_transient(status) { Delivery::Retry { after, reason } } else { Delivery::Refused(reason) };
    };
    let reason = format!("{status} {} {}", error.error_code, error.error_msg);
    match error.error_code {
        // Channel token timeout, bind relation not found: the app is gone from that phone.
        30607 | 30608 => Delivery::DeviceGone(reason),
        30602 if error.error_msg.contains("channel_id") => Delivery::DeviceGone(reason),
        30603 => Delivery::Unauthorized(reason),
        // Internal error, quota, clock skew: later may work.
        30600 | 30604 | 30606 => Delivery::Retry { after, reason },
        _ if crate::http::is_transient(status) => Delivery::Retry { after, reason },
        other => {
            tracing::warn!(code = other, %reason, "unknown Baidu error code");
            Delivery::Refused(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_baidus_reference_vector() {
        let params = BTreeMap::from([
            ("apikey", "Ljc710pzAa99GULCo8y48NvB".to_owned()),
            ("expires", "1313293565".to_owned()),
            ("timestamp", "1427180905".to_owned()),
        ]);
        let signed = sign("http://api.tuisong.baidu.com/rest/3.0/test/echo", &params, "87772555E1C16715EBA5C85341684C58");
        assert_eq!(signed, "7d14113142e2a1583b4e9dad3fba73d0");
    }
}
