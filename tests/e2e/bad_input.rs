//! Every kind of bad input gets its contract answer, is counted in /metrics, and the session and
//! the gateway go on.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::{Gateway, MqttClient, WsClient, message};

const WS_ERRORS: &str = "switchboard_errors_total{adapter=\"websocket\",code=";
const MQTT_ERRORS: &str = "switchboard_errors_total{adapter=\"mqtt\",code=";

fn errors(prefix: &str, code: &str) -> String {
    format!("{prefix}\"{code}\"}}")
}

/// Sends a frame and returns the error it is answered with.
async fn ws_error(client: &mut WsClient, text: String) -> serde_json::Value {
    client.send_text(text).await;
    client.recv_type("error").await
}

async fn ws_still_works(client: &mut WsClient, id: &str) {
    client.send(message(id, "bob", "still here")).await;
    assert_eq!(client.recv_type("ack").await["id"], id);
}

#[tokio::test]
async fn websocket_bad_frames_get_their_codes_and_the_session_goes_on() {
    let gateway = Gateway::start().await;
    let _bob = gateway.ws_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    let bad_requests = gateway.metric(&errors(WS_ERRORS, "bad-request")).await;

    let cases = [
        ("{not json".to_owned(), None, "bad-request"),
        (json!({"type":"teleport","id":"u1"}).to_string(), Some("u1"), "bad-request"),
        (json!({"type":"message","id":"m1","to":"bob"}).to_string(), Some("m1"), "bad-request"),
        (json!({"type":"message","id":"a1","to":"no such address!","body":"x"}).to_string(), Some("a1"), "bad-request"),
        (json!({"type":"message","id":"f1","from":"mallory","to":"bob","body":"x"}).to_string(), Some("f1"), "forbidden"),
        (json!({"type":"message","id":"big","to":"bob","body":"x".repeat(70_000)}).to_string(), None, "too-large"),
        (json!({"type":"device.unregister","id":"d1","platform":"fcm","token":"never-registered"}).to_string(), Some("d1"), "not-found"),
    ];
    for (i, (frame, id, code)) in cases.into_iter().enumerate() {
        let error = ws_error(&mut alice, frame).await;
        assert_eq!(error["code"], code, "case {i}: {error}");
        assert_eq!(error["id"].as_str(), id, "case {i}: {error}");
        assert!(error["text"].as_str().is_some_and(|t| !t.is_empty()), "case {i} explains itself");
        ws_still_works(&mut alice, &format!("ok{i}")).await;
    }
    alice.send_raw(WsMessage::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(alice.recv_type("error").await["code"], "bad-request");
    ws_still_works(&mut alice, "after-binary").await;

    let counted = gateway.metric(&errors(WS_ERRORS, "bad-request")).await - bad_requests;
    assert!(counted >= 4.0, "bad requests are counted: {counted}");
    assert!(gateway.metric(&errors(WS_ERRORS, "too-large")).await >= 1.0);
    assert!(gateway.metric(&errors(WS_ERRORS, "forbidden")).await >= 1.0);
}

#[tokio::test]
async fn websocket_refuses_bad_tokens() {
    let gateway = Gateway::start().await;
    let expired = {
        let alice = switchboard_gateway::UserId::parse("alice").expect("valid");
        gateway.auth.mint(&alice, std::time::Duration::from_secs(0)).expect("mint")
    };
    // exp = now is still inside the 30 s leeway; forge a token with another key instead.
    let other = switchboard_gateway::auth::Authenticator::from_secret(b"some-other-secret");
    let foreign = other
        .mint(&switchboard_gateway::UserId::parse("alice").expect("valid"), std::time::Duration::from_secs(60))
        .expect("mint");
    for bad in [foreign.as_str(), "not.a.jwt", ""] {
        let url = format!("ws://{}/ws?token={bad}", gateway.http);
        let refused = tokio_tungstenite::connect_async(url).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("token {bad:?} was not refused with 401: {:?}", other.map(|_| ())),
        }
    }
    let _ = expired;

    // First-frame authentication: a bad token is answered `forbidden` and the socket closed.
    let mut client = WsClient::connect_raw(gateway.http).await;
    client.send(json!({"type":"auth","token": foreign})).await;
    let error = client.recv().await;
    assert_eq!(error["code"], "forbidden");
    assert!(client.try_recv().await.is_none(), "closed after a failed auth");

    // A good first-frame auth gets `ready` with her address.
    let mut client = WsClient::connect_raw(gateway.http).await;
    client.send(json!({"type":"auth","token": gateway.token("alice")})).await;
    let ready = client.recv().await;
    assert_eq!((ready["type"].as_str(), ready["jid"].as_str()), (Some("ready"), Some("alice@localhost")));
}

