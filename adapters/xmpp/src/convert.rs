//! Stanzas ⇄ envelopes. Pure, tested from literal XML. Stanzas are read in the link's namespace
//! or `jabber:client`; outbound ones are written as XML text (`text`), in the link's namespace.

use switchboard_gateway::{
    Address, Body, ChatState, Envelope, FailureReason, MessageBody, MessageId, MessageKind, PresenceBody,
    ReceiptBody, ReceiptStatus, RemoteAddress, Show, SubscriptionAction, UserId,
};
use tokio_xmpp::minidom::Element;
use xmpp_parsers::jid::Jid;

use crate::namespace::{CLIENT, COMPONENT};
use crate::text::{Escaped, XmlText};

pub(crate) const RECEIPTS: &str = "urn:xmpp:receipts";
pub(crate) const MARKERS: &str = "urn:xmpp:chat-markers:0";
pub(crate) const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
pub(crate) const STANZA_ID: &str = "urn:xmpp:sid:0";
pub(crate) const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// The resource every gateway user's stanzas come from.
pub(crate) const RESOURCE: &str = "switchboard";

/// The XMPP side of the gateway's addresses.
#[derive(Clone, Debug)]
pub struct Addressing {
    /// The component's domain: gateway user `alice` is `alice@<component>`.
    component: String,
    /// The largest body, subject or status accepted (`limits.max_frame_bytes`).
    max_text_bytes: usize,
    /// Whether `component` is written as a JID parse leaves it (lower case, no trailing dot,
    /// valid IDNA): only then may a recipient be matched against it without that parse.
    component_is_canonical: bool,
    /// What follows a user's name in the addresses her stanzas come from, escaped once:
    /// `@component/resource` (full) and `@component` (bare).
    full_from: Escaped,
    bare_from: Escaped,
}

/// What an inbound stanza means.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// For a gateway user; `stanza_id` is the sender's id, if any.
    Envelope { envelope: Envelope, stanza_id: Option<String> },
    /// For the component or a user JID: an IQ to answer.
    Iq(Element),
    /// An answer the stanza's sender must get instead (RFC 6120 §8.3).
    Refuse(Element),
    /// A message of ours that `peer` refused, which it knows as `foreign_id`.
    Bounce { peer: Address, foreign_id: String, reason: FailureReason, text: Option<String> },
    /// Nothing to do (unsupported presence types, results).
    Ignore(&'static str),
}

/// Why a stanza cannot be delivered, as an RFC 6120 defined condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    ItemNotFound,
    ServiceUnavailable,
    ResourceConstraint,
    BadRequest,
    JidMalformed,
    PolicyViolation,
    InternalServerError,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Self::ItemNotFound => "item-not-found",
            Self::ServiceUnavailable => "service-unavailable",
            Self::ResourceConstraint => "resource-constraint",
            Self::BadRequest => "bad-request",
            Self::JidMalformed => "jid-malformed",
            Self::PolicyViolation => "policy-violation",
            Self::InternalServerError => "internal-server-error",
        }
    }

    fn error_type(self) -> &'static str {
        match self {
            Self::ResourceConstraint | Self::InternalServerError => "wait",
            Self::BadRequest | Self::JidMalformed | Self::PolicyViolation => "modify",
            _ => "cancel",
        }
    }
}

/// The error reply to `stanza`: same name, addresses swapped, original id (RFC 6120 §8.3.1).
pub(crate) fn error_reply(stanza: &Element, condition: Condition) -> Element {
    let mut builder = Element::builder(stanza.name(), CLIENT).attr(ncname("type"), "error");
    if let Some(from) = stanza.attr("from") {
        builder = builder.attr(ncname("to"), from);
    }
    if let Some(to) = stanza.attr("to") {
        builder = builder.attr(ncname("from"), to);
    }
    if let Some(id) = stanza.attr("id") {
        builder = builder.attr(ncname("id"), id);
    }
    let error = Element::builder("error", CLIENT)
        .attr(ncname("type"), condition.error_type())
        .append(Element::bare(condition.name(), STANZAS))
        .build();
    builder.append(error).build()
}

/// An attribute name. Only literals are passed here, all valid XML names.
pub(crate) fn ncname(name: &'static str) -> tokio_xmpp::minidom::rxml::NcName {
    tokio_xmpp::minidom::rxml::NcName::try_from(name).expect("a literal, valid XML name")
}

