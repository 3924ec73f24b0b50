//! The core of Switchboard: the canonical model every adapter speaks, the router that alone owns
//! routing state, and the store that keeps what cannot be delivered yet.
//!
//! Layout:
//! - `address`, `id`, `envelope`: the canonical model. No protocol type appears here; adapters
//!   translate their wire format to an [`Envelope`] at the edge and back.
//! - `outcome`: what became of a submitted envelope, resolved exactly once.
//! - `adapter`: the trait every protocol adapter implements, and what it is handed to run.
//! - `router`: the router task, one mailbox task per active user, and the session leases
//!   adapters hold for their live connections.
//! - `store`: the durable store behind a trait (SQLite embedded, PostgreSQL shared).
//! - `auth`: JWT verification and minting, shared by every adapter that logs users in.
//! - `health`: which configured peers are reachable, for `/healthz`.
//! - `connections`: connections per client address, shared by every listener.
//! - `wake`: when a user without a live session is to be woken, and the outbox that keeps it.
//! - `tls`: certificates and keys from PEM files, and bounded handshakes, for every listener
//!   and client that speaks TLS.

#![forbid(unsafe_code)]

pub mod adapter;
pub mod address;
pub mod auth;
pub mod connections;
pub mod envelope;
pub mod health;
pub mod id;
pub mod metrics;
pub mod outcome;
mod prehashed;
pub mod roster;
pub mod router;
pub mod store;
pub mod tls;
pub mod wake;

pub use adapter::{Adapter, AdapterContext, AdapterError, Listening, bind_listener};
pub use address::{Address, AddressError, Domain, RemoteAddress, UserId};
pub use envelope::{
    Body, ChatState, DeviceAction, DeviceRegistration, Envelope, FailureBody, FailureReason, MessageBody, MessageKind,
    Platform, PresenceBody, ReceiptBody, ReceiptStatus, Show, SubscriptionAction, Timestamp,
};
pub use id::{MessageId, SessionId};
pub use outcome::{Outcome, Rejection};
