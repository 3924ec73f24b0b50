//! A fake XMPP server's component port (XEP-0114), so that a test can write anything at the
//! gateway, bytes a real server would never forward included. It accepts the component stream,
//! checks the handshake, then writes what the test gives it and hands the test every stanza the
//! gateway writes back. Like a real server it routes the gateway's delivery pings (IQs from its
//! domain to its domain) back to it and answers its keep-alive pings. One connection at a time:
//! when the gateway drops the stream, the next connection is accepted and handshaken the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::{self, ReadError, StreamHeader, Timeouts, XmlStream};
use xmpp_parsers::component::Handshake;
use xmpp_parsers::stream_features::StreamFeatures;

use crate::common::WAIT;

pub const COMPONENT_NS: &str = "jabber:component:accept";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

pub struct FakeServer {
    pub address: SocketAddr,
    /// The component's domain, as the gateway must announce it.
    pub domain: String,
    /// The XMPP server's own domain (the component's parent): where keep-alive pings go.
    pub server_domain: String,
    pub secret: String,
    shared: Arc<Shared>,
    stanzas: mpsc::UnboundedReceiver<Element>,
    handshakes: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
    syncs: u64,
}

struct Shared {
    /// The write half of the live connection, if any.
    writer: Mutex<Option<OwnedWriteHalf>>,
    /// Why stream openings were refused, for the test's failure message.
    refusals: std::sync::Mutex<Vec<String>>,
    /// Correct handshakes still to answer with `host-unknown`, as a server does while the
    /// component's host is not yet loaded.
    to_refuse: std::sync::atomic::AtomicU64,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(domain: &str, secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake component port");
        let address = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            writer: Mutex::new(None),
            refusals: std::sync::Mutex::default(),
            to_refuse: std::sync::atomic::AtomicU64::new(0),
        });
        let (stanzas_tx, stanzas) = mpsc::unbounded_channel();
        let (handshakes_tx, handshakes) = watch::channel(0);
        let server_domain = domain.split_once('.').map_or(domain, |(_, parent)| parent).to_owned();
        let task = tokio::spawn(accept_loop(
            listener,
            domain.to_owned(),
            server_domain.clone(),
            secret.to_owned(),
            shared.clone(),
            stanzas_tx,
            handshakes_tx,
        ));
        Self {
            address,
            domain: domain.to_owned(),
            server_domain,
            secret: secret.to_owned(),
            shared,
            stanzas,
            handshakes,
            task,
            syncs: 0,
        }
    }

    /// The gateway configuration that joins this server as the component `domain`, which is also
    /// the gateway's own domain.
    pub fn gateway_config(&self) -> String {
        format!(
            "[gateway]\ndomain = \"{}\"\n[xmpp]\nserver = \"{}\"\nsecret = \"{}\"\n",
            self.domain, self.address, self.secret
        )
    }

    /// Answers the next `count` correct handshakes with a `host-unknown` stream error.
    pub fn refuse_next_handshakes(&self, count: u64) {
        self.shared.to_refuse.store(count, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many component streams have completed their handshake so far.
    pub fn handshakes(&self) -> u64 {
        *self.handshakes.borrow()
    }

    /// Waits until at least `count` streams have completed their handshake.
    pub async fn wait_handshakes(&mut self, count: u64) {
        let waited = tokio::time::timeout(WAIT, self.handshakes.wait_for(|done| *done >= count)).await.is_ok();
        let refusals = self.shared.refusals.lock().expect("not poisoned").clone();
        assert!(waited, "the gateway did not (re)connect: {} handshakes, waiting for {count}; refused: {refusals:?}", self.handshakes());
    }

    /// Writes `bytes` to the gateway at once.
    pub async fn write(&self, bytes: &[u8]) {
        self.write_in_pieces(bytes, bytes.len().max(1)).await;
    }

    /// Writes `bytes` in pieces of `size` bytes, each its own TCP segment, so the gateway's parser
    /// sees the input cut anywhere. Nothing else is written in between.
    pub async fn write_in_pieces(&self, bytes: &[u8], size: usize) {
        let mut writer = self.shared.writer.lock().await;
        let writer = writer.as_mut().expect("a live component stream to write to");
        for piece in bytes.chunks(size) {
            writer.write_all(piece).await.expect("write to the gateway");
            writer.flush().await.expect("flush to the gateway");
            // Lets the gateway's task read this piece before the next one is written.
            tokio::task::yield_now().await;
        }
    }

    /// The next stanza the gateway wrote (delivery and keep-alive pings excepted).
    pub async fn next_stanza(&mut self) -> Element {
        self.try_next_stanza().await.expect("a stanza from the gateway in time")
    }

    /// The next stanza the gateway writes, or `None` if none comes in time.
    pub async fn try_next_stanza(&mut self) -> Option<Element> {
        let next = tokio::time::timeout(WAIT, self.stanzas.recv()).await.ok()?;
        Some(next.expect("the fake server runs"))
    }

    /// Pings the component and returns everything else the gateway wrote before the answer: the
    /// component handles a stream in order, so every reply it gives at once to what was written
    /// earlier is among them.
    pub async fn sync(&mut self) -> Vec<Element> {
        self.syncs += 1;
        let id = format!("sync-{}", self.syncs);
        let ping = format!(
            "<iq type='get' id='{id}' from='{}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            self.server_domain, self.domain
        );
        self.write(ping.as_bytes()).await;
        let mut before = Vec::new();
        loop {
            let stanza = self.next_stanza().await;
            if stanza.name() == "iq" && stanza.attr("id") == Some(id.as_str()) {
                assert_eq!(stanza.attr("type"), Some("result"), "the component answers a ping: {}", String::from(&stanza));
                return before;
            }
            before.push(stanza);
        }
    }
}

/// The defined condition of an error stanza and its `type`, e.g. `("service-unavailable", "cancel")`.
pub fn error_condition(stanza: &Element) -> Option<(String, String)> {
    let error = stanza.get_child("error", COMPONENT_NS)?;
    let condition = error.children().find(|c| c.ns() == STANZAS && c.name() != "text")?;
    Some((condition.name().to_owned(), error.attr("type").unwrap_or_default().to_owned()))
}

async fn accept_loop(
    listener: TcpListener,
    domain: String,
    server_domain: String,
    secret: String,
    shared: Arc<Shared>,
    stanzas: mpsc::UnboundedSender<Element>,
    handshakes: watch::Sender<u64>,
) {
    let mut streams = 0u64;
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let _ = tcp.set_nodelay(true);
        streams += 1;
        let refuse = shared
            .to_refuse
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |left| left.checked_sub(1))
            .is_ok();
        let (mut stream, write_half) = match handshake(tcp, &domain, &secret, &format!("fake-stream-{streams}"), refuse).await {
            Ok(accepted) => accepted,
            Err(refusal) => {
                shared.refusals.lock().expect("not poisoned").push(refusal);
                continue;
            }
        };
        *shared.writer.lock().await = Some(write_half);
        handshakes.send_modify(|done| *done += 1);
        read_stanzas(&mut stream, &domain, &server_domain, &shared, &stanzas).await;
        *shared.writer.lock().await = None;
    }
}

