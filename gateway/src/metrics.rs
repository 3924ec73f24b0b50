//! Metric names shared by the core and the adapters, so /metrics speaks one vocabulary.

/// Live sessions, labelled by `adapter`.
pub const SESSIONS: &str = "switchboard_sessions";
/// Frames received from clients, labelled by `adapter` and `type`.
pub const FRAMES_IN: &str = "switchboard_frames_in_total";
/// Frames sent to clients, labelled by `adapter` and `type`.
pub const FRAMES_OUT: &str = "switchboard_frames_out_total";
/// Errors answered to clients or dropped input, labelled by `adapter` and `code`.
pub const ERRORS: &str = "switchboard_errors_total";
/// Depth of the router's command queue.
pub const ROUTER_QUEUE: &str = "switchboard_router_queue_depth";
/// Envelopes waiting in user mailboxes, summed.
pub const MAILBOX_QUEUE: &str = "switchboard_mailbox_queue_depth";
/// Envelopes written to the offline store.
pub const STORED: &str = "switchboard_offline_stored_total";
/// Messages a sender sent again that were answered from the first copy, not routed twice.
pub const RESENDS: &str = "switchboard_resends_suppressed_total";
