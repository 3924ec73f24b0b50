//! JSON text for the two frames written once per message (`message`, `ack`), written straight
//! into one string.
//!
//! serde_json writes the same bytes, but through its `Serializer` every key and value is a
//! separate escaped write (callgrind: about a tenth of a WebSocket message's instructions); the
//! other frames are rare and still go through serde. Strings are escaped exactly as serde_json
//! escapes them (`"`, `\`, and control characters; nothing else), so a client cannot tell which
//! wrote a frame; the unit tests compare both on awkward text.

use std::fmt::{self, Write};

/// What each byte becomes inside a JSON string: 0 for itself, `u` for `\u00XX`, else the letter
/// after a backslash.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `text` as a JSON string, quotes included.
pub(crate) fn push_string(out: &mut String, text: &str) {
    out.push('"');
    push_escaped(out, text);
    out.push('"');
}

/// Appends `text` escaped for the inside of a JSON string.
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        // Most text needs no escaping: eight bytes are passed over with one test.
        if let Some(word) = bytes[at..].first_chunk::<8>()
            && !any_needs_escape(u64::from_ne_bytes(*word))
        {
            at += 8;
            continue;
        }
        let escape = ESCAPE[usize::from(byte)];
        if escape != 0 {
            // Every byte that needs escaping is ASCII, so `at` is on a character boundary.
            out.push_str(&text[plain_from..at]);
            out.push('\\');
            if escape == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            } else {
                out.push(char::from(escape));
            }
            plain_from = at + 1;
        }
        at += 1;
    }
    out.push_str(&text[plain_from..]);
}

/// Whether any of the eight bytes in `word` is a control character, `"` or `\\` (the bytes
/// [`ESCAPE`] marks). Each test is exact for "any byte": a borrow only runs on from a byte that
/// already matched.
fn any_needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space || has_zero(word ^ (ONES * u64::from(b'"'))) || has_zero(word ^ (ONES * u64::from(b'\\')))
}

/// Appends what is formatted into it escaped, so that a value with a `Display` (an address) is
/// written into a JSON string without a string of its own first.
pub(crate) struct Escaping<'a>(pub(crate) &'a mut String);

impl Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, text);
        out
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut awkward: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote \" backslash \\ slash / done".into(),
            "h\u{e9}llo \u{1F44B} \u{7f} \u{2028} \u{fffd}".into(),
            "\"\\\"".into(),
            "ends with a control\u{1}".into(),
        ];
        awkward.extend((0u8..0x20).map(|byte| format!("a{}b", char::from(byte))));
        for text in &awkward {
            let expected = serde_json::to_string(text).expect("a string serialises");
            assert_eq!(written(text), expected, "for {text:?}");
            let back: String = serde_json::from_str(&written(text)).expect("valid JSON");
            assert_eq!(&back, text);
        }
    }

    #[test]
    fn every_escaped_byte_is_found_wherever_it_falls_in_a_word() {
        let specials = (0u8..0x20).chain([b'"', b'\\']).map(char::from);
        // Neighbours that sit next to the specials in value, and multi-byte characters.
        let fillers = ['a', ' ', '!', '#', '[', ']', '\u{7f}', '\u{e9}', '\u{1F44B}'];
        for special in specials {
            for filler in fillers {
                for len in 1..=19 {
                    for position in 0..len {
                        let text: String =
                            (0..len).map(|at| if at == position { special } else { filler }).collect();
                        let expected = serde_json::to_string(&text).expect("a string serialises");
                        assert_eq!(written(&text), expected, "for {text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn formatted_values_are_escaped_piece_by_piece() {
        let mut out = String::from("\"");
        let (user, domain) = ("a\"b", "c\\d");
        write!(Escaping(&mut out), "{user}@{domain}").expect("writing to a string cannot fail");
        out.push('"');
        assert_eq!(out, serde_json::to_string("a\"b@c\\d").expect("a string serialises"));
    }
}
