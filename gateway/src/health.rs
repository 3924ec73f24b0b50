//! Which configured peers are reachable right now, for `/healthz`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared between the adapters (which report) and the HTTP endpoint (which reads).
#[derive(Clone, Debug, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Health {
    /// Declares a component that must be up for the gateway to be healthy; it starts as down.
    pub fn register(&self, name: &'static str) {
        self.set(name, false);
    }

    pub fn set(&self, name: &'static str, up: bool) {
        if let Ok(mut components) = self.components.lock() {
            components.insert(name, up);
        }
    }

    /// The names of the components that are down, in a stable order.
    pub fn failing(&self) -> Vec<&'static str> {
        self.components
            .lock()
            .map(|c| c.iter().filter(|(_, up)| !**up).map(|(name, _)| *name).collect())
            .unwrap_or_default()
    }
}