fn remote(jid: &Jid) -> RemoteAddress {
    RemoteAddress {
        local: jid.node().map(|n| n.as_str().to_owned()),
        domain: jid.domain().as_str().to_owned(),
        resource: jid.resource().map(|r| r.as_str().to_owned()),
    }
}

fn parse_jid(text: Option<&str>) -> Option<Jid> {
    text.and_then(|t| Jid::new(t).ok())
}

/// The attributes a stanza is routed by, read in one pass: each lookup by name walks the
/// element's attribute map again, and a message was read with five of them. Only attributes
/// without a namespace count, as with `Element::attr` (`xml:lang` is not `lang`).
#[derive(Default)]
struct Head<'a> {
    from: Option<&'a str>,
    to: Option<&'a str>,
    kind: Option<&'a str>,
    id: Option<&'a str>,
}

impl<'a> Head<'a> {
    fn of(stanza: &'a Element) -> Self {
        let mut head = Self::default();
        for ((namespace, name), value) in stanza.attrs().iter() {
            if namespace.is_some() {
                continue;
            }
            let slot = match name.as_str() {
                "from" => &mut head.from,
                "to" => &mut head.to,
                "type" => &mut head.kind,
                "id" => &mut head.id,
                _ => continue,
            };
            *slot = Some(value.as_str());
        }
        head
    }
}

/// The longest localpart a JID may have (RFC 7622 §3.3.1); a longer one is malformed.
const MAX_LOCALPART_BYTES: usize = 1023;

/// Where a stanza's `to` leads.
enum Recipient<'a> {
    /// A name at the component: a gateway user if it is a valid user name.
    Local(std::borrow::Cow<'a, str>),
    /// The component itself.
    Component,
    /// Another domain.
    Elsewhere,
    /// Not a JID.
    Malformed,
}

impl Addressing {
    pub fn new(component: String, max_text_bytes: usize) -> Self {
        let component_is_canonical = Jid::new(&component)
            .is_ok_and(|jid| jid.node().is_none() && jid.resource().is_none() && jid.domain().as_str() == component);
        let full_from = Escaped::attribute_value(&format!("@{component}/{RESOURCE}"));
        let bare_from = Escaped::attribute_value(&format!("@{component}"));
        Self { component, max_text_bytes, component_is_canonical, full_from, bare_from }
    }

