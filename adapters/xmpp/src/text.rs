//! Stanzas written straight to XML text, for what the link sends per message.
//!
//! Building each outbound message as a minidom tree and having tokio-xmpp serialise and then free
//! it was over a third of the gateway's instructions per message on MQTT→XMPP. The stanzas the
//! gateway writes have a handful of fixed shapes, so they are written here directly: element
//! names and namespaces are constants, and every value (addresses, ids, texts) is escaped.
//!
//! rxml, which tokio-xmpp writes with, keeps its escaping private; this does the same job: `&`,
//! `<` and `>` everywhere, quotes and white space in attribute values (so that they read back
//! unchanged after attribute-value normalisation) and `\r` everywhere (end-of-line handling
//! would turn it into `\n`). A character XML 1.0 cannot carry becomes U+FFFD: frames refuse such
//! text before it gets here, and one bad character must not break the component's stream.

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// XML text being written into a buffer. The first element opened may declare the stanza
/// namespace (`jabber:client` for a stanza read on its own); on the link none is written, the
/// stream's default `jabber:component:accept` applies.
pub(crate) struct XmlText<'a> {
    out: &'a mut Vec<u8>,
    namespace: Option<&'static str>,
}

impl<'a> XmlText<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>, namespace: Option<&'static str>) -> Self {
        Self { out, namespace }
    }

    /// `<name`, with the stanza namespace if this is the top element; attributes may follow. An
    /// element of another namespace is a child, declaring its own (`marker`, `origin-id`).
    pub(crate) fn open(&mut self, name: &str) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        if let Some(namespace) = self.namespace.take() {
            self.attr_const("xmlns", namespace);
        }
    }

    pub(crate) fn attr(&mut self, name: &str, value: &str) {
        self.attr_parts(name, &[value]);
    }

    /// An attribute whose value is written in the code (a namespace, a type): nothing in it
    /// needs escaping, so it is copied as it is. Values from anywhere else go through `attr`.
    pub(crate) fn attr_const(&mut self, name: &str, value: &'static str) {
        debug_assert!(!value.bytes().any(|byte| SPECIAL[usize::from(byte)]), "{value} needs escaping");
        self.out.push(b' ');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"='");
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'\'');
    }

    /// An attribute whose value is the concatenation of `parts` (an address put together).
    pub(crate) fn attr_parts(&mut self, name: &str, parts: &[&str]) {
        self.out.push(b' ');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"='");
        for part in parts {
            escape(self.out, part, true);
        }
        self.out.push(b'\'');
    }

    /// An attribute whose value is `text` followed by what was escaped once before (the part of
    /// an address that is the same in every stanza).
    pub(crate) fn attr_then(&mut self, name: &str, text: &str, escaped: &Escaped) {
        self.out.push(b' ');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"='");
        escape(self.out, text, true);
        self.out.extend_from_slice(escaped.0.as_bytes());
        self.out.push(b'\'');
    }

    /// Ends the start tag of an element that has content.
    pub(crate) fn content(&mut self) {
        self.out.push(b'>');
    }

    /// Ends an element without content.
    pub(crate) fn empty(&mut self) {
        self.out.extend_from_slice(b"/>");
    }

    pub(crate) fn close(&mut self, name: &str) {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'>');
    }

    /// `<name>text</name>` in the stanza namespace.
    pub(crate) fn text_element(&mut self, name: &str, text: &str) {
        self.open(name);
        self.content();
        escape(self.out, text, false);
        self.close(name);
    }

    /// `<name xmlns='namespace'/>`, declaring only its own namespace even as the top element.
    pub(crate) fn marker(&mut self, name: &str, namespace: &'static str) {
        self.namespace = None;
        self.open(name);
        self.attr_const("xmlns", namespace);
        self.empty();
    }
}

/// Text escaped for an attribute value, once, to be written into many.
#[derive(Clone, Debug)]
pub(crate) struct Escaped(String);

