//! The bad-topic corpus (tests/corpus/topics.txt) against the embedded MQTT endpoint: each PUBLISH
//! or SUBSCRIBE gets the answer its line expects; after each, alice's session (or a new one, where
//! the case closes it) still works, and bob, beside her all along, is not disturbed. The packets
//! are built by hand: rumqttc's client refuses to send most of these topics.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use rumqttc::{Connect, ConnectReturnCode, Packet, PubAck, Publish, QoS, SubscribeReasonCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Gateway, WAIT, message};

#[derive(Debug, PartialEq)]
enum Kind {
    Publish,
    Subscribe,
}

#[derive(Debug, PartialEq)]
enum Expect {
    Forbidden,
    Refused,
    Closed,
}

struct Case {
    line: String,
    kind: Kind,
    topic: Vec<u8>,
    expect: Expect,
}

/// `\xHH` is a byte, `{c*N}` is N times c, `""` is empty.
fn decode_topic(text: &str) -> Vec<u8> {
    if text == "\"\"" {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(hex) = rest.strip_prefix("\\x") {
            out.push(u8::from_str_radix(&hex[..2], 16).expect("two hex digits"));
            rest = &hex[2..];
        } else if let Some(repeat) = rest.strip_prefix('{') {
            let (spec, after) = repeat.split_once('}').expect("a closing brace");
            let (c, n) = spec.split_once('*').expect("{c*N}");
            out.extend(c.repeat(n.parse().expect("a count")).into_bytes());
            rest = after;
        } else {
            let c = rest.chars().next().expect("not empty");
            out.extend(c.to_string().into_bytes());
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn read_cases() -> Vec<Case> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/topics.txt");
    let text = std::fs::read_to_string(path).expect("the topic corpus");
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [kind, topic, expect] = fields.as_slice() else { panic!("three fields: {line}") };
            let kind = match *kind {
                "publish" => Kind::Publish,
                "subscribe" => Kind::Subscribe,
                other => panic!("unknown kind {other}"),
            };
            let expect = match *expect {
                "forbidden" => Expect::Forbidden,
                "refused" => Expect::Refused,
                "closed" => Expect::Closed,
                other => panic!("unknown expectation {other}"),
            };
            Case { line: line.to_owned(), kind, topic: decode_topic(topic), expect }
        })
        .collect()
}

fn remaining_length(buffer: &mut BytesMut, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        buffer.put_u8(byte);
        if length == 0 {
            return;
        }
    }
}

/// A QoS 1 PUBLISH with any bytes as its topic.
fn publish(topic: &[u8], pkid: u16, payload: &[u8]) -> BytesMut {
    let mut packet = BytesMut::new();
    packet.put_u8(0x32);
    remaining_length(&mut packet, 2 + topic.len() + 2 + payload.len());
    packet.put_u16(u16::try_from(topic.len()).expect("a topic fits MQTT"));
    packet.put_slice(topic);
    packet.put_u16(pkid);
    packet.put_slice(payload);
    packet
}

/// A SUBSCRIBE of one filter, any bytes, at QoS 1.
fn subscribe(filter: &[u8], pkid: u16) -> BytesMut {
    let mut packet = BytesMut::new();
    packet.put_u8(0x82);
    remaining_length(&mut packet, 2 + 2 + filter.len() + 1);
    packet.put_u16(pkid);
    packet.put_u16(u16::try_from(filter.len()).expect("a filter fits MQTT"));
    packet.put_slice(filter);
    packet.put_u8(1);
    packet
}

/// An MQTT 3.1.1 client on a bare socket: it writes whatever bytes it is given.
struct RawClient {
    stream: TcpStream,
    buffer: BytesMut,
    pkid: u16,
}

