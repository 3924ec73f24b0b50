//! Waking offline phones, end to end: a sender on MQTT or WebSocket, the gateway, and local fake
//! FCM, APNs and Baidu servers that check signatures, headers and payloads as the real ones do.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_push_fakes::apns::FakeApns;
use switchboard_push_fakes::baidu::FakeBaidu;
use switchboard_push_fakes::fcm::FakeFcm;

use crate::common::{Gateway, message};

const PROJECT: &str = "switchboard-test";
const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.chat";
const BAIDU_KEY: &str = "Ljc710pzAa99GULCo8y48NvB";
const BAIDU_SECRET: &str = "87772555E1C16715EBA5C85341684C58";

const FCM_TOKEN: &str = "bob-pixel:APA91bHun4MxP5egoKMwt2KZFBaFUH";
const APNS_TOKEN: &str = "7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f";
const BAIDU_ANDROID: &str = "3712897000000000001";
const BAIDU_IOS: &str = "3712897000000000002";

struct Providers {
    fcm: FakeFcm,
    apns: FakeApns,
    baidu: FakeBaidu,
}

impl Providers {
    async fn start() -> Self {
        let providers = Self {
            fcm: FakeFcm::start(PROJECT).await,
            apns: FakeApns::start(TEAM, KEY_ID, TOPIC).await,
            baidu: FakeBaidu::start(BAIDU_KEY, BAIDU_SECRET).await,
        };
        providers.fcm.register(FCM_TOKEN);
        providers.apns.register(APNS_TOKEN);
        providers.baidu.register(BAIDU_ANDROID);
        providers.baidu.register(BAIDU_IOS);
        providers
    }

    /// The `[push]` configuration pointing at these fakes.
    fn config(&self, window: &str, content: &str) -> String {
        format!(
            r#"
[push]
coalesce_window = "{window}"
content = "{content}"
ca_file = "{ca}"
[push.fcm]
project_id = "{PROJECT}"
service_account = "{service_account}"
endpoint = "{fcm}"
[push.apns]
team_id = "{TEAM}"
key_id = "{KEY_ID}"
key = "{key}"
topic = "{TOPIC}"
endpoint = "{apns}"
[push.baidu]
api_key = "{BAIDU_KEY}"
secret_key = "{BAIDU_SECRET}"
endpoint = "{baidu}"
"#,
            ca = self.apns.ca_path().display(),
            service_account = self.fcm.service_account_path().display(),
            fcm = self.fcm.endpoint(),
            key = self.apns.key_path().display(),
            apns = self.apns.endpoint(),
            baidu = self.baidu.endpoint(),
        )
    }
}

