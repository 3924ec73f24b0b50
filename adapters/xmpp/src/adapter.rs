//! The supervised component link. While it is down, envelopes for XMPP wait in the store (the
//! router's route queue); once it is back they go out first, in order.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use switchboard_gateway::metrics::ERRORS;
use switchboard_gateway::router::{Delivered, Outbound, Pending, RouterHandle, SessionLease};
use switchboard_gateway::store::MessageAlias;
use switchboard_gateway::{
    Adapter, AdapterContext, AdapterError, Address, Body, Envelope, FailureBody, Listening, MessageId, Outcome, ReceiptBody, Rejection,
};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::{ReadError, Timeouts};

use crate::convert::{Addressing, Condition, Inbound, error_reply};
use crate::link::{self, Link};
use crate::namespace::to_component;
use crate::read::ReadElement;
use crate::text::XmlText;
use crate::service;

pub const NAME: &str = "xmpp";
const ROUTE: &str = "xmpp";
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Envelopes sent to the server in one write.
const BATCH: usize = 64;

#[derive(Clone, Debug)]
pub struct XmppSettings {
    /// The server's component port.
    pub server: String,
    /// The component's domain.
    pub domain: String,
    pub secret: String,
    /// `limits.max_frame_bytes`: the same bound on text as for MQTT and WebSocket frames.
    pub max_text_bytes: usize,
    /// Silence on the link before the component pings the server; no answer within
    /// `response_timeout` then means the link is dead.
    pub read_timeout: Duration,
    pub response_timeout: Duration,
}

impl XmppSettings {
    pub fn new(server: String, domain: String, secret: String, max_text_bytes: usize) -> Self {
        Self { server, domain, secret, max_text_bytes, read_timeout: Duration::from_secs(60), response_timeout: Duration::from_secs(15) }
    }
}

pub struct XmppAdapter {
    settings: XmppSettings,
}

impl XmppAdapter {
    pub fn new(settings: XmppSettings) -> Self {
        Self { settings }
    }
}

impl Adapter for XmppAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn bind(&mut self) -> BoxFuture<'_, Result<Listening, AdapterError>> {
        Box::pin(async { Ok(Listening::new()) })
    }

    fn peers(&self) -> Vec<&'static str> {
        vec![NAME]
    }

    fn run(self: Box<Self>, context: AdapterContext) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(supervise(self.settings, context))
    }
}

