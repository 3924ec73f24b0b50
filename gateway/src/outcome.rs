//! What became of a submitted envelope. Resolved exactly once; a dropped resolver counts as
//! [`Outcome::Retryable`], never as success.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to at least one live session of the recipient, which confirmed it.
    Delivered,
    /// Written to the durable store; it will be delivered when the recipient returns.
    Stored,
    /// Accepted, but nothing needed keeping (presence or a chat state for someone away).
    Accepted,
    /// Not done now because something is busy or away; the sender may try again.
    Retryable(String),
    /// Not done because the gateway itself failed (its store refused a write); the sender may try
    /// again, and the operator has a log line.
    Failed(String),
    /// Refused for good.
    Rejected(Rejection),
}

impl Outcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Delivered | Self::Stored | Self::Accepted)
    }
}

/// Why an envelope was refused. Adapters map these onto their protocol's errors
/// (the JSON `error` codes, XMPP stanza errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The recipient is a gateway user who has never connected.
    UnknownUser,
    /// No adapter carries traffic for this address.
    NoRoute,
    /// The sender may not do this (acting for someone else).
    Forbidden(String),
    /// The envelope makes no sense (e.g. a device registration for someone else).
    BadRequest(String),
    /// The recipient's offline queue is full.
    QueueFull,
    /// A device to unregister that the user never registered.
    UnknownDevice,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownUser => f.write_str("no such user"),
            Self::NoRoute => f.write_str("no route to that address"),
            Self::Forbidden(why) | Self::BadRequest(why) => f.write_str(why),
            Self::QueueFull => f.write_str("the recipient's offline queue is full"),
            Self::UnknownDevice => f.write_str("no such device"),
        }
    }
}