/// Bob connects once, registers his phones (over a WebSocket frame, MQTT frames and HTTP alike),
/// and goes away.
async fn bob_registers_and_leaves(gateway: &Gateway) {
    let mut ws = gateway.ws_user("bob").await;
    ws.send(json!({"type":"device.register","id":"d1","platform":"fcm","token":FCM_TOKEN,"app":"com.example.chat"})).await;
    assert_eq!(ws.recv_type("ack").await["id"], "d1");
    ws.close().await;

    let mut mqtt = gateway.mqtt_user("bob").await;
    mqtt.send(json!({"type":"device.register","id":"d2","platform":"baidu","token":BAIDU_ANDROID})).await;
    assert_eq!(mqtt.recv_type("ack").await["id"], "d2");
    mqtt.send(json!({"type":"device.register","id":"d3","platform":"baidu","token":BAIDU_IOS,"os":"ios"})).await;
    assert_eq!(mqtt.recv_type("ack").await["id"], "d3");
    mqtt.disconnect().await;

    let token = gateway.token("bob");
    let body = json!({"platform":"apns","token":APNS_TOKEN}).to_string();
    let (status, answer) = gateway.http_request("POST", "/api/v1/devices", Some(&token), &body).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn a_message_for_an_offline_user_wakes_each_of_her_phones_once() {
    let providers = Providers::start().await;
    let gateway = Gateway::start_with(&providers.config("30s", "full")).await;
    bob_registers_and_leaves(&gateway).await;

    let mut alice = gateway.mqtt_user("alice").await;
    alice.send(message("m1", "bob", "are you there? <3")).await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["id"], "m1");

    let fcm = providers.fcm.next_message().await;
    assert_eq!(fcm["token"], FCM_TOKEN);
    assert_eq!(fcm["notification"]["title"], "alice@localhost");
    assert_eq!(fcm["notification"]["body"], "are you there? <3");
    assert_eq!(fcm["android"]["priority"], "high");
    assert_eq!(fcm["data"]["count"], "1");
    assert_eq!(fcm["data"]["msg"], ack["msg"], "the app can fetch exactly this message");
    assert_eq!(fcm["apns"]["headers"]["apns-push-type"], "alert", "iOS apps on FCM are woken too");

    let apns = providers.apns.next_notification().await;
    assert_eq!(apns.token, APNS_TOKEN);
    assert_eq!(apns.headers.get("apns-topic").map(String::as_str), Some(TOPIC));
    assert_eq!(apns.headers.get("apns-push-type").map(String::as_str), Some("alert"));
    assert_eq!(apns.headers.get("apns-priority").map(String::as_str), Some("10"));
    assert!(apns.headers.contains_key("apns-collapse-id") && apns.headers.contains_key("apns-expiration"));
    assert_eq!(apns.payload["aps"]["alert"]["body"], "are you there? <3");
    assert_eq!(apns.payload["aps"]["badge"], 1);

    let mut baidu = [providers.baidu.next_push().await, providers.baidu.next_push().await];
    baidu.sort_by(|a, b| a.params["channel_id"].cmp(&b.params["channel_id"]));
    assert_eq!(baidu[0].params["channel_id"], BAIDU_ANDROID);
    assert_eq!(baidu[0].params["device_type"], "3");
    assert_eq!(baidu[0].params["msg_type"], "1");
    assert_eq!(baidu[0].msg["title"], "alice@localhost");
    assert_eq!(baidu[0].msg["description"], "are you there? <3");
    assert_eq!(baidu[1].params["channel_id"], BAIDU_IOS);
    assert_eq!(baidu[1].params["device_type"], "4", "\"os\":\"ios\" makes a Baidu device iOS");
    assert_eq!(baidu[1].msg["aps"]["badge"], 1);

    // One notification per device, and the message itself still waits for him.
    providers.fcm.no_message_within(Duration::from_millis(500)).await;
    assert_eq!((providers.apns.accepted().len(), providers.baidu.accepted().len()), (1, 2));
    let mut bob = gateway.ws_user("bob").await;
    assert_eq!(bob.recv_type("message").await["id"], ack["msg"]);
    assert!(gateway.metric("switchboard_push_total{provider=\"push.fcm\",result=\"sent\"}").await >= 1.0);
}

#[tokio::test]
async fn nobody_is_woken_while_online_and_subscription_requests_wake_too() {
    let providers = Providers::start().await;
    let gateway = Gateway::start_with(&providers.config("1s", "sender")).await;
    bob_registers_and_leaves(&gateway).await;

    let mut bob = gateway.ws_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("w1", "bob", "you are online")).await;
    assert_eq!(bob.recv_type("message").await["body"], "you are online");
    providers.fcm.no_message_within(Duration::from_secs(2)).await;
    assert_eq!(providers.apns.send_attempts() + providers.baidu.send_attempts(), 0);

    bob.close().await;
    alice.send(json!({"type":"subscribe","id":"s1","to":"bob"})).await;
    alice.recv_type("ack").await;
    let woken = providers.fcm.next_message().await;
    assert_eq!(woken["data"]["type"], "subscribe");
    assert_eq!(woken["notification"]["title"], "alice@localhost");
    assert_eq!(woken["notification"]["body"], "New contact request");
}

