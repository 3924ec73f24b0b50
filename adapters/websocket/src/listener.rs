//! The HTTP listener: plain TCP, or TLS when `http.tls_cert` and `http.tls_key` are set.
//!
//! Handshakes run side by side, each bounded by a timeout, while the listener keeps accepting:
//! a client that opens TCP and never speaks delays no one and is dropped when its time is up.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use switchboard_gateway::tls::{self, TlsAcceptor, TlsStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::either::Either;

pub(crate) struct HttpListener {
    tcp: TcpListener,
    tls: Option<Tls>,
}

struct Tls {
    acceptor: TlsAcceptor,
    timeout: Duration,
    /// Dropped with the listener, which aborts the handshakes still under way.
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl HttpListener {
    pub fn plain(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }

    pub fn tls(tcp: TcpListener, acceptor: TlsAcceptor, timeout: Duration) -> Self {
        Self { tcp, tls: Some(Tls { acceptor, timeout, handshakes: JoinSet::new() }) }
    }
}

/// The client's address, as `ConnectInfo` (axum only provides it for its own listener types).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, HttpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, HttpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Listener for HttpListener {
    // Boxed: a TLS stream is over a kilobyte, and an `Either` is as large as its larger side, so
    // unboxed every plain connection would carry that room for its whole life (hyper keeps the
    // upgraded WebSocket's stream in a box of exactly this type).
    type Io = Either<TcpStream, Box<TlsStream<TcpStream>>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let Some(tls) = &mut self.tls else {
            let (stream, peer) = accept_tcp(&self.tcp).await;
            return (Either::Left(stream), peer);
        };
        loop {
            // Both branches are cancel-safe: axum drops this future at shutdown.
            tokio::select! {
                (stream, peer) = accept_tcp(&self.tcp) => {
                    let acceptor = tls.acceptor.clone();
                    let timeout = tls.timeout;
                    tls.handshakes.spawn(async move {
                        match tls::accept(&acceptor, stream, timeout).await {
                            Ok(stream) => Some((stream, peer)),
                            Err(error) => {
                                tracing::debug!(%peer, %error, "https client dropped");
                                None
                            }
                        }
                    });
                }
                Some(done) = tls.handshakes.join_next(), if !tls.handshakes.is_empty() => {
                    if let Ok(Some((stream, peer))) = done {
                        return (Either::Right(Box::new(stream)), peer);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Frames are gathered by the connection and written once it has nothing more
                // ready; Nagle's algorithm would then hold the write back again until the last
                // one is acknowledged, which costs milliseconds on a quiet link.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "cannot disable Nagle's algorithm");
                }
                return (stream, peer);
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
