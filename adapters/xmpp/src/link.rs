//! Opening the XEP-0114 component stream: header, handshake, then a stream of elements.

use std::borrow::Cow;

use futures::{SinkExt, StreamExt};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::{self, StreamHeader, Timeouts, XmlStream};
use xmpp_parsers::component::Handshake;

use crate::namespace::COMPONENT;
use crate::nesting::NestingGuard;
use crate::read::ReadElement;
use crate::shim::VersionShim;

pub(crate) type Link = XmlStream<BufReader<NestingGuard<VersionShim<TcpStream>>>, ReadElement>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cannot reach {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stream setup failed: {0}")]
    Stream(std::io::Error),
    #[error("the server sent no stream id")]
    NoStreamId,
    #[error("the server refused the handshake (check xmpp.secret and xmpp.domain): {0}")]
    Refused(String),
    #[error("the link closed during the handshake")]
    Closed,
}

pub(crate) async fn connect(server: &str, domain: &str, secret: &str, timeouts: Timeouts) -> Result<Link, LinkError> {
    let tcp = TcpStream::connect(server)
        .await
        .map_err(|source| LinkError::Connect { server: server.to_owned(), source })?;
    let _ = tcp.set_nodelay(true);
    let io = BufReader::new(NestingGuard::new(VersionShim::new(tcp)));
    let header = StreamHeader { to: Some(Cow::Borrowed(domain)), from: None, id: None };
    let pending = xmlstream::initiate_stream(io, COMPONENT, header, timeouts).await.map_err(LinkError::Stream)?;
    let id = pending.header().id.map(|id| id.into_owned()).ok_or(LinkError::NoStreamId)?;
    let mut link: Link = pending.skip_features();
    let handshake = Element::from(Handshake::from_stream_id_and_password(id, secret));
    link.send(&handshake).await.map_err(LinkError::Stream)?;
    match link.next().await {
        Some(Ok(ReadElement(answer))) if answer.name() == "handshake" => Ok(link),
        Some(Ok(ReadElement(answer))) => Err(LinkError::Refused(String::from(&answer))),
        Some(Err(error)) => Err(LinkError::Refused(format!("{error}"))),
        None => Err(LinkError::Closed),
    }
}

/// Writes stanzas already written as XML text (`crate::text`) straight to the socket, after
/// whatever the stream itself has sent: everything sent through the stream is flushed as it is
/// sent (`SinkExt::send`), so none of it can be waiting behind these bytes.
pub(crate) async fn write_text(link: &Link, mut text: &[u8]) -> std::io::Result<()> {
    let socket = link.get_stream().get_ref().get_ref().get_ref();
    while !text.is_empty() {
        socket.writable().await?;
        match socket.try_write(text) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => text = &text[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
