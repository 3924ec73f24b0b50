//! Building each stanza read from the link into a minidom element.
//!
//! xso's own builder for `Element` inserts the attributes of every element one by one into a new
//! map, although the parser has just built that map: a B-tree search comparing namespace and name
//! strings per attribute, about 4 % of the gateway's CPU on XMPP→MQTT (four attributes on each
//! message ejabberd routes). This builder gives the element the parser's map as it is and is
//! otherwise the same: the same tree, text nodes as the parser cuts them, the XML declaration
//! skipped. It keeps the open elements on a stack instead of one boxed builder per level.

use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::{AttrMap, Event, QName};
use xso::error::{Error, FromEventsError};
use xso::{Context, FromEventsBuilder, FromXml};

/// An element read from the link, top-level stanzas and stream-level elements alike.
#[derive(Debug)]
pub(crate) struct ReadElement(pub(crate) Element);

impl FromXml for ReadElement {
    type Builder = ReadElementBuilder;

    fn from_events(name: QName, attributes: AttrMap, _context: &Context<'_>) -> Result<Self::Builder, FromEventsError> {
        let mut open = Vec::with_capacity(4);
        open.push(element(name, attributes));
        Ok(ReadElementBuilder { open })
    }
}

pub(crate) struct ReadElementBuilder {
    /// The elements started and not yet ended, outermost first.
    open: Vec<Element>,
}

/// Fed an event after its element ended: the stream reader never does that (it stops at the end).
const OUT_OF_ORDER: Error = Error::Other("event after the end of the element");

impl FromEventsBuilder for ReadElementBuilder {
    type Output = ReadElement;

    fn feed(&mut self, event: Event, _context: &Context<'_>) -> Result<Option<ReadElement>, Error> {
        if self.open.is_empty() {
            return Err(OUT_OF_ORDER);
        }
        match event {
            Event::XmlDeclaration(..) => {}
            Event::StartElement(_, name, attributes) => self.open.push(element(name, attributes)),
            Event::Text(_, text) => self.open.last_mut().ok_or(OUT_OF_ORDER)?.append_text_node(text),
            Event::EndElement(_) => {
                let ended = self.open.pop().ok_or(OUT_OF_ORDER)?;
                match self.open.last_mut() {
                    Some(parent) => {
                        parent.append_child(ended);
                    }
                    None => return Ok(Some(ReadElement(ended))),
                }
            }
        }
        Ok(None)
    }
}

fn element((namespace, name): QName, attributes: AttrMap) -> Element {
    let mut element = Element::bare(name, namespace);
    *element.attrs_mut() = attributes;
    element
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::minidom::rxml::parser::EventMetrics;
    use tokio_xmpp::minidom::rxml::{Namespace, NcName, Reader};

    use super::*;

    /// Reads `xml` (a document of one element) with `T`'s builder, as the stream reader does.
    fn read<T: FromXml>(xml: &str) -> T {
        let mut parser = Reader::new(xml.as_bytes());
        let mut builder = None;
        loop {
            let event = parser.read().expect("well-formed").expect("an event before the end");
            match (&mut builder, event) {
                (None, Event::XmlDeclaration(..)) => {}
                (None, Event::StartElement(_, name, attributes)) => {
                    builder = Some(T::from_events(name, attributes, &Context::empty()).expect("accepted"));
                }
                (None, event) => panic!("{event:?} before the element"),
                (Some(builder), event) => {
                    if let Some(done) = builder.feed(event, &Context::empty()).expect("built") {
                        return done;
                    }
                }
            }
        }
    }

    #[test]
    fn builds_the_same_tree_as_the_element_builder() {
        let stanzas = [
            "<message xmlns='jabber:component:accept' xml:lang='en' to='rcv@gw.localhost' from='a@localhost/r' type='chat' id='m1'><body>x &amp; y</body></message>",
            "<message xmlns='jabber:client' from='a@l' to='b@gw'><body>one</body><request xmlns='urn:xmpp:receipts'/><x:y xmlns:x='urn:x' x:z='1'>t<w/>u</x:y><thread parent='p'>t1</thread></message>",
            "<presence xmlns='jabber:component:accept' from='a@l/r' to='b@gw'><show>away</show><status>out &lt;here&gt;</status><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
            "<iq xmlns='jabber:component:accept' type='get' id='q' from='a@l/r' to='gw'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "<handshake xmlns='jabber:component:accept'/>",
            "<message xmlns='jabber:client'><a><b><c><d>deep</d></c></b></a>tail</message>",
        ];
        for xml in stanzas {
            let ReadElement(ours) = read::<ReadElement>(xml);
            let theirs = read::<Element>(xml);
            assert_eq!(ours, theirs, "{xml}");
            assert_eq!(String::from(&ours), String::from(&theirs), "{xml}");
            assert_eq!(ours.attrs(), theirs.attrs(), "{xml}");
        }
    }

    #[test]
    fn an_event_after_the_end_is_an_error_not_a_panic() {
        let mut builder = ReadElement::from_events(
            (Namespace::NONE, NcName::try_from("a").expect("a name")),
            AttrMap::new(),
            &Context::empty(),
        )
        .expect("accepted");
        let end = || Event::EndElement(EventMetrics::zero());
        assert!(matches!(builder.feed(end(), &Context::empty()), Ok(Some(_))));
        assert!(builder.feed(end(), &Context::empty()).is_err());
        let start = Event::StartElement(EventMetrics::zero(), (Namespace::NONE, NcName::try_from("b").expect("a name")), AttrMap::new());
        assert!(builder.feed(start, &Context::empty()).is_err(), "no second element from one builder");
    }
}