impl Escaped {
    pub(crate) fn attribute_value(text: &str) -> Self {
        let mut out = Vec::with_capacity(text.len());
        escape(&mut out, text, true);
        // Escaping replaces whole characters with ASCII, so what was UTF-8 still is.
        Self(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Bytes that may need more than copying: control characters, markup, quotes, and 0xEF, which
/// starts U+FFFE and U+FFFF. Most text has none: eight bytes at a time are tested for them first
/// (`any_special`), and the table is looked up only within eight that hold one.
const SPECIAL: [bool; 256] = {
    let mut special = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        special[byte] = true;
        byte += 1;
    }
    special[b'&' as usize] = true;
    special[b'<' as usize] = true;
    special[b'>' as usize] = true;
    special[b'\'' as usize] = true;
    special[b'"' as usize] = true;
    special[0xef] = true;
    special
};

/// Whether any of the eight bytes in `word` is one [`SPECIAL`] marks. Each test is exact for
/// "any byte": a borrow only runs on from a byte that already matched.
fn any_special(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    // `&` (0x26) and `'` (0x27) differ in their lowest bit, `<` (0x3c) and `>` (0x3e) in the
    // next one: setting that bit tests each pair at once.
    below_space
        || has_zero((word | ONES) ^ (ONES * u64::from(b'\'')))
        || has_zero((word | (ONES * 0x02)) ^ (ONES * u64::from(b'>')))
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * 0xef))
}

