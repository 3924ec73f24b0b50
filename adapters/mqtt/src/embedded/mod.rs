//! The embedded MQTT endpoint: an MQTT 3.1.1 server inside the gateway.
//!
//! rumqttd was the obvious candidate but has no hook to restrict topics per user, which the
//! contract requires, so the endpoint is built on the MQTT packet codec rumqttc ships
//! (`rumqttc::mqttbytes::v4`): the codec is kept upstream, and this module only adds what a
//! broker for this one topic scheme needs. Each client is one task (`connection`); `registry`
//! remembers persistent sessions and enforces one connection per client id.
//!
//! With `mqtt.tls_cert` the endpoint listens twice, in the clear and with TLS, as a Mosquitto with
//! two listeners would: both feed the same connection code, the same authentication and the same
//! per-address limits.

mod connection;
mod io;
mod registry;

use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_frames::{FrameCounters, RateLimiter};
use switchboard_gateway::AdapterContext;
use switchboard_gateway::tls::{self, TlsAcceptor};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::config::MqttSettings;
use registry::Registry;

pub(crate) struct Shared {
    pub settings: MqttSettings,
    pub context: AdapterContext,
    pub limiter: RateLimiter,
    pub counters: FrameCounters,
    pub registry: Registry,
}

/// The endpoint's listeners: the plain one, and the TLS one when configured.
pub(crate) struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<(TcpListener, TlsAcceptor)>,
}

pub(crate) async fn serve(listeners: Listeners, settings: MqttSettings, context: AdapterContext) {
    let shared = Arc::new(Shared {
        limiter: RateLimiter::new(settings.messages_per_second),
        counters: FrameCounters::new(crate::adapter::NAME),
        settings,
        context,
        registry: Registry::default(),
    });
    let connections = TaskTracker::new();
    let shutdown = shared.context.shutdown.clone();
    let Listeners { plain, tls } = listeners;
    loop {
        let (accepted, acceptor) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = plain.accept() => (accepted, None),
            (accepted, acceptor) = accept_tls(tls.as_ref()) => (accepted, Some(acceptor)),
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "mqtt accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed before anything is read (MQTT has no refusal before CONNECT).
        // A TLS client counts from its TCP connection on, so handshakes cannot pile up either.
        let Some(slot) = shared.context.connections.admit(peer.ip()) else {
            tracing::info!(%peer, max = shared.context.connections.per_ip(), "mqtt connection refused: too many from this address (limits.connections_per_ip)");
            metrics::counter!(switchboard_gateway::metrics::ERRORS, "adapter" => crate::adapter::NAME, "code" => "too-many-connections").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            match acceptor {
                None => {
                    let (read_half, write_half) = stream.into_split();
                    connection::serve(read_half, write_half, peer, shared).await;
                }
                // Boxed: the handshake is large, and the task of every plain connection would
                // otherwise be sized for it.
                Some(acceptor) => Box::pin(serve_tls(stream, peer, &acceptor, shared)).await,
            }
            drop(slot);
        });
    }
    drop(plain);
    drop(tls);
    connections.close();
    connections.wait().await;
}

/// The next TCP connection on the TLS listener; never, without one.
async fn accept_tls(
    tls: Option<&(TcpListener, TlsAcceptor)>,
) -> (std::io::Result<(TcpStream, SocketAddr)>, TlsAcceptor) {
    match tls {
        Some((listener, acceptor)) => (listener.accept().await, acceptor.clone()),
        None => std::future::pending().await,
    }
}

async fn serve_tls(stream: TcpStream, peer: SocketAddr, acceptor: &TlsAcceptor, shared: Arc<Shared>) {
    let handshake = tls::accept(acceptor, stream, shared.settings.handshake_timeout);
    // Nothing accepted yet: a shutdown need not wait for the handshake.
    let handshake = tokio::select! {
        () = shared.context.shutdown.cancelled() => return,
        handshake = handshake => handshake,
    };
    match handshake {
        Ok(stream) => {
            let (read_half, write_half) = tokio::io::split(stream);
            connection::serve(read_half, write_half, peer, shared).await;
        }
        Err(error) => tracing::debug!(%peer, %error, "mqtt tls client dropped"),
    }
}
