//! Connections per client IP address, across every listener of the gateway: one host cannot take
//! all the sockets, file descriptors and session memory for itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct ConnectionLimits {
    /// 0: no limit.
    per_ip: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection; dropping it frees its slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionLimits {
    pub fn new(per_ip: usize) -> Self {
        Self { per_ip, open: Arc::default() }
    }

    pub fn per_ip(&self) -> usize {
        self.per_ip
    }

    /// A slot for a new connection from `ip`, or `None` when that address has all it may have.
    pub fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let Ok(mut open) = self.open.lock() else { return None };
        let count = open.entry(ip).or_default();
        if self.per_ip != 0 && *count >= self.per_ip {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { ip, open: self.open.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_its_slots_back() {
        let limits = ConnectionLimits::new(2);
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let first = limits.admit(one).expect("first");
        let _second = limits.admit(one).expect("second");
        assert!(limits.admit(one).is_none(), "third refused");
        assert!(limits.admit(two).is_some(), "other addresses unaffected");
        drop(first);
        assert!(limits.admit(one).is_some(), "a closed connection frees its slot");
        let unlimited = ConnectionLimits::new(0);
        let slots: Vec<_> = (0..1000).filter_map(|_| unlimited.admit(one)).collect();
        assert_eq!(slots.len(), 1000);
    }
}
