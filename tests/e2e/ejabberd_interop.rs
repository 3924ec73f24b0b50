//! The XMPP adapter against a real ejabberd, the second server it must interoperate with: the
//! same conversations as against Prosody (tests/e2e/xmpp.rs) — chat both ways with receipts,
//! subscriptions, presence and chat states, the RFC errors and disco#info of the component.

use serde_json::json;
use tokio_xmpp::minidom::Element;

use crate::common::{Gateway, WAIT, message};
use crate::ejabberd::Ejabberd;
use crate::prosody::COMPONENT;

const CLIENT: &str = "jabber:client";

async fn healthy(gateway: &Gateway) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while gateway.http_get("/healthz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the component link never came up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn setup(users: &[&str]) -> (Ejabberd, Gateway) {
    let ejabberd = Ejabberd::start(users).await;
    let gateway = Gateway::start_with(&ejabberd.gateway_config()).await;
    healthy(&gateway).await;
    (ejabberd, gateway)
}

fn condition(error: &Element) -> Option<String> {
    error.get_child("error", CLIENT).and_then(|e| e.children().next()).map(|c| c.name().to_owned())
}

#[tokio::test]
async fn ejabberd_and_mqtt_users_chat_both_ways() {
    let (mut ejabberd, gateway) = setup(&["carol"]).await;
    let mut bob = gateway.mqtt_user("bob").await;
    let mut carol = ejabberd.user("carol").await;

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
    ejabberd.stop().await;
}

#[tokio::test]
async fn a_websocket_user_and_an_ejabberd_user_exchange_chat_states_and_presence() {
    let (mut ejabberd, gateway) = setup(&["carol"]).await;
    let mut alice = gateway.ws_user("alice").await;
    let mut carol = ejabberd.user("carol").await;

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
    // (ejabberd sends the probe from carol's full JID, Prosody from her bare JID; the answer goes
    // to her bare JID either way, which reaches her available resource.)
    drop(carol);
    let mut carol = ejabberd.user("carol").await;
    let presence = carol.recv_where(|e| e.name() == "presence" && e.attr("from").is_some_and(|f| f.starts_with("alice@"))).await;
    assert_eq!(presence.get_child("show", CLIENT).map(Element::text).as_deref(), Some("dnd"), "{}", String::from(&presence));
    ejabberd.stop().await;
}

#[tokio::test]
async fn stanzas_to_unknown_or_invalid_users_get_the_rfc_errors_from_ejabberd() {
    let (mut ejabberd, gateway) = setup(&["carol"]).await;
    let mut carol = ejabberd.user("carol").await;
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
    ejabberd.stop().await;
}

#[tokio::test]
async fn messages_for_ejabberd_wait_while_it_restarts_and_arrive_in_order() {
    let (mut ejabberd, gateway) = setup(&["carol"]).await;
    let mut bob = gateway.ws_user("bob").await;
    {
        let mut carol = ejabberd.user("carol").await;
        // Unlike Prosody, ejabberd runs each stream in its own process: a message from the
        // gateway can overtake carol's initial presence, be stored offline, and — when the store
        // races her presence — stay there until her next login (seen here under load: the
        // warm-up never arrived and `get_offline_count` said 1). carol therefore speaks first:
        // her stream is handled in order, so once bob has her message she is available.
        carol.chat(&format!("bob@{COMPONENT}"), "here").await;
        assert_eq!(bob.recv_type("message").await["body"], "here");
        bob.send(message("warm", "carol@localhost", "before")).await;
        assert_eq!(bob.recv_type("ack").await["id"], "warm");
        carol.recv_message_with_body().await;
    }
    ejabberd.stop().await;
    // While the server is down the gateway acks from its store.
    for i in 0..20 {
        bob.send(message(&format!("b{i}"), "carol@localhost", &format!("m{i}"))).await;
        assert_eq!(bob.recv_type("ack").await["id"], format!("b{i}"));
    }
    ejabberd.restart().await;
    healthy(&gateway).await;
    // ejabberd keeps what arrives before carol is back (mod_offline) and hands it over once she
    // is available. For the same reason as above, carol logs in only once all 20 are stored.
    let deadline = tokio::time::Instant::now() + WAIT;
    while ejabberd.offline_count("carol").await != 20 {
        assert!(tokio::time::Instant::now() < deadline, "ejabberd never stored the 20 messages");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut carol = ejabberd.user("carol").await;
    for i in 0..20 {
        let stanza = carol.recv_message_with_body().await;
        assert_eq!(stanza.get_child("body", CLIENT).map(Element::text), Some(format!("m{i}")));
    }
    ejabberd.stop().await;
}

