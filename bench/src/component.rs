//! A bare XEP-0114 component: the XMPP server's own component path, without the gateway, as the
//! baseline of the gateway's XMPP rows (`<server> c2s->component`, `<server> component->c2s`).
//!
//! Hand-written on purpose: tokio-xmpp's `component` feature would switch every stanza of this
//! build, the c2s clients' included, to the component namespace (NOTES.md). The handshake digest
//! comes from xmpp-parsers; incoming XML is read with rxml, the parser tokio-xmpp itself uses.
//! One connection serves every sender (as the gateway's one link serves every user), each sender
//! with its own local part `bench<k>`; a receiver is `bench@component.localhost`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rxml::{AsyncReader, Event, Namespace};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use xmpp_parsers::component::Handshake;

use crate::load::{Recorder, SETUP_WAIT, SenderState};

/// The bare component's domain on both XMPP servers, apart from the gateway's `gw.localhost`.
pub const BARE_DOMAIN: &str = "component.localhost";
pub const BARE_SECRET: &str = "bench-bare-secret";

/// The receiver's address on the bare component.
pub fn receiver_jid() -> String {
    format!("bench@{BARE_DOMAIN}")
}

/// The address of sender `k` on the bare component.
pub fn sender_jid(k: usize) -> String {
    format!("bench{k}@{BARE_DOMAIN}")
}

pub enum Role {
    /// Hands every message body to the recorder.
    Receiver(Arc<Recorder>),
    /// Sends for these senders; an error bounced to `bench<k>` counts against sender `k`.
    Senders(Vec<Arc<SenderState>>),
}

type Reader = AsyncReader<BufReader<OwnedReadHalf>>;

pub struct ComponentConn {
    queue: Option<mpsc::Sender<String>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Drop for ComponentConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

fn set_failure(failure: &Mutex<Option<String>>, what: String) {
    let mut slot = failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(what);
    }
}

impl ComponentConn {
    /// Opens the stream on the server's component port and authenticates (bounded).
    pub async fn connect(port: u16, role: Role) -> anyhow::Result<Self> {
        let (reader, write) = tokio::time::timeout(SETUP_WAIT, handshake(port))
            .await
            .with_context(|| format!("component handshake not done within {SETUP_WAIT:?}"))??;
        let failure = Arc::new(Mutex::new(None::<String>));
        let (queue, outgoing) = mpsc::channel::<String>(64);
        let writer = tokio::spawn(write_loop(write, outgoing, failure.clone()));
        let reader = tokio::spawn(read_loop(reader, role, failure.clone()));
        Ok(Self { queue: Some(queue), reader, writer, failure })
    }

    /// The queue of serialised stanzas this connection writes.
    pub fn queue(&self) -> anyhow::Result<mpsc::Sender<String>> {
        self.queue.clone().context("component connection closed")
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Ends the stream once what is queued is written, bounded.
    pub async fn close(mut self) {
        self.queue = None;
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut self.writer).await;
    }
}

/// A chat message from sender `k` of the bare component, shaped as the gateway shapes one (an
/// id, XEP-0359 origin-id, a XEP-0184 receipt request, XEP-0333 markable, XEP-0085 active), so
/// that the server does the same work per message on both paths and the comparison measures the
/// gateway. The body, unique per message, is also its id. Bodies are the benchmark's own
/// (`load::body`: letters, digits and colons), so they need no escaping.
pub fn message(k: usize, to: &str, body: &str) -> String {
    format!(
        "<message from='{}' to='{to}' type='chat' id='{body}'><body>{body}</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='{body}'/><request xmlns='urn:xmpp:receipts'/>\
         <markable xmlns='urn:xmpp:chat-markers:0'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        sender_jid(k)
    )
}

