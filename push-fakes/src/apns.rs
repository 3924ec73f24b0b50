//! APNs' provider API: HTTP/2 only over TLS (certificate from the test CA), token-based
//! authentication with ES256 provider tokens, and Apple's header, payload and device-token checks,
//! each refused with the status and `reason` Apple documents. Every answer carries an `apns-id`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::{Device, Devices, Failures, Inbox, Server, fixture, lock, random_hex, reply, unix_now};

const PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/apns-AuthKey.pub.pem");
const PUSH_TYPES: &[&str] =
    &["alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity"];
/// Apple refuses a new provider token sooner than this after the previous one.
const TOKEN_REFRESH: Duration = Duration::from_secs(20 * 60);

#[derive(Clone, Debug)]
pub struct ApnsRequest {
    pub token: String,
    /// Lower-case names, as HTTP/2 carries them.
    pub headers: HashMap<String, String>,
    pub payload: Value,
}

pub struct FakeApns {
    server: Server,
    shared: Arc<Shared>,
}

struct Shared {
    team_id: String,
    key_id: String,
    topic: String,
    key: DecodingKey,
    jwts: Mutex<Jwts>,
    devices: Devices,
    failures: Failures,
    inbox: Inbox<ApnsRequest>,
    attempts: AtomicUsize,
}

#[derive(Default)]
struct Jwts {
    /// Every correctly signed token presented.
    seen: HashSet<String>,
    /// Those APNs took as the provider's current token.
    accepted: HashSet<String>,
    last_new: Option<Instant>,
}

