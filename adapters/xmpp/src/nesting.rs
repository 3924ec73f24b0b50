//! A bound on how deeply the server's stream may nest elements, enforced before the XML parser.
//!
//! The stanza builder (`read.rs`) keeps its open elements on a stack, but the minidom tree it
//! builds is printed, converted and dropped by recursion, once per level. A stanza nested a few
//! thousand levels deep, which any XMPP user can send through a federated server, would overflow
//! the stack and abort the whole gateway. No stanza the gateway understands nests more than a
//! handful of levels, so this reader counts the nesting in the bytes themselves and fails the
//! stream, as not-well-formed XML does, when it goes beyond [`MAX_DEPTH`]. Bytes before the
//! offending tag are handed over first: stanzas that came before it are not lost.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Levels of elements allowed inside the stream element, the stanza itself included.
pub(crate) const MAX_DEPTH: usize = 64;

/// Where the scanner is in the XML text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Text,
    /// Just after `<`.
    Open,
    /// Inside a start tag; `quote` while in an attribute value, `slash` right after a `/`.
    StartTag { quote: Option<u8>, slash: bool },
    /// After `<!`, matching `--` or `[CDATA[`: how many bytes of each still match.
    Bang { comment: usize, cdata: usize },
    /// Skipping to the end of a construct: `>` after at least `need` times `repeat` (`-->`,
    /// `]]>`, `?>`, or a plain `>`).
    Skip { repeat: u8, need: u8, seen: u8 },
}

const COMMENT_OPEN: &[u8] = b"--";
const CDATA_OPEN: &[u8] = b"[CDATA[";

/// Tracks the element depth of an XML stream across reads, looking only at the bytes that can
/// change it.
#[derive(Debug)]
pub(crate) struct Nesting {
    state: State,
    depth: usize,
    /// Elements allowed below the stream element.
    max: usize,
}

impl Nesting {
    pub fn new(max: usize) -> Self {
        Self { state: State::Text, depth: 0, max }
    }

    /// Scans `bytes`; returns the offset of the byte that nests too deep, if any.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            // Most bytes cannot change anything: character data up to a `<`, an attribute value
            // up to its quote, and in a start tag the names, white space and `=` up to a quote
            // or the `>` (where only whether a `/` came just before matters). Jump over them
            // instead of stepping through each.
            let rest = &bytes[at..];
            let next = match self.state {
                State::Text => memchr::memchr(b'<', rest),
                State::StartTag { quote: Some(quote), .. } => memchr::memchr(quote, rest),
                State::StartTag { quote: None, slash } => {
                    let next = memchr::memchr3(b'\'', b'"', b'>', rest);
                    let skipped = &rest[..next.unwrap_or(rest.len())];
                    let slash = skipped.last().map_or(slash, |&last| last == b'/');
                    self.state = State::StartTag { quote: None, slash };
                    next
                }
                _ => Some(0),
            };
            match next {
                Some(skipped) => at += skipped,
                None => return None,
            }
            let byte = bytes[at];
            self.state = match self.state {
                State::Text => {
                    if byte == b'<' {
                        State::Open
                    } else {
                        State::Text
                    }
                }
                State::Open => match byte {
                    b'/' => {
                        self.depth = self.depth.saturating_sub(1);
                        State::Skip { repeat: 0, need: 0, seen: 0 }
                    }
                    b'!' => State::Bang { comment: 0, cdata: 0 },
                    b'?' => State::Skip { repeat: b'?', need: 1, seen: 0 },
                    _ => State::StartTag { quote: None, slash: false },
                },
                State::StartTag { quote: Some(quote), .. } => {
                    State::StartTag { quote: (byte != quote).then_some(quote), slash: false }
                }
                State::StartTag { quote: None, slash } => match byte {
                    b'\'' | b'"' => State::StartTag { quote: Some(byte), slash: false },
                    b'/' => State::StartTag { quote: None, slash: true },
                    b'>' if slash => State::Text,
                    b'>' => {
                        self.depth += 1;
                        // The stream element itself is the first level.
                        if self.depth > self.max + 1 {
                            return Some(at);
                        }
                        State::Text
                    }
                    _ => State::StartTag { quote: None, slash: false },
                },
                State::Bang { comment, cdata } => {
                    let comment = (COMMENT_OPEN.get(comment) == Some(&byte)).then(|| comment + 1);
                    let cdata = (CDATA_OPEN.get(cdata) == Some(&byte)).then(|| cdata + 1);
                    match (comment, cdata) {
                        (Some(n), _) if n == COMMENT_OPEN.len() => State::Skip { repeat: b'-', need: 2, seen: 0 },
                        (_, Some(n)) if n == CDATA_OPEN.len() => State::Skip { repeat: b']', need: 2, seen: 0 },
                        (None, None) => State::Skip { repeat: 0, need: 0, seen: 0 },
                        (comment, cdata) => State::Bang { comment: comment.unwrap_or(usize::MAX), cdata: cdata.unwrap_or(usize::MAX) },
                    }
                }
                State::Skip { repeat, need, seen } => {
                    if byte == b'>' && seen >= need {
                        State::Text
                    } else if byte == repeat {
                        State::Skip { repeat, need, seen: (seen + 1).min(need) }
                    } else {
                        State::Skip { repeat, need, seen: 0 }
                    }
                }
            };
            at += 1;
        }
        None
    }
}

