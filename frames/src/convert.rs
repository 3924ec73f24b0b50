//! Frames ⇄ envelopes. Pure: no I/O, tested from literal JSON.

use switchboard_gateway::{
    Address, Body, DeviceAction, FailureReason, DeviceRegistration, Domain, Envelope, MessageBody, MessageId,
    Outcome, Platform, PresenceBody, ReceiptBody, Rejection, SubscriptionAction, UserId,
};

use crate::code::ErrorCode;
use crate::inbound::{ClientFrame, DeviceFrame, FrameError};
use crate::outbound::ServerFrame;

/// Turns a frame from authenticated `user` into an envelope, checking every address in it.
pub fn frame_to_envelope(mut frame: ClientFrame, user: &UserId, domain: &Domain) -> Result<Envelope, FrameError> {
    let id = frame.take_id();
    envelope_from(frame, &id, user, domain)
}

/// [`frame_to_envelope`] for a frame whose `id` its caller has taken out of it and keeps: errors
/// carry a copy, and only they.
pub(crate) fn envelope_from(
    frame: ClientFrame,
    id: &Option<String>,
    user: &UserId,
    domain: &Domain,
) -> Result<Envelope, FrameError> {
    let me = Address::user(user.clone());
    if let Some(claimed) = frame.claimed_from() {
        let claimed_self = Address::parse(claimed, domain).is_ok_and(|a| a == me);
        if !claimed_self {
            return Err(FrameError::new(id.clone(), ErrorCode::Forbidden, "`from` must be yourself"));
        }
    }
    let address = |to: &str| {
        Address::parse(to, domain).map_err(|e| FrameError::new(id.clone(), ErrorCode::BadRequest, e.to_string()))
    };
    let (to, body) = match frame {
        ClientFrame::Message(m) => {
            plain_text(id, "body", Some(&m.body))?;
            plain_text(id, "thread", m.thread.as_deref())?;
            plain_text(id, "subject", m.subject.as_deref())?;
            (address(&m.to)?, Body::Message(MessageBody { body: m.body, thread: m.thread, subject: m.subject, kind: m.kind }))
        }
        ClientFrame::Presence(p) => {
            plain_text(id, "status", p.status.as_deref())?;
            (me.clone(), Body::Presence(PresenceBody { show: p.show, status: p.status }))
        }
        ClientFrame::Subscription(s) => (
            address(&s.to)?,
            Body::Subscription { action: s.action },
        ),
        ClientFrame::Receipt(r) => (
            {
                plain_text(id, "of", Some(&r.of))?;
                address(&r.to)?
            },
            Body::Receipt(ReceiptBody { of: MessageId::from_string(r.of), status: r.status }),
        ),
        ClientFrame::ChatState(c) => (address(&c.to)?, Body::ChatState { state: c.state }),
        ClientFrame::DeviceRegister(d) => (me.clone(), Body::Device(device(d, DeviceAction::Register, id)?)),
        ClientFrame::DeviceUnregister(d) => (me.clone(), Body::Device(device(d, DeviceAction::Unregister, id)?)),
    };
    Ok(Envelope::new(me, to, body))
}

/// Provider tokens are opaque but printable: FCM's are ~160 characters, APNs' 64 hex digits,
/// Baidu's channel ids digits. Anything else would only fail at the provider later.
const MAX_DEVICE_TOKEN: usize = 4096;

fn device(frame: DeviceFrame, action: DeviceAction, id: &Option<String>) -> Result<DeviceRegistration, FrameError> {
    let printable = frame.token.chars().all(|c| c.is_ascii_graphic());
    if frame.token.is_empty() || frame.token.len() > MAX_DEVICE_TOKEN || !printable {
        return Err(FrameError::new(
            id.clone(),
            ErrorCode::BadRequest,
            format!("`token` must be 1 to {MAX_DEVICE_TOKEN} printable ASCII characters"),
        ));
    }
    // APNs tokens go into a URL path and Baidu channel ids into a signed form: only their own
    // alphabets, so no token can steer a request elsewhere.
    let (fits, alphabet) = match frame.platform {
        Platform::Apns => (frame.token.chars().all(|c| c.is_ascii_hexdigit()), "hexadecimal digits"),
        Platform::Baidu => (frame.token.chars().all(|c| c.is_ascii_digit()), "digits"),
        Platform::Fcm => (true, ""),
    };
    if !fits {
        return Err(FrameError::new(id.clone(), ErrorCode::BadRequest, format!("this platform's `token` is {alphabet}")));
    }
    plain_text(id, "app", frame.app.as_deref())?;
    plain_text(id, "os", frame.os.as_deref())?;
    Ok(DeviceRegistration { action, platform: frame.platform, token: frame.token, app: frame.app, os: frame.os })
}

