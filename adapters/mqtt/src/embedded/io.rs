//! Packet framing over one connection (TCP or TLS), split so that reading and writing can wait
//! side by side in one `select!`.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub(crate) enum IoError {
    #[error("connection closed")]
    Closed,
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Malformed(CodecError),
    #[error("the client did not read for {0:?}")]
    WriteTimeout(Duration),
}

/// The writer's buffer, grown past this for a burst, is released after its flush, so that a
/// connection idling after it costs little again.
const KEEP_CAPACITY: usize = 4 * 1024;
/// Room for a read while part of a packet is in: the rest, and the packets a client sent with it
/// (a window of PUBLISHes, their PUBACKs), arrive in one read rather than one or two per packet.
const READ_AHEAD: usize = 4 * 1024;
/// Room for a read into an empty buffer, which is what an idle connection waits on: a few
/// PUBLISHes or a window's PUBACKs, and as much as a WebSocket connection reads at once.
const FIRST_READ: usize = 1024;
/// At most this much is reserved ahead of a packet's bytes: a client announcing a large packet
/// and sending nothing more must not make the endpoint hold that much for it.
const RESERVE_AHEAD: usize = 16 * 1024;

/// A read into an empty buffer takes up to [`FIRST_READ`] bytes, unless the read before it filled
/// its room; otherwise each read takes what the socket holds, up to [`READ_AHEAD`] (or what the
/// packet announces, up to [`RESERVE_AHEAD`]). The buffer is released whenever every packet in
/// it has been read, so an idle client waits with [`FIRST_READ`] bytes (rarely [`READ_AHEAD`],
/// when its last read happened to fill its room exactly).
pub(crate) struct PacketReader<R> {
    half: R,
    buffer: BytesMut,
    max_packet: usize,
    /// The last read filled all the room it had: more is likely waiting in the socket.
    busy: bool,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub fn new(half: R, max_packet: usize) -> Self {
        Self { half, buffer: BytesMut::new(), max_packet, busy: false }
    }

    /// Cancel-safe: a partly received packet stays in the buffer.
    pub async fn next(&mut self) -> Result<Packet, IoError> {
        loop {
            match Packet::read(&mut self.buffer, self.max_packet) {
                Ok(packet) => {
                    if self.buffer.is_empty() {
                        self.buffer = BytesMut::new();
                    }
                    return Ok(packet);
                }
                Err(CodecError::InsufficientBytes(missing)) => {
                    let ahead = if self.busy || !self.buffer.is_empty() { READ_AHEAD } else { FIRST_READ };
                    self.buffer.reserve(missing.clamp(ahead, RESERVE_AHEAD));
                }
                Err(error) => return Err(IoError::Malformed(error)),
            }
            let room = self.buffer.capacity() - self.buffer.len();
            let read = self.half.read_buf(&mut self.buffer).await?;
            if read == 0 {
                return Err(IoError::Closed);
            }
            self.busy = read >= room;
        }
    }

    /// The protocol level byte of a CONNECT at the head of the buffer, so that clients of other
    /// MQTT versions get the right CONNACK instead of a parse error.
    pub async fn peek_protocol_level(&mut self) -> Result<Option<u8>, IoError> {
        // Fixed header (2..5 bytes), protocol name (6 bytes for "MQTT"/8 for "MQIsdp"), level.
        while self.buffer.len() < 10 {
            if self.half.read_buf(&mut self.buffer).await? == 0 {
                return Err(IoError::Closed);
            }
        }
        let mut index = 1;
        while index < 5 && self.buffer[index] & 0x80 != 0 {
            index += 1;
        }
        let name_len_at = index + 1;
        let name_len = usize::from(u16::from_be_bytes([self.buffer[name_len_at], self.buffer[name_len_at + 1]]));
        let level_at = name_len_at + 2 + name_len;
        while self.buffer.len() <= level_at {
            if level_at > 64 || self.half.read_buf(&mut self.buffer).await? == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.buffer[level_at]))
    }
}

/// Starts empty and grows with what is queued; released after a flush when a burst made it large.
pub(crate) struct PacketWriter<W> {
    half: W,
    buffer: BytesMut,
    timeout: Duration,
}

impl<W: AsyncWrite + Unpin> PacketWriter<W> {
    pub fn new(half: W, timeout: Duration) -> Self {
        Self { half, buffer: BytesMut::new(), timeout }
    }

    /// Queues a packet; it goes out at the next [`PacketWriter::flush`].
    pub fn queue(&mut self, packet: &Packet) {
        // Only packets the endpoint builds itself are written, so the size check cannot fail.
        let _ = packet.write(&mut self.buffer, usize::MAX);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buffer.len()
    }

    /// Writes everything queued in one go: one syscall for a batch of packets.
    pub async fn flush(&mut self) -> Result<(), IoError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let half = &mut self.half;
        let buffer = &self.buffer;
        // TLS may keep part of a write in its own buffer until flushed; TCP's flush does nothing.
        let write = async move {
            half.write_all(buffer).await?;
            half.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(result) => result?,
            Err(_) => return Err(IoError::WriteTimeout(self.timeout)),
        }
        if self.buffer.capacity() > KEEP_CAPACITY {
            self.buffer = BytesMut::new();
        } else {
            self.buffer.clear();
        }
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.half.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use rumqttc::mqttbytes::v4::PubAck;
    use tokio::io::ReadBuf;

    use super::*;

    /// Counts the reads that reach the socket.
    struct Counting<R> {
        inner: R,
        reads: usize,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn packets_sent_together_are_read_together_and_the_buffer_is_then_released() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut sent = BytesMut::new();
        for pkid in 1..=200u16 {
            Packet::PubAck(PubAck::new(pkid)).write(&mut sent, usize::MAX).expect("encodes");
        }
        client.write_all(&sent).await.expect("written");
        let mut reader = PacketReader::new(Counting { inner: server, reads: 0 }, 1024);
        for pkid in 1..=200u16 {
            assert!(matches!(reader.next().await, Ok(Packet::PubAck(ack)) if ack.pkid == pkid));
        }
        // 800 bytes: one read (at most two), not one per packet.
        assert!(reader.half.reads <= 2, "{} reads for 200 packets", reader.half.reads);
        assert_eq!(reader.buffer.capacity(), 0, "nothing is kept once every packet is read");
        assert!(futures::FutureExt::now_or_never(reader.next()).is_none(), "nothing more was sent");
        assert!(reader.buffer.capacity() <= 2 * FIRST_READ, "an idle client waits with {} bytes", reader.buffer.capacity());
    }
}
