//! Local stand-ins for the push providers (FCM HTTP v1, APNs, Baidu Cloud Push v3), run inside the
//! process that uses them: the end-to-end tests (`tests/e2e/push.rs`) and the benchmark (`bench/`).
//! Each refuses what its real service refuses, with the real error bodies, so a test that passes
//! against them says something about the gateway's requests, not just that it sent some.
//!
//! A fake keeps the requests it accepted in order; `next_…` hands them out one at a time and
//! `no_…_within` fails on any that was not handed out yet, so coalescing can be checked without sleeps.
//! The keys and certificates they use are in `fixtures/` (test-only; see its README).

pub mod apns;
pub mod baidu;
pub mod fcm;
pub mod tls;

#[cfg(test)]
mod client;

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How long `next_…` waits for a request before it panics.
pub const WAIT: Duration = Duration::from_secs(15);

/// A file of this crate's `fixtures/` (test-only keys and certificates; see its README).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

pub fn unix_now() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(now.as_secs()).expect("seconds fit i64")
}

/// Unpredictable enough for access tokens and ids a test must not be able to guess.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), SystemTime::now()))
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes.div_ceil(8)).map(|_| format!("{:016x}", random_u64())).collect::<String>()[..bytes * 2].to_owned()
}

/// A panicking test must not turn every later request into a poisoned-lock panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port")
}

/// A running fake; dropping it aborts the accept loop, which drops (and so aborts) every connection.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on `listener`: HTTP/1.1 or h2c in the clear, or, with `tls`, HTTP/2 only, as APNs
/// does (a client that did not negotiate `h2` by ALPN is not served).
pub fn serve(listener: TcpListener, router: Router, tls: Option<TlsAcceptor>) -> Server {
    let addr = listener.local_addr().expect("bound address");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            while connections.try_join_next().is_some() {}
            let service = TowerToHyperService::new(router.clone());
            let tls = tls.clone();
            connections.spawn(async move {
                let Some(acceptor) = tls else {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    return;
                };
                let Ok(stream) = acceptor.accept(stream).await else { return };
                if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                    return;
                }
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Server { addr, task }
}

/// What a fake accepted, in order, each with the time it was accepted, and a cursor for `next`.
pub struct Inbox<T> {
    items: Mutex<Accepted<T>>,
    count: watch::Sender<usize>,
}

struct Accepted<T> {
    items: Vec<(Instant, T)>,
    cursor: usize,
}

impl<T: Clone + Debug> Default for Inbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Debug> Inbox<T> {
    pub fn new() -> Self {
        Self { items: Mutex::new(Accepted { items: Vec::new(), cursor: 0 }), count: watch::Sender::new(0) }
    }

    pub fn push(&self, item: T) {
        let mut accepted = lock(&self.items);
        accepted.items.push((Instant::now(), item));
        self.count.send_replace(accepted.items.len());
    }

    pub async fn next(&self, what: &str) -> T {
        let cursor = lock(&self.items).cursor;
        let mut count = self.count.subscribe();
        tokio::time::timeout(WAIT, count.wait_for(|&n| n > cursor))
            .await
            .unwrap_or_else(|_| panic!("no {what} accepted within {WAIT:?}"))
            .expect("the inbox outlives its waiters");
        let mut accepted = lock(&self.items);
        let item = accepted.items[accepted.cursor].1.clone();
        accepted.cursor += 1;
        item
    }

    /// Fails on one accepted before the call and not yet taken by `next`, as on one arriving within `d`.
    pub async fn none_within(&self, d: Duration, what: &str) {
        let cursor = lock(&self.items).cursor;
        let mut count = self.count.subscribe();
        if tokio::time::timeout(d, count.wait_for(|&n| n > cursor)).await.is_ok() {
            let accepted = lock(&self.items);
            let unexpected: Vec<&T> = accepted.items[cursor..].iter().map(|(_, item)| item).collect();
            panic!("unexpected {what}: {unexpected:?}");
        }
    }

    pub fn all(&self) -> Vec<T> {
        lock(&self.items).items.iter().map(|(_, item)| item.clone()).collect()
    }

    /// Everything accepted but the first `skip`, with when.
    pub fn all_timed(&self, skip: usize) -> Vec<(Instant, T)> {
        lock(&self.items).items.get(skip..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// How many were accepted so far (cheap: no copy).
    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least `n` were accepted, or `within` has passed; the count then.
    pub async fn wait_for_len(&self, n: usize, within: Duration) -> usize {
        let mut count = self.count.subscribe();
        let _ = tokio::time::timeout(within, count.wait_for(|&len| len >= n)).await;
        self.len()
    }
}

/// What a device token, channel id or registration token currently is to the fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Registered,
    /// Was valid, is no more (the app was uninstalled).
    Unregistered,
    /// APNs only: valid, but for another app (DeviceTokenNotForTopic).
    OtherTopic,
}

#[derive(Default)]
pub struct Devices(Mutex<HashMap<String, Device>>);

impl Devices {
    pub fn set(&self, token: &str, device: Device) {
        lock(&self.0).insert(token.to_owned(), device);
    }

    pub fn get(&self, token: &str) -> Option<Device> {
        lock(&self.0).get(token).copied()
    }
}

/// Failures a test asked for: the next `count` requests that got past authentication answer
/// `status`, and so does every one until `until` (an outage).
#[derive(Default)]
pub struct Failures(Mutex<Armed>);

#[derive(Default)]
struct Armed {
    count: usize,
    status: u16,
    retry_after: Option<u64>,
    until: Option<(Instant, u16)>,
}

impl Failures {
    pub fn arm(&self, count: usize, status: u16, retry_after: Option<u64>, supported: &[u16]) {
        assert!(supported.contains(&status), "this fake fails with {supported:?}, not {status}");
        let mut armed = lock(&self.0);
        (armed.count, armed.status, armed.retry_after) = (count, status, retry_after);
    }

    /// Every request answers `status` (without Retry-After) for `duration` from now.
    pub fn arm_for(&self, duration: Duration, status: u16, supported: &[u16]) {
        assert!(supported.contains(&status), "this fake fails with {supported:?}, not {status}");
        lock(&self.0).until = Some((Instant::now() + duration, status));
    }

    /// The status and Retry-After seconds of the failure this request gets, if any.
    pub fn take(&self) -> Option<(u16, Option<u64>)> {
        let mut armed = lock(&self.0);
        if armed.count > 0 {
            armed.count -= 1;
            return Some((armed.status, armed.retry_after));
        }
        match armed.until {
            Some((until, status)) if Instant::now() < until => Some((status, None)),
            Some(_) => {
                armed.until = None;
                None
            }
            None => None,
        }
    }
}

/// A JSON answer, with `Retry-After` when given.
pub fn reply(status: u16, body: &serde_json::Value, retry_after: Option<u64>) -> Response {
    let status = axum::http::StatusCode::from_u16(status).expect("a valid status");
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", seconds.into());
    }
    response
}