#[tokio::test]
async fn rate_limited_frames_are_refused_with_their_id() {
    let gateway = Gateway::start_with("[limits]\nmessages_per_second = 2\n").await;
    let _bob = gateway.ws_user("bob").await;
    let mut alice = gateway.ws_user("alice").await;
    for i in 0..12 {
        alice.send(message(&format!("r{i}"), "bob", "flood")).await;
    }
    let mut acked = 0;
    let mut limited = Vec::new();
    for _ in 0..12 {
        let frame = alice.recv().await;
        match frame["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate-limited");
                limited.push(frame["id"].as_str().map(str::to_owned));
            }
            _ => {}
        }
    }
    assert!((4..12).contains(&acked), "a burst of twice the rate passes, the rest does not: {acked}");
    assert!(limited.iter().all(Option::is_some), "every refusal names its frame");
}

#[tokio::test]
async fn mqtt_bad_frames_and_foreign_topics_are_answered_on_her_in_topic() {
    let gateway = Gateway::start().await;
    let _bob = gateway.ws_user("bob").await;
    let mut alice = gateway.mqtt_user("alice").await;
    let forbidden = gateway.metric(&errors(MQTT_ERRORS, "forbidden")).await;

    alice.publish("im/alice/out", "{oops").await;
    assert_eq!(alice.recv_type("error").await["code"], "bad-request");

    alice.publish("im/alice/out", json!({"type":"message","id":"big","to":"bob","body":"x".repeat(70_000)}).to_string()).await;
    let error = alice.recv_type("error").await;
    assert_eq!((error["code"].as_str(), error.get("id")), (Some("too-large"), None));

    alice.publish("im/bob/out", message("spoof", "bob", "as bob").to_string()).await;
    assert_eq!(alice.recv_type("error").await["code"], "forbidden");
    alice.publish("im/bob/in", message("inject", "bob", "straight in").to_string()).await;
    assert_eq!(alice.recv_type("error").await["code"], "forbidden");

    assert_eq!(alice.subscribe("im/bob/in").await, vec![false], "SUBACK failure for a foreign topic");
    assert_eq!(alice.subscribe("im/#").await, vec![false], "no wildcard around the rule");

    alice.send(message("fine", "bob", "after all that")).await;
    assert_eq!(alice.recv_type("ack").await["id"], "fine");
    let counted = gateway.metric(&errors(MQTT_ERRORS, "forbidden")).await - forbidden;
    assert!(counted >= 4.0, "foreign topics are counted: {counted}");
}

#[tokio::test]
async fn mqtt_refuses_bad_credentials_with_a_connack() {
    let gateway = Gateway::start().await;
    let bob_token = gateway.token("bob");
    let refusal = |user: &'static str, password: String, id: &'static str| async move {
        MqttClient::connect(gateway.mqtt, user, &password, true, id).await.err().unwrap_or_default()
    };
    let refused = refusal("alice", "wrong".into(), "a1").await;
    assert!(refused.contains("BadUserNamePassword"), "{refused}");
    let refused = refusal("alice", bob_token.clone(), "a2").await;
    assert!(refused.contains("NotAuthorized"), "a token for someone else: {refused}");
    let refused = refusal("Not Valid", bob_token, "a3").await;
    assert!(refused.contains("BadUserNamePassword"), "{refused}");
    // The endpoint is still serving.
    gateway.mqtt_user("alice").await;
}

#[tokio::test]
async fn a_websocket_session_ends_when_its_token_expires() {
    let secret = "expiry-test-secret";
    let gateway = Gateway::start_with(&format!("[auth]\njwt_secret = \"{secret}\"\n")).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    // Expired 27 s ago: still accepted within the 30 s leeway, so the session has 3 s left.
    let claims = json!({"sub": "alice", "exp": now - 27});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("token");
    let mut short = WsClient::connect(gateway.http, &token).await;
    let mut long = gateway.ws_user("alice").await;

    let told = short.recv_type("error").await;
    assert_eq!(told["code"], "forbidden");
    assert!(told["text"].as_str().is_some_and(|t| t.contains("expired")), "{told}");
    assert!(short.try_recv().await.is_none(), "then the socket is closed");

    // Her session with a valid token goes on.
    let mut bob = gateway.ws_user("bob").await;
    bob.send(message("b1", "alice", "still there?")).await;
    assert_eq!(long.recv_type("message").await["body"], "still there?");
}

#[tokio::test]
async fn an_mqtt_connection_ends_when_its_token_expires() {
    let secret = "expiry-test-secret";
    let gateway = Gateway::start_with(&format!("[auth]\njwt_secret = \"{secret}\"\n")).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let claims = json!({"sub": "alice", "exp": now - 27});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("token");
    let mut alice = MqttClient::connect(gateway.mqtt, "alice", &token, true, "alice-phone").await.expect("accepted within the leeway");
    alice.subscribe_in().await;

    assert!(alice.try_recv().await.is_none(), "the connection is closed when the token expires");
    // A fresh token gets her back in.
    let mut again = gateway.mqtt_user("alice").await;
    let mut bob = gateway.ws_user("bob").await;
    bob.send(message("b1", "alice", "welcome back")).await;
    assert_eq!(again.recv_type("message").await["body"], "welcome back");
}