async fn handshake(port: u16) -> anyhow::Result<(Reader, OwnedWriteHalf)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.context("component port")?;
    tcp.set_nodelay(true)?;
    let (read, mut write) = tcp.into_split();
    let mut reader = AsyncReader::new(BufReader::with_capacity(1 << 16, read));
    write
        .write_all(
            format!(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                 xmlns:stream='http://etherx.jabber.org/streams' to='{BARE_DOMAIN}'>"
            )
            .as_bytes(),
        )
        .await?;
    let id = loop {
        match reader.read().await? {
            Some(Event::StartElement(_, name, attrs)) if name.1.as_str() == "stream" => {
                break attrs.get(Namespace::none(), "id").context("stream header without an id")?.to_string();
            }
            Some(_) => {}
            None => bail!("stream closed before its header"),
        }
    };
    let digest = Handshake::from_stream_id_and_password(id, BARE_SECRET).data.context("no handshake digest")?;
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    write.write_all(format!("<handshake>{hex}</handshake>").as_bytes()).await?;
    loop {
        match reader.read().await? {
            Some(Event::StartElement(_, name, _)) if name.1.as_str() == "handshake" => {
                // Its end too, so that the stanza reader starts at the stream's depth.
                loop {
                    match reader.read().await? {
                        Some(Event::EndElement(_)) => return Ok((reader, write)),
                        Some(_) => {}
                        None => bail!("stream closed during the handshake"),
                    }
                }
            }
            Some(Event::StartElement(_, name, _)) if name.1.as_str() == "error" => {
                bail!("the server refused the component handshake (stream error)")
            }
            Some(_) => {}
            None => bail!("stream closed during the handshake"),
        }
    }
}

/// Writes queued stanzas, as many as are waiting in one write (one syscall for a burst).
async fn write_loop(mut write: OwnedWriteHalf, mut outgoing: mpsc::Receiver<String>, failure: Arc<Mutex<Option<String>>>) {
    let mut buffer = String::with_capacity(1 << 16);
    while let Some(stanza) = outgoing.recv().await {
        buffer.push_str(&stanza);
        while buffer.len() < 1 << 16
            && let Ok(stanza) = outgoing.try_recv()
        {
            buffer.push_str(&stanza);
        }
        if let Err(error) = write.write_all(buffer.as_bytes()).await {
            set_failure(&failure, format!("write: {error}"));
            return;
        }
        buffer.clear();
    }
    let _ = write.write_all(b"</stream:stream>").await;
    let _ = write.shutdown().await;
}

/// What the reader keeps of the stanza it is in.
#[derive(Default)]
struct Stanza {
    message: bool,
    error: bool,
    to: String,
    body: Option<String>,
    in_body: bool,
}

async fn read_loop(mut reader: Reader, role: Role, failure: Arc<Mutex<Option<String>>>) {
    // Depth 1 is inside the stream, 2 inside a stanza.
    let mut depth = 1usize;
    let mut stanza = Stanza::default();
    loop {
        let event = match reader.read().await {
            Ok(Some(event)) => event,
            Ok(None) => {
                set_failure(&failure, "stream ended".into());
                return;
            }
            Err(error) => {
                set_failure(&failure, format!("read: {error}"));
                return;
            }
        };
        match event {
            Event::StartElement(_, name, attrs) => {
                if depth == 1 {
                    let attr = |key: &str| attrs.get(Namespace::none(), key).map(ToString::to_string);
                    stanza = Stanza {
                        message: name.1.as_str() == "message",
                        error: attr("type").as_deref() == Some("error") || name.1.as_str() == "error",
                        to: attr("to").unwrap_or_default(),
                        ..Stanza::default()
                    };
                } else if depth == 2 && name.1.as_str() == "body" {
                    stanza.in_body = true;
                    stanza.body = Some(String::new());
                }
                depth += 1;
            }
            Event::Text(_, text) if stanza.in_body => {
                if let Some(body) = stanza.body.as_mut() {
                    body.push_str(&text);
                }
            }
            Event::EndElement(_) => {
                depth -= 1;
                stanza.in_body = false;
                if depth == 1 {
                    on_stanza(&role, &std::mem::take(&mut stanza));
                } else if depth == 0 {
                    set_failure(&failure, "stream closed by the server".into());
                    return;
                }
            }
            _ => {}
        }
    }
}

fn on_stanza(role: &Role, stanza: &Stanza) {
    match role {
        Role::Receiver(recorder) if stanza.error => recorder.on_error(format!("error stanza to {}", stanza.to)),
        Role::Receiver(recorder) if stanza.message => {
            if let Some(body) = &stanza.body {
                recorder.on_text(body);
            }
        }
        Role::Senders(states) if stanza.error => {
            // Bounced to `bench<k>@…`: sender k's message will not arrive.
            let k = stanza.to.strip_prefix("bench").and_then(|rest| rest.split('@').next()?.parse::<usize>().ok());
            if let Some(state) = k.and_then(|k| states.get(k)) {
                state.on_error_stanza(format!("error stanza to {}", stanza.to));
            }
        }
        _ => {}
    }
}
