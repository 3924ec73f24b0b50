//! FCM HTTP v1 and Google's OAuth token endpoint. The service account it writes out names this
//! fake's `/token` as `token_uri`, so the gateway gets its access tokens here exactly as it would from
//! Google: an RS256 assertion signed with the account's key, checked claim by claim. `messages:send`
//! checks the token it issued, the project, and the message as the v1 API's proto JSON mapping does
//! (unknown fields, string-only `data`, one target), answering with Google's error bodies.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::{Device, Devices, Failures, Inbox, Server, lock, random_hex, random_u64, reply, unix_now};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const PRIVATE_KEY: &str = include_str!("../fixtures/fcm-service-account.key.pem");
const PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/fcm-service-account.pub.pem");
const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const ACCESS_TOKEN_LIFETIME: u64 = 3599;

pub struct FakeFcm {
    server: Server,
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
}

struct Shared {
    project_id: String,
    key_id: String,
    client_email: String,
    token_uri: String,
    key: DecodingKey,
    reject_credentials: AtomicBool,
    issued: Mutex<HashMap<String, Instant>>,
    devices: Devices,
    failures: Failures,
    inbox: Inbox<Value>,
    grants: AtomicUsize,
    attempts: AtomicUsize,
}

impl FakeFcm {
    pub async fn start(project_id: &str) -> Self {
        let listener = super::bind().await;
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            project_id: project_id.to_owned(),
            key_id: random_hex(20),
            client_email: format!("switchboard-push@{project_id}.iam.gserviceaccount.com"),
            token_uri: format!("http://{addr}/token"),
            key: DecodingKey::from_rsa_pem(PUBLIC_KEY)
                .expect("fixtures/fcm-service-account.pub.pem is an RSA key"),
            reject_credentials: AtomicBool::new(false),
            issued: Mutex::new(HashMap::new()),
            devices: Devices::default(),
            failures: Failures::default(),
            inbox: Inbox::new(),
            grants: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let account = json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": shared.key_id,
            "private_key": PRIVATE_KEY,
            "client_email": shared.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": shared.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        });
        let text = serde_json::to_string_pretty(&account).expect("JSON");
        std::fs::write(dir.path().join("service-account.json"), text).expect("write the service account");
        let router = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/{method}", post(send))
            .with_state(shared.clone());
        Self { server: super::serve(listener, router, None), shared, dir }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn service_account_path(&self) -> PathBuf {
        self.dir.path().join("service-account.json")
    }

    pub fn register(&self, token: &str) {
        self.shared.devices.set(token, Device::Registered);
    }

    pub fn unregister(&self, token: &str) {
        self.shared.devices.set(token, Device::Unregistered);
    }

    /// 429 QUOTA_EXCEEDED, 500 INTERNAL or 503 UNAVAILABLE for the next `count` authorized sends.
    pub fn fail_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        self.shared.failures.arm(count, status, retry_after, &[429, 500, 503]);
    }

    /// An outage: every authorized send answers `status` (429 QUOTA_EXCEEDED, 500 INTERNAL or
    /// 503 UNAVAILABLE, with Google's body and no Retry-After) until `duration` has passed.
    pub fn fail_for(&self, duration: Duration, status: u16) {
        self.shared.failures.arm_for(duration, status, &[429, 500, 503]);
    }

    /// As when the key is deleted in the console: no new access tokens, and the issued ones die.
    pub fn set_reject_credentials(&self, reject: bool) {
        self.shared.reject_credentials.store(reject, Ordering::SeqCst);
        if reject {
            lock(&self.shared.issued).clear();
        }
    }

    pub async fn next_message(&self) -> Value {
        self.shared.inbox.next("FCM message").await
    }

    pub async fn no_message_within(&self, d: Duration) {
        self.shared.inbox.none_within(d, "FCM message").await;
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.shared.inbox.all()
    }

    /// The accepted messages with the time each was accepted.
    pub fn accepted_timed(&self) -> Vec<(Instant, Value)> {
        self.shared.inbox.all_timed(0)
    }

