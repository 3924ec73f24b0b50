//! The one trait every protocol adapter implements.
//!
//! An adapter is built from its configuration by the binary, then run: it receives an
//! [`AdapterContext`] with the router handle, the shared health registry and the shutdown
//! signal, and returns when shutdown has been asked for and its in-flight work is settled.

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::connections::ConnectionLimits;
use crate::health::Health;
use crate::router::RouterHandle;
use crate::store::MessageAliases;
use crate::wake::WakeOutbox;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A listener could not be opened; `key` is the configuration key to change.
    #[error("{adapter}: cannot listen on {address}: change the configuration key `{key}`")]
    Bind {
        adapter: &'static str,
        key: &'static str,
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{adapter}: {message}")]
    Fatal {
        adapter: &'static str,
        message: String,
    },
}

/// The listeners an adapter opened, by name (`websocket`, `mqtt`, `mqtt-tls`).
pub type Listening = Vec<(&'static str, std::net::SocketAddr)>;

/// Binds a listener for `adapter`; a failure names the configuration key to change.
pub async fn bind_listener(
    adapter: &'static str,
    key: &'static str,
    address: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, Option<std::net::SocketAddr>), AdapterError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AdapterError::Bind { adapter, key, address, source })?;
    let bound = listener.local_addr().ok();
    Ok((listener, bound))
}

/// What an adapter is handed to run.
#[derive(Clone)]
pub struct AdapterContext {
    pub router: RouterHandle,
    pub auth: Authenticator,
    pub health: Health,
    /// How messages exchanged with other systems are known there.
    pub aliases: MessageAliases,
    /// Who is to be woken, and the devices to wake.
    pub wake_outbox: WakeOutbox,
    /// Connections per client address, across listeners.
    pub connections: ConnectionLimits,
    /// Cancelled when the gateway begins to shut down: stop accepting, settle in-flight work, return.
    pub shutdown: CancellationToken,
}

pub trait Adapter: Send + 'static {
    fn name(&self) -> &'static str;

    /// Opens listeners (and reads the files they need). Separate from [`Adapter::run`] so that a
    /// port already taken, or an unusable certificate, is reported, naming its configuration key,
    /// before anything starts. Returns each bound address under the listener's name.
    fn bind(&mut self) -> BoxFuture<'_, Result<Listening, AdapterError>>;

    /// The configured peers this adapter must reach (`/healthz` names). They count as down from
    /// the start until the adapter reports them up.
    fn peers(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn run(self: Box<Self>, context: AdapterContext) -> BoxFuture<'static, Result<(), AdapterError>>;
}
