//! What the gateway costs when nothing happens: time from start to a healthy `/healthz`, resident
//! memory at rest, and resident memory per idle session (WebSocket and MQTT) at 10k and 50k
//! sessions.
//!
//! Sessions are opened from several loopback source addresses (127.0.0.x), since one source
//! address has fewer ephemeral ports than 50k connections need. MQTT clients are bare sockets
//! that sent CONNECT and SUBSCRIBE, as an app in the background is; WebSocket clients read their
//! `ready` and then nothing.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::push::mint;
use crate::servers::{self, Ports};

/// Connections opened at once while a population is built.
const CONNECTING: usize = 256;
/// Connections per loopback source address (ephemeral ports 32768–60999 leave room).
const PER_SOURCE: usize = 20_000;
/// Source addresses already used by a population of this run: the next one starts on fresh
/// ones, since the last one's closed connections keep their ports in TIME_WAIT for a minute.
static SOURCES_USED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How long a population idles before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

pub struct IdleOptions {
    pub sessions: Vec<usize>,
    pub starts: usize,
}

pub struct Startup {
    pub millis: Vec<f64>,
    pub rest_kib: Vec<u64>,
}

pub struct Population {
    pub protocol: &'static str,
    pub sessions: usize,
    pub before_kib: u64,
    pub after_kib: u64,
    pub opened_in: Duration,
}

impl Population {
    pub fn per_session_kib(&self) -> f64 {
        (self.after_kib.saturating_sub(self.before_kib)) as f64 / self.sessions as f64
    }
}

/// Raises this process's open-file limit (the gateway it starts inherits it): 50k sessions need
/// 50k descriptors on each side. Where the hard limit cannot be raised (a sandbox without
/// CAP_SYS_RESOURCE), populations above it fail and the run says so.
pub fn raise_file_limit(to: u64) {
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={to}:{to}")])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("could not raise the open-file limit to {to} (prlimit); large populations may fail");
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Nothing beyond the bench's own configuration, which already lifts the per-address limit (every
/// session comes from loopback). One session per user.
fn config() -> &'static str {
    ""
}

pub async fn startup(binary: &Path, dir: &Path, options: &IdleOptions) -> anyhow::Result<Startup> {
    let mut result = Startup { millis: Vec::new(), rest_kib: Vec::new() };
    let mut ports = Ports::default();
    for round in 0..options.starts {
        let dir = dir.join(format!("start{round}"));
        std::fs::create_dir_all(&dir)?;
        let (http, mqtt) = (ports.free()?, ports.free()?);
        let started = Instant::now();
        let gateway = servers::start_gateway_with(binary, &dir, "localhost", http, mqtt, config())?;
        result.millis.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(SETTLE).await;
        result.rest_kib.push(rss_kib(gateway.server.pid().context("gateway pid")?)?);
    }
    Ok(result)
}