#[tokio::test]
async fn a_burst_becomes_one_notification_per_window_with_the_count_and_last_sender() {
    let providers = Providers::start().await;
    let gateway = Gateway::start_with(&providers.config("2s", "sender")).await;
    bob_registers_and_leaves(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    let mut carol = gateway.ws_user("carol").await;

    alice.send(message("a1", "bob", "one")).await;
    alice.recv_type("ack").await;
    let first = providers.fcm.next_message().await;
    assert_eq!(first["data"]["count"], "1");
    let first_at = Instant::now();

    for i in 2..=4 {
        alice.send(message(&format!("a{i}"), "bob", "more")).await;
        alice.recv_type("ack").await;
    }
    carol.send(message("c1", "bob", "me too")).await;
    carol.recv_type("ack").await;

    let second = providers.fcm.next_message().await;
    assert!(first_at.elapsed() >= Duration::from_millis(1000), "not before the window ended");
    assert_eq!(second["data"]["count"], "5", "everything waiting since he left");
    assert_eq!(second["notification"]["title"], "carol@localhost", "the last sender");
    assert_eq!(second["notification"]["body"], "5 new messages");
    providers.fcm.no_message_within(Duration::from_secs(3)).await;
    assert_eq!(providers.fcm.accepted().len(), 2);
    assert_eq!(providers.apns.accepted().len(), 2);
    assert_eq!(providers.fcm.token_requests(), 1, "the access token is cached");
    assert_eq!(providers.apns.provider_tokens_seen(), 1, "the provider token is reused");

    // A message after the window pushes again.
    alice.send(message("a5", "bob", "later")).await;
    alice.recv_type("ack").await;
    assert_eq!(providers.fcm.next_message().await["data"]["count"], "6");
}

#[tokio::test]
async fn the_privacy_policy_keeps_text_and_sender_off_the_providers() {
    let providers = Providers::start().await;
    let gateway = Gateway::start_with(&providers.config("30s", "none")).await;
    bob_registers_and_leaves(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("a1", "bob", "the launch code is 0000")).await;
    alice.recv_type("ack").await;

    let fcm = providers.fcm.next_message().await.to_string();
    let apns = providers.apns.next_notification().await.payload.to_string();
    let baidu = providers.baidu.next_push().await.msg.to_string();
    for seen in [&fcm, &apns, &baidu] {
        assert!(!seen.contains("launch code"), "{seen}");
        assert!(!seen.contains("alice"), "{seen}");
        assert!(seen.contains("New message"), "{seen}");
    }
}

#[tokio::test]
async fn dead_tokens_are_removed_and_never_tried_again() {
    let providers = Providers::start().await;
    providers.fcm.unregister(FCM_TOKEN);
    providers.apns.unregister(APNS_TOKEN);
    providers.baidu.unregister(BAIDU_ANDROID);
    let gateway = Gateway::start_with(&providers.config("1s", "sender")).await;
    bob_registers_and_leaves(&gateway).await;
    // A token FCM refuses as malformed (INVALID_ARGUMENT naming message.token) goes the same way.
    let mut dave = gateway.ws_user("dave").await;
    dave.send(json!({"type":"device.register","id":"d1","platform":"fcm","token":"not!a!token"})).await;
    dave.recv_type("ack").await;
    dave.close().await;

    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("a1", "bob", "hello")).await;
    alice.recv_type("ack").await;
    alice.send(message("a2", "dave", "hello")).await;
    alice.recv_type("ack").await;
    // The live Baidu iOS device is notified; the dead ones are removed as their answers come in
    // (no other test removes devices, so the process-wide counter is this test's).
    providers.baidu.next_push().await;
    let removed = wait_for_metric(&gateway, "result=\"device_removed\"", 4.0).await;
    assert_eq!(removed, 4.0, "fcm ×2, apns, baidu");

    let attempts = (providers.fcm.send_attempts(), providers.apns.send_attempts(), providers.baidu.send_attempts());
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the window
    alice.send(message("a3", "bob", "again")).await;
    alice.recv_type("ack").await;
    assert_eq!(providers.baidu.next_push().await.params["channel_id"], BAIDU_IOS);
    providers.fcm.no_message_within(Duration::from_secs(1)).await;
    assert_eq!(
        (providers.fcm.send_attempts(), providers.apns.send_attempts(), providers.baidu.send_attempts()),
        (attempts.0, attempts.1, attempts.2 + 1),
        "removed devices are not tried again"
    );
    let token = gateway.token("bob");
    let body = json!({"platform":"apns","token":APNS_TOKEN}).to_string();
    let (status, _) = gateway.http_request("DELETE", "/api/v1/devices", Some(&token), &body).await;
    assert_eq!(status, 404, "the registry no longer has it");
}