#[tokio::test]
async fn one_session_too_many_is_refused_on_either_protocol() {
    let gateway = Gateway::start_with("[limits]\nsessions_per_user = 2\n").await;
    let first = gateway.ws_user("alice").await;
    let _second = gateway.mqtt_user("alice").await;

    let mut third = WsClient::connect_raw(gateway.http).await;
    third.send(json!({"type": "auth", "token": gateway.token("alice")})).await;
    let refused = third.recv_type("error").await;
    assert_eq!(refused["code"], "unavailable");
    assert!(refused["text"].as_str().is_some_and(|t| t.contains("sessions_per_user")), "{refused}");
    assert!(third.try_recv().await.is_none(), "then closed");
    let refused = MqttClient::connect(gateway.mqtt, "alice", &gateway.token("alice"), true, "alice-3").await;
    let refused = refused.err().expect("refused");
    assert!(refused.contains("ServiceUnavailable"), "{refused}");

    // Other users are not affected, and a freed slot can be taken again.
    let mut bob = gateway.ws_user("bob").await;
    first.close().await;
    let mut again = {
        let deadline = std::time::Instant::now() + crate::common::WAIT;
        loop {
            let mut attempt = WsClient::connect_raw(gateway.http).await;
            attempt.send(json!({"type": "auth", "token": gateway.token("alice")})).await;
            if attempt.recv().await["type"] == "ready" {
                break attempt;
            }
            assert!(std::time::Instant::now() < deadline, "the slot was never freed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    bob.send(message("b1", "alice", "hi")).await;
    assert_eq!(again.recv_type("message").await["body"], "hi");
}

#[tokio::test]
async fn one_connection_too_many_from_an_address_is_refused() {
    let gateway = Gateway::start_with("[limits]\nconnections_per_ip = 2\n").await;
    let alice = gateway.ws_user("alice").await;
    let _bob = gateway.mqtt_user("bob").await;

    let url = format!("ws://{}/ws?token={}", gateway.http, gateway.token("carol"));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("connections_per_ip"), "{body}");
        }
        other => panic!("a third connection from 127.0.0.1 was not refused: {:?}", other.map(|_| ())),
    }
    let refused = MqttClient::connect(gateway.mqtt, "carol", &gateway.token("carol"), true, "carol").await;
    assert!(refused.is_err(), "the MQTT endpoint refuses it too");
    // The HTTP endpoints are not connections that hold a session.
    assert_eq!(gateway.http_get("/healthz").await.0, 200);

    alice.close().await;
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    while tokio_tungstenite::connect_async(url.as_str()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every file of the bad-frame corpus (tests/corpus/frames), sent over a WebSocket and over MQTT:
/// each is answered with a contract error code, the session goes on, and the gateway too.
#[tokio::test]
async fn the_bad_frame_corpus_gets_contract_errors_and_breaks_nothing() {
    const CODES: [&str; 7] = ["bad-request", "forbidden", "not-found", "too-large", "rate-limited", "unavailable", "internal"];
    let gateway = Gateway::start_with("[limits]\nmessages_per_second = 1000\n").await;
    gateway.ws_user("bob").await.close().await;
    let mut ws = gateway.ws_user("alice").await;
    let mut mqtt = gateway.mqtt_user("carol").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/frames");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is there");
    for file in &files {
        let bytes = std::fs::read(file).expect("readable");
        let name = file.display();
        match String::from_utf8(bytes.clone()) {
            Ok(text) => ws.send_text(text).await,
            Err(_) => ws.send_raw(WsMessage::Binary(bytes.clone().into())).await,
        }
        let answer = ws.recv().await;
        assert_eq!(answer["type"], "error", "{name} over WebSocket: {answer}");
        assert!(CODES.contains(&answer["code"].as_str().unwrap_or_default()), "{name}: {answer}");

        mqtt.publish("im/carol/out", bytes).await;
        let answer = mqtt.recv().await;
        assert_eq!(answer["type"], "error", "{name} over MQTT: {answer}");
        assert!(CODES.contains(&answer["code"].as_str().unwrap_or_default()), "{name}: {answer}");
    }
    ws.send(message("w1", "bob", "still fine")).await;
    assert_eq!(ws.recv_type("ack").await["id"], "w1");
    mqtt.send(message("m1", "bob", "still fine")).await;
    assert_eq!(mqtt.recv_type("ack").await["id"], "m1");
    assert_eq!(gateway.http_get("/healthz").await.0, 200);
}