/// A refusal: status, Apple's `reason`, and Retry-After for the failures a test asked for.
struct Reject(u16, &'static str, Option<u64>);

fn reject(status: u16, reason: &'static str) -> Reject {
    Reject(status, reason, None)
}

impl FakeApns {
    pub async fn start(team_id: &str, key_id: &str, topic: &str) -> Self {
        let shared = Arc::new(Shared {
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            topic: topic.to_owned(),
            key: DecodingKey::from_ec_pem(PUBLIC_KEY).expect("fixtures/apns-AuthKey.pub.pem is a P-256 key"),
            jwts: Mutex::new(Jwts::default()),
            devices: Devices::default(),
            failures: Failures::default(),
            inbox: Inbox::new(),
            attempts: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        Self { server: super::serve(super::bind().await, router, Some(super::tls::acceptor())), shared }
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    /// The provider key (PKCS#8 `.p8`) whose public half this fake verifies with.
    pub fn key_path(&self) -> PathBuf {
        fixture("apns-AuthKey.p8")
    }

    /// The CA that signed this fake's certificate, for `push.ca_file`.
    pub fn ca_path(&self) -> PathBuf {
        fixture("ca.pem")
    }

    pub fn register(&self, token: &str) {
        self.shared.devices.set(token, Device::Registered);
    }

    pub fn unregister(&self, token: &str) {
        self.shared.devices.set(token, Device::Unregistered);
    }

    /// A valid token of another app: 400 DeviceTokenNotForTopic.
    pub fn register_for_other_topic(&self, token: &str) {
        self.shared.devices.set(token, Device::OtherTopic);
    }

    /// 429 TooManyRequests, 500 InternalServerError or 503 ServiceUnavailable for the next `count`
    /// authenticated requests.
    pub fn fail_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        self.shared.failures.arm(count, status, retry_after, &[429, 500, 503]);
    }

    /// An outage: every authenticated request answers `status` (429, 500 or 503, Apple's reason,
    /// no Retry-After) until `duration` has passed.
    pub fn fail_for(&self, duration: Duration, status: u16) {
        self.shared.failures.arm_for(duration, status, &[429, 500, 503]);
    }

    pub async fn next_notification(&self) -> ApnsRequest {
        self.shared.inbox.next("APNs notification").await
    }

    pub async fn no_notification_within(&self, d: Duration) {
        self.shared.inbox.none_within(d, "APNs notification").await;
    }

    pub fn accepted(&self) -> Vec<ApnsRequest> {
        self.shared.inbox.all()
    }

    /// The accepted notifications with the time each was accepted.
    pub fn accepted_timed(&self) -> Vec<(Instant, ApnsRequest)> {
        self.shared.inbox.all_timed(0)
    }

    /// As `accepted_timed`, without the first `skip`.
    pub fn accepted_timed_since(&self, skip: usize) -> Vec<(Instant, ApnsRequest)> {
        self.shared.inbox.all_timed(skip)
    }

    pub fn accepted_count(&self) -> usize {
        self.shared.inbox.len()
    }

    /// Waits until `n` notifications were accepted in all, at most `within`; how many were.
    pub async fn wait_for_accepted(&self, n: usize, within: Duration) -> usize {
        self.shared.inbox.wait_for_len(n, within).await
    }

    pub fn send_attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// Distinct correctly signed provider tokens presented so far.
    pub fn provider_tokens_seen(&self) -> usize {
        lock(&self.shared.jwts).seen.len()
    }
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_apns_id() -> String {
    let hex = random_hex(16).to_uppercase();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

async fn handle(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let apns_id = header("apns-id").filter(|id| is_uuid(id)).map_or_else(new_apns_id, str::to_owned);
    let mut response = match s.check(&method, uri.path(), &headers, &body) {
        Ok(request) => {
            s.inbox.push(request);
            ().into_response()
        }
        Err(Reject(status, reason, retry_after)) => {
            let mut body = json!({"reason": reason});
            if status == 410 {
                body["timestamp"] = json!(unix_now() * 1000);
            }
            reply(status, &body, retry_after)
        }
    };
    response.headers_mut().insert("apns-id", apns_id.parse().expect("a UUID is a header value"));
    response
}

impl Shared {
    fn check(&self, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Result<ApnsRequest, Reject> {
        let token = path.strip_prefix("/3/device/").ok_or(reject(404, "BadPath"))?;
        if method != Method::POST {
            return Err(reject(405, "MethodNotAllowed"));
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.authenticate(header("authorization"))?;
        if let Some((status, retry_after)) = self.failures.take() {
            let reason = match status {
                429 => "TooManyRequests",
                500 => "InternalServerError",
                _ => "ServiceUnavailable",
            };
            return Err(Reject(status, reason, retry_after));
        }
        match header("apns-topic") {
            None => return Err(reject(400, "MissingTopic")),
            Some(topic) if topic != self.topic => return Err(reject(400, "TopicDisallowed")),
            Some(_) => {}
        }
        if header("apns-id").is_some_and(|id| !is_uuid(id)) {
            return Err(reject(400, "BadMessageId"));
        }
        let push_type =
            header("apns-push-type").filter(|t| PUSH_TYPES.contains(t)).ok_or(reject(400, "InvalidPushType"))?;
        match header("apns-priority") {
            None | Some("5" | "1") => {}
            Some("10") if push_type != "background" => {}
            Some(_) => return Err(reject(400, "BadPriority")),
        }
        if header("apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
            return Err(reject(400, "BadExpirationDate"));
        }
        if header("apns-collapse-id").is_some_and(|id| id.len() > 64) {
            return Err(reject(400, "BadCollapseId"));
        }
        if body.is_empty() {
            return Err(reject(400, "PayloadEmpty"));
        }
        if body.len() > if push_type == "voip" { 5120 } else { 4096 } {
            return Err(reject(413, "PayloadTooLarge"));
        }
        // Apple documents no reason of its own for a body that is not a dictionary with `aps`.
        let payload: Value = serde_json::from_slice(body).map_err(|_| reject(400, "PayloadEmpty"))?;
        if !payload.get("aps").is_some_and(Value::is_object) {
            return Err(reject(400, "PayloadEmpty"));
        }
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(reject(400, "BadDeviceToken"));
        }
        match self.devices.get(token) {
            Some(Device::Registered) => {}
            Some(Device::Unregistered) => return Err(reject(410, "Unregistered")),
            Some(Device::OtherTopic) => return Err(reject(400, "DeviceTokenNotForTopic")),
            None => return Err(reject(400, "BadDeviceToken")),
        }
        let headers = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect();
        Ok(ApnsRequest { token: token.to_owned(), headers, payload })
    }

    fn authenticate(&self, authorization: Option<&str>) -> Result<(), Reject> {
        let invalid = || reject(403, "InvalidProviderToken");
        let authorization = authorization.ok_or(reject(403, "MissingProviderToken"))?;
        let (scheme, jwt) = authorization.split_once(' ').ok_or_else(invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(invalid());
        }
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| invalid())?;
        if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(self.key_id.as_str()) {
            return Err(invalid());
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.team_id]);
        validation.set_required_spec_claims(&["iss"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<Value>(jwt, &self.key, &validation).map_err(|_| invalid())?.claims;
        let iat = claims["iat"].as_i64().ok_or_else(invalid)?;
        let mut jwts = lock(&self.jwts);
        jwts.seen.insert(jwt.to_owned());
        let now = unix_now();
        if iat > now + 60 {
            return Err(invalid());
        }
        if now - iat > 3600 {
            return Err(reject(403, "ExpiredProviderToken"));
        }
        if !jwts.accepted.contains(jwt) {
            if jwts.last_new.is_some_and(|last| last.elapsed() < TOKEN_REFRESH) {
                return Err(reject(429, "TooManyProviderTokenUpdates"));
            }
            jwts.accepted.insert(jwt.to_owned());
            jwts.last_new = Some(Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use crate::client::{Reply, post_h2, tls_connect};
    use super::*;

    const TEAM: &str = "ABCDE12345";
    const KEY_ID: &str = "KEY1234567";
    const TOPIC: &str = "com.example.chat";

    fn provider_token(apns: &FakeApns, kid: &str, iss: &str, iat: i64) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_ec_pem(&std::fs::read(apns.key_path()).expect("the .p8")).expect("a P-256 key");
        jsonwebtoken::encode(&header, &json!({"iss": iss, "iat": iat}), &key).expect("sign")
    }

    async fn push(apns: &FakeApns, token: &str, jwt: &str, extra: &[(&str, &str)], payload: &str) -> Reply {
        let auth = format!("bearer {jwt}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("apns-topic", TOPIC),
            ("apns-push-type", "alert"),
            ("apns-priority", "10"),
        ];
        for (name, value) in extra {
            headers.retain(|(n, _)| n != name);
            headers.push((name, value));
        }
        post_h2(&apns.endpoint(), &apns.ca_path(), &format!("/3/device/{token}"), &headers, payload).await
    }

    fn reason(reply: &Reply) -> (u16, String) {
        assert!(reply.header("apns-id").is_some_and(is_uuid), "every answer has an apns-id");
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        (reply.status, body["reason"].as_str().unwrap_or_default().to_owned())
    }

    const ALERT: &str = r#"{"aps":{"alert":{"title":"alice","body":"New message"},"sound":"default"}}"#;

    #[tokio::test]
    async fn apns_delivers_over_h2_with_a_good_provider_token() {
        let apns = FakeApns::start(TEAM, KEY_ID, TOPIC).await;
        let device = "ab".repeat(32);
        apns.register(&device);
        let jwt = provider_token(&apns, KEY_ID, TEAM, unix_now());
        let id = "123E4567-E89B-12D3-A456-4266554400A0";
        let reply = push(&apns, &device, &jwt, &[("apns-id", id), ("apns-collapse-id", "alice")], ALERT).await;
        assert_eq!((reply.status, reply.header("apns-id")), (200, Some(id)), "{:?}", reply.body);
        let request = apns.next_notification().await;
        assert_eq!((request.token.as_str(), request.headers["apns-topic"].as_str()), (device.as_str(), TOPIC));
        assert_eq!(request.payload["aps"]["alert"]["title"], "alice");
        let reply = push(&apns, &device, &jwt, &[], ALERT).await;
        assert_eq!(reply.status, 200);
        assert_eq!((apns.provider_tokens_seen(), apns.send_attempts(), apns.accepted().len()), (1, 2, 2));
    }

    #[tokio::test]
    async fn apns_refuses_what_apple_refuses() {
        let apns = FakeApns::start(TEAM, KEY_ID, TOPIC).await;
        let (device, gone, other) = ("ab".repeat(32), "cd".repeat(32), "ef".repeat(32));
        apns.register(&device);
        apns.unregister(&gone);
        apns.register_for_other_topic(&other);
        let now = unix_now();
        let fake = &apns;
        let bad = |jwt: String| async move { reason(&push(fake, &"ab".repeat(32), &jwt, &[], ALERT).await) };
        assert_eq!(bad(provider_token(&apns, "OTHERKEY00", TEAM, now)).await, (403, "InvalidProviderToken".into()));
        assert_eq!(bad(provider_token(&apns, KEY_ID, "OTHERTEAM0", now)).await, (403, "InvalidProviderToken".into()));
        assert_eq!(bad(provider_token(&apns, KEY_ID, TEAM, now - 3700)).await, (403, "ExpiredProviderToken".into()));
        let mut forged = provider_token(&apns, KEY_ID, TEAM, now);
        forged.replace_range(forged.len() - 6.., "AAAAAA");
        assert_eq!(bad(forged).await, (403, "InvalidProviderToken".into()));
        let reply =
            post_h2(&apns.endpoint(), &apns.ca_path(), &format!("/3/device/{device}"), &[("apns-topic", TOPIC)], ALERT)
                .await;
        assert_eq!(reason(&reply), (403, "MissingProviderToken".into()));

        let jwt = provider_token(&apns, KEY_ID, TEAM, now);
        let (long_id, big) = ("c".repeat(65), format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(4100)));
        let (short, unknown) = ("ab".repeat(16), "12".repeat(32));
        for (token, extra, payload, expected) in [
            (&device, vec![("apns-topic", "com.example.other")], ALERT, (400, "TopicDisallowed")),
            (&device, vec![("apns-push-type", "banner")], ALERT, (400, "InvalidPushType")),
            (&device, vec![("apns-push-type", "background")], ALERT, (400, "BadPriority")),
            (&device, vec![("apns-priority", "7")], ALERT, (400, "BadPriority")),
            (&device, vec![("apns-expiration", "tomorrow")], ALERT, (400, "BadExpirationDate")),
            (&device, vec![("apns-collapse-id", long_id.as_str())], ALERT, (400, "BadCollapseId")),
            (&device, vec![("apns-id", "not-a-uuid")], ALERT, (400, "BadMessageId")),
            (&device, vec![], "", (400, "PayloadEmpty")),
            (&device, vec![], r#"{"alert":"hi"}"#, (400, "PayloadEmpty")),
            (&device, vec![], big.as_str(), (413, "PayloadTooLarge")),
            (&short, vec![], ALERT, (400, "BadDeviceToken")),
            (&unknown, vec![], ALERT, (400, "BadDeviceToken")),
            (&gone, vec![], ALERT, (410, "Unregistered")),
            (&other, vec![], ALERT, (400, "DeviceTokenNotForTopic")),
        ] {
            let reply = push(&apns, token, &jwt, &extra, payload).await;
            assert_eq!(reason(&reply), (expected.0, expected.1.to_owned()), "{extra:?} {token}");
            if expected.0 == 410 {
                assert!(reply.json()["timestamp"].as_i64().is_some_and(|t| t > now * 1000 - 60_000));
            }
        }
        let newer = provider_token(&apns, KEY_ID, TEAM, now - 1);
        assert_eq!(
            reason(&push(&apns, &device, &newer, &[], ALERT).await),
            (429, "TooManyProviderTokenUpdates".into())
        );
        apns.fail_next(1, 429, Some(3));
        let reply = push(&apns, &device, &jwt, &[], ALERT).await;
        assert_eq!((reason(&reply), reply.header("retry-after")), ((429, "TooManyRequests".into()), Some("3")));
        apns.no_notification_within(Duration::from_millis(50)).await;
        assert_eq!(apns.provider_tokens_seen(), 3, "the expired one, the current one, the refused refresh");
    }

    #[tokio::test]
    async fn apns_speaks_only_http2() {
        let apns = FakeApns::start(TEAM, KEY_ID, TOPIC).await;
        assert!(
            tls_connect(&apns.endpoint(), &apns.ca_path(), &[b"http/1.1"]).await.is_err(),
            "no ALPN h2, no handshake"
        );
        let mut stream = tls_connect(&apns.endpoint(), &apns.ca_path(), &[]).await.expect("a handshake without ALPN");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"POST /3/device/x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "not served without h2: {:?}", String::from_utf8_lossy(&answer));
    }
}
