//! Baidu Cloud Push REST API v3, `push/single_device` only: the form body, the MD5 signature over
//! method, URL, sorted parameters and secret key (shared/research/crates.md §7), the request's age,
//! and the message shape each platform needs, refused with Baidu's 306xx error bodies.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use super::{Device, Devices, Failures, Inbox, Server, random_u64, reply, unix_now};

const PATH: &str = "/rest/3.0/push/single_device";
/// A signed request is good for this long after its `timestamp` (and as long before, for skew).
const MAX_AGE: i64 = 600;

#[derive(Clone, Debug)]
pub struct BaiduRequest {
    /// The decoded form, `sign` included.
    pub params: BTreeMap<String, String>,
    pub msg: Value,
}

pub struct FakeBaidu {
    server: Server,
    shared: Arc<Shared>,
}

struct Shared {
    api_key: String,
    secret_key: String,
    devices: Devices,
    failures: Failures,
    inbox: Inbox<BaiduRequest>,
    attempts: AtomicUsize,
}

/// The signature of a request to `url` (scheme, host and path, no query) carrying `params` (without
/// `sign`): MD5 of the PHP-urlencoded `POST` + url + `k=v`… in key order + secret key.
pub fn sign(url: &str, params: &BTreeMap<String, String>, secret_key: &str) -> String {
    let mut base = format!("POST{url}");
    for (key, value) in params {
        let _ = write!(base, "{key}={value}");
    }
    base.push_str(secret_key);
    let mut encoded = String::with_capacity(base.len() * 3);
    for byte in base.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => encoded.push(char::from(byte)),
            b' ' => encoded.push('+'),
            _ => {
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
    }
    Md5::digest(encoded.as_bytes()).iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// A refusal: HTTP status, Baidu's error code, its message, and Retry-After for asked-for failures.
struct Refusal(u16, u32, String, Option<u64>);

fn refuse(status: u16, code: u32, message: &str) -> Refusal {
    Refusal(status, code, message.to_owned(), None)
}

fn bad_param(param: &str, why: &str) -> Refusal {
    refuse(400, 30602, &format!("Request Params Not Valid, {param} {why}"))
}

impl FakeBaidu {
    pub async fn start(api_key: &str, secret_key: &str) -> Self {
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            secret_key: secret_key.to_owned(),
            devices: Devices::default(),
            failures: Failures::default(),
            inbox: Inbox::new(),
            attempts: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        Self { server: super::serve(super::bind().await, router, None), shared }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn register(&self, channel_id: &str) {
        self.shared.devices.set(channel_id, Device::Registered);
    }

    /// Now 30607 Channel Token Timeout; a channel never registered is 30608 Bind Relation Not Found.
    pub fn unregister(&self, channel_id: &str) {
        self.shared.devices.set(channel_id, Device::Unregistered);
    }

    /// HTTP 500 or 503 with error 30600 for the next `count` correctly signed requests.
    pub fn fail_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        self.shared.failures.arm(count, status, retry_after, &[500, 503]);
    }

    /// An outage: every correctly signed request answers HTTP `status` (500 or 503) with error
    /// 30600 until `duration` has passed.
    pub fn fail_for(&self, duration: Duration, status: u16) {
        self.shared.failures.arm_for(duration, status, &[500, 503]);
    }

    pub async fn next_push(&self) -> BaiduRequest {
        self.shared.inbox.next("Baidu push").await
    }

    pub async fn no_push_within(&self, d: Duration) {
        self.shared.inbox.none_within(d, "Baidu push").await;
    }

    pub fn accepted(&self) -> Vec<BaiduRequest> {
        self.shared.inbox.all()
    }

    /// The accepted pushes with the time each was accepted.
    pub fn accepted_timed(&self) -> Vec<(Instant, BaiduRequest)> {
        self.shared.inbox.all_timed(0)
    }

    /// As `accepted_timed`, without the first `skip`.
    pub fn accepted_timed_since(&self, skip: usize) -> Vec<(Instant, BaiduRequest)> {
        self.shared.inbox.all_timed(skip)
    }

    pub fn accepted_count(&self) -> usize {
        self.shared.inbox.len()
    }

    /// Waits until `n` pushes were accepted in all, at most `within`; how many were.
    pub async fn wait_for_accepted(&self, n: usize, within: Duration) -> usize {
        self.shared.inbox.wait_for_len(n, within).await
    }

    pub fn send_attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }
}