impl RawClient {
    /// Logs in with user name `login`, which the endpoint case-folds to `user`, and subscribes to
    /// her `in` topic.
    async fn connect(address: SocketAddr, login: &str, user: &str, token: &str) -> Self {
        let stream = TcpStream::connect(address).await.expect("mqtt connect");
        let mut client = Self { stream, buffer: BytesMut::new(), pkid: 0 };
        let mut connect = Connect::new(format!("{user}-raw"));
        connect.keep_alive = 0;
        connect.set_login(login, token);
        let mut packet = BytesMut::new();
        Packet::Connect(connect).write(&mut packet, usize::MAX).expect("a CONNECT");
        client.write(&packet).await;
        match client.next().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("no CONNACK: {other:?}"),
        }
        let pkid = client.pkid();
        client.write(&subscribe(format!("im/{user}/in").as_bytes(), pkid)).await;
        match client.next().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]),
            other => panic!("no SUBACK: {other:?}"),
        }
        client
    }

    fn pkid(&mut self) -> u16 {
        self.pkid += 1;
        self.pkid
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the endpoint");
    }

    /// The next packet, or `None` once the endpoint has closed the connection.
    async fn next(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buffer, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => panic!("the endpoint wrote a malformed packet: {error}"),
            }
            let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buffer)).await.expect("a packet or a close in time");
            if !matches!(read, Ok(n) if n > 0) {
                return None;
            }
        }
    }

    /// A frame published to her `in` topic, acknowledged.
    async fn take(&mut self, publish: Publish) -> Value {
        assert_eq!(publish.topic, "im/alice/in", "only her own topic");
        let mut ack = BytesMut::new();
        Packet::PubAck(PubAck::new(publish.pkid)).write(&mut ack, usize::MAX).expect("a PUBACK");
        self.write(&ack).await;
        serde_json::from_slice(&publish.payload).expect("frames are JSON")
    }

    /// Publishes a frame to her `out` topic: PUBACK, then the frame's `ack`.
    async fn send(&mut self, user: &str, frame: Value) -> Value {
        let pkid = self.pkid();
        let payload = frame.to_string();
        self.write(&publish(format!("im/{user}/out").as_bytes(), pkid, payload.as_bytes())).await;
        let mut puback = false;
        let mut answer = None;
        while !puback || answer.is_none() {
            match self.next().await {
                Some(Packet::PubAck(ack)) if ack.pkid == pkid => puback = true,
                Some(Packet::Publish(publish)) => answer = Some(self.take(publish).await),
                other => panic!("a PUBACK or a frame, not {other:?}"),
            }
        }
        answer.expect("an answer")
    }
}

#[tokio::test]
async fn the_bad_topic_corpus_is_refused_the_mqtt_way_and_breaks_nothing() {
    let gateway = Gateway::start_with("[limits]\nmessages_per_second = 1000\n").await;
    let mut bob = gateway.mqtt_user("bob").await;
    // She logs in as ALICE: user names are case-folded, topics are not, and hers are lower-case.
    let token = gateway.token("alice");
    let mut alice = RawClient::connect(gateway.mqtt, "ALICE", "alice", &token).await;
    let cases = read_cases();
    assert!(cases.len() >= 20, "the corpus is there");
    for (i, case) in cases.iter().enumerate() {
        let line = case.line.as_str();
        let pkid = alice.pkid();
        match case.kind {
            Kind::Publish => {
                let leak = message(&format!("leak-{i}"), "bob", &format!("leaked through {line}")).to_string();
                alice.write(&publish(&case.topic, pkid, leak.as_bytes())).await;
            }
            Kind::Subscribe => alice.write(&subscribe(&case.topic, pkid)).await,
        }
        match case.expect {
            Expect::Forbidden => {
                let (mut puback, mut refusal) = (false, None);
                while !puback || refusal.is_none() {
                    match alice.next().await {
                        Some(Packet::PubAck(ack)) if ack.pkid == pkid => puback = true,
                        Some(Packet::Publish(publish)) => refusal = Some(alice.take(publish).await),
                        other => panic!("{line}: a PUBACK and an error frame, not {other:?}"),
                    }
                }
                let refusal = refusal.expect("an error frame");
                assert_eq!((refusal["type"].as_str(), refusal["code"].as_str()), (Some("error"), Some("forbidden")), "{line}: {refusal}");
            }
            Expect::Refused => match alice.next().await {
                Some(Packet::SubAck(ack)) => {
                    assert_eq!(ack.pkid, pkid, "{line}");
                    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Failure], "{line}");
                }
                other => panic!("{line}: a SUBACK, not {other:?}"),
            },
            Expect::Closed => {
                let answer = alice.next().await;
                assert!(answer.is_none(), "{line}: closed without an answer, not {answer:?}");
                alice = RawClient::connect(gateway.mqtt, "ALICE", "alice", &token).await;
            }
        }
        let ok = format!("ok-{i}");
        let ack = alice.send("alice", message(&ok, "bob", &ok)).await;
        assert_eq!((ack["type"].as_str(), ack["id"].as_str()), (Some("ack"), Some(ok.as_str())), "{line}: {ack}");
        let frame = bob.recv().await;
        assert_eq!((frame["type"].as_str(), frame["body"].as_str()), (Some("message"), Some(ok.as_str())), "{line}: bob gets only what he should: {frame}");
    }
}
