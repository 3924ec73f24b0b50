//! The XMPP adapter against a real Prosody: XMPP users chat with MQTT and WebSocket users both
//! ways, subscribe to their presence, exchange receipts, and lose nothing while the server
//! restarts.

use serde_json::json;
use tokio_xmpp::minidom::Element;

use crate::common::{Gateway, WAIT, message};
use crate::prosody::{COMPONENT, Prosody};

const CLIENT: &str = "jabber:client";

async fn healthy(gateway: &Gateway) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while gateway.http_get("/healthz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the component link never came up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn setup(users: &[&str]) -> (Prosody, Gateway) {
    let prosody = Prosody::start(users).await;
    let gateway = Gateway::start_with(&prosody.gateway_config()).await;
    healthy(&gateway).await;
    (prosody, gateway)
}

fn condition(error: &Element) -> Option<String> {
    error.get_child("error", CLIENT).and_then(|e| e.children().next()).map(|c| c.name().to_owned())
}

#[tokio::test]
async fn xmpp_and_mqtt_users_chat_both_ways() {
    let (prosody, gateway) = setup(&["carol"]).await;
    let mut bob = gateway.mqtt_user("bob").await;
    let mut carol = prosody.user("carol").await;

    carol.chat(&format!("bob@{COMPONENT}"), "héllo <bob> & \"friends\" 👋").await;
    let received = bob.recv_type("message").await;
    assert_eq!(received["body"], "héllo <bob> & \"friends\" 👋");
    assert!(received["from"].as_str().is_some_and(|f| f.starts_with("carol@localhost/")), "{received}");

    bob.send(message("b1", "carol@localhost", "hi carol <&>")).await;
    let ack = bob.recv_type("ack").await;
    let stanza = carol.recv_message_with_body().await;
    assert_eq!(stanza.get_child("body", CLIENT).map(Element::text).as_deref(), Some("hi carol <&>"));
    assert_eq!(stanza.attr("from"), Some(format!("bob@{COMPONENT}/switchboard").as_str()));
    assert_eq!(stanza.attr("type"), Some("chat"));
    assert_eq!(stanza.attr("id"), ack["msg"].as_str(), "the stanza id is the gateway id");
    assert!(stanza.has_child("request", "urn:xmpp:receipts"));
    assert!(stanza.has_child("markable", "urn:xmpp:chat-markers:0"));

    // carol's client confirms; bob hears of it with the id he was acked with.
    let id = ack["msg"].as_str().expect("msg").to_owned();
    carol
        .send_xml(&format!("<message xmlns='jabber:client' to='bob@{COMPONENT}' type='chat'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>"))
        .await;
    let receipt = bob.recv_type("receipt").await;
    assert_eq!((receipt["of"].as_str(), receipt["status"].as_str()), (Some(id.as_str()), Some("received")));
}

#[tokio::test]
async fn a_websocket_user_and_an_xmpp_user_exchange_chat_states_and_presence() {
    let (prosody, gateway) = setup(&["carol"]).await;
    let mut alice = gateway.ws_user("alice").await;
    let mut carol = prosody.user("carol").await;

    // carol asks to see alice's presence; alice accepts and carol sees her available.
    carol.send_xml(&format!("<presence xmlns='jabber:client' to='alice@{COMPONENT}' type='subscribe'/>")).await;
    let request = alice.recv_type("subscribe").await;
    assert_eq!(request["from"], "carol@localhost");
    alice.send(json!({"type":"subscribed","to":"carol@localhost"})).await;
    let subscribed = carol.recv_where(|e| e.name() == "presence" && e.attr("type") == Some("subscribed")).await;
    assert_eq!(subscribed.attr("from"), Some(format!("alice@{COMPONENT}").as_str()));
    let presence = carol.recv_where(|e| e.name() == "presence" && e.attr("type").is_none() && e.attr("from").is_some_and(|f| f.starts_with("alice@"))).await;
    assert!(presence.attr("from").is_some_and(|f| f.ends_with("/switchboard")));

    alice.send(json!({"type":"presence","show":"dnd","status":"busy"})).await;
    let presence = carol.recv_where(|e| e.name() == "presence" && e.get_child("show", CLIENT).is_some()).await;
    assert_eq!(presence.get_child("show", CLIENT).map(Element::text).as_deref(), Some("dnd"));
    assert_eq!(presence.get_child("status", CLIENT).map(Element::text).as_deref(), Some("busy"));

    alice.send(json!({"type":"chatstate","to":"carol@localhost","state":"composing"})).await;
    carol.recv_where(|e| e.has_child("composing", "http://jabber.org/protocol/chatstates")).await;
    carol
        .send_xml(&format!("<message xmlns='jabber:client' to='alice@{COMPONENT}' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>"))
        .await;
    let state = alice.recv_type("chatstate").await;
    assert_eq!((state["state"].as_str(), state["from"].as_str().map(|f| f.starts_with("carol@localhost"))), (Some("paused"), Some(true)));

    // carol logs in again: her server probes alice, and the gateway answers from what it knows.
    drop(carol);
    let mut carol = prosody.user("carol").await;
    let presence = carol.recv_where(|e| e.name() == "presence" && e.attr("from").is_some_and(|f| f.starts_with("alice@"))).await;
    assert_eq!(presence.get_child("show", CLIENT).map(Element::text).as_deref(), Some("dnd"), "{}", String::from(&presence));
}

