//! One WebSocket client: authenticate, then frames both ways until either side stops.

use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::future::Either;
use futures::{FutureExt, SinkExt, StreamExt};
use switchboard_frames::{Dormant, ErrorCode, FrameSession, Replies, ServerFrame, count_error, parse_auth_frame};
use switchboard_gateway::auth::Login;
use switchboard_gateway::metrics::ERRORS;
use switchboard_gateway::router::{Delivered, Outbound, RouterError, SessionLease};

use crate::adapter::NAME;
use crate::routes::Shared;

/// Close code 1008: policy violation (bad credentials); 1013: try again later (shutdown,
/// slow consumer).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TRY_LATER: u16 = 1013;
/// Frames queued after which the sink is flushed even if more work is ready.
const FLUSH_FRAMES: usize = 64;

/// Splits the socket before anything is awaited: an `async fn` keeps its arguments for as long as
/// it runs, and the socket (a few hundred bytes) would stay there beside the halves that now own it.
pub(crate) fn serve(socket: WebSocket, login: Option<Login>, shared: Arc<Shared>) -> impl Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    // Combinators, not an async block: a block awaiting `relay` would keep the places of what it
    // captured (the halves, the login) beside the relay's own copies for the connection's whole
    // life. Opening is boxed, and so gone once done: it happens once, and inline it would size
    // the connection's task for its whole life.
    Box::pin(open(sink, stream, login, shared)).then(|opened| match opened {
        Some(opened) => Either::Left(relay(opened)),
        None => Either::Right(std::future::ready(())),
    })
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// A session opened for an authenticated client, which has its `ready`.
struct Opened {
    sink: Sink,
    stream: Stream,
    shared: Arc<Shared>,
    user: switchboard_gateway::UserId,
    valid_until: std::time::SystemTime,
    lease: SessionLease,
    session: FrameSession,
}

async fn open(mut sink: Sink, mut stream: Stream, login: Option<Login>, shared: Arc<Shared>) -> Option<Opened> {
    let login = match login {
        Some(login) => login,
        None => match first_frame_auth(&mut stream, &shared).await {
            Ok(login) => login,
            Err(frame) => {
                count_error(NAME, ErrorCode::Forbidden);
                let _ = sink.send(Message::Text(frame.to_json().into())).await;
                let _ = sink.send(close(CLOSE_POLICY, "authentication failed")).await;
                return None;
            }
        },
    };
    let user = login.user.clone();
    let router = &shared.context.router;
    let lease = match router.open_session(user.clone(), NAME).await {
        Ok(lease) => lease,
        Err(error @ RouterError::TooManySessions { .. }) => {
            count_error(NAME, ErrorCode::Unavailable);
            let frame = ServerFrame::error(None, ErrorCode::Unavailable, error.to_string());
            let _ = sink.send(Message::Text(frame.to_json().into())).await;
            let _ = sink.send(close(CLOSE_POLICY, "too many sessions")).await;
            return None;
        }
        Err(error) => {
            tracing::error!(user = %user, %error, "cannot open session");
            let frame = ServerFrame::error(None, ErrorCode::Unavailable, "cannot open a session now");
            let _ = sink.send(Message::Text(frame.to_json().into())).await;
            let _ = sink.send(close(CLOSE_TRY_LATER, "unavailable")).await;
            return None;
        }
    };
    let session = FrameSession::new(
        user.clone(),
        router.clone(),
        shared.limiter.clone(),
        shared.settings.max_frame_bytes,
        shared.counters.clone(),
    );
    let ready = ServerFrame::Ready { jid: session.jid() };
    let mut writer = Writer { sink: &mut sink, timeout: shared.settings.write_timeout, user: &user };
    if writer.send(session.render(&ready)).await.is_err() {
        return None;
    }
    lease.set_deliverable().await;
    tracing::debug!(user = %user, session = %lease.id, "websocket session ready");
    Some(Opened { sink, stream, shared, user, valid_until: login.valid_until, lease, session })
}

