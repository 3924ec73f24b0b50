//! Persistent sessions and client-id takeover.
//!
//! A session is keyed by user and client id together, so one user cannot pick up another's
//! session by reusing a client id. What a session keeps is small: whether it subscribed to its
//! `in` topic. The messages themselves wait in the gateway's offline store, for any session.

use std::collections::HashMap;
use std::sync::Mutex;

use rumqttc::QoS;
use switchboard_gateway::UserId;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<(UserId, String), SessionState>>,
}

struct SessionState {
    live: Option<(u64, CancellationToken)>,
    subscription: Option<QoS>,
    persistent: bool,
}

pub(crate) struct Attached {
    /// Whether an earlier persistent session was resumed (CONNACK session-present).
    pub session_present: bool,
    /// The `in` subscription the resumed session had.
    pub subscription: Option<QoS>,
    /// Cancelled when another connection takes this client id over.
    pub taken_over: CancellationToken,
}

impl Registry {
    pub fn attach(&self, user: &UserId, client_id: &str, connection: u64, clean: bool) -> Attached {
        let taken_over = CancellationToken::new();
        let Ok(mut sessions) = self.sessions.lock() else {
            return Attached { session_present: false, subscription: None, taken_over };
        };
        let key = (user.clone(), client_id.to_owned());
        let previous = sessions.remove(&key);
        if let Some((_, token)) = previous.as_ref().and_then(|s| s.live.as_ref()) {
            token.cancel();
        }
        let resumed = previous.filter(|s| s.persistent && !clean);
        let attached = Attached {
            session_present: resumed.is_some(),
            subscription: resumed.as_ref().and_then(|s| s.subscription),
            taken_over: taken_over.clone(),
        };
        sessions.insert(
            key,
            SessionState { live: Some((connection, taken_over)), subscription: attached.subscription, persistent: !clean },
        );
        attached
    }

    pub fn set_subscription(&self, user: &UserId, client_id: &str, subscription: Option<QoS>) {
        if let Ok(mut sessions) = self.sessions.lock()
            && let Some(state) = sessions.get_mut(&(user.clone(), client_id.to_owned())) {
                state.subscription = subscription;
            }
    }

    pub fn detach(&self, user: &UserId, client_id: &str, connection: u64) {
        let Ok(mut sessions) = self.sessions.lock() else { return };
        let key = (user.clone(), client_id.to_owned());
        let Some(state) = sessions.get_mut(&key) else { return };
        // A connection that was taken over no longer owns the entry.
        if state.live.as_ref().is_some_and(|(id, _)| *id == connection) {
            state.live = None;
            if !state.persistent {
                sessions.remove(&key);
            }
        }
    }
}
