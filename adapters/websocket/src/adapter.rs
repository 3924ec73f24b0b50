use std::sync::Arc;

use futures::future::BoxFuture;
use switchboard_frames::RateLimiter;
use switchboard_gateway::{Adapter, AdapterContext, AdapterError, Listening, bind_listener};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::WebSocketSettings;
use crate::routes::{self, Shared};

pub const NAME: &str = "websocket";

pub struct WebSocketAdapter {
    settings: WebSocketSettings,
    listener: Option<TcpListener>,
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
            let address = self.settings.listen;
            let (listener, bound) = bind_listener(NAME, "http.listen", address).await?;
            self.listener = Some(listener);
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
                settings: self.settings,
                context: context.clone(),
                sockets: sockets.clone(),
            });
            let app = routes::router(shared);
            let shutdown = context.shutdown.clone();
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
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