    /// As `accepted_timed`, without the first `skip`.
    pub fn accepted_timed_since(&self, skip: usize) -> Vec<(Instant, Value)> {
        self.shared.inbox.all_timed(skip)
    }

    pub fn accepted_count(&self) -> usize {
        self.shared.inbox.len()
    }

    /// Waits until `n` messages were accepted in all, at most `within`; how many were.
    pub async fn wait_for_accepted(&self, n: usize, within: Duration) -> usize {
        self.shared.inbox.wait_for_len(n, within).await
    }

    pub fn token_requests(&self) -> usize {
        self.shared.grants.load(Ordering::SeqCst)
    }

    pub fn send_attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }
}

const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. \
                           Check your iat and exp values in the JWT claim.";
const NO_CREDENTIAL: &str = "Request is missing required authentication credential. Expected OAuth 2 access token, \
                             login cookie or other valid authentication credential. \
                             See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const BAD_CREDENTIAL: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                              login cookie or other valid authentication credential. \
                              See https://developers.google.com/identity/sign-in/web/devconsole-project.";

fn oauth_error(error: &str, description: &str) -> Response {
    reply(400, &json!({"error": error, "error_description": description}), None)
}

async fn token(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    match form.get("grant_type").map(String::as_str) {
        Some(JWT_BEARER) => {}
        None => return oauth_error("invalid_request", "Missing required parameter: grant_type"),
        Some(other) => return oauth_error("unsupported_grant_type", &format!("Invalid grant_type: {other}")),
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    if let Err((error, description)) = s.check_assertion(assertion) {
        return oauth_error(error, &description);
    }
    let access_token = format!("ya29.{}", random_hex(32));
    let expiry = Instant::now() + Duration::from_secs(ACCESS_TOKEN_LIFETIME);
    lock(&s.issued).insert(access_token.clone(), expiry);
    s.grants.fetch_add(1, Ordering::SeqCst);
    reply(
        200,
        &json!({"access_token": access_token, "expires_in": ACCESS_TOKEN_LIFETIME, "token_type": "Bearer"}),
        None,
    )
}

impl Shared {
    /// Google's checks on a service-account assertion, with its error codes and descriptions.
    fn check_assertion(&self, assertion: &str) -> Result<(), (&'static str, String)> {
        let grant = |description: &str| ("invalid_grant", description.to_owned());
        let header = jsonwebtoken::decode_header(assertion).map_err(|e| grant(&format!("Invalid JWT: {e}")))?;
        let right_key = header.alg == Algorithm::RS256 && header.kid.as_deref() == Some(self.key_id.as_str());
        if self.reject_credentials.load(Ordering::SeqCst) || !right_key {
            return Err(grant("Invalid JWT Signature."));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.token_uri]);
        validation.set_issuer(&[&self.client_email]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        let claims = match jsonwebtoken::decode::<Value>(assertion, &self.key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                return Err(grant(&match e.kind() {
                    ErrorKind::InvalidSignature => "Invalid JWT Signature.".to_owned(),
                    ErrorKind::InvalidIssuer => "Invalid grant: account not found".to_owned(),
                    ErrorKind::InvalidAudience => {
                        format!("Invalid JWT: Failed audience check. Expected {}", self.token_uri)
                    }
                    ErrorKind::ExpiredSignature => SHORT_LIVED.to_owned(),
                    _ => format!("Invalid JWT: {e}"),
                }));
            }
        };
        let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
        if (iat - unix_now()).abs() > 300 || exp <= iat || exp - iat > 3600 {
            return Err(grant(SHORT_LIVED));
        }
        if !claims["scope"].as_str().unwrap_or_default().split(' ').any(|scope| scope == SCOPE) {
            return Err(("invalid_scope", "Invalid OAuth scope or ID token audience provided.".to_owned()));
        }
        Ok(())
    }

    fn authorized(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let header = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(NO_CREDENTIAL)?;
        let token = header.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t);
        match token.and_then(|t| lock(&self.issued).get(t).copied()) {
            Some(expiry) if expiry > Instant::now() => Ok(()),
            _ => Err(BAD_CREDENTIAL),
        }
    }
}