/// Appends `text` to `out` as character data (or an attribute value) that reads back as `text`.
fn escape(out: &mut Vec<u8>, text: &str, attribute: bool) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut at = 0;
    // Up to here, bytes are looked at one by one: eight that failed the test, or the last few.
    let mut one_by_one_until = 0;
    while at < bytes.len() {
        if at >= one_by_one_until {
            // Most text needs nothing: eight bytes are passed over with one test.
            match bytes[at..].first_chunk::<8>() {
                Some(word) if !any_special(u64::from_ne_bytes(*word)) => {
                    at += 8;
                    continue;
                }
                // Not tested again until past these eight: text dense with special bytes (lines,
                // full-width punctuation, which starts with 0xEF) would test each place eight times.
                Some(_) => one_by_one_until = at + 8,
                None => one_by_one_until = bytes.len(),
            }
        }
        if !SPECIAL[usize::from(bytes[at])] {
            at += 1;
            continue;
        }
        let (replacement, len): (&[u8], usize) = match bytes[at] {
            b'&' => (b"&amp;", 1),
            b'<' => (b"&lt;", 1),
            b'>' => (b"&gt;", 1),
            b'\r' => (b"&#13;", 1),
            b'\'' if attribute => (b"&apos;", 1),
            b'"' if attribute => (b"&quot;", 1),
            b'\t' if attribute => (b"&#9;", 1),
            b'\n' if attribute => (b"&#10;", 1),
            b'\t' | b'\n' => {
                at += 1;
                continue;
            }
            0..=0x1f => (REPLACEMENT, 1),
            // U+FFFE and U+FFFF (EF BF BE, EF BF BF in UTF-8).
            0xef if bytes.get(at + 1) == Some(&0xbf) && matches!(bytes.get(at + 2), Some(0xbe | 0xbf)) => (REPLACEMENT, 3),
            _ => {
                at += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[copied..at]);
        out.extend_from_slice(replacement);
        at += len;
        copied = at;
    }
    out.extend_from_slice(&bytes[copied..]);
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::minidom::Element;

    use super::*;

    fn written(build: impl FnOnce(&mut XmlText<'_>)) -> Element {
        let mut out = Vec::new();
        build(&mut XmlText::new(&mut out, Some("jabber:client")));
        let text = String::from_utf8(out).expect("UTF-8");
        text.parse().unwrap_or_else(|error| panic!("not well-formed ({error}): {text}"))
    }

    #[test]
    fn text_and_attribute_values_read_back_unchanged() {
        let awkward = "<b> & 'q' \"qq\" ]]> é 👋\r\n\tend";
        let suffix = Escaped::attribute_value("@c'd/\"é\"");
        let element = written(|xml| {
            xml.open("message");
            xml.attr("id", awkward);
            xml.attr_then("to", "x<y", &suffix);
            xml.attr_parts("from", &["a&b", "@", "c'd"]);
            xml.content();
            xml.text_element("body", awkward);
            xml.close("message");
        });
        assert_eq!(element.attr("id"), Some(awkward));
        assert_eq!(element.attr("from"), Some("a&b@c'd"));
        assert_eq!(element.attr("to"), Some("x<y@c'd/\"é\""));
        assert_eq!(element.get_child("body", "jabber:client").map(Element::text).as_deref(), Some(awkward));
    }

    /// What `escape` must write, a character at a time.
    fn escaped_slowly(text: &str, attribute: bool) -> String {
        text.chars()
            .map(|c| match c {
                '&' => "&amp;".to_owned(),
                '<' => "&lt;".to_owned(),
                '>' => "&gt;".to_owned(),
                '\r' => "&#13;".to_owned(),
                '\'' if attribute => "&apos;".to_owned(),
                '"' if attribute => "&quot;".to_owned(),
                '\t' if attribute => "&#9;".to_owned(),
                '\n' if attribute => "&#10;".to_owned(),
                '\t' | '\n' => c.to_string(),
                '\u{0}'..='\u{1f}' | '\u{FFFE}' | '\u{FFFF}' => "\u{FFFD}".to_owned(),
                c => c.to_string(),
            })
            .collect()
    }

    #[test]
    fn every_character_is_escaped_wherever_it_falls() {
        let characters = ['&', '<', '>', '\'', '"', '\r', '\t', '\n', '\u{0}', '\u{1f}', ' ', '=', '?', 'é', '\u{FFFD}', '\u{FFFE}', '\u{FFFF}', '\u{ef}', '👋'];
        for len in 1..=19 {
            for at in 0..len {
                for c in characters {
                    let text: String = (0..len).map(|i| if i == at { c } else { 'a' }).collect();
                    for attribute in [false, true] {
                        let mut out = Vec::new();
                        escape(&mut out, &text, attribute);
                        assert_eq!(String::from_utf8(out).expect("UTF-8"), escaped_slowly(&text, attribute), "{text:?}");
                    }
                }
            }
        }
        // Special bytes close together, and across the eight-byte steps.
        let dense = "x\n<b>\n&c'd\"e\r\u{FFFE}f，！\u{FFFF}\t".repeat(5);
        for start in 0..12 {
            let text = &dense[dense.char_indices().nth(start).map_or(0, |(at, _)| at)..];
            for attribute in [false, true] {
                let mut out = Vec::new();
                escape(&mut out, text, attribute);
                assert_eq!(String::from_utf8(out).expect("UTF-8"), escaped_slowly(text, attribute), "{text:?}");
            }
        }
    }

    #[test]
    fn characters_xml_cannot_carry_are_replaced_not_written() {
        let element = written(|xml| xml.text_element("body", "a\u{0}b\u{1b}c\u{FFFE}d\u{FFFF}e\u{FFFD}"));
        assert_eq!(element.text(), "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}");
    }

    #[test]
    fn only_the_top_element_declares_the_namespace() {
        let mut out = Vec::new();
        let mut xml = XmlText::new(&mut out, Some("jabber:client"));
        xml.open("message");
        xml.content();
        xml.text_element("body", "x");
        xml.marker("request", "urn:xmpp:receipts");
        xml.close("message");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "<message xmlns='jabber:client'><body>x</body><request xmlns='urn:xmpp:receipts'/></message>"
        );
        let mut out = Vec::new();
        XmlText::new(&mut out, None).text_element("body", "x");
        assert_eq!(out, b"<body>x</body>");
        let mut out = Vec::new();
        XmlText::new(&mut out, Some("jabber:client")).marker("ping", "urn:xmpp:ping");
        assert_eq!(out, b"<ping xmlns='urn:xmpp:ping'/>");
    }
}