#[tokio::test]
async fn throttling_and_outages_are_retried_after_the_time_the_provider_asks() {
    let providers = Providers::start().await;
    providers.fcm.fail_next(2, 503, Some(1));
    providers.apns.fail_next(1, 429, None);
    providers.baidu.fail_next(1, 500, None);
    let gateway = Gateway::start_with(&providers.config("30s", "sender")).await;
    bob_registers_and_leaves(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    let started = Instant::now();
    alice.send(message("a1", "bob", "hello")).await;
    alice.recv_type("ack").await;

    providers.fcm.next_message().await;
    assert!(started.elapsed() >= Duration::from_secs(2), "two Retry-After: 1 were honoured");
    assert_eq!(providers.fcm.send_attempts(), 3);
    providers.apns.next_notification().await;
    assert_eq!(providers.apns.send_attempts(), 2);
    providers.baidu.next_push().await;
    providers.baidu.next_push().await;
    assert_eq!(providers.baidu.send_attempts(), 3);
    assert!(gateway.metric("switchboard_push_total{provider=\"push.fcm\",result=\"retried\"}").await >= 2.0);
    providers.fcm.no_message_within(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn refused_credentials_show_in_healthz_and_do_not_spin() {
    let providers = Providers::start().await;
    providers.fcm.set_reject_credentials(true);
    let gateway = Gateway::start_with(&providers.config("30s", "sender")).await;
    bob_registers_and_leaves(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("a1", "bob", "hello")).await;
    assert_eq!(alice.recv_type("ack").await["id"], "a1", "the message itself is kept");
    providers.apns.next_notification().await;

    let (status, body) = gateway.http_get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["failing"], json!(["push.fcm"]));
    providers.fcm.no_message_within(Duration::from_secs(2)).await;
    assert_eq!(providers.fcm.send_attempts(), 0, "nothing is sent without an access token");
    // Paused, not spinning (no other test refuses credentials: the counter is this test's).
    let refusals = wait_for_metric(&gateway, "result=\"unauthorized\"", 1.0).await;
    assert!((1.0..=2.0).contains(&refusals), "{refusals} refusals in two seconds");
}

#[tokio::test]
async fn coming_back_within_the_window_cancels_the_coalesced_notification() {
    let providers = Providers::start().await;
    let gateway = Gateway::start_with(&providers.config("2s", "sender")).await;
    bob_registers_and_leaves(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("a1", "bob", "one")).await;
    alice.recv_type("ack").await;
    providers.fcm.next_message().await;
    alice.send(message("a2", "bob", "two")).await;
    alice.recv_type("ack").await;

    // Bob reads his messages before the window ends: the burst's notification is not sent.
    let mut bob = gateway.ws_user("bob").await;
    assert_eq!(bob.recv_type("message").await["body"], "one");
    assert_eq!(bob.recv_type("message").await["body"], "two");
    providers.fcm.no_message_within(Duration::from_secs(3)).await;
    assert_eq!(providers.fcm.accepted().len(), 1);
}

#[tokio::test]
async fn recorded_notifications_survive_a_restart() {
    let providers = Providers::start().await;
    // The provider asks for a long pause: the notification waits in the outbox.
    providers.fcm.fail_next(1, 503, Some(600));
    let gateway = Gateway::start_with(&providers.config("30s", "sender")).await;
    bob_registers_and_leaves(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("a1", "bob", "hello")).await;
    alice.recv_type("ack").await;
    providers.apns.next_notification().await;
    let deadline = Instant::now() + crate::common::WAIT;
    while providers.fcm.send_attempts() == 0 {
        assert!(Instant::now() < deadline, "FCM never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(alice);

    let gateway = gateway.restart().await;
    let woken = providers.fcm.next_message().await;
    assert_eq!(woken["token"], FCM_TOKEN);
    providers.apns.no_notification_within(Duration::from_millis(500)).await;
    assert_eq!(providers.apns.accepted().len(), 1, "what was sent before the restart is not repeated");
    drop(gateway);
}

#[tokio::test]
async fn the_device_api_speaks_http_and_refuses_what_it_should() {
    let providers = Providers::start().await;
    let gateway = Gateway::start_with(&providers.config("30s", "sender")).await;
    gateway.ws_user("bob").await.close().await;
    let token = gateway.token("bob");
    let device = json!({"platform":"fcm","token":FCM_TOKEN}).to_string();

    let (status, body) = gateway.http_request("POST", "/api/v1/devices", None, &device).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    let (status, _) = gateway.http_request("POST", "/api/v1/devices", Some("not-a-jwt"), &device).await;
    assert_eq!(status, 401);
    for bad in ["{", "[]", r#"{"platform":"carrier-pigeon","token":"x"}"#, r#"{"platform":"fcm"}"#, r#"{"platform":"fcm","token":""}"#] {
        let (status, body) = gateway.http_request("POST", "/api/v1/devices", Some(&token), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("bad-request"), "{body}");
    }
    let spoofed = json!({"platform":"fcm","token":FCM_TOKEN,"from":"alice"}).to_string();
    let (status, body) = gateway.http_request("POST", "/api/v1/devices", Some(&token), &spoofed).await;
    assert_eq!(status, 403, "{body}");
    for size in [70_000, 300_000] {
        let huge = json!({"platform":"fcm","token":"t","app":"x".repeat(size)}).to_string();
        let (status, body) = gateway.http_request("POST", "/api/v1/devices", Some(&token), &huge).await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("too-large"), "an error frame at any size: {body}");
    }
    let (status, body) = gateway
        .http_request("POST", "/api/v1/devices", Some(&token), r#"{"platform":"apns","token":"../../v1/x"}"#)
        .await;
    assert_eq!(status, 400, "an APNs token is hexadecimal: {body}");

    let (status, body) = gateway.http_request("POST", "/api/v1/devices", Some(&token), &device).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = gateway.http_request("DELETE", "/api/v1/devices", Some(&token), &device).await;
    assert_eq!(status, 204);
    let (status, body) = gateway.http_request("DELETE", "/api/v1/devices", Some(&token), &device).await;
    assert_eq!(status, 404, "{body}");

    // Registered and then removed: an offline message wakes nobody.
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("a1", "bob", "hello")).await;
    alice.recv_type("ack").await;
    providers.fcm.no_message_within(Duration::from_secs(1)).await;
    // The listener still serves everyone else.
    assert_eq!(gateway.http_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn devices_offline_messages_and_the_outbox_live_in_postgresql_too() {
    let providers = Providers::start().await;
    let url = crate::postgres::database_url().await;
    let config = format!("[gateway]\ndatabase_url = \"{url}\"\n{}", providers.config("30s", "full"));
    let gateway = Gateway::start_with(&config).await;
    bob_registers_and_leaves(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    alice.send(message("a1", "bob", "stored in postgres")).await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(providers.fcm.next_message().await["notification"]["body"], "stored in postgres");
    providers.apns.next_notification().await;
    drop(alice);

    let gateway = gateway.restart().await;
    let mut bob = gateway.mqtt_user("bob").await;
    assert_eq!(bob.recv_type("message").await["id"], ack["msg"]);
    providers.fcm.no_message_within(Duration::from_millis(500)).await;
    assert_eq!(providers.fcm.accepted().len(), 1, "the restart repeats nothing");
}

/// Waits until the push counter with `labels` reaches `at_least`, summed over providers.
async fn wait_for_metric(gateway: &Gateway, labels: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + crate::common::WAIT;
    loop {
        let (_, body) = gateway.http_get("/metrics").await;
        let total: f64 = body
            .lines()
            .filter(|line| line.starts_with("switchboard_push_total{") && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum();
        if total >= at_least || Instant::now() > deadline {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