fn google_error(code: u16, status: &str, message: &str, details: Vec<Value>) -> Response {
    let mut error = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    let mut response = reply(code, &json!({"error": error}), None);
    if code == 401 {
        let challenge = "Bearer realm=\"https://accounts.google.com/\"".parse().expect("a header value");
        response.headers_mut().insert("www-authenticate", challenge);
    }
    response
}

fn fcm_error(code: &str) -> Value {
    json!({"@type": FCM_ERROR, "errorCode": code})
}

async fn send(
    State(s): State<Arc<Shared>>,
    Path((project, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != "messages:send" {
        return google_error(404, "NOT_FOUND", "Method not found.", vec![]);
    }
    s.attempts.fetch_add(1, Ordering::SeqCst);
    if let Err(message) = s.authorized(&headers) {
        return google_error(401, "UNAUTHENTICATED", message, vec![]);
    }
    if project != s.project_id {
        return google_error(403, "PERMISSION_DENIED", "SenderId mismatch", vec![fcm_error("SENDER_ID_MISMATCH")]);
    }
    if let Some((status, retry_after)) = s.failures.take() {
        let (name, message, code) = match status {
            429 => ("RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'.", "QUOTA_EXCEEDED"),
            500 => ("INTERNAL", "Internal error encountered.", "INTERNAL"),
            _ => ("UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
        };
        let mut response = google_error(status, name, message, vec![fcm_error(code)]);
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        return response;
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let checked = if content_type.starts_with("application/json") {
        check_message(&body)
    } else {
        Err(invalid("", "Invalid JSON payload received. Content-Type must be application/json."))
    };
    let message = match checked {
        Ok(message) => message,
        Err(Invalid { field, description }) => {
            let mut violation = json!({"description": description});
            if !field.is_empty() {
                violation["field"] = json!(field);
            }
            let bad_request =
                json!({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]});
            return google_error(
                400,
                "INVALID_ARGUMENT",
                &description,
                vec![bad_request, fcm_error("INVALID_ARGUMENT")],
            );
        }
    };
    if let Some(token) = message["token"].as_str()
        && s.devices.get(token) != Some(Device::Registered)
    {
        return google_error(404, "NOT_FOUND", "Requested entity was not found.", vec![fcm_error("UNREGISTERED")]);
    }
    s.inbox.push(message);
    reply(200, &json!({"name": format!("projects/{project}/messages/{}", random_u64())}), None)
}

/// A 400 INVALID_ARGUMENT naming `field` (a proto path such as `message.android.priority`).
struct Invalid {
    field: String,
    description: String,
}

fn invalid(field: &str, description: impl Into<String>) -> Invalid {
    Invalid { field: field.to_owned(), description: description.into() }
}

fn bad_value(field: &str, proto_type: &str, value: &Value) -> Invalid {
    invalid(field, format!("Invalid value at '{field}' ({proto_type}), {value}"))
}

/// Proto field names (JSON also takes their lowerCamelCase, compared here in snake_case).
const MESSAGE_FIELDS: &str = "name data notification android webpush apns fcm_options token topic condition";
const ANDROID_FIELDS: &str =
    "collapse_key priority ttl restricted_package_name data notification fcm_options direct_boot_ok";
const APNS_FIELDS: &str = "headers payload fcm_options live_activity_token";

fn snake_case(name: &str) -> String {
    name.chars()
        .flat_map(|c| [Some('_').filter(|_| c.is_ascii_uppercase()), Some(c.to_ascii_lowercase())])
        .flatten()
        .collect()
}

/// The object at `field`; with `known`, an unknown key is refused as the proto parser does.
fn object<'a>(
    value: &'a Value,
    field: &str,
    known: Option<&str>,
) -> Result<&'a serde_json::Map<String, Value>, Invalid> {
    let object =
        value.as_object().ok_or_else(|| bad_value(field, "type.googleapis.com/google.protobuf.Struct", value))?;
    let unknown = |key: &&String| known.is_some_and(|known| !known.split(' ').any(|k| k == snake_case(key)));
    match object.keys().find(unknown) {
        Some(key) => Err(invalid(
            field,
            format!("Invalid JSON payload received. Unknown name \"{key}\" at '{field}': Cannot find field."),
        )),
        None => Ok(object),
    }
}

/// A `map<string, string>`, as `data` and `apns.headers` are: FCM refuses any other value type.
fn string_map(value: Option<&Value>, field: &str) -> Result<(), Invalid> {
    let Some(value) = value else { return Ok(()) };
    match object(value, field, None)?.values().enumerate().find(|(_, v)| !v.is_string()) {
        Some((index, v)) => Err(bad_value(&format!("{field}[{index}].value"), "TYPE_STRING", v)),
        None => Ok(()),
    }
}

fn check_message(body: &[u8]) -> Result<Value, Invalid> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| invalid("", format!("Invalid JSON payload received. {e}")))?;
    let message = object(&root, "", Some("message validate_only"))?
        .get("message")
        .ok_or_else(|| invalid("message", "Message is required."))?;
    let fields = object(message, "message", Some(MESSAGE_FIELDS))?;
    let targets: Vec<&str> = ["token", "topic", "condition"].into_iter().filter(|t| fields.contains_key(*t)).collect();
    match targets[..] {
        [] => return Err(invalid("message", "Recipient of the message is not set.")),
        [target] if !fields[target].is_string() => {
            return Err(bad_value(&format!("message.{target}"), "TYPE_STRING", &fields[target]));
        }
        [_] => {}
        [_, second, ..] => {
            return Err(invalid(
                "message",
                format!("Invalid JSON payload received. Oneof field 'target' is already set. Cannot set '{second}'"),
            ));
        }
    }
    string_map(fields.get("data"), "message.data")?;
    if let Some(notification) = fields.get("notification") {
        string_map(Some(notification), "message.notification")?;
        object(notification, "message.notification", Some("title body image"))?;
    }
    if let Some(android) = fields.get("android") {
        let android = object(android, "message.android", Some(ANDROID_FIELDS))?;
        string_map(android.get("data"), "message.android.data")?;
        if let Some(priority) = android.get("priority")
            && !priority.as_str().is_some_and(|p| p.eq_ignore_ascii_case("high") || p.eq_ignore_ascii_case("normal"))
        {
            return Err(bad_value(
                "message.android.priority",
                "type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority",
                priority,
            ));
        }
        if let Some(ttl) = android.get("ttl").filter(|ttl| !ttl.as_str().is_some_and(is_duration)) {
            return Err(bad_value("message.android.ttl", "type.googleapis.com/google.protobuf.Duration", ttl));
        }
    }
    if let Some(apns) = fields.get("apns") {
        let apns = object(apns, "message.apns", Some(APNS_FIELDS))?;
        string_map(apns.get("headers"), "message.apns.headers")?;
        if let Some(payload) = apns.get("payload")
            && !object(payload, "message.apns.payload", None)?.get("aps").is_none_or(Value::is_object)
        {
            return Err(invalid("message.apns.payload", "Invalid APNs payload: aps must be a dictionary."));
        }
    }
    if let Some(token) = fields.get("token").and_then(Value::as_str)
        && (token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')))
    {
        return Err(invalid("message.token", "The registration token is not a valid FCM registration token"));
    }
    let mut payload = fields.clone();
    payload.retain(|k, _| !matches!(k.as_str(), "token" | "topic" | "condition"));
    if serde_json::to_vec(&payload).expect("JSON").len() > 4096 {
        return Err(invalid("message", "Message is too big"));
    }
    Ok(message.clone())
}

