use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use futures::FutureExt;
use serde::Deserialize;
use switchboard_frames::{ErrorCode, FrameCounters, RateLimiter, ServerFrame, count_error};
use switchboard_gateway::AdapterContext;
use tokio_util::task::TaskTracker;

use crate::adapter::NAME;
use crate::config::WebSocketSettings;
use crate::listener::Peer;
use crate::{connection, devices};

/// Frames queued on a socket beyond this many bytes are written at once, without waiting for the
/// connection's flush (see `upgrade`).
const WRITE_BATCH_BYTES: usize = 4096;

pub(crate) struct Shared {
    pub settings: WebSocketSettings,
    pub context: AdapterContext,
    pub limiter: RateLimiter,
    pub counters: FrameCounters,
    pub sockets: TaskTracker,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/devices", post(devices::register).delete(devices::unregister))
        // Bodies a little over the frame limit are read, so they are refused as `too-large`
        // rather than cut off.
        .layer(DefaultBodyLimit::max(shared.settings.max_frame_bytes * 2))
        .with_state(shared)
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if shared.context.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let Some(slot) = shared.context.connections.admit(peer.ip()) else {
        let max = shared.context.connections.per_ip();
        tracing::info!(%peer, max, "websocket refused: too many connections from this address");
        count_error(NAME, ErrorCode::RateLimited);
        let frame = ServerFrame::error(None, ErrorCode::RateLimited, format!("too many connections from this address (at most {max}: limits.connections_per_ip)"));
        return (StatusCode::TOO_MANY_REQUESTS, [(header::CONTENT_TYPE, "application/json")], frame.to_json()).into_response();
    };
    let login = match query.token.as_deref().map(|token| shared.context.auth.login(token)) {
        None => None,
        Some(Ok(login)) => Some(login),
        Some(Err(error)) => {
            tracing::info!(%error, "websocket upgrade refused");
            count_error(NAME, ErrorCode::Forbidden);
            return (StatusCode::UNAUTHORIZED, error.to_string()).into_response();
        }
    };
    let limit = shared.settings.hard_limit();
    let token = shared.sockets.token();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite allocates the read buffer up front and keeps it for the socket's life, so an
        // idle socket pays for it whole; 1 KiB holds a typical frame in one read, and the buffer
        // grows to a larger frame's size when one comes (read 1 KiB per call).
        .read_buffer_size(1024)
        // Frames are gathered up to this much before tungstenite writes them, so that those queued
        // together go out in one write at the connection's flush; at 0 each frame was a syscall of
        // its own. The buffer is not allocated up front: a socket keeps what its largest batch
        // needed (this much and one frame, rounded up as a `Vec` grows; an idle one, its largest
        // frame, as at 0).
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_write_buffer_size(limit * 2)
        // A combinator, not an async block: awaiting a future an async block captured would keep
        // it twice in the connection's task.
        .on_upgrade(move |socket| {
            connection::serve(socket, login, shared).map(move |()| {
                drop(token);
                drop(slot);
            })
        })
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let failing = shared.context.health.failing();
    if failing.is_empty() {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        let body = serde_json::json!({"status": "degraded", "failing": failing});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.settings.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
