//! What one authenticated client connection does with frames, whatever carries them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use switchboard_gateway::metrics::ERRORS;
use switchboard_gateway::router::{Pending, RouterHandle, Submitted};
use switchboard_gateway::{Body, Domain, Envelope, MessageId, UserId};

use crate::code::ErrorCode;
use crate::counters::FrameCounters;
use crate::convert::{envelope_from, envelope_to_frame, outcome_to_answer};
use crate::inbound::{FrameError, parse_client_frame};
use crate::limiter::{RateLimiter, UserBucket};
use crate::outbound::{ServerFrame, message_json};

/// The frame protocol for one logged-in user on one connection.
pub struct FrameSession {
    user: UserId,
    domain: Domain,
    router: RouterHandle,
    rate: UserBucket,
    max_frame_bytes: usize,
    counters: FrameCounters,
}

/// The answer to one client frame: known at once (an error, or nothing), or once the router has
/// settled the envelope.
pub enum Reply {
    Now(Option<ServerFrame>),
    Later {
        id: Option<String>,
        msg: MessageId,
        pending: Pending,
    },
}

impl Reply {
    pub async fn settle(mut self) -> Option<ServerFrame> {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }

    /// The answer, once the outcome is known; ready at once for [`Reply::Now`]. Once it has
    /// returned `Ready`, the reply is spent: poll it no more.
    pub fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Option<ServerFrame>> {
        match self {
            Self::Now(frame) => Poll::Ready(frame.take()),
            Self::Later { id, msg, pending } => match Pin::new(pending).poll(cx) {
                Poll::Ready(outcome) => Poll::Ready(outcome_to_answer(outcome, id.take(), msg)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl FrameSession {
    pub fn new(
        user: UserId,
        router: RouterHandle,
        limiter: RateLimiter,
        max_frame_bytes: usize,
        counters: FrameCounters,
    ) -> Self {
        let domain = router.settings().domain.clone();
        let rate = limiter.bucket(&user);
        Self { user, domain, router, rate, max_frame_bytes, counters }
    }

    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The address clients know this user by, for `ready`.
    pub fn jid(&self) -> String {
        format!("{}@{}", self.user, self.domain.as_str())
    }

    /// Reads one frame and hands it to the router. Frames accepted one after another are routed
    /// in that order; their replies may be awaited concurrently.
    pub async fn accept(&self, payload: &[u8]) -> Reply {
        match self.accept_now(payload) {
            Ok(reply) => reply,
            Err(waiting) => waiting.await,
        }
    }

    /// Like [`Self::accept`], answered at once when the router's queue has room for a message
    /// (nearly always). Otherwise, and for frames other than messages, the rest comes back as a
    /// boxed future to await before the next frame is accepted: a connection task is as large as
    /// its largest await, and this one is in every connection.
    #[allow(clippy::type_complexity)]
    pub fn accept_now(&self, payload: &[u8]) -> Result<Reply, Pin<Box<dyn Future<Output = Reply> + Send + '_>>> {
        let (id, envelope) = match self.admit(payload) {
            Ok(admitted) => admitted,
            Err(error) => return Ok(self.refuse(error)),
        };
        match id.as_deref() {
            // A message she resends because no `ack` reached her is answered, not routed twice.
            Some(client_id) if matches!(envelope.body, Body::Message(_)) => {
                match self.router.submit_message_now(client_id, envelope) {
                    Ok(Submitted { msg, pending, .. }) => Ok(Reply::Later { id, msg, pending }),
                    Err(waiting) => Err(Box::pin(async move {
                        let Submitted { msg, pending, .. } = waiting.await;
                        Reply::Later { id, msg, pending }
                    })),
                }
            }
            _ => {
                let msg = envelope.id.clone();
                let submitting = self.router.submit(envelope);
                Err(Box::pin(async move { Reply::Later { pending: submitting.await, id, msg } }))
            }
        }
    }

    /// Parses, counts and rate-limits one frame, and makes its envelope.
    fn admit(&self, payload: &[u8]) -> Result<(Option<String>, Envelope), FrameError> {
        let frame = parse_client_frame(payload, self.max_frame_bytes);
        let type_name = frame.as_ref().map_or("invalid", |f| f.type_name());
        self.counters.frame_in(type_name);
        // Every frame counts against the rate, valid or not.
        let allowed = self.rate.allow();
        let mut frame = frame?;
        let id = frame.take_id();
        if !allowed {
            return Err(FrameError::new(id, ErrorCode::RateLimited, "slow down"));
        }
        let envelope = envelope_from(frame, &id, &self.user, &self.domain)?;
        Ok((id, envelope))
    }

    fn refuse(&self, FrameError { id, code, text }: FrameError) -> Reply {
        tracing::debug!(user = %self.user, code = code.as_str(), %text, "frame refused");
        Reply::Now(Some(ServerFrame::error(id, code, text)))
    }

    /// The frame for an envelope addressed to this user.
    pub fn frame_for(&self, envelope: &Envelope) -> Option<ServerFrame> {
        envelope_to_frame(envelope, &self.domain)
    }

    /// The frame for an envelope addressed to this user, serialised for the wire and counted;
    /// `None` when clients are not shown such envelopes.
    pub fn render_envelope(&self, envelope: &Envelope) -> Option<String> {
        if let Body::Message(message) = &envelope.body {
            self.counters.frame_out("message");
            return Some(message_json(envelope, message, &self.domain));
        }
        self.frame_for(envelope).map(|frame| self.render(&frame))
    }

    /// Serialises a frame for the wire, counting it.
    pub fn render(&self, frame: &ServerFrame) -> String {
        self.counters.frame_out(frame.type_name());
        if let ServerFrame::Error { code, .. } = frame {
            self.counters.error(*code);
        }
        frame.to_json()
    }
}

/// Counts an error answered before a session exists (bad token, oversize auth frame).
pub fn count_error(adapter: &'static str, code: ErrorCode) {
    metrics::counter!(ERRORS, "adapter" => adapter, "code" => code.as_str()).increment(1);
}