/// Frames both ways until either side stops. Not an `async fn`: one copies its arguments into
/// its future beside the originals, and this future is kept by every connection for its whole life.
#[allow(clippy::manual_async_fn)]
fn relay(opened: Opened) -> impl Future<Output = ()> + Send {
    let Opened { mut sink, mut stream, shared, user, valid_until, mut lease, session } = opened;
    async move {
        // The session ends with its token: a revoked user cannot stay connected on an old one.
        let expiry = tokio::time::sleep(valid_until.duration_since(std::time::SystemTime::now()).unwrap_or_default());
        tokio::pin!(expiry);
        let mut writer = Writer { sink: &mut sink, timeout: shared.settings.write_timeout, user: &user };
        let mut replies = Replies::default();
        let shutdown = shared.context.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        let mut reading = true;
        let kicked = lease.kicked();
        tokio::pin!(kicked);
        // The token's expiry, a kick and shutdown are polled only once one of them has woken the
        // connection: shutdown after deliveries, as it was.
        let urgent = Dormant::default();
        let later = Dormant::default();
        // Deliveries queued in the sink but not yet written: confirmed once they are.
        let mut unwritten: Vec<Delivered> = Vec::new();
        let mut unflushed_frames = 0usize;
        loop {
            // Frames that are ready together go out in one write: the sink is flushed once nothing
            // else is ready (the last branch below), or after a bounded batch.
            if unflushed_frames >= FLUSH_FRAMES {
                if writer.flush().await.is_err() { break; }
                unwritten.drain(..).for_each(Delivered::confirm);
                unflushed_frames = 0;
            }
            tokio::select! {
                biased;
                Some(reply) = replies.next(), if !replies.is_empty() => {
                    if let Some(frame) = reply {
                        if writer.queue(session.render(&frame)).await.is_err() { break; }
                        unflushed_frames += 1;
                    }
                }
                event = std::future::poll_fn(|cx| urgent.poll(cx, |cx| {
                    if kicked.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Urgent::Kicked);
                    }
                    expiry.as_mut().poll(cx).map(|()| Urgent::Expired)
                })) => match event {
                    Urgent::Kicked => {
                        let _ = writer.sink.send(close(CLOSE_TRY_LATER, "too slow")).await;
                        break;
                    }
                    Urgent::Expired => {
                        tracing::info!(user = %user, "websocket session closed: its token expired");
                        count_error(NAME, ErrorCode::Forbidden);
                        let frame = ServerFrame::error(None, ErrorCode::Forbidden, "the token has expired; reconnect with a new one");
                        let _ = writer.send(session.render(&frame)).await;
                        let _ = writer.sink.send(close(CLOSE_POLICY, "token expired")).await;
                        break;
                    }
                },
                outbound = lease.outbound.recv() => {
                    let Some(Outbound { envelope, delivered }) = outbound else { break };
                    if let Some(text) = session.render_envelope(&envelope) {
                        if writer.queue(text).await.is_err() { break; }
                        unflushed_frames += 1;
                        unwritten.extend(delivered);
                    } else if let Some(delivered) = delivered {
                        delivered.confirm();
                    }
                }
                () = std::future::poll_fn(|cx| later.poll(cx, |cx| if reading { shutdown.as_mut().poll(cx) } else { Poll::Pending })) => {
                    // Stop taking new frames; answer those already accepted, write what is queued
                    // and close (below, once no answer is due).
                    reading = false;
                }
                message = stream.next(), if reading => {
                    match message {
                        // Only a frame that must wait for the router comes back as a (boxed) wait:
                        // unboxed, every idle connection would keep room for it.
                        Some(Ok(Message::Text(text))) => match session.accept_now(text.as_bytes()) {
                            Ok(reply) => replies.push_back(reply),
                            Err(waiting) => replies.push_back(waiting.await),
                        },
                        Some(Ok(Message::Binary(_))) => {
                            let frame = ServerFrame::error(None, ErrorCode::BadRequest, "frames are JSON text, not binary");
                            if writer.send(session.render(&frame)).await.is_err() { break; }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Err(error)) => {
                            tracing::debug!(user = %user, %error, "websocket read failed");
                            break;
                        }
                    }
                }
                // Nothing else is ready: write what the turns before queued.
                () = std::future::ready(()), if unflushed_frames > 0 => {
                    if writer.flush().await.is_err() { break; }
                    unwritten.drain(..).for_each(Delivered::confirm);
                    unflushed_frames = 0;
                }
            }
            if !reading && replies.is_empty() {
                if writer.flush().await.is_ok() {
                    unwritten.drain(..).for_each(Delivered::confirm);
                }
                let _ = writer.sink.send(close(CLOSE_TRY_LATER, "server shutting down")).await;
                break;
            }
        }
    }
}

