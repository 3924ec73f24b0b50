//! The packet codec of the fake brokers in this module's tests: rumqttc's own MQTT 3.1.1 packets
//! over a plain socket.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) const MAX_PACKET: usize = 64 * 1024;

/// The client's next packet; `None` once it hangs up.
pub(super) async fn read_packet(socket: &mut TcpStream, buffer: &mut BytesMut) -> Option<Packet> {
    loop {
        match Packet::read(buffer, MAX_PACKET) {
            Ok(packet) => return Some(packet),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(error) => panic!("the client sent a malformed packet: {error}"),
        }
        if socket.read_buf(buffer).await.ok()? == 0 {
            return None;
        }
    }
}

pub(super) async fn write_packet(socket: &mut TcpStream, packet: Packet) {
    let mut out = BytesMut::new();
    packet.write(&mut out, MAX_PACKET).expect("a packet that fits");
    socket.write_all(&out).await.expect("the client reads");
}