pub async fn populations(binary: &Path, dir: &Path, options: &IdleOptions) -> anyhow::Result<Vec<Population>> {
    let mut rows = Vec::new();
    let mut ports = Ports::default();
    for &sessions in &options.sessions {
        for protocol in ["websocket", "mqtt"] {
            let dir = dir.join(format!("{protocol}{sessions}"));
            std::fs::create_dir_all(&dir)?;
            let (http, mqtt) = (ports.free()?, ports.free()?);
            let gateway = servers::start_gateway_with(binary, &dir, "localhost", http, mqtt, config())?;
            let pid = gateway.server.pid().context("gateway pid")?;
            tokio::time::sleep(SETTLE).await;
            let before_kib = rss_kib(pid)?;
            eprintln!("{protocol}: opening {sessions} idle sessions");
            let started = Instant::now();
            let port = if protocol == "websocket" { http } else { mqtt };
            let connections = open(protocol, port, sessions).await?;
            let opened_in = started.elapsed();
            tokio::time::sleep(SETTLE).await;
            let after_kib = rss_kib(pid)?;
            drop(connections);
            let row = Population { protocol, sessions, before_kib, after_kib, opened_in };
            eprintln!(
                "{protocol}: {sessions} sessions in {:.1} s, {} → {} KiB, {:.2} KiB per session",
                opened_in.as_secs_f64(),
                before_kib,
                after_kib,
                row.per_session_kib()
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// An open connection, kept only so that it stays open until dropped.
type Idle = Box<dyn std::any::Any + Send>;

async fn open(protocol: &'static str, port: u16, sessions: usize) -> anyhow::Result<Vec<Idle>> {
    let mut open = Vec::with_capacity(sessions);
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    let mut retries = 0;
    let first_source = SOURCES_USED.fetch_add(sessions.div_ceil(PER_SOURCE), std::sync::atomic::Ordering::Relaxed);
    while open.len() < sessions {
        while next < sessions && pending.len() < CONNECTING {
            let user = format!("idle{next}");
            // Not 127.0.0.1: its ephemeral ports stay free for the servers the bench starts next.
            let source_index = u8::try_from(first_source + next / PER_SOURCE).ok().filter(|index| *index < 250);
            let source = Ipv4Addr::new(127, 0, 0, 2 + source_index.context("too many sessions")?);
            pending.push(async move {
                let token = mint(&user)?;
                // A client whose connection is refused in a crowd tries again, as apps do.
                let mut attempt = 0;
                loop {
                    let session = match protocol {
                        "websocket" => ws_session(source, port, &token).await,
                        _ => mqtt_session(source, port, &user, &token).await,
                    };
                    attempt += 1;
                    match session {
                        Ok(session) => break Ok::<_, anyhow::Error>((session, attempt > 1)),
                        Err(error) if attempt >= 3 => return Err(error.context(format!("{protocol} session of {user}"))),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            next += 1;
        }
        match pending.next().await {
            Some(result) => {
                let (session, retried) = result?;
                retries += usize::from(retried);
                open.push(session);
            }
            None => bail!("no connection pending"),
        }
    }
    if retries > 0 {
        eprintln!("{protocol}: {retries} sessions needed a second attempt");
    }
    Ok(open)
}

async fn connect_from(source: Ipv4Addr, port: u16) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    Ok(socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await?)
}

async fn ws_session(source: Ipv4Addr, port: u16, token: &str) -> anyhow::Result<Idle> {
    let tcp = connect_from(source, port).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/ws?token={token}"), tcp).await?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) if text.contains("\"ready\"") => {
            Ok(Box::new(ws))
        }
        other => bail!("no ready: {other:?}"),
    }
}

/// CONNECT (MQTT 3.1.1, clean session, keep-alive 300 s so that no ping falls in the measurement)
/// and SUBSCRIBE to her `in` topic, written by hand: 50k rumqttc event loops would measure the
/// load generator, not the gateway.
async fn mqtt_session(source: Ipv4Addr, port: u16, user: &str, token: &str) -> anyhow::Result<Idle> {
    let mut tcp = connect_from(source, port).await?;
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0b1100_0010, 0x01, 0x2c]);
    put_str(&mut body, user);
    put_str(&mut body, user);
    put_str(&mut body, token);
    tcp.write_all(&packet(0x10, &body)).await?;
    let mut connack = [0u8; 4];
    tcp.read_exact(&mut connack).await?;
    if connack[0] != 0x20 || connack[3] != 0 {
        bail!("CONNACK {connack:?}");
    }
    let mut body = vec![0, 1];
    put_str(&mut body, &format!("im/{user}/in"));
    body.push(1);
    tcp.write_all(&packet(0x82, &body)).await?;
    let mut suback = [0u8; 5];
    tcp.read_exact(&mut suback).await?;
    if suback[0] != 0x90 || suback[4] != 1 {
        bail!("SUBACK {suback:?}");
    }
    Ok(Box::new(tcp))
}

fn put_str(into: &mut Vec<u8>, text: &str) {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    into.extend_from_slice(&len.to_be_bytes());
    into.extend_from_slice(text.as_bytes());
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub fn print_tables(startup: Option<&Startup>, populations: &[Population]) {
    if let Some(startup) = startup {
        println!("\n### Start-up and memory at rest\n");
        println!("| starts | start → /healthz 200, ms (median, min..max) | resident at rest, MiB (median, min..max) |");
        println!("|---|---|---|");
        let rest: Vec<f64> = startup.rest_kib.iter().map(|k| *k as f64 / 1024.0).collect();
        println!(
            "| {} | {:.0} ({:.0}..{:.0}) | {:.1} ({:.1}..{:.1}) |",
            startup.millis.len(),
            median(&startup.millis),
            min(&startup.millis),
            max(&startup.millis),
            median(&rest),
            min(&rest),
            max(&rest)
        );
    }
    if !populations.is_empty() {
        println!("\n### Idle sessions\n");
        println!("| protocol | sessions | opened in, s | resident before, MiB | resident with them, MiB | KiB per session |");
        println!("|---|---|---|---|---|---|");
        for row in populations {
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
                row.protocol,
                row.sessions,
                row.opened_in.as_secs_f64(),
                row.before_kib as f64 / 1024.0,
                row.after_kib as f64 / 1024.0,
                row.per_session_kib()
            );
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}