/// The rare events that end a connection at once.
enum Urgent {
    Kicked,
    Expired,
}

struct Writer<'a, S> {
    sink: &'a mut S,
    timeout: std::time::Duration,
    user: &'a switchboard_gateway::UserId,
}

impl<S> Writer<'_, S>
where
    S: futures::Sink<Message> + Unpin,
{
    /// Writes a frame at once.
    async fn send(&mut self, text: String) -> Result<(), ()> {
        self.queue(text).await?;
        self.flush().await
    }

    /// Hands a frame to the sink; it is written at the next [`Writer::flush`] (or sooner, when
    /// the sink's buffer fills).
    async fn queue(&mut self, text: String) -> Result<(), ()> {
        let message = Message::Text(text.into());
        // Most frames find room at once; the timer, and the reading of the clock it takes, is
        // for those that do not.
        let ready = std::future::poll_fn(|cx| Poll::Ready(self.sink.poll_ready_unpin(cx))).await;
        match ready {
            Poll::Ready(Ok(())) => return self.sink.start_send_unpin(message).map_err(|_| ()),
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => {}
        }
        let result = tokio::time::timeout(self.timeout, self.sink.feed(message)).await;
        self.settle(result)
    }

    async fn flush(&mut self) -> Result<(), ()> {
        let result = tokio::time::timeout(self.timeout, self.sink.flush()).await;
        self.settle(result)
    }

    /// A client that does not read for `timeout` is cut off rather than holding its queue.
    fn settle<E>(&self, result: Result<Result<(), E>, tokio::time::error::Elapsed>) -> Result<(), ()> {
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                tracing::warn!(user = %self.user, timeout = ?self.timeout, "slow consumer cut off: the client stopped reading");
                // Not a contract error code: the client is not told, it is disconnected.
                metrics::counter!(ERRORS, "adapter" => NAME, "code" => "slow-consumer").increment(1);
                Err(())
            }
        }
    }
}

async fn first_frame_auth(
    stream: &mut SplitStream<WebSocket>,
    shared: &Shared,
) -> Result<Login, ServerFrame> {
    let refuse = |text: &str| ServerFrame::error(None, ErrorCode::Forbidden, text);
    let first = tokio::time::timeout(shared.settings.auth_timeout, stream.next())
        .await
        .map_err(|_| refuse("no auth frame within 10 s"))?;
    let text = match first {
        Some(Ok(Message::Text(text))) => text,
        _ => return Err(refuse("the first frame must be {\"type\":\"auth\",\"token\":\"…\"}")),
    };
    let token = parse_auth_frame(text.as_bytes(), shared.settings.max_frame_bytes)
        .map_err(|e| ServerFrame::error(e.id, ErrorCode::Forbidden, e.text))?;
    shared.context.auth.login(&token).map_err(|e| {
        tracing::info!(error = %e, "websocket auth refused");
        refuse(&e.to_string())
    })
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}
