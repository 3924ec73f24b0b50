//! The embedded MQTT endpoint: an MQTT 3.1.1 server inside the gateway.
//!
//! rumqttd was the obvious candidate but has no hook to restrict topics per user, which the
//! contract requires, so the endpoint is built on the MQTT packet codec rumqttc ships
//! (`rumqttc::mqttbytes::v4`): the codec is kept upstream, and this module only adds what a
//! broker for this one topic scheme needs. Each client is one task (`connection`); `registry`
//! remembers persistent sessions and enforces one connection per client id.

mod connection;
mod io;
mod registry;

use std::sync::Arc;

use switchboard_frames::RateLimiter;
use switchboard_gateway::AdapterContext;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::MqttSettings;
use registry::Registry;

pub(crate) struct Shared {
    pub settings: MqttSettings,
    pub context: AdapterContext,
    pub limiter: RateLimiter,
    pub registry: Registry,
}

pub(crate) async fn serve(listener: TcpListener, settings: MqttSettings, context: AdapterContext) {
    let shared = Arc::new(Shared {
        limiter: RateLimiter::new(settings.messages_per_second),
        settings,
        context,
        registry: Registry::default(),
    });
    let connections = TaskTracker::new();
    let shutdown = shared.context.shutdown.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over the limit: closed before anything is read (MQTT has no refusal
                    // before CONNECT).
                    let Some(slot) = shared.context.connections.admit(peer.ip()) else {
                        tracing::info!(%peer, max = shared.context.connections.per_ip(), "mqtt connection refused: too many from this address (limits.connections_per_ip)");
                        metrics::counter!(switchboard_gateway::metrics::ERRORS, "adapter" => crate::adapter::NAME, "code" => "too-many-connections").increment(1);
                        drop(stream);
                        continue;
                    };
                    let shared = shared.clone();
                    connections.spawn(async move {
                        connection::serve(stream, peer, shared).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "mqtt accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
