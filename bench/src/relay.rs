//! The bare WebSocket relay, baseline of the gateway's WebSocket rows (`relay WS->WS`): what
//! tokio-tungstenite alone costs to carry text frames from several clients to one.
//!
//! It runs as a process of its own (this binary, `switchboard-bench relay --port P`) so that its
//! CPU is read from /proc like every other server's. A client of `/listen` is the listener (the
//! latest one wins); every text frame of any other client is forwarded to it, as is, with no
//! answer to the sender. Every connection is greeted with `{"type":"ready"}`, like the gateway's
//! `/ws`, so that the same clients serve both.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::servers::Server;

const READY: &str = r#"{"type":"ready"}"#;

/// The listener's queue, if one is connected.
type Listener = Arc<Mutex<Option<mpsc::Sender<Message>>>>;

/// Starts the relay process on `port` and waits until it listens.
pub fn start(dir: &Path, port: u16) -> anyhow::Result<Server> {
    let binary = std::env::current_exe().context("cannot find this program to run the relay")?;
    let log = dir.join("relay.log");
    let child = Command::new(binary)
        .args(["relay", "--port", &port.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("cannot start the relay")?;
    let mut server = Server::new("relay", child, log);
    server.wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(15))?;
    Ok(server)
}

/// The relay itself (the hidden `relay` subcommand): tokio's default multi-threaded runtime, as a
/// server would run it; ends on SIGTERM.
pub fn serve(port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("bind 127.0.0.1:{port}"))?;
        let current: Listener = Arc::new(Mutex::new(None));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, _) = accepted?;
                    tokio::spawn(connection(tcp, current.clone()));
                }
                _ = term.recv() => return Ok(()),
            }
        }
    })
}

async fn connection(tcp: TcpStream, current: Listener) {
    if tcp.set_nodelay(true).is_err() {
        return;
    }
    let mut path = String::new();
    // The error type (an HTTP response) is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    if ws.send(Message::text(READY)).await.is_err() {
        return;
    }
    if path == "/listen" {
        let (queue, frames) = mpsc::channel(1024);
        *current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(queue);
        listen(ws, frames).await;
    } else {
        forward(ws, &current).await;
    }
}

/// Writes the forwarded frames to the listener, flushing when none is waiting.
async fn listen(ws: tokio_tungstenite::WebSocketStream<TcpStream>, mut frames: mpsc::Receiver<Message>) {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                let mut result = sink.feed(frame).await;
                while result.is_ok()
                    && let Ok(frame) = frames.try_recv()
                {
                    result = sink.feed(frame).await;
                }
                if result.and(sink.flush().await).is_err() {
                    return;
                }
            }
            item = stream.next() => match item {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Forwards every text frame of a sender to the current listener (dropped if there is none).
async fn forward(ws: tokio_tungstenite::WebSocketStream<TcpStream>, current: &Listener) {
    let (_sink, mut stream) = ws.split();
    // Looked up again only when the one in hand has gone.
    let mut listener: Option<mpsc::Sender<Message>> = None;
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            Message::Text(_) => {
                if listener.as_ref().is_none_or(mpsc::Sender::is_closed) {
                    listener = current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                }
                if let Some(listener) = &listener {
                    let _ = listener.send(frame).await;
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}