type ReadHalf = tokio::io::Join<BufReader<tokio::net::tcp::OwnedReadHalf>, tokio::io::Sink>;

/// The server's side of a component's stream opening; `Err` says what was wrong with it.
async fn handshake(
    tcp: tokio::net::TcpStream,
    domain: &str,
    secret: &str,
    id: &str,
    refuse: bool,
) -> Result<(XmlStream<ReadHalf, Element>, OwnedWriteHalf), String> {
    let (read_half, mut write_half) = tcp.into_split();
    // The parser reads; every write goes through `write_half`, raw, so that the tests can write
    // anything. What the parser would write itself (our header) goes nowhere.
    let io = tokio::io::join(BufReader::new(read_half), tokio::io::sink());
    let timeouts = Timeouts { read_timeout: Duration::from_secs(600), response_timeout: Duration::from_secs(600) };
    let accepted = xmlstream::accept_stream(io, COMPONENT_NS, timeouts).await.map_err(|e| format!("stream header: {e}"))?;
    if accepted.header().to.as_deref() != Some(domain) {
        return Err(format!("the component asked for {:?}, not {domain}", accepted.header().to));
    }
    // As Prosody and ejabberd do: no `version` on a component stream.
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{COMPONENT_NS}' xmlns:stream='http://etherx.jabber.org/streams' id='{id}' from='{domain}'>"
    );
    write_half.write_all(header.as_bytes()).await.map_err(|e| e.to_string())?;
    let pending = accepted.send_header(StreamHeader::default()).await.map_err(|e| e.to_string())?;
    let mut stream = pending.send_features::<Element>(&StreamFeatures::default()).await.map_err(|e| e.to_string())?;
    let expected = Handshake::from_stream_id_and_password(id.to_owned(), secret).data.map(hex).ok_or("no digest")?;
    match stream.next().await {
        Some(Ok(handshake)) if handshake.name() == "handshake" && handshake.text() == expected && refuse => {
            let _ = write_half.write_all(b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").await;
            return Err("refused as the test asked".into());
        }
        Some(Ok(handshake)) if handshake.name() == "handshake" && handshake.text() == expected => {}
        other => {
            let _ = write_half.write_all(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").await;
            return Err(format!("a wrong handshake: {:?}", other.map(|r| r.map(|e| String::from(&e)))));
        }
    }
    write_half.write_all(b"<handshake/>").await.map_err(|e| e.to_string())?;
    Ok((stream, write_half))
}

/// Reads the gateway's stanzas until the stream ends.
async fn read_stanzas(
    stream: &mut XmlStream<ReadHalf, Element>,
    domain: &str,
    server_domain: &str,
    shared: &Shared,
    stanzas: &mpsc::UnboundedSender<Element>,
) {
    loop {
        let stanza = match stream.next().await {
            Some(Ok(stanza)) => stanza,
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(_)) | None => return,
        };
        let get = stanza.name() == "iq" && stanza.attr("type") == Some("get");
        let answer = if get && stanza.attr("from") == Some(domain) && stanza.attr("to") == Some(domain) {
            // A delivery ping: the server routes it back to its addressee, the component.
            Some(String::from(&stanza))
        } else if get && stanza.attr("to") == Some(server_domain) {
            let id = stanza.attr("id").unwrap_or_default();
            Some(format!("<iq type='result' id='{id}' from='{server_domain}' to='{domain}'/>"))
        } else {
            None
        };
        match answer {
            Some(answer) => {
                if let Some(writer) = shared.writer.lock().await.as_mut() {
                    let _ = writer.write_all(answer.as_bytes()).await;
                }
            }
            None => {
                if stanzas.send(stanza).is_err() {
                    return;
                }
            }
        }
    }
}

fn hex(bytes: [u8; 20]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
