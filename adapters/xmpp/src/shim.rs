//! tokio-xmpp built without its `component` feature (which would switch every stanza type of the
//! build to the component namespace) insists on `version='1.0'` in the peer's stream header.
//! Prosody and ejabberd leave it out on component streams, as XEP-0114 allows. This reader adds
//! it to the first `<stream:stream …>` tag and passes everything else through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Give up patching (and pass bytes through) if the header is not found this early.
const HEADER_LIMIT: usize = 4096;

pub(crate) struct VersionShim<S> {
    inner: S,
    /// Bytes read while looking for the end of the stream header.
    pending: Vec<u8>,
    /// Patched bytes not yet handed to the reader.
    ready: Vec<u8>,
    done: bool,
}

impl<S> VersionShim<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, pending: Vec::new(), ready: Vec::new(), done: false }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Patches the stream header in `bytes` if it is complete there; `None` when more is needed.
pub(crate) fn patch_header(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let start = text.find("<stream:stream")?;
    let end = start + text[start..].find('>')?;
    let tag = &text[start..end];
    if tag.contains("version=") {
        return Some(bytes.to_vec());
    }
    let insert_at = if tag.ends_with('/') { end - 1 } else { end };
    let mut patched = bytes[..insert_at].to_vec();
    patched.extend_from_slice(b" version='1.0'");
    patched.extend_from_slice(&bytes[insert_at..]);
    Some(patched)
}

impl<S: AsyncRead + Unpin> AsyncRead for VersionShim<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 1024];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = chunk_buf.filled();
                    if filled.is_empty() {
                        // End of stream before a header: hand over what there is.
                        this.done = true;
                        this.ready = std::mem::take(&mut this.pending);
                        if this.ready.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    this.pending.extend_from_slice(filled);
                    if let Some(patched) = patch_header(&this.pending) {
                        this.ready = patched;
                        this.pending.clear();
                        this.done = true;
                    } else if this.pending.len() > HEADER_LIMIT {
                        this.ready = std::mem::take(&mut this.pending);
                        this.done = true;
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for VersionShim<S> {
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

    #[test]
    fn adds_a_missing_version_and_keeps_a_present_one() {
        let prosody = b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='gw.localhost'><handshake/>";
        let patched = String::from_utf8(patch_header(prosody).expect("complete")).expect("utf8");
        assert!(patched.contains("from='gw.localhost' version='1.0'><handshake/>"), "{patched}");
        let versioned = b"<stream:stream id='x' version='1.0'>";
        assert_eq!(patch_header(versioned).expect("complete"), versioned.to_vec());
        assert_eq!(patch_header(b"<stream:stream id='x"), None);
    }

    #[tokio::test]
    async fn patches_a_header_split_across_reads() {
        let (mut writer, reader) = tokio::io::duplex(8);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in ["<stream:str", "eam id='1' f", "rom='d'>", "<x/>"] {
                writer.write_all(part.as_bytes()).await.expect("write");
            }
        });
        let mut shim = VersionShim::new(reader);
        let mut out = String::new();
        shim.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "<stream:stream id='1' from='d' version='1.0'><x/>");
    }
}
