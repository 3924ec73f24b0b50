use std::sync::Arc;

use futures::future::BoxFuture;
use switchboard_frames::{FrameCounters, RateLimiter};
use switchboard_gateway::tls::{self, TlsAcceptor};
use switchboard_gateway::{Adapter, AdapterContext, AdapterError, Listening, bind_listener};
use tokio_util::task::TaskTracker;

use crate::config::WebSocketSettings;
use crate::listener::{HttpListener, Peer};
use crate::routes::{self, Shared};

pub const NAME: &str = "websocket";

/// WebSocket upgrades are HTTP/1.1 requests: a client that negotiated HTTP/2 could not open one.
const ALPN: &[&[u8]] = &[b"http/1.1"];

pub struct WebSocketAdapter {
    settings: WebSocketSettings,
    listener: Option<HttpListener>,
}

impl WebSocketAdapter {
    pub fn new(settings: WebSocketSettings) -> Self {
        Self { settings, listener: None }
    }
}

impl Adapter for WebSocketAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn bind(&mut self) -> BoxFuture<'_, Result<Listening, AdapterError>> {
        Box::pin(async move {
            let acceptor = match &self.settings.tls {
                Some(files) => Some(TlsAcceptor::from(
                    tls::server_config(files, ALPN)
                        .map_err(|error| AdapterError::Fatal { adapter: NAME, message: error.to_string() })?,
                )),
                None => None,
            };
            let address = self.settings.listen;
            let (listener, bound) = bind_listener(NAME, "http.listen", address).await?;
            self.listener = Some(match acceptor {
                Some(acceptor) => HttpListener::tls(listener, acceptor, self.settings.handshake_timeout),
                None => HttpListener::plain(listener),
            });
            Ok(bound.map(|address| (NAME, address)).into_iter().collect())
        })
    }

    fn run(self: Box<Self>, context: AdapterContext) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(async move {
            let listener = match self.listener {
                Some(listener) => listener,
                None => {
                    return Err(AdapterError::Fatal { adapter: NAME, message: "run before bind".into() });
                }
            };
            let sockets = TaskTracker::new();
            let shared = Arc::new(Shared {
                limiter: RateLimiter::new(self.settings.messages_per_second),
                counters: FrameCounters::new(NAME),
                settings: self.settings,
                context: context.clone(),
                sockets: sockets.clone(),
            });
            let app = routes::router(shared);
            let shutdown = context.shutdown.clone();
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            // Upgraded sockets live outside the HTTP server: wait for them to settle their
            // in-flight frames.
            sockets.close();
            sockets.wait().await;
            served.map_err(|e| AdapterError::Fatal { adapter: NAME, message: e.to_string() })
        })
    }
}
