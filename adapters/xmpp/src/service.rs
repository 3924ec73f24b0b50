//! What the component answers itself: service discovery, ping, software version (XEP-0030,
//! XEP-0199, XEP-0092). Everything else gets `service-unavailable`.

use tokio_xmpp::minidom::Element;

use crate::convert::{CHATSTATES, Condition, MARKERS, RECEIPTS, error_reply, ncname};
use crate::namespace::CLIENT;

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const PING: &str = "urn:xmpp:ping";
const VERSION: &str = "jabber:iq:version";

/// The features the component really supports, for disco#info.
const FEATURES: &[&str] = &[DISCO_INFO, PING, VERSION, RECEIPTS, MARKERS, CHATSTATES];

/// The answer to an IQ get or set addressed to the component or one of its users.
pub fn answer(iq: &Element, component: &str) -> Element {
    // RFC 6120 §8.2.3: a get or a set carries exactly one payload.
    let mut payloads = iq.children();
    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
        return error_reply(iq, Condition::BadRequest);
    };
    let get = iq.attr("type") == Some("get");
    let to_component = iq.attr("to") == Some(component);
    let namespace = payload.ns();
    let query = match (get, payload.name(), namespace.as_str()) {
        (true, "query", DISCO_INFO) => {
            let identity = if to_component {
                Element::builder("identity", DISCO_INFO)
                    .attr(ncname("category"), "gateway")
                    .attr(ncname("type"), "mqtt")
                    .attr(ncname("name"), "Switchboard")
                    .build()
            } else {
                Element::builder("identity", DISCO_INFO)
                    .attr(ncname("category"), "account")
                    .attr(ncname("type"), "registered")
                    .build()
            };
            let mut query = Element::builder("query", DISCO_INFO).append(identity);
            for feature in FEATURES {
                query = query.append(Element::builder("feature", DISCO_INFO).attr(ncname("var"), *feature).build());
            }
            Some(query.build())
        }
        (true, "ping", PING) => None,
        (true, "query", VERSION) if to_component => Some(
            Element::builder("query", VERSION)
                .append(Element::builder("name", VERSION).append("Switchboard").build())
                .append(Element::builder("version", VERSION).append(env!("CARGO_PKG_VERSION")).build())
                .build(),
        ),
        _ => return error_reply(iq, Condition::ServiceUnavailable),
    };
    let mut result = Element::builder("iq", CLIENT).attr(ncname("type"), "result");
    for (ours, theirs) in [("from", "to"), ("to", "from"), ("id", "id")] {
        if let Some(value) = iq.attr(theirs) {
            result = result.attr(ncname(ours), value);
        }
    }
    match query {
        Some(query) => result.append(query).build(),
        None => result.build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disco_info_on_the_component_names_a_gateway() {
        let iq: Element = "<iq xmlns='jabber:client' type='get' id='d1' from='c@l/r' to='gw.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            .parse()
            .expect("xml");
        let result = answer(&iq, "gw.localhost");
        assert_eq!((result.attr("type"), result.attr("id"), result.attr("to")), (Some("result"), Some("d1"), Some("c@l/r")));
        let query = result.get_child("query", DISCO_INFO).expect("query");
        let identity = query.get_child("identity", DISCO_INFO).expect("identity");
        assert_eq!((identity.attr("category"), identity.attr("type"), identity.attr("name")), (Some("gateway"), Some("mqtt"), Some("Switchboard")));
        assert!(query.children().any(|f| f.attr("var") == Some(RECEIPTS)));
    }

    #[test]
    fn ping_is_answered_and_unknown_iqs_are_refused() {
        let ping: Element = "<iq xmlns='jabber:client' type='get' id='p1' from='c@l/r' to='gw.localhost'><ping xmlns='urn:xmpp:ping'/></iq>".parse().expect("xml");
        assert_eq!(answer(&ping, "gw.localhost").attr("type"), Some("result"));
        let odd: Element = "<iq xmlns='jabber:client' type='set' id='q1' from='c@l/r' to='gw.localhost'><query xmlns='jabber:iq:roster'/></iq>".parse().expect("xml");
        let refused = answer(&odd, "gw.localhost");
        assert_eq!(refused.attr("type"), Some("error"));
        assert!(refused.get_child("error", CLIENT).is_some_and(|e| e.has_child("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas")));
    }

    #[test]
    fn an_iq_without_exactly_one_payload_is_a_bad_request() {
        for xml in [
            "<iq xmlns='jabber:client' type='get' id='b1' from='c@l/r' to='gw.localhost'/>",
            "<iq xmlns='jabber:client' type='get' id='b1' from='c@l/r' to='gw.localhost'><ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/></iq>",
        ] {
            let iq: Element = xml.parse().expect("xml");
            let refused = answer(&iq, "gw.localhost");
            assert_eq!((refused.attr("type"), refused.attr("id")), (Some("error"), Some("b1")), "{xml}");
            assert!(refused.get_child("error", CLIENT).is_some_and(|e| e.has_child("bad-request", "urn:ietf:params:xml:ns:xmpp-stanzas")), "{xml}");
        }
    }
}
