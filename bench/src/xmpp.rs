//! XMPP c2s clients (tokio-xmpp's `StanzaStream`) for Prosody accounts: senders that push chat
//! messages through an outgoing queue, and a receiver that hands every message body to the
//! recorder.
//!
//! `StanzaStream::send` only enqueues (the stream's worker batches writes), unlike
//! `Client::send_stanza`, which waits for every stanza to be written. One task per connection
//! owns the stream and serves both directions.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use sasl::common::ChannelBinding;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::MessageType;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;

use crate::load::{Outlet, Recorder, SETUP_WAIT, SenderState};

/// Plain TCP to a fixed address, with TCP_NODELAY (tokio-xmpp's `TcpServerConnector` leaves Nagle
/// on, which delays small stanzas at low rates).
#[derive(Clone, Debug)]
struct NoDelayTcp(SocketAddr);

impl ServerConnector for NoDelayTcp {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let tcp = TcpStream::connect(self.0).await?;
        tcp.set_nodelay(true)?;
        let header = StreamHeader { to: Some(Cow::Borrowed(jid.domain().as_str())), from: None, id: None };
        let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((pending, ChannelBinding::None))
    }
}

pub enum Role {
    /// Sends; error stanzas bounced to it are counted against its state.
    Sender(Arc<SenderState>),
    /// Receives; sends initial presence so that chat messages to its bare JID reach it.
    Receiver(Arc<Recorder>),
}

pub struct XmppConn {
    queue: Option<mpsc::Sender<Box<Stanza>>>,
    task: JoinHandle<()>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Drop for XmppConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn set_failure(failure: &Mutex<Option<String>>, what: String) {
    let mut slot = failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(what);
    }
}

impl XmppConn {
    /// Logs `jid` in on the c2s port (bounded: a failed login would otherwise be retried forever).
    pub async fn connect(c2s_port: u16, jid: &str, password: &str, role: Role) -> anyhow::Result<Self> {
        let bare = BareJid::new(jid).with_context(|| format!("bad JID {jid}"))?;
        let timeouts = Timeouts { read_timeout: Duration::from_secs(60), response_timeout: Duration::from_secs(15) };
        // Receivers get a deeper incoming queue; senders a shallow outgoing one, so that the send
        // time in the body is taken close to the wire.
        let depth = if matches!(role, Role::Receiver(_)) { 256 } else { 16 };
        let connector = NoDelayTcp(SocketAddr::from(([127, 0, 0, 1], c2s_port)));
        let mut stream = StanzaStream::new_c2s(connector, Jid::from(bare), password.to_owned(), timeouts, depth);

        let online = tokio::time::timeout(SETUP_WAIT, async {
            loop {
                match stream.next().await {
                    Some(Event::Stream(StreamEvent::Reset { bound_jid, .. })) => return Some(bound_jid),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await;
        if !matches!(online, Ok(Some(_))) {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
            bail!("{jid}: not logged in within {SETUP_WAIT:?}");
        }

        if matches!(role, Role::Receiver(_)) {
            // Initial presence, then a ping: the answer to the ping proves the server has
            // processed the presence (one stream is handled in order).
            stream.send(Box::new(Stanza::Presence(Presence::available()))).await;
            let server = Jid::new("localhost").context("server JID")?;
            stream.send(Box::new(Stanza::Iq(Iq::from_get("bench-ping", Ping).with_to(server)))).await;
            let answered = tokio::time::timeout(SETUP_WAIT, async {
                loop {
                    match stream.next().await {
                        Some(Event::Stanza(Stanza::Iq(iq))) if iq.id() == "bench-ping" => return true,
                        Some(_) => {}
                        None => return false,
                    }
                }
            })
            .await;
            if !matches!(answered, Ok(true)) {
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
                bail!("{jid}: no answer to the ping after initial presence within {SETUP_WAIT:?}");
            }
        }

        let (queue, mut outgoing) = mpsc::channel::<Box<Stanza>>(16);
        let failure = Arc::new(Mutex::new(None::<String>));
        let task = {
            let failure = failure.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        biased;
                        event = stream.next() => match event {
                            Some(Event::Stanza(stanza)) => on_stanza(&role, stanza),
                            // Prosody runs without stream management: any reconnection loses state.
                            Some(Event::Stream(event)) => set_failure(&failure, format!("stream {event:?} after login")),
                            None => {
                                set_failure(&failure, "stream ended".into());
                                return;
                            }
                        },
                        stanza = outgoing.recv() => match stanza {
                            Some(stanza) => {
                                stream.send(stanza).await;
                            }
                            None => break,
                        },
                    }
                }
                // Closed by us: end the stream cleanly, bounded.
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
            })
        };
        Ok(Self { queue: Some(queue), task, failure })
    }

    /// Where to send chat messages for `to` through this connection.
    pub fn outlet(&self, to: &Jid) -> anyhow::Result<Outlet> {
        let queue = self.queue.clone().context("connection closed")?;
        Ok(Outlet::Xmpp { queue, to: to.clone() })
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Ends the stream (`</stream:stream>`) and waits, bounded, for the task to finish.
    pub async fn close(mut self) {
        self.queue = None;
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut self.task).await;
    }
}

fn on_stanza(role: &Role, stanza: Stanza) {
    match (role, stanza) {
        (Role::Receiver(recorder), Stanza::Message(message)) => {
            if message.type_ == MessageType::Error {
                recorder.on_error(format!("error message from {:?}", message.from));
            } else if let Some(body) = message.bodies.values().next() {
                recorder.on_text(body);
            }
        }
        (Role::Sender(state), Stanza::Message(message)) if message.type_ == MessageType::Error => {
            let body = message.bodies.values().next().cloned().unwrap_or_default();
            state.on_error_stanza(format!("error message from {:?} (body {body:?})", message.from));
        }
        (Role::Sender(state), Stanza::Presence(presence)) if presence.type_ == PresenceType::Error => {
            state.on_error_stanza(format!("error presence from {:?}", presence.from));
        }
        _ => {}
    }
}