async fn supervise(settings: XmppSettings, context: AdapterContext) -> Result<(), AdapterError> {
    context
        .router
        .register_route(ROUTE)
        .await
        .map_err(|e| AdapterError::Fatal { adapter: NAME, message: e.to_string() })?;
    let addressing = Addressing::new(settings.domain.clone(), settings.max_text_bytes);
    let timeouts = Timeouts { read_timeout: settings.read_timeout, response_timeout: settings.response_timeout };
    let shutdown = context.shutdown.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            connected = link::connect(&settings.server, &settings.domain, &settings.secret, timeouts) => connected,
        };
        match connected {
            Ok(link) => {
                backoff = Duration::from_millis(100);
                tracing::info!(server = %settings.server, domain = %settings.domain, "xmpp component link up");
                context.health.set(NAME, true);
                let ended = serve(link, &addressing, &context).await;
                context.health.set(NAME, false);
                match ended {
                    Ended::Shutdown => return Ok(()),
                    Ended::Lost(reason) => tracing::warn!(%reason, "xmpp component link lost; reconnecting"),
                }
            }
            // A refused handshake backs off like any other failure: a server that is still
            // loading the component's host refuses it for a moment, and a wrong secret or domain
            // reaches the longest pause within half a minute anyway.
            Err(error) => tracing::warn!(%error, "xmpp component link failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Ended {
    Shutdown,
    Lost(String),
}

type Settling = BoxFuture<'static, Option<Element>>;

/// One live link: stanzas in, envelopes out, until it breaks or the gateway stops.
async fn serve(mut link: Link, addressing: &Addressing, context: &AdapterContext) -> Ended {
    let lease = match context.router.open_route_session(ROUTE).await {
        Ok(lease) => lease,
        Err(error) => return Ended::Lost(error.to_string()),
    };
    lease.set_deliverable().await;
    let mut lease: SessionLease = lease;
    let mut settling: FuturesUnordered<Settling> = FuturesUnordered::new();
    let shutdown = context.shutdown.clone();
    let mut ping_id = 0u64;
    let mut acks = Acknowledgements::default();
    let ended = loop {
        if let Some(ping) = acks.ping_if_needed(addressing.component())
            && let Err(error) = link::write_text(&link, &ping).await
        {
            break Ended::Lost(error.to_string());
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ended::Shutdown,
            Some(reply) = settling.next(), if !settling.is_empty() => {
                if let Some(reply) = reply
                    && let Err(error) = link.send(&to_component(reply)).await {
                        break Ended::Lost(error.to_string());
                    }
            }
            outbound = lease.outbound.recv() => {
                let Some(first) = outbound else {
                    break Ended::Lost("route session closed".into());
                };
                // Whatever else is already waiting goes in the same batch: one write to the server.
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match lease.outbound.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                if let Err(error) = send_batch(&mut link, batch, &mut acks, addressing, context).await {
                    // The proofs are dropped unresolved: the envelopes go back to the queue.
                    break Ended::Lost(error.to_string());
                }
            }
            () = sleep_until(acks.ping_due()), if acks.ping_due().is_some() => {}
            () = sleep_until(acks.deadline()), if acks.deadline().is_some() => {
                break Ended::Lost("a delivery ping did not come back".into());
            }
            item = link.next() => {
                // Stanzas that arrived together are handled together: their ids recorded at
                // once, then routed in arrival order.
                let mut items = vec![item];
                while items.len() < BATCH && matches!(items.last(), Some(Some(Ok(_)))) {
                    match link.next().now_or_never() {
                        Some(next) => items.push(next),
                        None => break,
                    }
                }
                let mut stanzas = Vec::with_capacity(items.len());
                let mut lost = None;
                for item in items {
                    match item {
                        Some(Ok(ReadElement(stanza))) => {
                            tracing::trace!(stanza = %String::from(&stanza), "stanza from xmpp");
                            if !acks.answered(&stanza, addressing.component()) {
                                stanzas.push(stanza);
                            }
                        }
                        Some(Err(ReadError::SoftTimeout)) => {
                            // Quiet link: ask the server for a sign of life before the hard timeout.
                            ping_id += 1;
                            if let Err(error) = link::write_text(&link, &ping(addressing.component(), ping_id)).await {
                                lost = Some(error.to_string());
                            }
                        }
                        Some(Err(ReadError::ParseError(error))) => {
                            tracing::info!(%error, "unparsable stanza from the xmpp server dropped");
                            metrics::counter!(ERRORS, "adapter" => NAME, "code" => "bad-request").increment(1);
                        }
                        Some(Err(ReadError::HardError(error))) => lost = Some(error.to_string()),
                        Some(Err(ReadError::StreamFooterReceived)) | None => lost = Some("the server closed the stream".into()),
                    }
                }
                settling.extend(handle_batch(stanzas, addressing, context).await);
                if let Some(reason) = lost {
                    break Ended::Lost(reason);
                }
            }
        }
    };
    if let Ended::Shutdown = ended {
        // Answer what is being settled, then close the stream properly.
        while let Some(reply) = settling.next().await {
            if let Some(reply) = reply {
                let _ = link.send(&to_component(reply)).await;
            }
        }
        let _ = SinkExt::<&Element>::close(&mut link).await;
    }
    ended
}

/// XEP-0114 has no acknowledgements: a stanza written to the server may die with the server.
/// So a stanza counts as delivered only once a ping sent after it has come back: the component
/// pings its own domain, which the server routes back to it, after everything written before
/// (a server handles a stream in order). A ping covers the stanzas written within [`PING_GATHER`]
/// of the first unconfirmed one (or [`BATCH`] of them): a ping per message would double the
/// server's work at moderate load. Up to [`PINGS_OUT`] are out at once, and an answer vouches for
/// the pings before it too. A ping that does not come back in time means the link is dead.
#[derive(Default)]
struct Acknowledgements {
    written: Vec<Delivered>,
    /// When the oldest of `written` was written.
    first_written: Option<tokio::time::Instant>,
    /// Pings out, oldest first. Several may be out at once: with one, the stanzas written while
    /// it travels wait a whole round trip for theirs, and the senders' windows stall on that.
    outstanding: std::collections::VecDeque<Outstanding>,
    sequence: u64,
}

struct Outstanding {
    id: String,
    proofs: Vec<Delivered>,
    deadline: tokio::time::Instant,
}

/// How long a delivery ping may take to come back before the link counts as dead.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stanzas written since the last ping may wait for more before a ping covers them
/// (senders wait this much longer for their `ack`, never for the message itself).
const PING_GATHER: Duration = Duration::from_millis(2);
/// Delivery pings out at once at most.
const PINGS_OUT: usize = 8;

impl Acknowledgements {
    fn written(&mut self, delivered: Delivered) {
        self.first_written.get_or_insert_with(tokio::time::Instant::now);
        self.written.push(delivered);
    }

    /// When the stanzas written so far should get their ping, if another may go out.
    fn ping_due(&self) -> Option<tokio::time::Instant> {
        match self.first_written {
            Some(first) if self.outstanding.len() < PINGS_OUT => Some(first + PING_GATHER),
            _ => None,
        }
    }

    fn ping_if_needed(&mut self, component: &str) -> Option<Vec<u8>> {
        if self.outstanding.len() >= PINGS_OUT || self.written.is_empty() {
            return None;
        }
        let gathered = self.written.len() >= BATCH;
        if !gathered && self.ping_due().is_some_and(|due| tokio::time::Instant::now() < due) {
            return None;
        }
        self.first_written = None;
        self.sequence += 1;
        let id = format!("ack-{}", self.sequence);
        let ping = ping_to(component, component, &id);
        self.outstanding.push_back(Outstanding {
            id,
            proofs: std::mem::take(&mut self.written),
            deadline: tokio::time::Instant::now() + ACK_TIMEOUT,
        });
        Some(ping)
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.outstanding.front().map(|o| o.deadline)
    }

    /// True when `stanza` is our delivery ping come back (from our own domain, so nobody else
    /// can fake it).
    fn answered(&mut self, stanza: &Element, component: &str) -> bool {
        let answered = (stanza.name() == "iq" && stanza.attr("from") == Some(component))
            .then(|| stanza.attr("id"))
            .flatten()
            .and_then(|id| self.outstanding.iter().position(|o| o.id == id));
        let Some(position) = answered else { return false };
        // The server handles the stream in order: this answer vouches for every ping before it.
        for outstanding in self.outstanding.drain(..=position) {
            outstanding.proofs.into_iter().for_each(Delivered::confirm);
        }
        true
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A keep-alive ping to the server (the component's parent domain; any answer, even an error,
/// shows the link is alive).
fn ping(component: &str, id: u64) -> Vec<u8> {
    let server = component.split_once('.').map_or(component, |(_, parent)| parent);
    ping_to(component, server, &format!("ping-{id}"))
}

fn ping_to(component: &str, server: &str, id: &str) -> Vec<u8> {
    let mut text = Vec::with_capacity(160);
    let mut xml = XmlText::new(&mut text, None);
    xml.open("iq");
    xml.attr_const("type", "get");
    xml.attr("id", id);
    xml.attr("from", component);
    xml.attr("to", server);
    xml.content();
    xml.marker("ping", "urn:xmpp:ping");
    xml.close("iq");
    text
}

/// Handles stanzas that arrived together; returns the work that ends in replies.
async fn handle_batch(stanzas: Vec<Element>, addressing: &Addressing, context: &AdapterContext) -> Vec<Settling> {
    let classified: Vec<(Element, Inbound)> = stanzas.into_iter().map(|s| { let inbound = addressing.inbound(&s); (s, inbound) }).collect();
    let aliases: Vec<MessageAlias> = classified
        .iter()
        .filter_map(|(_, inbound)| match inbound {
            Inbound::Envelope { envelope, stanza_id: Some(foreign_id) } if matches!(envelope.body, Body::Message(_)) => {
                Some(MessageAlias {
                    id: envelope.id.clone(),
                    peer: bare(&envelope.from),
                    foreign_id: foreign_id.clone(),
                    user: envelope.to.as_user()?.clone(),
                })
            }
            _ => None,
        })
        .collect();
    context.aliases.save(aliases).await;
    let mut settling = Vec::new();
    for (stanza, inbound) in classified {
        if let Some(settle) = handle(stanza, inbound, addressing, context).await {
            settling.push(settle);
        }
    }
    settling
}

/// An XMPP sender resends a message when no receipt came back, and the receipt of a message
/// delivered live can be lost on the way (an XMPP server drops a bodiless message to a user who
/// has just gone offline). So a resend of a message that was delivered is delivered again, under
/// the first copy's gateway id: the recipient's client recognises it and answers its receipt
/// again. One still waiting in the store is not: it is delivered, and answered, on her return.
fn deliver_again(resent: Envelope, first: Pending, stanza: Element, router: RouterHandle) -> Settling {
    Box::pin(async move {
        let outcome = match first.await {
            Outcome::Delivered => {
                tracing::debug!(msg = %resent.id, "resend of a delivered message; delivering it again");
                router.submit(resent).await.await
            }
            outcome => outcome,
        };
        refusal(&stanza, outcome)
    })
}

/// The error stanza an outcome calls for, if any.
fn refusal(stanza: &Element, outcome: Outcome) -> Option<Element> {
    let condition = match outcome {
        Outcome::Delivered | Outcome::Stored | Outcome::Accepted => return None,
        // Never seen: RFC 6121 §8.5.2 (and nobody fills the store for made-up names).
        Outcome::Rejected(Rejection::UnknownUser) => Condition::ServiceUnavailable,
        Outcome::Rejected(Rejection::QueueFull) | Outcome::Retryable(_) => Condition::ResourceConstraint,
        Outcome::Rejected(Rejection::Forbidden(_) | Rejection::BadRequest(_)) => Condition::BadRequest,
        Outcome::Rejected(Rejection::NoRoute | Rejection::UnknownDevice) => Condition::ItemNotFound,
        Outcome::Failed(_) => Condition::InternalServerError,
    };
    Some(error_reply(stanza, condition))
}

/// Handles one inbound stanza; returns the work that ends in a reply (or none).
async fn handle(stanza: Element, inbound: Inbound, addressing: &Addressing, context: &AdapterContext) -> Option<Settling> {
    match inbound {
        Inbound::Envelope { mut envelope, stanza_id } => {
            let user = envelope.to.as_user()?.clone();
            let peer = bare(&envelope.from);
            if let Body::Receipt(receipt) = &mut envelope.body {
                match context.aliases.resolve(&peer, receipt.of.as_str()).await {
                    // Only a party to the message may speak of it.
                    Ok(Some(alias)) if alias.user == user => receipt.of = alias.id,
                    _ => {
                        tracing::info!(user = %user, of = %receipt.of, "receipt for a message this peer was not sent; dropped");
                        metrics::counter!(ERRORS, "adapter" => NAME, "code" => "forbidden").increment(1);
                        return None;
                    }
                }
            }
            tracing::debug!(user = %user, msg = %envelope.id, stanza_id = ?stanza_id, kind = envelope.body.kind_name(), "stanza from xmpp");
            let pending: Pending = match stanza_id.as_deref() {
                // A client that resends after its server restarted keeps the stanza id.
                Some(stanza_id) if matches!(envelope.body, Body::Message(_)) => {
                    let submitted = context.router.submit_message(stanza_id, envelope).await;
                    match submitted.resent {
                        Some(mut resent) => {
                            resent.id = submitted.msg;
                            return Some(deliver_again(resent, submitted.pending, stanza, context.router.clone()));
                        }
                        None => submitted.pending,
                    }
                }
                _ => context.router.submit(envelope).await,
            };
            Some(Box::pin(async move { refusal(&stanza, pending.await) }))
        }
        Inbound::Bounce { peer, foreign_id, reason, text } => {
            let Ok(Some(alias)) = context.aliases.resolve(&peer, &foreign_id).await else {
                tracing::debug!(%foreign_id, "error about an unknown stanza ignored");
                return None;
            };
            let failure = Body::Failure(FailureBody { of: alias.id, reason, text });
            let envelope = Envelope::new(peer, Address::user(alias.user), failure);
            drop(context.router.submit(envelope).await);
            None
        }
        Inbound::Iq(iq) => {
            let answer = service::answer(&iq, addressing.component());
            Some(Box::pin(async move { Some(answer) }))
        }
        Inbound::Refuse(reply) => {
            metrics::counter!(ERRORS, "adapter" => NAME, "code" => "bad-request").increment(1);
            Some(Box::pin(async move { Some(reply) }))
        }
        Inbound::Ignore(why) => {
            tracing::trace!(why, "stanza ignored");
            None
        }
    }
}

fn bare(address: &Address) -> Address {
    match address {
        Address::Remote(remote) => Address::Remote(remote.bare()),
        user => user.clone(),
    }
}

/// Sends a batch of envelopes through the link (written as text, in one write), after the id bookkeeping: each message's id is
/// recorded (in memory at once, in the store behind the traffic) so the peer's receipts and errors
/// can be matched to it; a receipt names the peer's own id for the message.
async fn send_batch(
    link: &mut Link,
    batch: Vec<Outbound>,
    acks: &mut Acknowledgements,
    addressing: &Addressing,
    context: &AdapterContext,
) -> std::io::Result<()> {
    let aliases: Vec<MessageAlias> = batch
        .iter()
        .filter_map(|outbound| {
            let envelope = &outbound.envelope;
            match (&envelope.body, envelope.from.as_user()) {
                (Body::Message(_), Some(user)) => Some(MessageAlias {
                    id: envelope.id.clone(),
                    peer: bare(&envelope.to),
                    foreign_id: envelope.id.to_string(),
                    user: user.clone(),
                }),
                _ => None,
            }
        })
        .collect();
    context.aliases.save(aliases).await;
    let mut proofs = Vec::with_capacity(batch.len());
    let mut text = Vec::with_capacity(STANZA_SIZE_HINT * batch.len());
    for Outbound { envelope, delivered } in batch {
        let start = text.len();
        if write_stanza(&envelope, addressing, context, &mut text).await {
            tracing::trace!(stanza = %String::from_utf8_lossy(&text[start..]), "stanza to xmpp");
        }
        proofs.extend(delivered);
    }
    link::write_text(link, &text).await?;
    proofs.into_iter().for_each(|delivered| acks.written(delivered));
    Ok(())
}

/// Writes the stanza for `envelope` into `text`; false when XMPP has no use for it.
async fn write_stanza(envelope: &Envelope, addressing: &Addressing, context: &AdapterContext, text: &mut Vec<u8>) -> bool {
    if let (Body::Receipt(receipt), Some(_)) = (&envelope.body, envelope.from.as_user())
        && let Ok(Some(alias)) = context.aliases.of(&receipt.of).await
        && alias.peer == bare(&envelope.to)
    {
        let mut renamed = envelope.clone();
        renamed.body = Body::Receipt(ReceiptBody { of: MessageId::from_string(alias.foreign_id), status: receipt.status });
        return addressing.write_outbound(&renamed, None, text);
    }
    addressing.write_outbound(envelope, None, text)
}

/// About what one message stanza takes, to size a batch's buffer once.
const STANZA_SIZE_HINT: usize = 512;