    /// The component's domain: gateway user `alice` is `alice@<component>`. Read-only, since
    /// the escaped sender addresses and the recipient shortcut are derived from it.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Reads `to`. The form a server writes for a gateway user, `name@component` with a name
    /// of the lower-case characters `UserId` allows (its length is checked later, as for any
    /// other), is taken as it is: the JID parse and normalisation would not change it, and was
    /// the largest cost of reading a stanza. Anything else is parsed as a JID.
    fn recipient<'a>(&self, to: Option<&'a str>) -> Recipient<'a> {
        let Some(to) = to else { return Recipient::Malformed };
        if let Some((local, domain)) = to.split_once('@')
            && self.component_is_canonical
            && domain == self.component
            && (1..=MAX_LOCALPART_BYTES).contains(&local.len())
            && local.bytes().all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        {
            return Recipient::Local(std::borrow::Cow::Borrowed(local));
        }
        let Ok(jid) = Jid::new(to) else { return Recipient::Malformed };
        if jid.domain().as_str() != self.component {
            return Recipient::Elsewhere;
        }
        match jid.node() {
            Some(node) => Recipient::Local(std::borrow::Cow::Owned(node.as_str().to_owned())),
            None => Recipient::Component,
        }
    }

    /// Reads a stanza that arrived on the link (in `jabber:component:accept`, or `jabber:client`).
    pub fn inbound(&self, stanza: &Element) -> Inbound {
        match stanza.name() {
            "message" | "presence" => {}
            // RFC 6120 §8.2.3: a get or a set is always answered, a result or an error never; any
            // other type is a request gone wrong (§8.3.3.1), answered too, so nobody waits forever.
            "iq" => {
                return match stanza.attr("type") {
                    Some("get" | "set") => Inbound::Iq(stanza.clone()),
                    Some("result" | "error") => Inbound::Ignore("iq result or error"),
                    _ => Inbound::Refuse(error_reply(stanza, Condition::BadRequest)),
                };
            }
            // Not a stanza: nothing to answer it with (an error reply has a stanza's name).
            _ => return Inbound::Ignore("not a stanza"),
        }
        let head = Head::of(stanza);
        if head.kind == Some("error") {
            return bounce(stanza);
        }
        let Some(from) = parse_jid(head.from) else {
            return Inbound::Refuse(error_reply(stanza, Condition::JidMalformed));
        };
        let node = match self.recipient(head.to) {
            Recipient::Malformed => return Inbound::Refuse(error_reply(stanza, Condition::JidMalformed)),
            Recipient::Elsewhere => return Inbound::Refuse(error_reply(stanza, Condition::ItemNotFound)),
            Recipient::Component | Recipient::Local(_) if stanza.name() == "message" && head.kind == Some("groupchat") => {
                // No gateway user is in a room: RFC 6121 §8.5.2 has groupchat to a user refused.
                return Inbound::Refuse(error_reply(stanza, Condition::ServiceUnavailable));
            }
            Recipient::Component => {
                // The component's own domain takes IQs only.
                return match stanza.name() {
                    "message" => Inbound::Refuse(error_reply(stanza, Condition::ServiceUnavailable)),
                    _ => Inbound::Ignore("presence to the component"),
                };
            }
            Recipient::Local(node) => node,
        };
        let Ok(user) = UserId::parse(&node) else {
            return Inbound::Refuse(error_reply(stanza, Condition::ItemNotFound));
        };
        let body = match stanza.name() {
            "message" => message_body(stanza, head.kind),
            "presence" => presence_body(stanza, head.kind),
            _ => None,
        };
        let Some(body) = body else {
            return Inbound::Ignore("nothing the gateway carries");
        };
        if text_bytes(&body) > self.max_text_bytes {
            return Inbound::Refuse(error_reply(stanza, Condition::PolicyViolation));
        }
        let stanza_id = head.id.map(str::to_owned);
        let envelope = Envelope::new(Address::Remote(remote(&from)), Address::user(user), body);
        Inbound::Envelope { envelope, stanza_id }
    }

    /// The stanza for an envelope leaving through the link, read on its own in `jabber:client`;
    /// `None` for bodies XMPP has no use for.
    pub fn outbound(&self, envelope: &Envelope) -> Option<Element> {
        let mut text = Vec::new();
        if !self.write_outbound(envelope, Some(CLIENT), &mut text) {
            return None;
        }
        String::from_utf8(text).ok()?.parse().ok()
    }

    /// Writes the stanza for an envelope leaving through the link as XML text, declaring
    /// `namespace` on it if given (on the link the stream's own applies); false, with nothing
    /// written, for bodies XMPP has no use for.
    pub(crate) fn write_outbound(&self, envelope: &Envelope, namespace: Option<&'static str>, out: &mut Vec<u8>) -> bool {
        let (Address::Remote(to), Address::User { user }) = (&envelope.to, &envelope.from) else { return false };
        let id = envelope.id.as_str();
        // Each kind of stanza comes from one of the two forms of the sender's address.
        let full_from = (user.as_str(), &self.full_from);
        let bare_from = (user.as_str(), &self.bare_from);
        let mut xml = XmlText::new(out, namespace);
        match &envelope.body {
            Body::Message(message) => {
                head(&mut xml, "message", full_from, to, Some(id));
                xml.attr_const("type", match message.kind {
                    MessageKind::Chat => "chat",
                    MessageKind::Normal => "normal",
                });
                xml.content();
                if let Some(subject) = &message.subject {
                    xml.text_element("subject", subject);
                }
                xml.text_element("body", &message.body);
                if let Some(thread) = &message.thread {
                    xml.text_element("thread", thread);
                }
                xml.open("origin-id");
                xml.attr_const("xmlns", STANZA_ID);
                xml.attr("id", id);
                xml.empty();
                xml.marker("request", RECEIPTS);
                xml.marker("markable", MARKERS);
                xml.marker("active", CHATSTATES);
                xml.close("message");
            }
            Body::Presence(presence) => {
                head(&mut xml, "presence", full_from, to, None);
                let show = match presence.show {
                    Show::Unavailable => {
                        xml.attr_const("type", "unavailable");
                        None
                    }
                    Show::Available => None,
                    Show::Away => Some("away"),
                    Show::Chat => Some("chat"),
                    Show::Dnd => Some("dnd"),
                    Show::Xa => Some("xa"),
                };
                if show.is_none() && presence.status.is_none() {
                    xml.empty();
                } else {
                    xml.content();
                    if let Some(show) = show {
                        xml.text_element("show", show);
                    }
                    if let Some(status) = &presence.status {
                        xml.text_element("status", status);
                    }
                    xml.close("presence");
                }
            }
            Body::Subscription { action } => {
                // Subscription stanzas come from the bare JID (RFC 6121 §3.1.1).
                head(&mut xml, "presence", bare_from, to, Some(id));
                xml.attr_const("type", match action {
                    SubscriptionAction::Subscribe => "subscribe",
                    SubscriptionAction::Subscribed => "subscribed",
                    SubscriptionAction::Unsubscribe => "unsubscribe",
                    SubscriptionAction::Unsubscribed => "unsubscribed",
                });
                xml.empty();
            }
            Body::Receipt(receipt) => {
                head(&mut xml, "message", full_from, to, Some(id));
                xml.attr_const("type", "chat");
                xml.content();
                let (name, namespace) = match receipt.status {
                    ReceiptStatus::Received => ("received", RECEIPTS),
                    ReceiptStatus::Displayed => ("displayed", MARKERS),
                };
                xml.open(name);
                xml.attr_const("xmlns", namespace);
                xml.attr("id", receipt.of.as_str());
                xml.empty();
                xml.close("message");
            }
            Body::ChatState { state } => {
                head(&mut xml, "message", full_from, to, Some(id));
                xml.attr_const("type", "chat");
                xml.content();
                xml.marker(chat_state_name(*state), CHATSTATES);
                xml.close("message");
            }
            Body::Probe => {
                head(&mut xml, "presence", bare_from, to, None);
                xml.attr_const("type", "probe");
                xml.empty();
            }
            Body::Device(_) | Body::Failure(_) => return false,
        }
        true
    }
}

