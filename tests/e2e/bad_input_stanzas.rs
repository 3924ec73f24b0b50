//! The bad-stanza corpus (tests/corpus/stanzas): each input is written at the gateway by a fake
//! XMPP server and gets the answer its first line expects, a stanza error, silence, or the stream
//! closed and opened again; after each one a chat message from XMPP still reaches bob, and what
//! was accepted before the bad input is not lost.

use std::path::Path;

use serde_json::Value;

use crate::common::{Gateway, MqttClient, message};
use crate::fake_xmpp::{FakeServer, error_condition};

const DOMAIN: &str = "gw.localhost";
const SECRET: &str = "fake-component-secret";
/// Where the corpus puts the id of bob's message to dave: only dave may speak of it.
const BOB_TO_DAVE: &[u8] = b"{bob-to-dave}";

#[derive(Debug)]
enum Expect {
    /// A stanza error with this defined condition and `type`, with the input's id.
    Error { condition: String, kind: String },
    /// No answer at all.
    Ignored,
    /// The gateway drops the stream, connects again and carries on.
    StreamClosed,
}

struct Case {
    name: String,
    expect: Expect,
    /// Written in pieces of this many bytes, else at once.
    pieces: Option<usize>,
    input: Vec<u8>,
}

/// First line: `<!-- expect: error service-unavailable cancel; pieces: 1 -->`; the rest is the input.
fn read_case(path: &Path) -> Case {
    let name = path.file_stem().and_then(|s| s.to_str()).expect("a file name").to_owned();
    let bytes = std::fs::read(path).expect("readable");
    let newline = bytes.iter().position(|b| *b == b'\n').expect("a first line");
    let first = std::str::from_utf8(&bytes[..newline]).expect("a UTF-8 first line");
    let spec = first.strip_prefix("<!-- ").and_then(|s| s.strip_suffix(" -->")).unwrap_or_else(|| panic!("{name}: {first}"));
    let mut expect = None;
    let mut pieces = None;
    for part in spec.split(';').map(str::trim) {
        if let Some(outcome) = part.strip_prefix("expect: ") {
            let words: Vec<&str> = outcome.split_whitespace().collect();
            expect = Some(match words.as_slice() {
                ["error", condition, kind] => Expect::Error { condition: (*condition).to_owned(), kind: (*kind).to_owned() },
                ["ignored"] => Expect::Ignored,
                ["stream-closed"] => Expect::StreamClosed,
                _ => panic!("{name}: unknown expectation {outcome}"),
            });
        } else if let Some(size) = part.strip_prefix("pieces: ") {
            pieces = Some(size.parse().expect("a piece size"));
        } else {
            panic!("{name}: unknown directive {part}");
        }
    }
    let expect = expect.unwrap_or_else(|| panic!("{name}: no expect"));
    Case { name, expect, pieces, input: bytes[newline + 1..].to_vec() }
}

fn replace(input: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// A chat message from carol to bob, as her server would forward it.
fn chat_to_bob(body: &str) -> Vec<u8> {
    format!("<message from='carol@localhost/phone' to='bob@{DOMAIN}' type='chat' id='{body}'><body>{body}</body></message>")
        .into_bytes()
}

/// The next frame bob gets must be this message: anything a bad stanza let through comes first.
async fn bob_gets(bob: &mut MqttClient, body: &str, case: &str) {
    let frame: Value = bob.recv().await;
    assert_eq!((frame["type"].as_str(), frame["body"].as_str()), (Some("message"), Some(body)), "{case}: {frame}");
}

#[tokio::test]
async fn the_bad_stanza_corpus_gets_stanza_errors_or_silence_and_breaks_nothing() {
    let mut server = FakeServer::start(DOMAIN, SECRET).await;
    let extra = format!("{}[limits]\nmax_frame_bytes = 4096\nmessages_per_second = 1000\n", server.gateway_config());
    let gateway = Gateway::start_with(&extra).await;
    server.wait_handshakes(1).await;
    let mut bob = gateway.mqtt_user("bob").await;

    // bob writes to dave; carol was not party to it and must not be able to confirm it.
    bob.send(message("b1", "dave@localhost", "for dave only")).await;
    let to_dave = server.next_stanza().await;
    assert_eq!((to_dave.name(), to_dave.attr("to")), ("message", Some("dave@localhost")));
    let to_dave_id = to_dave.attr("id").expect("a stanza id").to_owned();
    let ack = bob.recv_type("ack").await;
    assert_eq!(ack["msg"].as_str(), Some(to_dave_id.as_str()));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/stanzas");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is there");
    for (i, file) in files.iter().enumerate() {
        let case = read_case(file);
        let name = case.name.as_str();
        let input = replace(&case.input, BOB_TO_DAVE, to_dave_id.as_bytes());
        let streams = server.handshakes();
        let mut bytes = Vec::new();
        if let Expect::StreamClosed = case.expect {
            // Accepted just before the bad bytes, in the same write: it must still reach bob.
            bytes.extend(chat_to_bob(&format!("before-{i}")));
        }
        bytes.extend(input);
        match case.pieces {
            Some(size) => server.write_in_pieces(&bytes, size).await,
            None => server.write(&bytes).await,
        }
        match &case.expect {
            Expect::Error { condition, kind } => {
                let reply = server.try_next_stanza().await.unwrap_or_else(|| panic!("{name}: no answer"));
                let shown = String::from(&reply);
                assert_eq!(reply.attr("type"), Some("error"), "{name}: {shown}");
                assert_eq!(reply.attr("id"), Some(name), "{name}: the error names the stanza: {shown}");
                let got = error_condition(&reply).unwrap_or_else(|| panic!("{name}: no defined condition: {shown}"));
                assert_eq!(got, (condition.clone(), kind.clone()), "{name}: {shown}");
            }
            Expect::Ignored => {}
            Expect::StreamClosed => {
                server.wait_handshakes(streams + 1).await;
                bob_gets(&mut bob, &format!("before-{i}"), name).await;
            }
        }
        server.write(&chat_to_bob(&format!("ok-{i}"))).await;
        bob_gets(&mut bob, &format!("ok-{i}"), name).await;
        let unexpected: Vec<String> = server.sync().await.iter().map(String::from).collect();
        assert!(unexpected.is_empty(), "{name}: nothing else is answered: {unexpected:?}");
        let reconnected = if let Expect::StreamClosed = case.expect { 1 } else { 0 };
        assert_eq!(server.handshakes(), streams + reconnected, "{name}: the stream is closed only for bad XML");
    }

    // dave may confirm bob's message, and bob hears of it under the id he was acked with.
    let receipt = format!(
        "<message from='dave@localhost/pc' to='bob@{DOMAIN}' type='chat' id='r1'><received xmlns='urn:xmpp:receipts' id='{to_dave_id}'/></message>"
    );
    server.write(receipt.as_bytes()).await;
    let receipt = bob.recv().await;
    assert_eq!((receipt["type"].as_str(), receipt["of"].as_str()), (Some("receipt"), Some(to_dave_id.as_str())), "{receipt}");
    // The way out works too, after all those reconnections.
    bob.send(message("b2", "carol@localhost", "still here")).await;
    let out = server.next_stanza().await;
    assert_eq!((out.name(), out.attr("to")), ("message", Some("carol@localhost")));
    assert_eq!(bob.recv_type("ack").await["id"], "b2");
    assert_eq!(gateway.http_get("/healthz").await.0, 200);
}
