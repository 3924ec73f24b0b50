//! `POST` / `DELETE /api/v1/devices`: `device.register` / `device.unregister` over HTTP, for apps
//! that hand over their push token outside a socket (at install, from a background task).
//!
//! The body is the frame without its `type` (`{"platform":"fcm","token":"…","app":"…"}`), the
//! user's JWT the bearer token. Errors carry the frame codes, in an `error` frame as body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_frames::{ClientFrame, ErrorCode, FrameError, ServerFrame, count_error, frame_to_envelope, parse_client_frame};
use axum::extract::rejection::BytesRejection;
use switchboard_gateway::{Outcome, UserId};

use crate::adapter::NAME;
use crate::routes::Shared;

type Body = Result<Bytes, BytesRejection>;

pub(crate) async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    handle(&shared, &headers, body, "device.register").await
}

pub(crate) async fn unregister(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    handle(&shared, &headers, body, "device.unregister").await
}

async fn handle(shared: &Shared, headers: &HeaderMap, body: Body, frame_type: &str) -> Response {
    let user = match authenticate(shared, headers) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    // A body over the listener's limit is cut off by axum; it still gets an error frame.
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let max = shared.settings.max_frame_bytes;
            return refuse(&user, FrameError::new(None, ErrorCode::TooLarge, format!("the body exceeds {max} bytes")));
        }
        Err(rejection) => return refuse(&user, FrameError::new(None, ErrorCode::BadRequest, rejection.body_text())),
    };
    if !shared.limiter.allow(&user) {
        return refuse(&user, FrameError::new(None, ErrorCode::RateLimited, "too many requests"));
    }
    let frame = match device_frame(&body, frame_type, shared.settings.max_frame_bytes) {
        Ok(frame) => frame,
        Err(error) => return refuse(&user, error),
    };
    let envelope = match frame_to_envelope(frame, &user, &shared.context.router.settings().domain) {
        Ok(envelope) => envelope,
        Err(error) => return refuse(&user, error),
    };
    let switchboard_gateway::Body::Device(device) = envelope.body.clone() else {
        return refuse(&user, FrameError::new(None, ErrorCode::BadRequest, "not a device"));
    };
    let outcome = shared.context.router.submit(envelope).await.await;
    match outcome {
        Outcome::Accepted | Outcome::Delivered | Outcome::Stored => {
            tracing::info!(%user, platform = device.platform.as_str(), action = frame_type, "device updated over HTTP");
            if frame_type == "device.register" {
                let created = serde_json::json!({
                    "platform": device.platform.as_str(),
                    "token": device.token,
                    "app": device.app,
                    "os": device.os,
                });
                (StatusCode::CREATED, axum::Json(created)).into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        other => match switchboard_frames::outcome_to_answer(other, None, &switchboard_gateway::MessageId::generate()) {
            Some(ServerFrame::Error { code, text, .. }) => refuse(&user, FrameError::new(None, code, text)),
            _ => refuse(&user, FrameError::new(None, ErrorCode::Internal, "unexpected outcome")),
        },
    }
}

/// `Authorization: Bearer <JWT>`; a missing or bad one is 401 with the challenge RFC 6750 asks for.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<UserId, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim);
    let result = match token {
        Some(token) => shared.context.auth.verify(token).map_err(|e| e.to_string()),
        None => Err("an Authorization: Bearer <JWT> header is required".to_owned()),
    };
    result.map_err(|text| {
        tracing::info!(reason = %text, "device request refused");
        count_error(NAME, ErrorCode::Forbidden);
        let frame = ServerFrame::error(None, ErrorCode::Forbidden, text);
        Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""), (header::CONTENT_TYPE, "application/json")],
                frame.to_json(),
            )
                .into_response(),
        )
    })
}

/// The body as the frame it stands for: its fields plus the `type` the method implies.
fn device_frame(body: &[u8], frame_type: &str, max_bytes: usize) -> Result<ClientFrame, FrameError> {
    if body.len() > max_bytes {
        return Err(FrameError::new(None, ErrorCode::TooLarge, format!("the body exceeds {max_bytes} bytes")));
    }
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| FrameError::new(None, ErrorCode::BadRequest, format!("the body must be a JSON object: {e}")))?;
    object.insert("type".into(), serde_json::Value::String(frame_type.into()));
    let json = serde_json::to_vec(&object).map_err(|e| FrameError::new(None, ErrorCode::Internal, e.to_string()))?;
    // The added `type` must not push a body just under the limit over it.
    parse_client_frame(&json, max_bytes + 64)
}

fn refuse(user: &UserId, error: FrameError) -> Response {
    count_error(NAME, error.code);
    tracing::info!(%user, code = error.code.as_str(), text = %error.text, "device request refused");
    let status = match error.code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let frame = ServerFrame::error(None, error.code, error.text);
    (status, [(header::CONTENT_TYPE, "application/json")], frame.to_json()).into_response()
}