/// A stanza's start tag up to its addresses and id; its type and content follow.
fn head(xml: &mut XmlText<'_>, name: &str, (user, from): (&str, &Escaped), to: &RemoteAddress, id: Option<&str>) {
    xml.open(name);
    xml.attr_then("from", user, from);
    // Written from its parts: the address is not put together as a string first.
    match (&to.local, &to.resource) {
        (None, None) => xml.attr("to", &to.domain),
        (Some(local), None) => xml.attr_parts("to", &[local, "@", &to.domain]),
        (None, Some(resource)) => xml.attr_parts("to", &[&to.domain, "/", resource]),
        (Some(local), Some(resource)) => xml.attr_parts("to", &[local, "@", &to.domain, "/", resource]),
    }
    if let Some(id) = id {
        xml.attr("id", id);
    }
}

/// An error reply to one of our messages, to report to the user who sent it.
fn bounce(stanza: &Element) -> Inbound {
    let (Some(from), Some(id), "message") = (parse_jid(stanza.attr("from")), stanza.attr("id"), stanza.name()) else {
        return Inbound::Ignore("error about a stanza that is not a message");
    };
    let error = stanza_child(stanza, "error");
    let condition = error
        .and_then(|e| e.children().find(|c| c.ns() == STANZAS && c.name() != "text"))
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let reason = match condition.as_str() {
        "item-not-found" | "recipient-unavailable" | "remote-server-not-found" | "service-unavailable" | "gone" => FailureReason::NotFound,
        "forbidden" | "not-allowed" | "not-authorized" | "registration-required" | "subscription-required" => FailureReason::Forbidden,
        "bad-request" | "jid-malformed" | "not-acceptable" | "policy-violation" | "feature-not-implemented" => FailureReason::BadRequest,
        "remote-server-timeout" | "resource-constraint" => FailureReason::Unavailable,
        _ => FailureReason::Internal,
    };
    let text = error
        .and_then(|e| e.get_child("text", STANZAS))
        .map(Element::text)
        .or_else(|| (!condition.is_empty()).then(|| format!("refused by the XMPP server: {condition}")));
    Inbound::Bounce { peer: Address::Remote(remote(&from).bare()), foreign_id: id.to_owned(), reason, text }
}

fn chat_state_name(state: ChatState) -> &'static str {
    match state {
        ChatState::Active => "active",
        ChatState::Composing => "composing",
        ChatState::Paused => "paused",
        ChatState::Inactive => "inactive",
        ChatState::Gone => "gone",
    }
}

