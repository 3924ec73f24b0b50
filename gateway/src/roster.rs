//! Presence subscriptions (RFC 6121 §3, simplified to what a gateway user needs): who sees whose
//! presence. Pure; the mailbox keeps each user's items in the store.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::envelope::SubscriptionAction;

/// One contact in a user's roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    pub contact: Address,
    /// She receives the contact's presence.
    pub to: bool,
    /// The contact receives hers.
    pub from: bool,
    /// She asked to see the contact's presence and has no answer yet.
    pub ask: bool,
}

impl RosterItem {
    pub fn new(contact: Address) -> Self {
        Self { contact, to: false, from: false, ask: false }
    }

    pub fn is_empty(&self) -> bool {
        !(self.to || self.from || self.ask)
    }
}

/// Whether the roster's owner sent the subscription stanza or received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// The owner's item after a subscription stanza went by.
pub fn apply(mut item: RosterItem, action: SubscriptionAction, direction: Direction) -> RosterItem {
    use SubscriptionAction::*;
    match (direction, action) {
        (Direction::Sent, Subscribe) => item.ask = true,
        (Direction::Sent, Subscribed) => item.from = true,
        (Direction::Sent, Unsubscribe) => {
            item.to = false;
            item.ask = false;
        }
        (Direction::Sent, Unsubscribed) => item.from = false,
        // A request to her waits for her answer as a frame; nothing changes until she answers.
        (Direction::Received, Subscribe) => {}
        (Direction::Received, Subscribed) => {
            item.to = true;
            item.ask = false;
        }
        (Direction::Received, Unsubscribe) => item.from = false,
        (Direction::Received, Unsubscribed) => {
            item.to = false;
            item.ask = false;
        }
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::UserId;

    fn bob() -> RosterItem {
        RosterItem::new(Address::user(UserId::parse("bob").expect("valid")))
    }

    #[test]
    fn a_request_answered_yes_makes_a_one_way_subscription() {
        let asked = apply(bob(), SubscriptionAction::Subscribe, Direction::Sent);
        assert!(asked.ask && !asked.to);
        let granted = apply(asked, SubscriptionAction::Subscribed, Direction::Received);
        assert!(granted.to && !granted.ask && !granted.from);
    }

    #[test]
    fn both_ways_then_cancelled_from_each_side() {
        let mut item = apply(bob(), SubscriptionAction::Subscribed, Direction::Received);
        item = apply(item, SubscriptionAction::Subscribed, Direction::Sent);
        assert!(item.to && item.from);
        item = apply(item, SubscriptionAction::Unsubscribe, Direction::Received);
        assert!(item.to && !item.from);
        item = apply(item, SubscriptionAction::Unsubscribe, Direction::Sent);
        assert!(item.is_empty());
    }
}