/// Text must be what XML 1.0 can carry (no control characters but tab, newline and carriage
/// return, no U+FFFE/U+FFFF): a message may go to an XMPP user, and one such character would
/// make the server close the component's stream, again at every retry. It also keeps NUL out of
/// PostgreSQL text columns, which refuse it.
fn plain_text(id: &Option<String>, field: &str, value: Option<&str>) -> Result<(), FrameError> {
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}');
    if value.is_some_and(|v| !v.chars().all(allowed)) {
        return Err(FrameError::new(
            id.clone(),
            ErrorCode::BadRequest,
            format!("`{field}` contains a control character"),
        ));
    }
    Ok(())
}

/// The frame a client receives for an envelope addressed to her.
pub fn envelope_to_frame(envelope: &Envelope, domain: &Domain) -> Option<ServerFrame> {
    let id = envelope.id.to_string();
    let from = envelope.from.display(domain);
    let to = envelope.to.display(domain);
    Some(match &envelope.body {
        Body::Message(m) => ServerFrame::Message {
            id,
            from,
            to,
            body: m.body.clone(),
            ts: envelope.ts.to_rfc3339(),
            thread: m.thread.clone(),
            subject: m.subject.clone(),
            kind: m.kind,
        },
        Body::Presence(p) => ServerFrame::Presence { from, show: p.show, status: p.status.clone() },
        Body::Subscription { action } => match action {
            SubscriptionAction::Subscribe => ServerFrame::Subscribe { id, from, to },
            SubscriptionAction::Subscribed => ServerFrame::Subscribed { id, from, to },
            SubscriptionAction::Unsubscribe => ServerFrame::Unsubscribe { id, from, to },
            SubscriptionAction::Unsubscribed => ServerFrame::Unsubscribed { id, from, to },
        },
        Body::Receipt(r) => ServerFrame::Receipt { id, from, to, of: r.of.to_string(), status: r.status },
        Body::ChatState { state } => ServerFrame::ChatState { from, to, state: *state },
        Body::Failure(failure) => ServerFrame::Error {
            id: None,
            code: match failure.reason {
                FailureReason::NotFound => ErrorCode::NotFound,
                FailureReason::Unavailable => ErrorCode::Unavailable,
                FailureReason::Forbidden => ErrorCode::Forbidden,
                FailureReason::BadRequest => ErrorCode::BadRequest,
                FailureReason::Internal => ErrorCode::Internal,
            },
            text: failure.text.clone().unwrap_or_else(|| format!("{from} could not take the message")),
            msg: Some(failure.of.to_string()),
        },
        // Device registrations and probes never travel to clients.
        Body::Device(_) | Body::Probe => return None,
    })
}

