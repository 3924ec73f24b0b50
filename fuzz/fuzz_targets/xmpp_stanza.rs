//! Stanzas from the XMPP server: bytes → element (minidom's own reader over rxml; the link builds
//! the same tree with `read.rs`, checked against xso's builder by its unit test) → the adapter's
//! inbound conversion, and every answer or envelope back out as XML.
//!
//! On the link, stanzas arrive in `jabber:component:accept` and are moved to `jabber:client`
//! before conversion; both namespaces are accepted here, as `to_client` leaves the second alone.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_gateway::{Address, Body, Envelope};
use switchboard_xmpp::fuzzing::{Addressing, Inbound, answer, to_client, to_component};
use tokio_xmpp::minidom::Element;

const COMPONENT: &str = "gw.localhost";
const MAX_TEXT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(element) = text.parse::<Element>() else { return };
    let stanza = to_client(element);
    let addressing = Addressing::new(COMPONENT.into(), MAX_TEXT);
    match addressing.inbound(&stanza) {
        Inbound::Envelope { envelope, stanza_id } => {
            assert_eq!(stanza_id.as_deref(), stanza.attr("id"));
            check_envelope(&envelope);
            // The same body sent back by the user it was for: what the adapter writes to the peer.
            let reply = Envelope::new(envelope.to.clone(), envelope.from.clone(), envelope.body.clone());
            if let Some(out) = addressing.outbound(&reply) {
                let reparsed = check_written(&out);
                check_text_survives(&reply.body, &reparsed);
            }
        }
        Inbound::Iq(iq) => {
            assert_eq!(iq.name(), "iq");
            let reply = answer(&iq, COMPONENT);
            assert_eq!(reply.name(), "iq");
            assert!(matches!(reply.attr("type"), Some("result" | "error")));
            assert_eq!(reply.attr("id"), iq.attr("id"), "the answer names the request");
            check_written(&reply);
        }
        Inbound::Refuse(reply) => {
            assert_eq!(reply.name(), stanza.name());
            assert_eq!(reply.attr("type"), Some("error"));
            assert_eq!(reply.attr("to"), stanza.attr("from"), "the refusal goes back to the sender");
            check_written(&reply);
        }
        Inbound::Bounce { peer, foreign_id, .. } => {
            assert_eq!(stanza.attr("type"), Some("error"));
            assert_eq!(Some(foreign_id.as_str()), stanza.attr("id"));
            let Address::Remote(peer) = peer else { panic!("a bounce comes from a peer, not a user") };
            assert!(peer.resource.is_none(), "a bounce names the bare peer");
        }
        Inbound::Ignore(why) => assert!(!why.is_empty()),
    }
});

/// An envelope from XMPP is for a gateway user, from a remote address, and within the text limit.
fn check_envelope(envelope: &Envelope) {
    assert!(matches!(envelope.from, Address::Remote(_)), "{envelope:?}");
    assert!(envelope.to.as_user().is_some(), "{envelope:?}");
    let text = match &envelope.body {
        Body::Message(m) => m.body.len() + m.thread.as_ref().map_or(0, String::len) + m.subject.as_ref().map_or(0, String::len),
        Body::Presence(p) => p.status.as_ref().map_or(0, String::len),
        Body::Device(_) | Body::Failure(_) => panic!("XMPP peers cannot register devices or report failures: {envelope:?}"),
        _ => 0,
    };
    assert!(text <= MAX_TEXT, "{text} bytes of text got through a limit of {MAX_TEXT}");
}

/// What goes on the link (in the component namespace) is well-formed XML that reads back as the
/// same stanza.
fn check_written(element: &Element) -> Element {
    let xml = String::from(&to_component(element.clone()));
    let reparsed: Element = xml.parse().unwrap_or_else(|e| panic!("not well-formed XML ({e}): {xml:?}"));
    let reparsed = to_client(reparsed);
    assert!(same(&reparsed, element), "the stanza reads back unchanged: {xml:?}");
    reparsed
}

/// Equal as XML means the same thing: names, namespaces, attributes, text and children, whatever
/// the text nodes (an empty text node is not written, so it does not read back).
fn same(a: &Element, b: &Element) -> bool {
    a.name() == b.name()
        && a.ns() == b.ns()
        && a.attrs().iter().eq(b.attrs().iter())
        && a.text() == b.text()
        && a.children().count() == b.children().count()
        && a.children().zip(b.children()).all(|(x, y)| same(x, y))
}

fn check_text_survives(body: &Body, stanza: &Element) {
    let child_text = |name| stanza.get_child(name, "jabber:client").map(Element::text);
    match body {
        Body::Message(m) => {
            assert_eq!(child_text("body").as_deref(), Some(m.body.as_str()));
            assert_eq!(child_text("subject"), m.subject);
            assert_eq!(child_text("thread"), m.thread);
        }
        Body::Presence(p) => assert_eq!(child_text("status"), p.status),
        _ => {}
    }
}