#[tokio::test]
async fn stanzas_to_unknown_or_invalid_users_get_the_rfc_errors() {
    let (prosody, gateway) = setup(&["carol"]).await;
    let mut carol = prosody.user("carol").await;
    carol.send_xml(&format!("<message xmlns='jabber:client' to='nobody@{COMPONENT}' type='chat' id='u1'><body>hi?</body></message>")).await;
    let error = carol.recv_where(|e| e.attr("type") == Some("error")).await;
    assert_eq!((error.attr("id"), condition(&error).as_deref()), (Some("u1"), Some("service-unavailable")));

    carol.send_xml(&format!("<message xmlns='jabber:client' to='no+such@{COMPONENT}' type='chat' id='u2'><body>hi?</body></message>")).await;
    let error = carol.recv_where(|e| e.attr("type") == Some("error")).await;
    assert_eq!((error.attr("id"), condition(&error).as_deref()), (Some("u2"), Some("item-not-found")));

    // The link is still up and serving.
    carol.send_xml(&format!("<iq xmlns='jabber:client' to='{COMPONENT}' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    let result = carol.recv_where(|e| e.name() == "iq" && e.attr("id") == Some("d1")).await;
    let identity = result
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .and_then(|q| q.get_child("identity", "http://jabber.org/protocol/disco#info"))
        .expect("identity");
    assert_eq!((identity.attr("category"), identity.attr("type"), identity.attr("name")), (Some("gateway"), Some("mqtt"), Some("Switchboard")));
    assert_eq!(gateway.http_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn messages_for_xmpp_wait_while_the_server_restarts_and_arrive_in_order() {
    let (mut prosody, gateway) = setup(&["carol"]).await;
    let mut bob = gateway.ws_user("bob").await;
    {
        let mut carol = prosody.user("carol").await;
        bob.send(message("warm", "carol@localhost", "before")).await;
        assert_eq!(bob.recv_type("ack").await["id"], "warm");
        carol.recv_message_with_body().await;
    }
    prosody.stop().await;
    // /healthz names the link while it is down...
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = gateway.http_get("/healthz").await;
        if status == 503 {
            assert_eq!(body, r#"{"failing":["xmpp"],"status":"degraded"}"#);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "healthz never noticed the link was down");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ...and the gateway acks from its store.
    for i in 0..20 {
        bob.send(message(&format!("b{i}"), "carol@localhost", &format!("m{i}"))).await;
        assert_eq!(bob.recv_type("ack").await["id"], format!("b{i}"));
    }
    prosody.restart().await;
    healthy(&gateway).await;
    // Prosody keeps what arrives before carol is back (mod_offline) and hands it over at login.
    let mut carol = prosody.user("carol").await;
    for i in 0..20 {
        let stanza = carol.recv_message_with_body().await;
        assert_eq!(stanza.get_child("body", CLIENT).map(Element::text), Some(format!("m{i}")));
    }
}

#[tokio::test]
async fn receipts_name_the_right_message_both_ways_and_cannot_be_forged() {
    let (prosody, gateway) = setup(&["carol", "dave"]).await;
    let mut bob = gateway.mqtt_user("bob").await;
    let mut carol = prosody.user("carol").await;
    let mut dave = prosody.user("dave").await;

    // carol's message keeps her stanza id for bob's receipt.
    carol
        .send_xml(&format!("<message xmlns='jabber:client' to='bob@{COMPONENT}' type='chat' id='carol-42'><body>read me</body><request xmlns='urn:xmpp:receipts'/></message>"))
        .await;
    let received = bob.recv_type("message").await;
    bob.send(json!({"type":"receipt","to":received["from"],"of":received["id"],"status":"received"})).await;
    let receipt = carol.recv_where(|e| e.has_child("received", "urn:xmpp:receipts")).await;
    assert_eq!(receipt.get_child("received", "urn:xmpp:receipts").and_then(|r| r.attr("id")), Some("carol-42"));

    // bob writes to carol; dave claims to have read it, which he cannot have.
    bob.send(message("b1", "carol@localhost", "for carol")).await;
    let ack = bob.recv_type("ack").await;
    let id = ack["msg"].as_str().expect("msg").to_owned();
    carol.recv_message_with_body().await;
    dave.send_xml(&format!("<message xmlns='jabber:client' to='bob@{COMPONENT}'><displayed xmlns='urn:xmpp:chat-markers:0' id='{id}'/></message>")).await;
    carol.send_xml(&format!("<message xmlns='jabber:client' to='bob@{COMPONENT}'><displayed xmlns='urn:xmpp:chat-markers:0' id='{id}'/></message>")).await;
    let receipt = bob.recv_type("receipt").await;
    assert!(receipt["from"].as_str().is_some_and(|f| f.starts_with("carol@localhost")), "only carol's marker counts: {receipt}");
    assert_eq!((receipt["of"].as_str(), receipt["status"].as_str()), (Some(id.as_str()), Some("displayed")));
}

/// A receipt can be lost on the XMPP side (a server drops a bodiless message to a user who has
/// just gone away), and the sender then resends under the same stanza id. A message that was
/// delivered is delivered again under its gateway id, so the recipient's app recognises it and
/// answers; one still waiting in the store is not stored twice.
#[tokio::test]
async fn an_xmpp_resend_of_a_delivered_message_is_delivered_again_under_its_id() {
    let (prosody, gateway) = setup(&["carol"]).await;
    let mut carol = prosody.user("carol").await;
    let stanza = |id: &str, body: &str| {
        format!("<message xmlns='jabber:client' to='bob@{COMPONENT}' type='chat' id='{id}'><body>{body}</body><request xmlns='urn:xmpp:receipts'/></message>")
    };
    let mut bob = gateway.ws_user("bob").await;
    carol.send_xml(&stanza("carol-7", "did you get this?")).await;
    let first = bob.recv_type("message").await;
    // No receipt reached carol: she sends it again.
    carol.send_xml(&stanza("carol-7", "did you get this?")).await;
    let again = bob.recv_type("message").await;
    assert_eq!((&again["id"], &again["body"]), (&first["id"], &first["body"]), "the same message, under the same id");
    bob.send(json!({"type":"receipt","to":again["from"],"of":again["id"],"status":"received"})).await;
    let receipt = carol.recv_where(|e| e.has_child("received", "urn:xmpp:receipts")).await;
    assert_eq!(receipt.get_child("received", "urn:xmpp:receipts").and_then(|r| r.attr("id")), Some("carol-7"));
    bob.close().await;

    // bob is away: the message waits in the store, and her resend does not add a copy.
    carol.send_xml(&stanza("carol-8", "still there?")).await;
    carol.send_xml(&stanza("carol-8", "still there?")).await;
    // Handled in order after both: its error says they have been.
    carol.send_xml(&format!("<message xmlns='jabber:client' to='ghost@{COMPONENT}' type='chat' id='g1'><body>?</body></message>")).await;
    carol.recv_where(|e| e.attr("type") == Some("error") && e.attr("id") == Some("g1")).await;
    let mut bob = gateway.ws_user("bob").await;
    assert_eq!(bob.recv_type("message").await["body"], "still there?");
    carol.send_xml(&stanza("carol-9", "last")).await;
    assert_eq!(bob.recv_type("message").await["body"], "last", "one copy of the stored message, then the next");
}

#[tokio::test]
async fn a_message_the_xmpp_side_refuses_comes_back_as_an_error_naming_it() {
    let (_prosody, gateway) = setup(&["carol"]).await;
    let mut bob = gateway.ws_user("bob").await;
    bob.send(message("b1", "ghost@localhost", "anyone there?")).await;
    // The bounce may overtake the ack: take both, in whatever order.
    let (mut ack, mut error) = (None, None);
    while ack.is_none() || error.is_none() {
        let frame = bob.recv().await;
        match frame["type"].as_str() {
            Some("ack") => ack = Some(frame),
            Some("error") => error = Some(frame),
            _ => {}
        }
    }
    let (ack, error) = (ack.expect("ack"), error.expect("error"));
    assert_eq!(error["msg"], ack["msg"], "{error}");
    assert_eq!(error["code"], "not-found");
    assert!(error.get("id").is_none());
}

#[tokio::test]
async fn the_id_map_survives_a_gateway_restart() {
    let (prosody, gateway) = setup(&["carol"]).await;
    let mut carol = prosody.user("carol").await;
    let id = {
        let mut bob = gateway.ws_user("bob").await;
        bob.send(message("b1", "carol@localhost", "before the restart")).await;
        let ack = bob.recv_type("ack").await;
        carol.recv_message_with_body().await;
        ack["msg"].as_str().expect("msg").to_owned()
    };
    let gateway = gateway.restart().await;
    healthy(&gateway).await;
    let mut bob = gateway.ws_user("bob").await;
    carol.send_xml(&format!("<message xmlns='jabber:client' to='bob@{COMPONENT}'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>")).await;
    assert_eq!(bob.recv_type("receipt").await["of"], id.as_str());
}

#[tokio::test]
async fn hostile_stanzas_are_refused_and_the_link_stays_up() {
    let (prosody, gateway) = setup(&["carol"]).await;
    let mut bob = gateway.ws_user("bob").await;
    let mut carol = prosody.user("carol").await;
    let huge = "x".repeat(100_000);
    carol.send_xml(&format!("<message xmlns='jabber:client' to='bob@{COMPONENT}' type='chat' id='h1'><body>{huge}</body></message>")).await;
    let error = carol.recv_where(|e| e.attr("type") == Some("error")).await;
    assert_eq!((error.attr("id"), condition(&error).as_deref()), (Some("h1"), Some("policy-violation")));
    // Unknown payloads are ignored; the message around them gets through.
    carol
        .send_xml(&format!("<message xmlns='jabber:client' to='bob@{COMPONENT}' type='chat'><body>still fine</body><weird xmlns='urn:example:unknown'><deep><deeper/></deep></weird></message>"))
        .await;
    assert_eq!(bob.recv_type("message").await["body"], "still fine");
    assert_eq!(gateway.http_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn with_auto_accept_a_request_is_answered_on_the_users_behalf() {
    let prosody = Prosody::start(&["carol"]).await;
    let gateway = Gateway::start_with(&prosody.gateway_config().replacen("[xmpp]", "auto_accept_subscriptions = true\n[xmpp]", 1)).await;
    healthy(&gateway).await;
    let mut alice = gateway.ws_user("alice").await;
    let mut carol = prosody.user("carol").await;
    carol.send_xml(&format!("<presence xmlns='jabber:client' to='alice@{COMPONENT}' type='subscribe'/>")).await;
    carol.recv_where(|e| e.name() == "presence" && e.attr("type") == Some("subscribed")).await;
    let presence = carol.recv_where(|e| e.name() == "presence" && e.attr("type").is_none() && e.attr("from").is_some_and(|f| f.starts_with("alice@"))).await;
    assert!(presence.get_child("show", CLIENT).is_none(), "available");
    // alice still hears of the request.
    assert_eq!(alice.recv_type("subscribe").await["from"], "carol@localhost");
}

#[tokio::test]
async fn a_server_restart_mid_stream_loses_nothing_that_was_acked() {
    let mut prosody = Prosody::start(&["carol"]).await;
    let gateway = Gateway::start_with(&format!("{}[limits]\nmessages_per_second = 1000\n", prosody.gateway_config())).await;
    healthy(&gateway).await;
    let mut bob = gateway.ws_user("bob").await;
    let total = 60;
    for i in 0..total {
        bob.send(message(&format!("b{i}"), "carol@localhost", &format!("m{i}"))).await;
    }
    // Restart the server while the messages are on their way.
    let mut acked = std::collections::HashSet::new();
    while acked.len() < 10 {
        acked.insert(bob.recv_type("ack").await["msg"].as_str().expect("msg").to_owned());
    }
    prosody.restart().await;
    while acked.len() < total {
        acked.insert(bob.recv_type("ack").await["msg"].as_str().expect("msg").to_owned());
    }
    healthy(&gateway).await;
    // carol was offline all along: Prosody kept what reached it; the gateway resent what it could
    // not prove had reached it (possibly twice: receivers dedupe by id).
    let mut carol = prosody.user("carol").await;
    let mut seen = std::collections::HashSet::new();
    let mut last = -1_i64;
    while !acked.is_subset(&seen) {
        let stanza = carol.recv_message_with_body().await;
        let id = stanza.attr("id").expect("id").to_owned();
        if seen.insert(id) {
            let n: i64 = stanza.get_child("body", CLIENT).map(Element::text).and_then(|b| b.trim_start_matches('m').parse().ok()).expect("body");
            assert!(n > last, "in order: m{n} after m{last}");
            last = n;
        }
    }
}

/// A server still loading the component's host answers its handshake with `host-unknown` (Prosody
/// does for a moment after it starts listening). That passes: the link is retried soon, not after
/// the longest pause, so the gateway is joined within seconds.
#[tokio::test]
async fn a_handshake_refused_while_the_server_starts_is_retried_soon() {
    let mut server = crate::fake_xmpp::FakeServer::start("gw.localhost", "fake-component-secret").await;
    server.refuse_next_handshakes(2);
    let _gateway = Gateway::start_with(&server.gateway_config()).await;
    let joined = tokio::time::timeout(std::time::Duration::from_secs(10), server.wait_handshakes(1)).await;
    assert!(joined.is_ok(), "the link was not retried within 10 s of two refusals");
}
