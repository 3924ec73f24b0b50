//! WebSocket clients (tokio-tungstenite): a receiver that hands every text frame to the recorder,
//! and a sender that writes `message` frames from its queue and reads the `ack` frames answering
//! them. The same clients serve the gateway's `/ws` and the bare relay (`relay.rs`), which greets
//! every connection with the same `ready` frame.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::load::{Recorder, SETUP_WAIT, SenderState, lock};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url` and waits for the `ready` frame (bounded).
async fn open(url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio::time::timeout(SETUP_WAIT, tokio_tungstenite::connect_async(url))
        .await
        .context("WebSocket connect timed out")?
        .context("WebSocket connect")?;
    // The send time in each frame should be taken close to the wire.
    if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_nodelay(true)?;
    }
    match tokio::time::timeout(SETUP_WAIT, ws.next()).await.context("no ready frame")? {
        Some(Ok(WsMessage::Text(text))) if text.contains("\"ready\"") => Ok(ws),
        other => bail!("expected a ready frame, got {other:?}"),
    }
}

/// One WebSocket connection whose frames are served by its own task.
pub struct WsConn {
    task: JoinHandle<()>,
    close: Arc<Notify>,
    failure: Arc<Mutex<Option<String>>>,
    queue: Option<mpsc::Sender<String>>,
}

impl Drop for WsConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a connection does with the text frames it reads.
enum Role {
    Receiver(Arc<Recorder>),
    Sender(Arc<SenderState>),
}

impl WsConn {
    pub async fn receiver(url: &str, recorder: Arc<Recorder>) -> anyhow::Result<Self> {
        Self::connect(url, Role::Receiver(recorder)).await
    }

    /// A sender: `queue()` takes its frames; `ack` and `error` frames go to `state`.
    pub async fn sender(url: &str, state: Arc<SenderState>) -> anyhow::Result<Self> {
        Self::connect(url, Role::Sender(state)).await
    }

    async fn connect(url: &str, role: Role) -> anyhow::Result<Self> {
        let ws = open(url).await?;
        let close = Arc::new(Notify::new());
        let failure = Arc::new(Mutex::new(None::<String>));
        let (queue, outgoing) = mpsc::channel::<String>(16);
        let task = tokio::spawn(serve(ws, role, outgoing, close.clone(), failure.clone()));
        Ok(Self { task, close, failure, queue: Some(queue) })
    }

    /// Where to put the text frames to send.
    pub fn queue(&self) -> anyhow::Result<mpsc::Sender<String>> {
        self.queue.clone().context("WebSocket connection closed")
    }

    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    pub async fn close(mut self) {
        self.queue = None;
        self.close.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve(
    ws: Ws,
    role: Role,
    mut outgoing: mpsc::Receiver<String>,
    close: Arc<Notify>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(WsMessage::Text(text))) => match &role {
                    Role::Receiver(recorder) => recorder.on_payload(text.as_bytes()),
                    Role::Sender(state) => state.on_frame(text.as_bytes()),
                },
                Some(Ok(WsMessage::Ping(data))) => {
                    let _ = sink.send(WsMessage::Pong(data)).await;
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    *lock(&failure) = Some(format!("closed by the server: {frame:?}"));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    *lock(&failure) = Some(error.to_string());
                    return;
                }
                None => {
                    *lock(&failure) = Some("connection ended".into());
                    return;
                }
            },
            Some(text) = outgoing.recv() => {
                // Flushed only when nothing else waits: a burst goes out in one write.
                let mut result = sink.feed(WsMessage::text(text)).await;
                while result.is_ok()
                    && let Ok(text) = outgoing.try_recv()
                {
                    result = sink.feed(WsMessage::text(text)).await;
                }
                if let Err(error) = result.and(sink.flush().await) {
                    *lock(&failure) = Some(error.to_string());
                    return;
                }
            }
            () = close.notified() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(WsMessage::Close(None))).await;
                return;
            }
        }
    }
}
