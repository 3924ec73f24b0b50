use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_config::Config;
use switchboard_gateway::auth::Authenticator;
use switchboard_gateway::health::Health;
use switchboard_gateway::router::{self, RouterSettings};
use switchboard_gateway::store::{MessageAliases, SqlStore, Store};
use switchboard_gateway::wake::WakeOutbox;
use switchboard_gateway::connections::ConnectionLimits;
use switchboard_gateway::{Adapter, AdapterContext, Domain};
use switchboard_mqtt::MqttAdapter;
use switchboard_push::PushAdapter;
use switchboard_websocket::{WebSocketAdapter, WebSocketSettings};
use switchboard_xmpp::{XmppAdapter, XmppSettings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A started gateway.
pub struct Running {
    /// Where each listener is, by name (`websocket`, `mqtt`, `mqtt-tls`).
    pub addresses: BTreeMap<&'static str, SocketAddr>,
    shutdown: CancellationToken,
    adapters: TaskTracker,
    core: TaskTracker,
    grace: Duration,
}

impl Running {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Two phases under one deadline: adapters stop accepting and settle what they accepted,
    /// then the router's mailboxes settle their deliveries (storing what was not confirmed).
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.grace;
        self.adapters.close();
        let adapters_done = tokio::time::timeout_at(deadline, self.adapters.wait()).await.is_ok();
        self.core.close();
        let core_done = tokio::time::timeout_at(deadline, self.core.wait()).await.is_ok();
        if !(adapters_done && core_done) {
            tracing::warn!("shutdown deadline reached with work in flight");
        }
        adapters_done && core_done
    }

    /// Resolves when shutdown has begun, from a signal or because an adapter failed.
    pub async fn stopping(&self) {
        self.shutdown.cancelled().await;
    }
}

/// Opens the store, binds every configured adapter (a taken port fails here, naming its key) and
/// starts them.
pub async fn start(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Running> {
    let store: Arc<dyn Store> = Arc::new(match &config.gateway.database_url {
        Some(url) => SqlStore::connect(url.expose()).await.context("gateway.database_url: cannot open the store")?,
        None => SqlStore::open_embedded(&config.gateway.data_dir)
            .await
            .with_context(|| format!("gateway.data_dir: cannot open the store in {}", config.gateway.data_dir.display()))?,
    });
    let auth = Authenticator::from_config(&config.auth, &config.gateway.data_dir)?;

    let mut settings = RouterSettings::new(Domain::new(&config.gateway.domain));
    settings.offline_max = u64::from(config.limits.offline_max);
    settings.offline_ttl = config.limits.offline_ttl.get();
    settings.auto_accept_subscriptions = config.gateway.auto_accept_subscriptions;
    settings.wake_offline_users = config.push.is_some();
    settings.max_sessions_per_user = usize::try_from(config.limits.sessions_per_user).unwrap_or(usize::MAX);

    let mut websocket = WebSocketSettings::new(
        config.http.listen,
        config.limits.max_frame_bytes,
        config.limits.messages_per_second,
    );
    websocket.metrics = metrics;
    websocket.tls = config.http.tls();
    let mut adapters: Vec<Box<dyn Adapter>> = vec![
        Box::new(WebSocketAdapter::new(websocket)),
        Box::new(MqttAdapter::new(&config.mqtt, &config.limits)),
    ];
    if let Some(xmpp) = &config.xmpp {
        let domain = xmpp.domain.clone().unwrap_or_else(|| config.gateway.domain.clone());
        let secret = xmpp.secret.expose().to_owned();
        let settings = XmppSettings::new(xmpp.server.clone(), domain, secret, config.limits.max_frame_bytes);
        adapters.push(Box::new(XmppAdapter::new(settings)));
    }
    if let Some(push) = &config.push {
        adapters.push(Box::new(PushAdapter::new(push, &config.gateway.domain)));
    }

    let mut addresses = BTreeMap::new();
    for adapter in &mut adapters {
        addresses.extend(adapter.bind().await?);
    }

    let core = TaskTracker::new();
    let router = router::spawn(store.clone(), settings, &core).await?;
    let health = Health::default();
    // Just opened and migrated: the store is up.
    health.set("store", true);
    let shutdown = CancellationToken::new();
    core.spawn(watch_store(store.clone(), health.clone(), shutdown.clone()));

    for adapter in &adapters {
        for peer in adapter.peers() {
            health.register(peer);
        }
    }
    let context = AdapterContext {
        router,
        auth,
        health,
        aliases: MessageAliases::spawn(store.clone(), &core),
        wake_outbox: WakeOutbox::new(store.clone()),
        connections: ConnectionLimits::new(usize::try_from(config.limits.connections_per_ip).unwrap_or(usize::MAX)),
        shutdown: shutdown.clone(),
    };
    let tasks = TaskTracker::new();
    for adapter in adapters {
        let name = adapter.name();
        let context = context.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = adapter.run(context).await {
                tracing::error!(adapter = name, %error, "adapter failed; shutting down");
                shutdown.cancel();
            }
        });
    }
    for (name, address) in &addresses {
        tracing::info!(listener = *name, %address, "listening");
    }
    Ok(Running { addresses, shutdown, adapters: tasks, core, grace: config.gateway.shutdown_grace.get() })
}

/// Keeps the `store` entry of `/healthz` current.
async fn watch_store(store: Arc<dyn Store>, health: Health, shutdown: CancellationToken) {
    let mut up = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(if up { 10 } else { 1 })) => {}
        }
        up = tokio::time::timeout(Duration::from_secs(5), store.ping()).await.is_ok_and(|r| r.is_ok());
        health.set("store", up);
    }
}
