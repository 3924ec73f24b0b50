//! The `switchboard` binary's wiring: configuration in, running adapters out.
//!
//! Kept as a library so the end-to-end tests can start a whole gateway in-process on port 0; the
//! binary in `main.rs` only parses the command line and waits for a signal.

#![forbid(unsafe_code)]

mod start;

pub use start::{Running, start};
