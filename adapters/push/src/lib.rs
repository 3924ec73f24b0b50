//! The push adapter: wakes users who have no live session through FCM (HTTP v1), APNs (HTTP/2,
//! token auth) and Baidu Cloud Push.
//!
//! - `dispatcher`: when each device is notified (coalescing, retries, pauses), from the outbox
//!   the router fills;
//! - `notification`: what a notification says, under the operator's content policy;
//! - `provider`: the trait each provider implements and the answers it maps to;
//! - `fcm`, `apns`, `baidu`: one module per provider, its request and its documented errors;
//! - `http`, `timers`: the shared HTTP client and the per-user deadlines.

#![forbid(unsafe_code)]

mod apns;
mod baidu;
mod dispatcher;
mod fcm;
mod http;
mod notification;
mod provider;
mod timers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use switchboard_config::PushConfig;
use switchboard_gateway::health::Health;
use switchboard_gateway::{Adapter, AdapterContext, AdapterError, Domain, Listening, Platform};

pub use baidu::sign as baidu_sign;
pub use dispatcher::PUSH_TOTAL;
pub use notification::Notification;
pub use provider::{Delivery, Provider};

use crate::dispatcher::{Dispatcher, Policy};

/// The configured providers, by the platform of the devices they serve.
type Providers = Vec<(Platform, Arc<dyn Provider>)>;

/// How long a provider keeps a notification for a phone that is off. The messages themselves
/// wait in the gateway for `limits.offline_ttl`; a day-old "new message" banner is noise.
pub const NOTIFICATION_TTL: Duration = Duration::from_secs(86_400);
/// A newer notification replaces the previous one on the phone, so a burst shows once.
pub const COLLAPSE_ID: &str = "switchboard";

/// A configuration problem found at start, naming the key to change.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{key}: cannot read {path}: {source}")]
    File {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

pub struct PushAdapter {
    config: PushConfig,
    domain: Domain,
    providers: Providers,
}

impl PushAdapter {
    pub fn new(config: &PushConfig, domain: &str) -> Self {
        Self { config: config.clone(), domain: Domain::new(domain), providers: Vec::new() }
    }

    fn build_providers(&self) -> Result<Providers, PushError> {
        let ca_file = self.config.ca_file.as_deref();
        let mut providers: Providers = Vec::new();
        if let Some(fcm) = &self.config.fcm {
            providers.push((Platform::Fcm, Arc::new(fcm::Fcm::new(fcm, http::client(ca_file, false)?)?)));
        }
        if let Some(apns) = &self.config.apns {
            providers.push((Platform::Apns, Arc::new(apns::Apns::new(apns, http::client(ca_file, true)?)?)));
        }
        if let Some(baidu) = &self.config.baidu {
            providers.push((Platform::Baidu, Arc::new(baidu::Baidu::new(baidu, http::client(ca_file, false)?)?)));
        }
        Ok(providers)
    }
}

impl Adapter for PushAdapter {
    fn name(&self) -> &'static str {
        "push"
    }

    /// Reads the credentials: a missing or malformed key fails the start, naming its key.
    fn bind(&mut self) -> BoxFuture<'_, Result<Listening, AdapterError>> {
        Box::pin(async move {
            self.providers = self
                .build_providers()
                .map_err(|error| AdapterError::Fatal { adapter: "push", message: error.to_string() })?;
            Ok(Listening::new())
        })
    }

    fn peers(&self) -> Vec<&'static str> {
        self.providers.iter().map(|(_, provider)| provider.name()).collect()
    }

    fn run(self: Box<Self>, context: AdapterContext) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(async move {
            let signals = context.router.subscribe_wakes();
            for (_, provider) in &self.providers {
                tokio::spawn(check_credentials(provider.clone(), context.health.clone(), context.shutdown.clone()));
            }
            let policy = Policy { window: self.config.coalesce_window.get(), content: self.config.content, domain: self.domain };
            let dispatcher = Dispatcher::new(context.wake_outbox, self.providers, policy, context.health);
            dispatcher.run(signals, context.shutdown).await;
            Ok(())
        })
    }
}

/// Shows bad credentials in `/healthz` before the first message needs them, and keeps trying
/// (slowly) until they work.
async fn check_credentials(provider: Arc<dyn Provider>, health: Health, shutdown: tokio_util::sync::CancellationToken) {
    let mut pause = Duration::from_secs(5);
    loop {
        match provider.check().await {
            Ok(()) => {
                health.set(provider.name(), true);
                return;
            }
            Err(reason) => {
                health.set(provider.name(), false);
                tracing::error!(provider = provider.name(), %reason, "push credentials do not work");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(600));
    }
}