async fn handle(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = random_u64() >> 1;
    match s.check(&method, &uri, &headers, &body) {
        Ok(request) => {
            s.inbox.push(request);
            let response_params = json!({"msg_id": (random_u64() >> 8).to_string(), "send_time": unix_now()});
            reply(200, &json!({"request_id": request_id, "response_params": response_params}), None)
        }
        Err(Refusal(status, code, message, retry_after)) => {
            reply(status, &json!({"request_id": request_id, "error_code": code, "error_msg": message}), retry_after)
        }
    }
}

impl Shared {
    fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<BaiduRequest, Refusal> {
        if uri.path() != PATH {
            return Err(refuse(404, 30601, "Method Not Allowed"));
        }
        if method != Method::POST {
            return Err(refuse(405, 30601, "Method Not Allowed"));
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let content_type = header("content-type").unwrap_or_default().to_ascii_lowercase().replace(' ', "");
        if !matches!(
            content_type.as_str(),
            "application/x-www-form-urlencoded" | "application/x-www-form-urlencoded;charset=utf-8"
        ) {
            return Err(bad_param("Content-Type", "must be application/x-www-form-urlencoded;charset=utf-8"));
        }
        let mut params = BTreeMap::new();
        for (key, value) in form_urlencoded::parse(body).into_owned() {
            if params.insert(key.clone(), value).is_some() {
                return Err(bad_param(&key, "given twice"));
            }
        }
        let param = |name: &str| params.get(name).map(String::as_str);
        let required = |name: &str| param(name).filter(|v| !v.is_empty()).ok_or_else(|| bad_param(name, "is required"));
        let (api_key, timestamp, signature) = (required("apikey")?, required("timestamp")?, required("sign")?);
        if api_key != self.api_key {
            return Err(refuse(401, 30603, "Authentication Failed"));
        }
        let mut signed = params.clone();
        signed.remove("sign");
        // HTTP/1.1 names the host in `Host`, HTTP/2 (h2c) in the URI's authority.
        let host = header("host").map(str::to_owned).or_else(|| uri.authority().map(ToString::to_string));
        let url = format!("http://{}{PATH}", host.unwrap_or_default());
        if !signature.eq_ignore_ascii_case(&sign(&url, &signed, &self.secret_key)) {
            return Err(refuse(401, 30603, "Authentication Failed"));
        }
        let timestamp: i64 = timestamp.parse().map_err(|_| bad_param("timestamp", "is not a unix time"))?;
        let expires = param("expires")
            .map(|e| e.parse::<i64>().map_err(|_| bad_param("expires", "is not a unix time")))
            .transpose()?;
        let now = unix_now();
        if (now - timestamp).abs() > MAX_AGE || expires.is_some_and(|e| e < now) {
            return Err(refuse(401, 30606, "Request Time Expires Timeout"));
        }
        if let Some((status, retry_after)) = self.failures.take() {
            return Err(Refusal(status, 30600, "Internal Server Error".to_owned(), retry_after));
        }
        let ios = match required("device_type")? {
            "3" => false,
            "4" => true,
            _ => return Err(bad_param("device_type", "must be 3 (Android) or 4 (iOS)")),
        };
        let channel_id = required("channel_id")?;
        if channel_id.len() > 32 || !channel_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_param("channel_id", "is not a channel id"));
        }
        let notification = match param("msg_type").unwrap_or("0") {
            "0" => false,
            "1" => true,
            _ => return Err(bad_param("msg_type", "must be 0 or 1")),
        };
        if param("msg_expires").is_some_and(|e| !e.parse::<u32>().is_ok_and(|e| e <= 604_800)) {
            return Err(bad_param("msg_expires", "must be 0 to 604800"));
        }
        if let Some(deploy) = param("deploy_status")
            && (!ios || !matches!(deploy, "1" | "2"))
        {
            return Err(bad_param("deploy_status", "must be 1 or 2, for iOS only"));
        }
        let text = required("msg")?;
        if text.len() > 4096 {
            return Err(bad_param("msg", "is longer than 4096 bytes"));
        }
        let msg: Value = serde_json::from_str(text).map_err(|_| bad_param("msg", "is not JSON"))?;
        if ios && !msg.get("aps").is_some_and(Value::is_object) {
            return Err(bad_param("msg", "must hold an aps object for iOS"));
        }
        if !ios && notification && !(msg["title"].is_string() && msg["description"].is_string()) {
            return Err(bad_param("msg", "must hold a title and a description for an Android notification"));
        }
        match self.devices.get(channel_id) {
            Some(Device::Registered) => {}
            Some(_) => return Err(refuse(400, 30607, "Channel Token Timeout")),
            None => return Err(refuse(400, 30608, "Bind Relation Not Found")),
        }
        Ok(BaiduRequest { params, msg })
    }
}

#[cfg(test)]
mod tests {
    use crate::client::{Reply, post};
    use super::*;

