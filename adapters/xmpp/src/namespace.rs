use tokio_xmpp::minidom::{Element, Node};

pub(crate) const CLIENT: &str = "jabber:client";
pub(crate) const COMPONENT: &str = "jabber:component:accept";

/// Moves `element` and its descendants from namespace `from` to `to`; other namespaces (payloads)
/// are left alone.
pub(crate) fn renamespace(mut element: Element, from: &str, to: &str) -> Element {
    let namespace = element.ns();
    let mut moved = Element::bare(element.name(), if namespace == from { to.to_owned() } else { namespace });
    *moved.attrs_mut() = element.attrs().clone();
    for node in element.take_nodes() {
        match node {
            Node::Element(child) => {
                moved.append_child(renamespace(child, from, to));
            }
            Node::Text(text) => moved.append_text_node(text),
        }
    }
    moved
}

pub fn to_client(element: Element) -> Element {
    renamespace(element, COMPONENT, CLIENT)
}

pub fn to_component(element: Element) -> Element {
    renamespace(element, CLIENT, COMPONENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_namespaces_move_and_payloads_stay() {
        let element: Element = "<message xmlns='jabber:component:accept' to='a@b'><body>hi</body><request xmlns='urn:xmpp:receipts'/></message>"
            .parse()
            .expect("xml");
        let client = to_client(element);
        assert_eq!(client.ns(), CLIENT);
        assert_eq!(client.get_child("body", CLIENT).map(Element::text), Some("hi".into()));
        assert!(client.has_child("request", "urn:xmpp:receipts"));
        assert_eq!(client.attr("to"), Some("a@b"));
        let back = to_component(client);
        assert!(back.has_child("body", COMPONENT));
    }
}
