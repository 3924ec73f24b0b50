//! What every push provider offers the dispatcher, and what it can answer.

use std::time::Duration;

use futures::future::BoxFuture;
use switchboard_gateway::DeviceRegistration;

use crate::notification::Notification;

/// The end of one attempt to notify one device, in the terms the dispatcher acts on. Each
/// provider maps its own documented answers onto these.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The token will never work again (app uninstalled, token expired or from another app):
    /// the device is removed.
    DeviceGone(String),
    /// Throttled, provider trouble or a network failure: try again later, not sooner than
    /// `after` when the provider said so.
    Retry { after: Option<Duration>, reason: String },
    /// Our credentials were refused: nothing sent to this provider will work until an operator
    /// fixes them, so it is paused rather than hammered.
    Unauthorized(String),
    /// Refused for good (payload, configuration): retrying would not help.
    Refused(String),
}

pub trait Provider: Send + Sync + 'static {
    /// The `/healthz` and metrics name, e.g. `push.fcm`.
    fn name(&self) -> &'static str;

    /// Checks the credentials once at start (an access token can be fetched, say), so that bad
    /// ones show in `/healthz` before the first message. `Ok` when there is nothing to check.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;

    fn send<'a>(&'a self, device: &'a DeviceRegistration, notification: &'a Notification) -> BoxFuture<'a, Delivery>;
}