/// The proto JSON form of a Duration: seconds with up to nine fractional digits, then `s`.
fn is_duration(text: &str) -> bool {
    let Some(number) = text.strip_suffix('s') else { return false };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty() && digits(whole) && (1..=9).contains(&fraction.len()) && digits(fraction)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use crate::client::{Reply, post};
    use super::*;

    const PROJECT: &str = "switchboard-test";
    const TOKEN: &str = "dGVzdC1kZXZpY2U:APA91b_token-1";

    fn assertion(fcm: &FakeFcm, edit: impl FnOnce(&mut Value, &mut Header)) -> String {
        let account: Value =
            serde_json::from_slice(&std::fs::read(fcm.service_account_path()).expect("service account")).expect("JSON");
        let now = unix_now();
        let (iss, aud) = (&account["client_email"], &account["token_uri"]);
        let mut claims = json!({"iss": iss, "scope": SCOPE, "aud": aud, "iat": now, "exp": now + 3600});
        let mut header = Header::new(Algorithm::RS256);
        header.kid = account["private_key_id"].as_str().map(str::to_owned);
        edit(&mut claims, &mut header);
        let key =
            EncodingKey::from_rsa_pem(account["private_key"].as_str().expect("a key").as_bytes()).expect("RSA key");
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }

    async fn grant(fcm: &FakeFcm, assertion: &str) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", JWT_BEARER)
            .append_pair("assertion", assertion)
            .finish();
        post(&fcm.endpoint(), "/token", &[("content-type", "application/x-www-form-urlencoded")], body).await
    }

    async fn send(fcm: &FakeFcm, project: &str, access: &str, message: Value) -> Reply {
        let auth = format!("Bearer {access}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        post(
            &fcm.endpoint(),
            &format!("/v1/projects/{project}/messages:send"),
            &headers,
            json!({"message": message}).to_string(),
        )
        .await
    }

    fn message(token: &str) -> Value {
        let android = json!({"priority": "high", "ttl": "2419200s", "collapse_key": "chat"});
        json!({"token": token, "data": {"from": "alice@localhost"}, "android": android})
    }

    async fn access_token(fcm: &FakeFcm) -> String {
        let reply = grant(fcm, &assertion(fcm, |_, _| {})).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.json()["access_token"].as_str().expect("an access token").to_owned()
    }

    #[tokio::test]
    async fn fcm_grants_tokens_and_delivers_a_valid_message() {
        let fcm = FakeFcm::start(PROJECT).await;
        fcm.register(TOKEN);
        let access = access_token(&fcm).await;
        let reply = send(&fcm, PROJECT, &access, message(TOKEN)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(reply.json()["name"].as_str().expect("a name").starts_with("projects/switchboard-test/messages/"));
        assert_eq!(fcm.next_message().await, message(TOKEN));
        fcm.no_message_within(Duration::from_millis(50)).await;
        assert_eq!((fcm.token_requests(), fcm.send_attempts(), fcm.accepted().len()), (1, 1, 1));
    }

    #[tokio::test]
    async fn fcm_refuses_bad_assertions() {
        let fcm = FakeFcm::start(PROJECT).await;
        let mut tampered = assertion(&fcm, |_, _| {});
        tampered.replace_range(tampered.len() - 6.., "AAAAAA");
        let cases = [
            (tampered, "invalid_grant"),
            (assertion(&fcm, |_, h| h.kid = Some("another-key".into())), "invalid_grant"),
            (assertion(&fcm, |c, _| c["aud"] = json!("https://oauth2.googleapis.com/token")), "invalid_grant"),
            (assertion(&fcm, |c, _| c["iss"] = json!("someone@else.iam.gserviceaccount.com")), "invalid_grant"),
            (assertion(&fcm, |c, _| c["exp"] = json!(unix_now() + 7200)), "invalid_grant"),
            (assertion(&fcm, |c, _| c["iat"] = json!(unix_now() - 1200)), "invalid_grant"),
            (
                assertion(&fcm, |c, _| c["scope"] = json!("https://www.googleapis.com/auth/cloud-platform")),
                "invalid_scope",
            ),
        ];
        for (jwt, error) in cases {
            let reply = grant(&fcm, &jwt).await;
            assert_eq!((reply.status, reply.json()["error"].as_str()), (400, Some(error)), "{:?}", reply.body);
        }
        assert_eq!(fcm.token_requests(), 0);
    }

    #[tokio::test]
    async fn fcm_answers_every_send_with_the_outage_status_until_it_ends() {
        let fcm = FakeFcm::start(PROJECT).await;
        fcm.register(TOKEN);
        let access = access_token(&fcm).await;
        fcm.fail_for(Duration::from_millis(300), 503);
        for _ in 0..3 {
            let reply = send(&fcm, PROJECT, &access, message(TOKEN)).await;
            assert_eq!((verdict(&reply).as_str(), reply.header("retry-after")), ("503 UNAVAILABLE UNAVAILABLE -", None));
        }
        assert_eq!(fcm.accepted_count(), 0);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let reply = send(&fcm, PROJECT, &access, message(TOKEN)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(fcm.wait_for_accepted(1, Duration::from_secs(1)).await, 1);
        let timed = fcm.accepted_timed();
        assert_eq!((timed.len(), &timed[0].1), (1, &message(TOKEN)));
        assert_eq!(fcm.send_attempts(), 4);
    }

    /// `HTTP-status STATUS errorCode field`: what the gateway acts on in a Google error.
    fn verdict(reply: &Reply) -> String {
        let error = &reply.json()["error"];
        let details = error["details"].as_array().cloned().unwrap_or_default();
        let code = details.iter().find_map(|d| d["errorCode"].as_str()).unwrap_or("-");
        let field = details.iter().find_map(|d| d["fieldViolations"][0]["field"].as_str()).unwrap_or("-");
        format!("{} {} {code} {field}", reply.status, error["status"].as_str().unwrap_or("-"))
    }

    #[tokio::test]
    async fn fcm_refuses_what_google_refuses() {
        let fcm = FakeFcm::start(PROJECT).await;
        fcm.register(TOKEN);
        let access = access_token(&fcm).await;
        for (project, access, message, expected) in [
            (PROJECT, "ya29.made-up", message(TOKEN), "401 UNAUTHENTICATED - -"),
            ("another-project", &access, message(TOKEN), "403 PERMISSION_DENIED SENDER_ID_MISMATCH -"),
            (PROJECT, &access, message("never-registered"), "404 NOT_FOUND UNREGISTERED -"),
        ] {
            assert_eq!(verdict(&send(&fcm, project, access, message).await), expected);
        }
        for (message, field) in [
            (message("not a token!"), "message.token"),
            (json!({"token": TOKEN, "data": {"n": 1}}), "message.data[0].value"),
            (json!({"token": TOKEN, "topic": "news"}), "message"),
            (json!({"data": {"a": "b"}}), "message"),
            (json!({"token": TOKEN, "android": {"priority": "urgent"}}), "message.android.priority"),
            (json!({"token": TOKEN, "android": {"ttl": 3600}}), "message.android.ttl"),
            (json!({"token": TOKEN, "android": {"time_to_live": "60s"}}), "message.android"),
            (json!({"token": TOKEN, "apns": {"payload": {"aps": "x"}}}), "message.apns.payload"),
            (json!({"token": TOKEN, "data": {"big": "x".repeat(5000)}}), "message"),
        ] {
            let reply = send(&fcm, PROJECT, &access, message.clone()).await;
            assert_eq!(verdict(&reply), format!("400 INVALID_ARGUMENT INVALID_ARGUMENT {field}"), "{message}");
        }
        fcm.fail_next(1, 503, Some(7));
        let reply = send(&fcm, PROJECT, &access, message(TOKEN)).await;
        assert_eq!(
            (verdict(&reply).as_str(), reply.header("retry-after")),
            ("503 UNAVAILABLE UNAVAILABLE -", Some("7"))
        );
        fcm.unregister(TOKEN);
        assert_eq!(verdict(&send(&fcm, PROJECT, &access, message(TOKEN)).await), "404 NOT_FOUND UNREGISTERED -");
        fcm.set_reject_credentials(true);
        assert_eq!(verdict(&send(&fcm, PROJECT, &access, message(TOKEN)).await), "401 UNAUTHENTICATED - -");
        let reply = grant(&fcm, &assertion(&fcm, |_, _| {})).await;
        assert_eq!((reply.status, reply.json()["error"].as_str()), (400, Some("invalid_grant")));
        fcm.no_message_within(Duration::from_millis(50)).await;
        assert_eq!((fcm.send_attempts(), fcm.accepted().len()), (15, 0));
    }
}