/// A reader that fails once the stream nests deeper than its bound.
pub(crate) struct NestingGuard<S> {
    inner: S,
    nesting: Nesting,
    /// Set once the bound is crossed: every read from then on fails.
    failed: bool,
}

impl<S> NestingGuard<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, nesting: Nesting::new(MAX_DEPTH), failed: false }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn too_deep() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("a stanza nests elements more than {MAX_DEPTH} levels deep"))
}

impl<S: AsyncRead + Unpin> AsyncRead for NestingGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(Err(too_deep()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let Some(at) = this.nesting.scan(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        this.failed = true;
        if at == 0 {
            return Poll::Ready(Err(too_deep()));
        }
        // What came before the offending tag goes to the parser; the next read fails.
        buf.set_filled(before + at);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NestingGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' id='x'>";

    fn nested(depth: usize) -> String {
        format!("<message to='a@b'>{}{}</message>", "<x>".repeat(depth - 1), "</x>".repeat(depth - 1))
    }

    fn scan(text: &str) -> Option<usize> {
        Nesting::new(MAX_DEPTH).scan(text.as_bytes())
    }

    #[test]
    fn counts_elements_and_nothing_else() {
        assert_eq!(scan(&format!("{HEADER}{}", nested(MAX_DEPTH))), None, "the bound itself is fine");
        let deep = format!("{HEADER}{}", nested(MAX_DEPTH + 1));
        let at = scan(&deep).expect("one level too many");
        assert_eq!(&deep[..at + 1], format!("{HEADER}<message to='a@b'>{}", "<x>".repeat(MAX_DEPTH)));
        // Empty elements, end tags and what is not markup do not add up.
        let flat = format!("{HEADER}{}", "<message to='a>b' id=\"/>\"><body>a &gt; b</body><x/><y a='1'/></message>".repeat(1000));
        assert_eq!(scan(&flat), None);
        for hidden in ["<![CDATA[</x></x></x>]]>", "<!-- </x></x></x> -->", "<?pi </x></x></x>?>"] {
            let text = format!("{HEADER}<message>{hidden}{}", "<x>".repeat(MAX_DEPTH));
            assert!(scan(&text).is_some(), "end tags in {hidden} do not count");
        }
        let cdata = format!("{HEADER}<message><body><![CDATA[{}]]></body></message>", "<x>".repeat(1000));
        assert_eq!(scan(&cdata), None, "start tags in CDATA do not count");
    }

    #[test]
    fn keeps_its_place_across_reads() {
        let deep = format!("{HEADER}{}", nested(MAX_DEPTH + 1));
        let mut nesting = Nesting::new(MAX_DEPTH);
        let found = deep.as_bytes().chunks(3).enumerate().find_map(|(i, chunk)| nesting.scan(chunk).map(|at| i * 3 + at));
        assert_eq!(found, scan(&deep));
    }

    #[test]
    fn finds_the_same_place_whatever_the_reads_hold() {
        // Markup characters inside attribute values and text, split at every possible place:
        // fed a byte at a time, the scanner can jump over nothing.
        let stanza = "<message to='a>b' id=\"x'<y\"><body>1 &lt; 2 > 0 '\"</body><x a='/>'/><y /><z b=\"2\"/></message>";
        let deep = format!("{HEADER}{}<message a='<<'>{}", stanza.repeat(3), "<x b=\">\">".repeat(MAX_DEPTH));
        let expected = scan(&deep).expect("one level too many");
        assert_eq!(expected, deep.len() - 1, "the last start tag is the one too deep");
        for size in 1..=9 {
            let mut nesting = Nesting::new(MAX_DEPTH);
            let found = deep.as_bytes().chunks(size).enumerate().find_map(|(i, chunk)| nesting.scan(chunk).map(|at| i * size + at));
            assert_eq!(found, Some(expected), "reads of {size} bytes");
        }
    }

    #[tokio::test]
    async fn hands_over_what_came_before_then_fails() {
        let valid = "<message to='a@b'><body>kept</body></message>";
        let input = format!("{HEADER}{valid}{}", nested(10 * MAX_DEPTH));
        let mut guard = NestingGuard::new(input.as_bytes());
        let mut read = Vec::new();
        let error = guard.read_to_end(&mut read).await.expect_err("too deep");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let read = String::from_utf8(read).expect("utf8");
        assert!(read.starts_with(&format!("{HEADER}{valid}")), "{read}");
        assert!(read.len() < input.len());
    }
}