fn text_bytes(body: &Body) -> usize {
    match body {
        Body::Message(m) => m.body.len() + m.subject.as_ref().map_or(0, String::len) + m.thread.as_ref().map_or(0, String::len),
        Body::Presence(p) => p.status.as_ref().map_or(0, String::len),
        _ => 0,
    }
}

/// A child in the stanza namespace. Stanzas are read as they arrive on the link, in
/// `jabber:component:accept`: moving each to `jabber:client` first rebuilt every element of every
/// stanza. Either namespace is read, as both were before.
fn stanza_child<'a>(stanza: &'a Element, name: &str) -> Option<&'a Element> {
    stanza.get_child(name, COMPONENT).or_else(|| stanza.get_child(name, CLIENT))
}

fn message_body(stanza: &Element, kind: Option<&str>) -> Option<Body> {
    if let Some(body) = stanza_child(stanza, "body") {
        let kind = match kind {
            Some("normal" | "headline") => MessageKind::Normal,
            _ => MessageKind::Chat,
        };
        return Some(Body::Message(MessageBody {
            body: body.text(),
            thread: stanza_child(stanza, "thread").map(Element::text),
            subject: stanza_child(stanza, "subject").map(Element::text),
            kind,
        }));
    }
    if let Some(received) = stanza.get_child("received", RECEIPTS) {
        let of = received.attr("id")?;
        return Some(Body::Receipt(ReceiptBody { of: MessageId::from_string(of), status: ReceiptStatus::Received }));
    }
    if let Some(displayed) = stanza.get_child("displayed", MARKERS) {
        let of = displayed.attr("id")?;
        return Some(Body::Receipt(ReceiptBody { of: MessageId::from_string(of), status: ReceiptStatus::Displayed }));
    }
    for (name, state) in [
        ("active", ChatState::Active),
        ("composing", ChatState::Composing),
        ("paused", ChatState::Paused),
        ("inactive", ChatState::Inactive),
        ("gone", ChatState::Gone),
    ] {
        if stanza.has_child(name, CHATSTATES) {
            return Some(Body::ChatState { state });
        }
    }
    None
}

