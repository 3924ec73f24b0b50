//! Client JSON frames: parsing (client and auth frames), conversion to an envelope and back to the
//! frame and JSON a recipient gets, and, for a recipient on XMPP, the stanza it becomes.
//!
//! The input is the raw frame, as it arrives in an MQTT payload or a WebSocket text frame, so the
//! seed corpus is plain JSON files.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_frames::{ClientFrame, ErrorCode, FrameError, envelope_to_frame, frame_to_envelope, parse_auth_frame, parse_client_frame};
use switchboard_gateway::{Address, Body, Domain, Envelope, UserId};
use switchboard_xmpp::fuzzing::Addressing;
use tokio_xmpp::minidom::Element;

const MAX: usize = 65_536;
const DOMAIN: &str = "im.example.com";

fuzz_target!(|data: &[u8]| {
    check_size_limit(data);
    let json: Option<Value> = serde_json::from_slice(data).ok();

    match parse_auth_frame(data, MAX) {
        Ok(token) => {
            let object = json.as_ref().and_then(Value::as_object).expect("an accepted auth frame is a JSON object");
            assert_eq!(object.get("type").and_then(Value::as_str), Some("auth"));
            assert_eq!(object.get("token").and_then(Value::as_str), Some(token.as_str()));
        }
        Err(error) => check_error(&error, data, json.as_ref(), &[ErrorCode::BadRequest, ErrorCode::Forbidden]),
    }

    let frame = match parse_client_frame(data, MAX) {
        Ok(frame) => frame,
        Err(error) => return check_error(&error, data, json.as_ref(), &[ErrorCode::BadRequest]),
    };
    let object = json.as_ref().and_then(Value::as_object).expect("an accepted frame is a JSON object");
    assert_eq!(object.get("type").and_then(Value::as_str), Some(frame.type_name()));
    if let ClientFrame::Message(message) = &frame {
        assert!(!message.id.is_empty(), "a message is accepted only with an id");
    }

    let domain = Domain::new(DOMAIN);
    let alice = UserId::parse("alice").expect("valid user");
    let id = frame.id().map(str::to_owned);
    let envelope = match frame_to_envelope(frame, &alice, &domain) {
        Ok(envelope) => envelope,
        Err(error) => {
            assert!(matches!(error.code, ErrorCode::BadRequest | ErrorCode::Forbidden), "{error:?}");
            assert_eq!(error.id, id, "a conversion error carries the frame's id");
            return;
        }
    };
    assert_eq!(envelope.from, Address::user(alice.clone()), "the sender is the authenticated user");
    check_server_frame(&envelope, &domain);
    check_xmpp_stanza(&envelope);
});

/// A frame over the limit is refused before anything is read from it; one at the limit is judged
/// as if there were no limit.
fn check_size_limit(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    for result in [parse_client_frame(data, data.len() - 1).map(|_| ()), parse_auth_frame(data, data.len() - 1).map(|_| ())] {
        let error = result.expect_err("a frame over the limit is never accepted");
        assert_eq!((error.code, error.id), (ErrorCode::TooLarge, None));
    }
    if data.len() <= MAX {
        assert_eq!(parse_client_frame(data, data.len()), parse_client_frame(data, MAX));
        assert_eq!(parse_auth_frame(data, data.len()), parse_auth_frame(data, MAX));
    }
}

/// Errors use the contract's codes, say something, and carry the frame's `id` whenever the frame
/// is an object that has one (CONTRACT §8 "Acks"), and no other.
fn check_error(error: &FrameError, data: &[u8], json: Option<&Value>, codes: &[ErrorCode]) {
    let code = error.code;
    assert!(codes.contains(&code) || (code == ErrorCode::TooLarge && data.len() > MAX), "{error:?}");
    assert!(!error.text.is_empty());
    let readable_id = json.and_then(Value::as_object).and_then(|o| o.get("id")).and_then(|id| match id {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    });
    match (&error.id, &readable_id) {
        (Some(id), readable) => assert_eq!(Some(id), readable.as_ref(), "an error names only the frame's own id"),
        // An empty message id is no id to answer with.
        (None, Some(readable)) => assert!(readable.is_empty(), "{error:?} lost the id {readable:?}"),
        (None, None) => {}
    }
}

/// What a recipient on MQTT or WebSocket gets: valid JSON of the right type, with every address
/// readable back to the one it was made from.
fn check_server_frame(envelope: &Envelope, domain: &Domain) {
    let Some(frame) = envelope_to_frame(envelope, domain) else {
        assert!(matches!(envelope.body, Body::Device(_)), "only device registrations stay inside");
        return;
    };
    let text = frame.to_json();
    let json: Value = serde_json::from_str(&text).expect("the rendered frame is JSON");
    assert_eq!(json["type"].as_str(), Some(frame.type_name()), "{text}");
    assert_eq!(json["from"].as_str(), Some("alice@im.example.com"), "{text}");
    if let Some(to) = json.get("to").and_then(Value::as_str) {
        assert_eq!(Address::parse(to, domain).as_ref(), Ok(&envelope.to), "`to` reads back: {text}");
    }
    if let Body::Message(message) = &envelope.body {
        assert_eq!(json["body"].as_str(), Some(message.body.as_str()));
        assert_eq!(json["thread"].as_str(), message.thread.as_deref());
        assert_eq!(json["subject"].as_str(), message.subject.as_deref());
    }
}

/// An envelope for someone on XMPP becomes a stanza that is well-formed XML and carries the text
/// unchanged: a frame the gateway accepted must not be what breaks the component's stream.
fn check_xmpp_stanza(envelope: &Envelope) {
    if !matches!(envelope.to, Address::Remote(_)) {
        return;
    }
    let addressing = Addressing::new(DOMAIN.into(), MAX);
    let Some(stanza) = addressing.outbound(envelope) else {
        assert!(matches!(envelope.body, Body::Device(_) | Body::Failure(_)));
        return;
    };
    let xml = String::from(&stanza);
    let reparsed: Element = xml.parse().unwrap_or_else(|e| panic!("the stanza is not well-formed XML ({e}): {xml:?}"));
    assert_eq!(reparsed.attr("to"), stanza.attr("to"), "{xml:?}");
    if let Body::Message(message) = &envelope.body {
        let body = reparsed.get_child("body", "jabber:client").map(Element::text);
        assert_eq!(body.as_deref(), Some(message.body.as_str()), "the body survives XML: {xml:?}");
    }
}
