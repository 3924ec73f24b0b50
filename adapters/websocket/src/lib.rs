//! The HTTP listener of CONTRACT §5: WebSocket clients on `/ws`, `/healthz`, `/metrics`, and
//! device registration on `/api/v1/devices`.
//!
//! - `config`: what the adapter needs from the configuration;
//! - `adapter`: binding the listener and serving until shutdown;
//! - `listener`: plain TCP or TLS (`http.tls_cert`), handshakes bounded by a timeout;
//! - `routes`: the HTTP endpoints and the upgrade, including `?token=` authentication;
//! - `connection`: one WebSocket client's loop (first-frame auth, frames both ways);
//! - `devices`: `/api/v1/devices`, push-token registration over HTTP.

#![forbid(unsafe_code)]

mod adapter;
mod config;
mod connection;
mod devices;
mod listener;
mod routes;

pub use adapter::WebSocketAdapter;
pub use config::WebSocketSettings;