fn presence_body(stanza: &Element, kind: Option<&str>) -> Option<Body> {
    let action = |action| Some(Body::Subscription { action });
    match kind {
        None => {
            let show = match stanza_child(stanza, "show").map(|s| s.text()).as_deref() {
                Some("away") => Show::Away,
                Some("chat") => Show::Chat,
                Some("dnd") => Show::Dnd,
                Some("xa") => Show::Xa,
                _ => Show::Available,
            };
            let status = stanza_child(stanza, "status").map(Element::text);
            Some(Body::Presence(PresenceBody { show, status }))
        }
        Some("unavailable") => Some(Body::Presence(PresenceBody { show: Show::Unavailable, status: None })),
        Some("subscribe") => action(SubscriptionAction::Subscribe),
        Some("subscribed") => action(SubscriptionAction::Subscribed),
        Some("unsubscribe") => action(SubscriptionAction::Unsubscribe),
        Some("unsubscribed") => action(SubscriptionAction::Unsubscribed),
        Some("probe") => Some(Body::Probe),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressing() -> Addressing {
        Addressing::new("gw.localhost".into(), 65_536)
    }

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn a_chat_message_becomes_an_envelope_with_its_text_intact() {
        let stanza = parse(
            "<message xmlns='jabber:client' from='carol@localhost/phone' to='alice@gw.localhost' type='chat' id='s1'>\
             <subject>s</subject><body>&lt;b&gt; &amp; é 👋</body><thread>t</thread></message>",
        );
        let Inbound::Envelope { envelope, stanza_id } = addressing().inbound(&stanza) else { panic!("not an envelope") };
        assert_eq!(stanza_id.as_deref(), Some("s1"));
        assert_eq!(envelope.to, Address::user(UserId::parse("alice").expect("valid")));
        let Address::Remote(from) = &envelope.from else { panic!("remote sender") };
        assert_eq!(from.to_string(), "carol@localhost/phone");
        let Body::Message(message) = &envelope.body else { panic!("message") };
        assert_eq!((message.body.as_str(), message.subject.as_deref(), message.thread.as_deref()), ("<b> & é 👋", Some("s"), Some("t")));
    }

    #[test]
    fn an_outbound_message_carries_ids_and_asks_for_receipts() {
        let stanza = parse("<message xmlns='jabber:client' from='carol@localhost/phone' to='alice@gw.localhost' type='chat'><body>x</body></message>");
        let Inbound::Envelope { envelope, .. } = addressing().inbound(&stanza) else { panic!("not an envelope") };
        let reply = Envelope::new(envelope.to.clone(), envelope.from.clone(), envelope.body.clone());
        let out = addressing().outbound(&reply).expect("a stanza");
        assert_eq!(out.attr("from"), Some("alice@gw.localhost/switchboard"));
        assert_eq!(out.attr("to"), Some("carol@localhost/phone"));
        assert_eq!(out.attr("id"), Some(reply.id.as_str()));
        assert_eq!(out.get_child("origin-id", STANZA_ID).and_then(|o| o.attr("id")), Some(reply.id.as_str()));
        assert!(out.has_child("request", RECEIPTS) && out.has_child("markable", MARKERS));
    }

    #[test]
    fn every_form_of_address_is_written_whole() {
        let alice = Address::user(UserId::parse("alice").expect("user"));
        let forms = [(Some("c'a"), None), (None, None), (None, Some("r&1")), (Some("carol"), Some("phone"))];
        for (local, resource) in forms {
            let to = RemoteAddress { local: local.map(Into::into), domain: "localhost".into(), resource: resource.map(Into::into) };
            let text = MessageBody { body: "b".into(), subject: None, thread: None, kind: MessageKind::Chat };
            let out = addressing().outbound(&Envelope::new(alice.clone(), Address::Remote(to.clone()), Body::Message(text)));
            assert_eq!(out.and_then(|out| out.attr("to").map(str::to_owned)), Some(to.to_string()));
        }
    }

    #[test]
    fn every_kind_of_outbound_stanza_is_written_as_xmpp_expects() {
        let alice = Address::user(UserId::parse("alice").expect("user"));
        let carol = Address::Remote(RemoteAddress { local: Some("carol".into()), domain: "localhost".into(), resource: Some("a'b&c".into()) });
        let text = |body: &str| MessageBody { body: body.into(), subject: Some("s".into()), thread: Some("t".into()), kind: MessageKind::Normal };
        let receipt = |status| Body::Receipt(ReceiptBody { of: MessageId::from_string("x1"), status });
        let cases = [
            (Body::Message(text("<b> & é")), "<message xmlns='jabber:client' from='alice@gw.localhost/switchboard' to='carol@localhost/a&apos;b&amp;c' id='ID' type='normal'><subject>s</subject><body>&lt;b&gt; &amp; é</body><thread>t</thread><origin-id xmlns='urn:xmpp:sid:0' id='ID'/><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            (Body::Presence(PresenceBody { show: Show::Dnd, status: Some("busy".into()) }), "<presence xmlns='jabber:client' from='alice@gw.localhost/switchboard' to='carol@localhost/a&apos;b&amp;c'><show>dnd</show><status>busy</status></presence>"),
            (Body::Presence(PresenceBody { show: Show::Unavailable, status: None }), "<presence xmlns='jabber:client' from='alice@gw.localhost/switchboard' to='carol@localhost/a&apos;b&amp;c' type='unavailable'/>"),
            (Body::Presence(PresenceBody { show: Show::Available, status: None }), "<presence xmlns='jabber:client' from='alice@gw.localhost/switchboard' to='carol@localhost/a&apos;b&amp;c'/>"),
            (Body::Subscription { action: SubscriptionAction::Subscribed }, "<presence xmlns='jabber:client' from='alice@gw.localhost' to='carol@localhost/a&apos;b&amp;c' id='ID' type='subscribed'/>"),
            (receipt(ReceiptStatus::Received), "<message xmlns='jabber:client' from='alice@gw.localhost/switchboard' to='carol@localhost/a&apos;b&amp;c' id='ID' type='chat'><received xmlns='urn:xmpp:receipts' id='x1'/></message>"),
            (receipt(ReceiptStatus::Displayed), "<message xmlns='jabber:client' from='alice@gw.localhost/switchboard' to='carol@localhost/a&apos;b&amp;c' id='ID' type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='x1'/></message>"),
            (Body::ChatState { state: ChatState::Composing }, "<message xmlns='jabber:client' from='alice@gw.localhost/switchboard' to='carol@localhost/a&apos;b&amp;c' id='ID' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            (Body::Probe, "<presence xmlns='jabber:client' from='alice@gw.localhost' to='carol@localhost/a&apos;b&amp;c' type='probe'/>"),
        ];
        for (body, expected) in cases {
            let envelope = Envelope::new(alice.clone(), carol.clone(), body);
            let expected: Element = expected.replace("ID", envelope.id.as_str()).parse().expect("expected XML");
            assert_eq!(addressing().outbound(&envelope), Some(expected.clone()), "{}", String::from(&expected));
            // On the link: the same text without a namespace of its own, so the stream's applies.
            let mut link = Vec::new();
            assert!(addressing().write_outbound(&envelope, None, &mut link));
            let link = String::from_utf8(link).expect("UTF-8");
            let in_stream = format!("<stream xmlns='{}'>{link}</stream>", crate::namespace::COMPONENT);
            let read: Element = in_stream.parse().expect("well-formed in the stream");
            let stanza = read.children().next().expect("the stanza");
            assert_eq!(stanza, &crate::namespace::to_component(expected), "{link}");
        }
        let failure = Body::Failure(switchboard_gateway::FailureBody {
            of: MessageId::from_string("x1"),
            reason: FailureReason::NotFound,
            text: None,
        });
        let mut nothing = Vec::new();
        assert!(!addressing().write_outbound(&Envelope::new(alice.clone(), carol, failure), None, &mut nothing));
        assert!(nothing.is_empty());
    }

    #[test]
    fn a_stanza_is_read_the_same_in_the_component_namespace() {
        let stanzas = [
            "<message xmlns='jabber:client' from='c@l/r' to='a@gw.localhost' id='m1'><subject>s</subject><body>hi</body><thread>t</thread></message>",
            "<presence xmlns='jabber:client' from='c@l/r' to='a@gw.localhost'><show>dnd</show><status>busy</status></presence>",
            "<message xmlns='jabber:client' from='c@l/r' to='a@gw.localhost' id='G1' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text></error></message>",
        ];
        for xml in stanzas {
            let client = parse(xml);
            let component = crate::namespace::to_component(client.clone());
            let (read_client, read_component) = (addressing().inbound(&client), addressing().inbound(&component));
            assert!(!matches!(read_client, Inbound::Ignore(_) | Inbound::Refuse(_)), "{xml}");
            // Envelopes carry fresh gateway ids: compare what the stanza said.
            match (read_client, read_component) {
                (Inbound::Envelope { envelope: a, stanza_id: x }, Inbound::Envelope { envelope: b, stanza_id: y }) => {
                    assert_eq!((a.from, a.to, a.body, x), (b.from, b.to, b.body, y), "{xml}");
                }
                (a, b) => assert_eq!(a, b, "{xml}"),
            }
        }
    }

    #[test]
    fn receipts_markers_chat_states_and_presence_are_read() {
        let cases = [
            ("<message xmlns='jabber:client' from='c@l' to='a@gw.localhost'><received xmlns='urn:xmpp:receipts' id='G1'/></message>", "receipt"),
            ("<message xmlns='jabber:client' from='c@l' to='a@gw.localhost'><displayed xmlns='urn:xmpp:chat-markers:0' id='G1'/></message>", "receipt"),
            ("<message xmlns='jabber:client' from='c@l' to='a@gw.localhost'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", "chatstate"),
            ("<presence xmlns='jabber:client' from='c@l/r' to='a@gw.localhost'><show>dnd</show></presence>", "presence"),
            ("<presence xmlns='jabber:client' from='c@l' to='a@gw.localhost' type='subscribe'/>", "subscription"),
        ];
        for (xml, kind) in cases {
            let Inbound::Envelope { envelope, .. } = addressing().inbound(&parse(xml)) else { panic!("{xml}") };
            assert_eq!(envelope.body.kind_name(), kind, "{xml}");
        }
    }

    #[test]
    fn invalid_local_parts_and_foreign_domains_get_item_not_found() {
        for xml in [
            "<message xmlns='jabber:client' from='c@l' to='a+b@gw.localhost' id='x'><body>b</body></message>",
            "<message xmlns='jabber:client' from='c@l' to='bob@elsewhere' id='x'><body>b</body></message>",
        ] {
            let Inbound::Refuse(error) = addressing().inbound(&parse(xml)) else { panic!("{xml}") };
            assert_eq!(error.attr("type"), Some("error"));
            assert_eq!(error.attr("to"), Some("c@l"));
            let condition = error.get_child("error", CLIENT).and_then(|e| e.children().next().map(|c| c.name().to_owned()));
            assert_eq!(condition.as_deref(), Some(Condition::ItemNotFound.name()), "{xml}");
        }
    }

    #[test]
    fn what_is_not_a_stanza_is_ignored_and_bad_requests_are_answered() {
        let condition = |reply: &Element| reply.get_child("error", CLIENT).and_then(|e| e.children().next().map(|c| c.name().to_owned()));
        let teleport = parse("<teleport xmlns='jabber:client' id='t1'><body>x</body></teleport>");
        assert_eq!(addressing().inbound(&teleport), Inbound::Ignore("not a stanza"));
        for iq in [
            "<iq xmlns='jabber:client' from='c@l/r' to='gw.localhost' type='subscribe' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq xmlns='jabber:client' from='c@l/r' to='gw.localhost' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>",
        ] {
            let Inbound::Refuse(reply) = addressing().inbound(&parse(iq)) else { panic!("{iq}") };
            assert_eq!((reply.name(), reply.attr("id"), reply.attr("to")), ("iq", Some("q1"), Some("c@l/r")));
            assert_eq!(condition(&reply).as_deref(), Some("bad-request"), "{iq}");
        }
        let result = parse("<iq xmlns='jabber:client' from='c@l/r' to='gw.localhost' type='result' id='q2'/>");
        assert!(matches!(addressing().inbound(&result), Inbound::Ignore(_)), "results are never answered");
    }

    #[test]
    fn every_form_of_recipient_leads_where_its_jid_says() {
        let message = |to: &str| parse(&format!("<message xmlns='jabber:client' from='c@l/r' {to} id='x'><body>b</body></message>"));
        for to in ["to='alice@gw.localhost'", "to='alice@gw.localhost/phone'", "to='Alice@gw.localhost'", "to='al.i_c-e@gw.localhost'"] {
            let Inbound::Envelope { envelope, .. } = addressing().inbound(&message(to)) else { panic!("{to}") };
            let expected = to.trim_start_matches("to='").split(['@']).next().map(str::to_lowercase);
            assert_eq!(envelope.to.as_user().map(|user| user.as_str().to_owned()), expected, "{to}");
        }
        let refusals = [
            ("", Condition::JidMalformed),
            ("to='@gw.localhost'", Condition::JidMalformed),
            ("to='alice@'", Condition::JidMalformed),
            ("to='alice@gw.localhost.evil'", Condition::ItemNotFound),
            ("to='alice@evil@gw.localhost'", Condition::JidMalformed),
            (&format!("to='{}@gw.localhost'", "a".repeat(MAX_LOCALPART_BYTES + 1)), Condition::JidMalformed),
            ("to='gw.localhost'", Condition::ServiceUnavailable),
        ];
        let condition = |inbound: Inbound| match inbound {
            Inbound::Refuse(reply) => reply.get_child("error", CLIENT).and_then(|e| e.children().next().map(|c| c.name().to_owned())),
            other => panic!("not refused: {other:?}"),
        };
        for (to, expected) in refusals {
            assert_eq!(condition(addressing().inbound(&message(to))).as_deref(), Some(expected.name()), "{to}");
        }
        // A component configured in a form a JID parse changes is only ever compared as parsed.
        let upper = Addressing::new("GW.localhost".into(), 65_536);
        let to = "to='alice@GW.localhost'";
        assert_eq!(condition(upper.inbound(&message(to))).as_deref(), Some(Condition::ItemNotFound.name()), "{to}");
    }

    #[test]
    fn a_groupchat_message_to_a_user_is_refused() {
        let stanza = parse("<message xmlns='jabber:client' from='room@muc.l/carol' to='alice@gw.localhost' type='groupchat' id='g1'><body>hi all</body></message>");
        let Inbound::Refuse(reply) = addressing().inbound(&stanza) else { panic!("not refused") };
        let error = reply.get_child("error", CLIENT).expect("an error");
        assert_eq!((reply.attr("id"), reply.attr("to"), error.attr("type")), (Some("g1"), Some("room@muc.l/carol"), Some("cancel")));
        assert!(error.has_child(Condition::ServiceUnavailable.name(), STANZAS));
    }
}