/// The answer to a client frame once the router has settled it. `msg` is the envelope's id,
/// reported in the `ack` when the envelope was kept (delivered or stored).
pub fn outcome_to_answer(outcome: Outcome, id: Option<String>, msg: &MessageId) -> Option<ServerFrame> {
    let (code, text) = match outcome {
        Outcome::Delivered | Outcome::Stored => {
            return id.map(|id| ServerFrame::Ack { id, msg: Some(msg.to_string()) });
        }
        Outcome::Accepted => return id.map(|id| ServerFrame::Ack { id, msg: None }),
        Outcome::Retryable(why) => (ErrorCode::Unavailable, why),
        Outcome::Failed(why) => (ErrorCode::Internal, why),
        Outcome::Rejected(rejection) => {
            let code = match &rejection {
                Rejection::UnknownUser | Rejection::UnknownDevice => ErrorCode::NotFound,
                Rejection::Forbidden(_) => ErrorCode::Forbidden,
                Rejection::BadRequest(_) => ErrorCode::BadRequest,
                Rejection::NoRoute | Rejection::QueueFull => ErrorCode::Unavailable,
            };
            (code, rejection.to_string())
        }
    };
    Some(ServerFrame::error(id, code, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::parse_client_frame;

    fn domain() -> Domain {
        Domain::new("im.example.com")
    }

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid")
    }

    fn convert(json: &str) -> Result<Envelope, FrameError> {
        let frame = parse_client_frame(json.as_bytes(), 65_536).expect("parses");
        frame_to_envelope(frame, &alice(), &domain())
    }

    #[test]
    fn a_message_round_trips_through_the_envelope() {
        let envelope = convert(
            r#"{"type":"message","id":"c1","to":"bob","body":"héllo <b>&amp;</b> 👋","thread":"t1","subject":"s"}"#,
        )
        .expect("valid");
        assert_eq!(envelope.from, Address::user(alice()));
        assert_eq!(envelope.to.display(&domain()), "bob@im.example.com");
        let frame = envelope_to_frame(&envelope, &domain()).expect("a frame");
        let json: serde_json::Value = serde_json::from_str(&frame.to_json()).expect("json");
        assert_eq!(json["type"], "message");
        assert_eq!(json["from"], "alice@im.example.com");
        assert_eq!(json["to"], "bob@im.example.com");
        assert_eq!(json["body"], "héllo <b>&amp;</b> 👋");
        assert_eq!(json["thread"], "t1");
        assert_eq!(json["subject"], "s");
        assert_eq!(json["id"], envelope.id.to_string());
        assert!(json["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
        assert!(json.get("kind").is_none());
    }

    #[test]
    fn device_tokens_and_stored_texts_are_checked() {
        let ok = convert(r#"{"type":"device.register","platform":"baidu","token":"3712897","os":"ios"}"#).expect("valid");
        match ok.body {
            Body::Device(device) => assert_eq!(device.os.as_deref(), Some("ios")),
            other => panic!("{other:?}"),
        }
        let long = format!(r#"{{"type":"device.register","id":"d1","platform":"fcm","token":"{}"}}"#, "a".repeat(5000));
        for json in [
            r#"{"type":"device.register","id":"d1","platform":"fcm","token":""}"#,
            r#"{"type":"device.unregister","id":"d1","platform":"apns","token":"ab cd"}"#,
            r#"{"type":"device.register","id":"d1","platform":"apns","token":"abcd","app":"x\u0000y"}"#,
            r#"{"type":"device.register","id":"d1","platform":"apns","token":"../../3/device/abcd"}"#,
            r#"{"type":"device.register","id":"d1","platform":"baidu","token":"12&sign=x"}"#,
            r#"{"type":"presence","id":"d1","show":"away","status":"nul \u0000 here"}"#,
            r#"{"type":"message","id":"d1","to":"bob","body":"bell \u0007"}"#,
            r#"{"type":"message","id":"d1","to":"bob","body":"ok","subject":"\u001b[31m"}"#,
            long.as_str(),
        ] {
            let error = convert(json).expect_err(json);
            assert_eq!((error.code, error.id.as_deref()), (ErrorCode::BadRequest, Some("d1")), "{json}");
        }
    }

    #[test]
    fn every_other_type_round_trips() {
        for (json, expected_type) in [
            (r#"{"type":"subscribe","to":"bob"}"#, "subscribe"),
            (r#"{"type":"unsubscribed","to":"bob"}"#, "unsubscribed"),
            (r#"{"type":"receipt","to":"bob","of":"01ABC","status":"received"}"#, "receipt"),
            (r#"{"type":"chatstate","to":"bob","state":"paused"}"#, "chatstate"),
            (r#"{"type":"presence","show":"away","status":"lunch"}"#, "presence"),
        ] {
            let envelope = convert(json).expect(json);
            let frame = envelope_to_frame(&envelope, &domain()).expect("a frame");
            let out: serde_json::Value = serde_json::from_str(&frame.to_json()).expect("json");
            assert_eq!(out["type"], expected_type);
            assert_eq!(out["from"], "alice@im.example.com");
        }
    }

    #[test]
    fn spoofed_from_is_forbidden_and_own_from_is_fine() {
        let e = convert(r#"{"type":"message","id":"c1","from":"mallory","to":"bob","body":"x"}"#).expect_err("spoof");
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::Forbidden, Some("c1")));
        assert!(convert(r#"{"type":"message","id":"c1","from":"alice@im.example.com","to":"bob","body":"x"}"#).is_ok());
    }

    #[test]
    fn invalid_addresses_are_bad_requests() {
        let e = convert(r#"{"type":"message","id":"c1","to":"not a user!","body":"x"}"#).expect_err("bad to");
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::BadRequest, Some("c1")));
    }

    #[test]
    fn outcomes_map_to_contract_codes() {
        let msg = MessageId::from_string("M1");
        let ack = outcome_to_answer(Outcome::Stored, Some("c1".into()), &msg).expect("ack");
        assert_eq!(ack, ServerFrame::Ack { id: "c1".into(), msg: Some("M1".into()) });
        assert_eq!(outcome_to_answer(Outcome::Accepted, None, &msg), None);
        let not_found = outcome_to_answer(Outcome::Rejected(Rejection::UnknownUser), Some("c2".into()), &msg);
        assert!(matches!(not_found, Some(ServerFrame::Error { code: ErrorCode::NotFound, .. })));
        let full = outcome_to_answer(Outcome::Rejected(Rejection::QueueFull), None, &msg);
        assert!(matches!(full, Some(ServerFrame::Error { code: ErrorCode::Unavailable, id: None, .. })));
    }
}