    const API_KEY: &str = "Ljc710pzAa99GULCo8y48NvB";
    const SECRET: &str = "87772555E1C16715EBA5C85341684C58";
    const CHANNEL: &str = "3812456712345678901";

    #[test]
    fn sign_matches_the_reference_vector() {
        let params: BTreeMap<String, String> =
            [("apikey", API_KEY), ("expires", "1313293565"), ("timestamp", "1427180905")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into();
        assert_eq!(
            sign("http://api.tuisong.baidu.com/rest/3.0/test/echo", &params, SECRET),
            "7d14113142e2a1583b4e9dad3fba73d0"
        );
    }

    fn android(channel: &str) -> BTreeMap<String, String> {
        let msg =
            json!({"title": "alice", "description": "New message", "custom_content": {"from": "alice@localhost"}});
        [
            ("apikey", API_KEY),
            ("channel_id", channel),
            ("device_type", "3"),
            ("msg_type", "1"),
            ("msg_expires", "86400"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([("timestamp".to_owned(), unix_now().to_string()), ("msg".to_owned(), msg.to_string())])
        .collect()
    }

    /// Signs `params` with `secret` for this fake's URL, as the SDKs do, and posts them.
    async fn push(baidu: &FakeBaidu, mut params: BTreeMap<String, String>, secret: &str) -> Reply {
        let url = format!("{}{PATH}", baidu.endpoint());
        params.insert("sign".to_owned(), sign(&url, &params, secret));
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
        post(&baidu.endpoint(), PATH, &[("content-type", "application/x-www-form-urlencoded;charset=utf-8")], body)
            .await
    }

    fn error(reply: &Reply) -> (u16, u64) {
        (reply.status, reply.json()["error_code"].as_u64().unwrap_or_default())
    }

    #[tokio::test]
    async fn baidu_delivers_a_signed_android_notification() {
        let baidu = FakeBaidu::start(API_KEY, SECRET).await;
        baidu.register(CHANNEL);
        let reply = push(&baidu, android(CHANNEL), SECRET).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(
            reply.json()["response_params"]["msg_id"].as_str().is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()))
        );
        let request = baidu.next_push().await;
        assert_eq!((request.params["channel_id"].as_str(), &request.msg["title"]), (CHANNEL, &json!("alice")));
        baidu.no_push_within(Duration::from_millis(50)).await;
        assert_eq!((baidu.send_attempts(), baidu.accepted().len()), (1, 1));
    }

    #[tokio::test]
    async fn baidu_refuses_what_baidu_refuses() {
        let baidu = FakeBaidu::start(API_KEY, SECRET).await;
        baidu.register(CHANNEL);
        assert_eq!(error(&push(&baidu, android(CHANNEL), "wrong-secret").await), (401, 30603));
        let mut params = android(CHANNEL);
        params.insert("apikey".into(), "another-app".into());
        assert_eq!(error(&push(&baidu, params, SECRET).await), (401, 30603));
        let mut params = android(CHANNEL);
        params.insert("timestamp".into(), (unix_now() - 900).to_string());
        assert_eq!(error(&push(&baidu, params, SECRET).await), (401, 30606));
        for (param, value) in [
            ("msg", r#"{"title":"alice"}"#),
            ("msg", "not json"),
            ("device_type", "5"),
            ("channel_id", "abc"),
            ("msg_expires", "700000"),
            ("deploy_status", "2"),
        ] {
            let mut params = android(CHANNEL);
            params.insert(param.into(), value.into());
            let reply = push(&baidu, params, SECRET).await;
            assert_eq!(error(&reply), (400, 30602), "{param}={value}");
            assert!(reply.json()["error_msg"].as_str().is_some_and(|m| m.contains(param)), "names {param}");
        }
        let mut ios = android(CHANNEL);
        ios.insert("device_type".into(), "4".into());
        assert_eq!(error(&push(&baidu, ios.clone(), SECRET).await), (400, 30602), "iOS needs aps");
        ios.insert("msg".into(), json!({"aps": {"alert": "New message"}}).to_string());
        assert_eq!(push(&baidu, ios, SECRET).await.status, 200);

        assert_eq!(error(&push(&baidu, android("1111"), SECRET).await), (400, 30608));
        baidu.unregister(CHANNEL);
        assert_eq!(error(&push(&baidu, android(CHANNEL), SECRET).await), (400, 30607));
        baidu.fail_next(1, 503, Some(2));
        let reply = push(&baidu, android(CHANNEL), SECRET).await;
        assert_eq!((error(&reply), reply.header("retry-after")), ((503, 30600), Some("2")));
        assert_eq!((baidu.send_attempts(), baidu.accepted().len()), (14, 1));
    }
}
