//! End-to-end tests: real MQTT and WebSocket clients against a whole gateway.

mod answers;
mod bad_input;
mod bad_input_stanzas;
mod bad_input_topics;
mod binary;
mod bridging;
mod common;
mod ejabberd;
mod ejabberd_interop;
mod external_broker;
mod fake_xmpp;
mod fault;
mod mosquitto;
mod mqtt_endpoint;
mod offline;
mod postgres;
mod presence;
mod push;
mod resends;
mod slow_consumer;
mod prosody;
mod store;
mod tls;
mod xmpp;
