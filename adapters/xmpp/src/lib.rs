//! The XMPP adapter: Switchboard as an XEP-0114 external component of an XMPP server, so that
//! every gateway user `alice` is the XMPP address `alice@<xmpp.domain>`.
//!
//! - `shim`: lets tokio-xmpp's stream parser accept a component stream header without `version`;
//! - `nesting`: fails the stream before the parser when the server nests elements too deep;
//! - `read`: each element read from the link built as a minidom tree;
//! - `link`: opening the component stream and the handshake;
//! - `namespace`: `jabber:client` ⇄ `jabber:component:accept` for the stanzas the component
//!   answers with (error replies, IQ answers), built as client stanzas; inbound stanzas are read
//!   in the link's namespace directly;
//! - `text`: what the link sends per message (stanzas for envelopes, delivery pings) written as
//!   XML text, without building an element tree;
//! - `convert`: stanzas ⇄ envelopes, pure;
//! - `service`: what the component itself answers (disco, ping, version);
//! - `adapter`: the supervised link: reconnects with backoff, queues while down.

#![forbid(unsafe_code)]

mod adapter;
mod convert;
mod link;
mod namespace;
mod nesting;
mod read;
mod service;
mod shim;
mod text;

pub use adapter::{XmppAdapter, XmppSettings};

/// The pure stanza handling, for the fuzz targets in `fuzz/`: not part of the crate's interface.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::convert::{Addressing, Inbound};
    pub use crate::namespace::{to_client, to_component};
    pub use crate::service::answer;
}
