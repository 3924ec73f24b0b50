//! Push notifications through the gateway: one MQTT sender, N users who are offline with one
//! device each, and the fake FCM and APNs servers of `switchboard-push-fakes` (which check the
//! gateway's credentials and payloads as the real services do) running in this process, on a
//! thread of their own, so the load generator and the fakes do not wait for each other.
//!
//! - `push FCM throughput`, `push APNs throughput`: the sender sends one message to each of the N
//!   users, closed loop (`--window` frames awaiting their `ack`); a notification's latency is from
//!   the send of its message to the fake accepting it, and the rate is the N notifications over
//!   the time from the first send to the last acceptance (`recorded/s`: to the moment the gateway
//!   had recorded each as sent, which its dispatcher does after the provider's answer; the case and
//!   its CPU count end only then, and the next case starts with the gateway idle).
//! - `push FCM latency`: the same at `--push-paced-rate` messages per second, for the latency of a
//!   notification when the path is not saturated.
//! - `push FCM outage`: the fake FCM answers every send with 503 UNAVAILABLE (no Retry-After) for
//!   `--push-outage-secs` while M messages go to M offline users; then it recovers. Every one of
//!   the M must still be notified, once.
//!
//! Users are made known once per case (each opens one WebSocket session with her JWT, registers
//! her device with a `device.register` frame and closes) and reused in later rounds: the
//! coalescing window is 1 s, so a user is notified again by a message that comes rounds later
//! (with the count of everything waiting for her).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use rumqttc::QoS;
use serde_json::json;
use switchboard_push_fakes::apns::FakeApns;
use switchboard_push_fakes::fcm::FakeFcm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::load::{AckKind, MqttConn, MqttSpec, SETUP_WAIT, SenderState, now_ns, ns_at};
use crate::servers::{self, Gateway, JWT_SECRET, Ports};

const DOMAIN: &str = "push.localhost";
const PROJECT: &str = "switchboard-bench";
const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.chat";
/// The user who sends every message.
const SENDER: &str = "psnd";
/// WebSocket sessions open at once while users are made known.
const SETUP_CONCURRENCY: usize = 32;
/// The fakes' runtime thread, by name (its CPU time is read from /proc/self/task).
pub const FAKES_THREAD: &str = "push-fakes";

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Provider {
    Fcm,
    Apns,
}

impl Provider {
    fn platform(self) -> &'static str {
        match self {
            Self::Fcm => "fcm",
            Self::Apns => "apns",
        }
    }

    /// The gateway's name for it in metrics and /healthz.
    fn metric(self) -> &'static str {
        match self {
            Self::Fcm => "push.fcm",
            Self::Apns => "push.apns",
        }
    }

    /// Device `i` of user set `set`: an FCM registration token, or 64 hex digits for APNs.
    fn token(self, set: u64, i: usize) -> String {
        match self {
            Self::Fcm => format!("bench{set}:APA91b-{i}"),
            Self::Apns => format!("{set:032x}{i:032x}"),
        }
    }

    fn parse_token(self, token: &str) -> Option<(u64, usize)> {
        match self {
            Self::Fcm => {
                let (set, i) = token.strip_prefix("bench")?.split_once(":APA91b-")?;
                Some((set.parse().ok()?, i.parse().ok()?))
            }
            Self::Apns => {
                let (set, i) = (token.get(..32)?, token.get(32..)?);
                Some((u64::from_str_radix(set, 16).ok()?, usize::from_str_radix(i, 16).ok()?))
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PushCase {
    FcmThroughput,
    ApnsThroughput,
    FcmPaced,
    FcmOutage,
}

pub const PUSH_CASES: [PushCase; 4] =
    [PushCase::FcmThroughput, PushCase::ApnsThroughput, PushCase::FcmPaced, PushCase::FcmOutage];

impl PushCase {
    pub fn label(self) -> &'static str {
        match self {
            Self::FcmThroughput => "push FCM throughput",
            Self::ApnsThroughput => "push APNs throughput",
            Self::FcmPaced => "push FCM latency",
            Self::FcmOutage => "push FCM outage",
        }
    }

    fn provider(self) -> Provider {
        match self {
            Self::FcmThroughput | Self::FcmPaced | Self::FcmOutage => Provider::Fcm,
            Self::ApnsThroughput => Provider::Apns,
        }
    }

    fn is_outage(self) -> bool {
        self == Self::FcmOutage
    }
}

/// What the push cases are told by the command line.
pub struct PushOptions {
    pub users: usize,
    pub paced_users: usize,
    /// Messages (so notifications) per second of the paced case.
    pub paced_rate: f64,
    pub outage_users: usize,
    pub outage: Duration,
    pub max_secs: u64,
    pub window: usize,
    pub rounds: usize,
}

/// One run of a push case.
pub struct PushRow {
    pub case: &'static str,
    /// `saturation`, `paced <rate>/s` or `outage`.
    pub load: String,
    pub round: usize,
    pub users: usize,
    /// Messages handed to the sender's connection.
    pub sent: usize,
    /// `ack` frames the sender got.
    pub acked: usize,
    /// Users whose device the fake accepted a notification for.
    pub notified: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// `error` frames the sender got.
    pub errors: usize,
    /// Messages acknowledged per second (first send to last ack).
    pub msg_rate: f64,
    /// Notifications accepted per second (first send to last acceptance).
    pub rate: f64,
    /// Notifications the gateway recorded as sent per second (first send to the last recorded).
    pub recorded_rate: f64,
    /// From the last acceptance to the gateway having recorded every notification as sent.
    pub record_lag_ms: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub gateway_cores: Option<f64>,
    pub gateway_us: Option<f64>,
    pub fake_cores: Option<f64>,
    pub bench_cores: Option<f64>,
    /// Requests the fake saw for this run (accepted or not).
    pub attempts: usize,
    /// `switchboard_push_total{result="retried"}` and `{result="failed"}` over the run.
    pub retried: f64,
    pub failed: f64,
    /// Outage case: messages acknowledged before the fake recovered.
    pub acked_in_outage: Option<usize>,
    /// Outage case: from the fake's recovery to the last notification it accepted.
    pub recovery_to_last_ms: Option<f64>,
    pub problems: Vec<String>,
}

impl PushRow {
    fn failed(case: PushCase, load: String, round: usize, users: usize, problem: String) -> Self {
        Self {
            case: case.label(),
            load,
            round,
            users,
            sent: 0,
            acked: 0,
            notified: 0,
            lost: 0,
            duplicates: 0,
            errors: 0,
            msg_rate: 0.0,
            rate: 0.0,
            recorded_rate: 0.0,
            record_lag_ms: None,
            p50: None,
            p99: None,
            max: None,
            gateway_cores: None,
            gateway_us: None,
            fake_cores: None,
            bench_cores: None,
            attempts: 0,
            retried: 0.0,
            failed: 0.0,
            acked_in_outage: None,
            recovery_to_last_ms: None,
            problems: vec![problem],
        }
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} {} round {}: sent {} acked {} notified {} lost {} dup {} errors {} msgs {:.0}/s notifications {:.0}/s \
             (recorded {:.0}/s, {} ms after the last) p50 {} p99 {} attempts {} retried {}{}{}",
            self.case,
            self.load,
            self.round,
            self.sent,
            self.acked,
            self.notified,
            self.lost,
            self.duplicates,
            self.errors,
            self.msg_rate,
            self.rate,
            self.recorded_rate,
            fmt_opt(self.record_lag_ms, 0),
            fmt_opt(self.p50, 1),
            fmt_opt(self.p99, 1),
            self.attempts,
            self.retried,
            self.recovery_to_last_ms.map_or_else(String::new, |ms| format!(" recovery->last {ms:.0} ms")),
            if self.ok() { String::new() } else { format!(" FAIL: {}", self.problems.join("; ")) }
        )
    }
}

/// The fake providers, on the fakes' runtime.
struct Fakes {
    fcm: FakeFcm,
    apns: FakeApns,
}

impl Fakes {
    async fn start(runtime: &tokio::runtime::Handle) -> anyhow::Result<Self> {
        let fcm = runtime.spawn(FakeFcm::start(PROJECT)).await.context("start the fake FCM")?;
        let apns = runtime.spawn(FakeApns::start(TEAM, KEY_ID, TOPIC)).await.context("start the fake APNs")?;
        Ok(Self { fcm, apns })
    }

    /// The `[push]` section pointing at these fakes.
    fn config(&self) -> String {
        format!(
            "[push]\ncoalesce_window = \"1s\"\ncontent = \"sender\"\nca_file = \"{ca}\"\n\n\
             [push.fcm]\nproject_id = \"{PROJECT}\"\nservice_account = \"{account}\"\nendpoint = \"{fcm}\"\n\n\
             [push.apns]\nteam_id = \"{TEAM}\"\nkey_id = \"{KEY_ID}\"\nkey = \"{key}\"\ntopic = \"{TOPIC}\"\n\
             endpoint = \"{apns}\"\n",
            ca = self.apns.ca_path().display(),
            account = self.fcm.service_account_path().display(),
            fcm = self.fcm.endpoint(),
            key = self.apns.key_path().display(),
            apns = self.apns.endpoint(),
        )
    }

    fn register(&self, provider: Provider, token: &str) {
        match provider {
            Provider::Fcm => self.fcm.register(token),
            Provider::Apns => self.apns.register(token),
        }
    }

    fn accepted_count(&self, provider: Provider) -> usize {
        match provider {
            Provider::Fcm => self.fcm.accepted_count(),
            Provider::Apns => self.apns.accepted_count(),
        }
    }

    async fn wait_for_accepted(&self, provider: Provider, n: usize, within: Duration) -> usize {
        match provider {
            Provider::Fcm => self.fcm.wait_for_accepted(n, within).await,
            Provider::Apns => self.apns.wait_for_accepted(n, within).await,
        }
    }

    /// The device tokens of what was accepted after the first `from`, with when.
    fn accepted_tokens(&self, provider: Provider, from: usize) -> Vec<(Instant, String)> {
        match provider {
            Provider::Fcm => self
                .fcm
                .accepted_timed_since(from)
                .into_iter()
                .map(|(at, message)| (at, message["token"].as_str().unwrap_or_default().to_owned()))
                .collect(),
            Provider::Apns => {
                self.apns.accepted_timed_since(from).into_iter().map(|(at, request)| (at, request.token)).collect()
            }
        }
    }

    fn send_attempts(&self, provider: Provider) -> usize {
        match provider {
            Provider::Fcm => self.fcm.send_attempts(),
            Provider::Apns => self.apns.send_attempts(),
        }
    }
}

/// Users `p<set>u<i>`, each with one device of `provider`.
struct UserSet {
    set: u64,
    provider: Provider,
    count: usize,
}

impl UserSet {
    fn name(&self, i: usize) -> String {
        format!("p{}u{i}", self.set)
    }

    fn token(&self, i: usize) -> String {
        self.provider.token(self.set, i)
    }
}

/// A JWT for `user`, signed with the bench gateway's secret as `switchboard token` signs it (HS256,
/// `sub`, `iat`, `exp`): thousands of users would take minutes of `switchboard token` processes.
pub(crate) fn mint(user: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = json!({"sub": user, "iat": now, "exp": now + 3600});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?)
}

/// The next text frame's JSON, skipping pings; an error if the connection ends or is silent.
async fn next_frame<S>(ws: &mut S) -> anyhow::Result<serde_json::Value>
where
    S: futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(SETUP_WAIT, ws.next()).await.context("no frame in time")? {
            Some(Ok(WsMessage::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
            Some(Ok(WsMessage::Close(frame))) => bail!("closed by the gateway: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// One session of `user`: `ready`, `device.register` and its `ack`, then a clean close, awaited
/// to the end of the connection so that the gateway has seen her leave.
async fn register_device(http_port: u16, user: &str, platform: &str, token: &str) -> anyhow::Result<()> {
    let url = format!("ws://127.0.0.1:{http_port}/ws?token={}", mint(user)?);
    let (mut ws, _) = tokio::time::timeout(SETUP_WAIT, tokio_tungstenite::connect_async(url))
        .await
        .context("WebSocket connect timed out")?
        .context("WebSocket connect")?;
    let ready = next_frame(&mut ws).await?;
    if ready["type"] != "ready" {
        bail!("{user}: expected ready, got {ready}");
    }
    let frame = json!({"type": "device.register", "id": "d1", "platform": platform, "token": token});
    ws.send(WsMessage::Text(frame.to_string().into())).await?;
    loop {
        let frame = next_frame(&mut ws).await?;
        match frame["type"].as_str() {
            Some("ack") if frame["id"] == "d1" => break,
            Some("error") => bail!("{user}: device.register refused: {frame}"),
            _ => {}
        }
    }
    ws.close(None).await?;
    let drained = tokio::time::timeout(SETUP_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    });
    drained.await.context("the gateway did not close the session")?;
    Ok(())
}

/// Makes every user of `users` known with her device registered (at the fake and the gateway).
async fn make_known(http_port: u16, users: &UserSet, fakes: &Fakes) -> anyhow::Result<()> {
    for i in 0..users.count {
        fakes.register(users.provider, &users.token(i));
    }
    let started = Instant::now();
    let platform = users.provider.platform();
    let mut sessions = futures::stream::iter(0..users.count)
        .map(|i| {
            let (name, token) = (users.name(i), users.token(i));
            async move { register_device(http_port, &name, platform, &token).await.with_context(|| name) }
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    while let Some(done) = sessions.next().await {
        done?;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = users.count as f64 / started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "  {} users made known with one {} device each in {:.1} s ({rate:.0} users/s)",
        users.count,
        users.provider.platform(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `GET path` over HTTP/1.1: the body.
async fn http_get(http_port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(SETUP_WAIT, stream.read_to_string(&mut response)).await.context("no answer in time")??;
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn metric(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// How long the gateway may take to record what the fakes accepted (its dispatcher records each
/// notification after the provider answered, one at a time).
const SETTLE_WAIT: Duration = Duration::from_secs(120);

/// Whether the gateway has recorded as sent (`switchboard_push_total{result="sent"}`) every
/// notification the fakes accepted for `providers`; waits up to `within` for it.
async fn wait_settled(http_port: u16, fakes: &Fakes, providers: &[Provider], within: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        let body = http_get(http_port, "/metrics").await?;
        let settled = providers.iter().all(|&provider| {
            let label = format!("provider=\"{}\"", provider.metric());
            #[allow(clippy::cast_precision_loss)]
            let accepted = fakes.accepted_count(provider) as f64;
            metric(&body, "switchboard_push_total", &[&label, "result=\"sent\""]) >= accepted
        });
        if settled {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the gateway has no live session left (the users just made known have all gone).
async fn wait_until_nobody_online(http_port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETUP_WAIT;
    loop {
        let body = http_get(http_port, "/metrics").await?;
        let sessions = metric(&body, "switchboard_sessions", &[]);
        if sessions == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{sessions} sessions still live {SETUP_WAIT:?} after the users left");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the gateway's /metrics says about the push path.
#[derive(Clone, Copy, Default)]
struct Counters {
    /// `switchboard_push_total` for the provider, by result.
    sent: f64,
    retried: f64,
    failed: f64,
    /// `switchboard_store_seconds` count and sum for the outbox lookups (one per batch of due users),
    /// and for the store writes of the messages.
    lookups: f64,
    lookups_secs: f64,
    enqueues: f64,
    enqueues_secs: f64,
}

impl Counters {
    async fn read(http_port: u16, provider: Provider) -> anyhow::Result<Self> {
        let body = http_get(http_port, "/metrics").await?;
        let label = format!("provider=\"{}\"", provider.metric());
        let push = |result: &str| metric(&body, "switchboard_push_total", &[&label, &format!("result=\"{result}\"")]);
        let store = |suffix: &str, op: &str| {
            metric(&body, &format!("switchboard_store_seconds_{suffix}"), &[&format!("op=\"{op}\"")])
        };
        Ok(Self {
            sent: push("sent"),
            retried: push("retried"),
            failed: push("failed"),
            lookups: store("count", "wake_lookups"),
            lookups_secs: store("sum", "wake_lookups"),
            enqueues: store("count", "enqueue"),
            enqueues_secs: store("sum", "enqueue"),
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            sent: self.sent - before.sent,
            retried: self.retried - before.retried,
            failed: self.failed - before.failed,
            lookups: self.lookups - before.lookups,
            lookups_secs: self.lookups_secs - before.lookups_secs,
            enqueues: self.enqueues - before.enqueues,
            enqueues_secs: self.enqueues_secs - before.enqueues_secs,
        }
    }
}

/// CPU seconds of this process's threads named `name`.
fn threads_cpu_seconds(name: &str) -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == name) {
            total += servers::proc_cpu_seconds(&path.join("stat").to_string_lossy())?;
        }
    }
    Some(total)
}

struct Cpu {
    gateway: Option<f64>,
    process: Option<f64>,
    fakes: Option<f64>,
}

impl Cpu {
    fn now(gateway: &Gateway) -> Self {
        Self {
            gateway: gateway.server.cpu_seconds(),
            process: servers::proc_cpu_seconds("/proc/self/stat"),
            fakes: threads_cpu_seconds(FAKES_THREAD),
        }
    }
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn percentile_ms(sorted_ns: &[u64], p: f64) -> Option<f64> {
    if sorted_ns.is_empty() {
        return None;
    }
    let len = sorted_ns.len();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((len as f64 * p / 100.0).ceil() as usize).clamp(1, len) - 1;
    #[allow(clippy::cast_precision_loss)]
    Some(sorted_ns[index] as f64 / 1e6)
}

/// Runs the selected push cases `options.rounds` times against one gateway of their own.
pub async fn run(
    options: &PushOptions,
    gateway_binary: &Path,
    dir: &Path,
    cases: &[PushCase],
    fakes_runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Vec<PushRow>> {
    let fakes = Fakes::start(fakes_runtime).await?;
    let gateway_dir = dir.join("push-gateway");
    std::fs::create_dir_all(&gateway_dir)?;
    let mut ports = Ports::default();
    let (http_port, mqtt_port) = (ports.free()?, ports.free()?);
    eprintln!(
        "starting {} with [push] (mqtt 127.0.0.1:{mqtt_port}, http 127.0.0.1:{http_port}; fake FCM {}, fake APNs {})",
        gateway_binary.display(),
        fakes.fcm.endpoint(),
        fakes.apns.endpoint()
    );
    let mut gateway =
        servers::start_gateway_with(gateway_binary, &gateway_dir, DOMAIN, http_port, mqtt_port, &fakes.config())?;
    // The sender's token comes the ordinary way.
    let sender_token = gateway.token(SENDER)?;
    let env = Env { options, fakes: &fakes, gateway: &gateway, http_port, mqtt_port, sender_token };
    let rows = run_rounds(&env, cases).await;
    let alive = gateway.server.pid().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if !gateway.server.stop() {
        eprintln!("note: the push gateway needed SIGKILL");
    }
    if !alive {
        println!("\nThe push gateway process was gone at the end of the run; log:\n{}", gateway.server.log_tail());
    }
    if rows.iter().any(|row| !row.ok()) {
        eprintln!("push gateway log tail:\n{}", gateway.server.log_tail());
    }
    drop(fakes);
    Ok(rows)
}

async fn run_rounds(env: &Env<'_>, cases: &[PushCase]) -> Vec<PushRow> {
    let options = env.options;
    // Made known in the first round, messaged again in the later ones.
    let mut sets: Vec<Option<UserSet>> = cases.iter().map(|_| None).collect();
    let mut rows = Vec::new();
    for round in 1..=options.rounds {
        for (k, &case) in cases.iter().enumerate() {
            let count = match case {
                PushCase::FcmOutage => options.outage_users,
                PushCase::FcmPaced => options.paced_users,
                _ => options.users,
            };
            let load = match case {
                PushCase::FcmOutage => "outage".to_owned(),
                PushCase::FcmPaced => format!("paced {:.0}/s", options.paced_rate),
                _ => "saturation".to_owned(),
            };
            eprintln!("round {round}: {}: {count} offline users", case.label());
            if sets[k].is_none() {
                let users = UserSet { set: k as u64 + 1, provider: case.provider(), count };
                if let Err(error) = make_known(env.http_port, &users, env.fakes).await {
                    let row = PushRow::failed(case, load, round, count, format!("setup: {error:#}"));
                    eprintln!("{}", row.summary());
                    rows.push(row);
                    continue;
                }
                sets[k] = Some(users);
            }
            let Some(users) = &sets[k] else { continue };
            let row = match run_case(env, case, users, round).await {
                Ok(row) => PushRow { load, ..row },
                Err(error) => PushRow::failed(case, load, round, count, format!("{error:#}")),
            };
            eprintln!("{}", row.summary());
            rows.push(row);
            // Past the coalescing window (1 s) before these users are messaged again.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    rows
}

struct Env<'a> {
    options: &'a PushOptions,
    fakes: &'a Fakes,
    gateway: &'a Gateway,
    http_port: u16,
    mqtt_port: u16,
    sender_token: String,
}

async fn run_case(env: &Env<'_>, case: PushCase, users: &UserSet, round: usize) -> anyhow::Result<PushRow> {
    let provider = case.provider();
    let fakes = env.fakes;
    wait_until_nobody_online(env.http_port).await?;
    // A case starts with the gateway idle: nothing of an earlier one is left to record.
    if !wait_settled(env.http_port, fakes, &[Provider::Fcm, Provider::Apns], SETTLE_WAIT).await? {
        bail!("the gateway had not recorded an earlier case's notifications after {SETTLE_WAIT:?}");
    }
    let state = SenderState::new(AckKind::Frame, env.options.window);
    let spec = MqttSpec {
        port: env.mqtt_port,
        client_id: format!("bench-push-{}", now_ns()),
        credentials: Some((SENDER, env.sender_token.as_str())),
        subscribe: Some(format!("im/{SENDER}/in")),
        presence: None,
    };
    let conn = MqttConn::sender(spec, state.clone()).await?;

    let baseline = fakes.accepted_count(provider);
    let attempts_before = fakes.send_attempts(provider);
    let counters_before = Counters::read(env.http_port, provider).await?;
    let outage = case.is_outage().then_some(env.options.outage);
    let recovery = outage.map(|outage| {
        if provider == Provider::Fcm {
            fakes.fcm.fail_for(outage, 503);
        }
        Instant::now() + outage
    });
    // What the gateway had acknowledged when the fake recovered.
    let acked_at_recovery = recovery.map(|at| {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            state.acks.load(Ordering::Relaxed)
        })
    });
    let cpu_before = Cpu::now(env.gateway);
    let start = tokio::time::Instant::now();
    let stop_sending = start + Duration::from_secs(env.options.max_secs);

    // Closed loop: at most `window` messages without their ack; paced, also one every 1/rate s.
    let pace = (case == PushCase::FcmPaced).then_some(env.options.paced_rate);
    let topic = format!("im/{SENDER}/out");
    let mut sent_ns = vec![0u64; users.count];
    let mut sent = 0;
    let mut problems = Vec::new();
    for (i, slot) in sent_ns.iter_mut().enumerate() {
        if let Some(rate) = pace {
            #[allow(clippy::cast_precision_loss)]
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            if at >= stop_sending {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        match tokio::time::timeout_at(stop_sending, state.window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => break,
        }
        let frame = format!(r#"{{"type":"message","id":"p{i}","to":"{}","body":"push bench {i}"}}"#, users.name(i));
        *slot = now_ns();
        match tokio::time::timeout_at(stop_sending, conn.client.publish(topic.as_str(), QoS::AtLeastOnce, false, frame))
            .await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(error)) => {
                problems.push(format!("publish failed: {error}"));
                break;
            }
            Err(_) => break,
        }
    }
    if sent < users.count {
        // Not a failure: the time budget ran out; what was sent is what must be notified.
        eprintln!("  note: {sent} of {} messages sent within the {} s budget", users.count, env.options.max_secs);
    }
    let first_ns = sent_ns.first().copied().unwrap_or_default();
    // Notifications trail the messages; after an outage, a device waits 2, 4, 8, … s between
    // attempts (plus jitter), so one failed just before the recovery is retried up to 8 s later.
    let trail = Duration::from_secs(20) + outage.map_or(Duration::ZERO, |outage| outage + Duration::from_secs(40));
    let deadline = tokio::time::Instant::now() + trail;

    // Every ack.
    let mut last_ack_ns = now_ns();
    loop {
        let settled = state.acks.load(Ordering::Relaxed) + state.error_count.load(Ordering::Relaxed);
        if settled >= sent {
            last_ack_ns = now_ns();
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            problems.push(format!("{} acks missing", sent - settled));
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let acked = state.acks.load(Ordering::Relaxed);
    let errors = state.error_count.load(Ordering::Relaxed);
    for error in state.errors.lock().map(|errors| errors.clone()).unwrap_or_default() {
        problems.push(format!("sender got {error}"));
    }

    // Every notification: one per acknowledged message, each for another user.
    let mut target = baseline + acked;
    let (mut seen, mut duplicates, mut latencies, mut last_ns) = (vec![false; users.count], 0, Vec::new(), 0u64);
    let mut counted = 0;
    let (mut end_ns, mut cpu_after);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        fakes.wait_for_accepted(provider, target, left).await;
        (end_ns, cpu_after) = (now_ns(), Cpu::now(env.gateway));
        let accepted = fakes.accepted_tokens(provider, baseline + counted);
        counted += accepted.len();
        for (at, token) in accepted {
            let Some((_, i)) = provider.parse_token(&token).filter(|&(set, i)| set == users.set && i < users.count)
            else {
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                duplicates += 1;
                continue;
            }
            let at_ns = ns_at(at);
            latencies.push(at_ns.saturating_sub(sent_ns[i]));
            last_ns = last_ns.max(at_ns);
        }
        let notified = latencies.len();
        if notified >= acked || tokio::time::Instant::now() >= deadline {
            break;
        }
        target = baseline + counted + (acked - notified);
    }
    // The gateway's work for them ends when it has recorded each as sent (the CPU counts until then).
    let settled = wait_settled(env.http_port, fakes, &[provider], SETTLE_WAIT).await?;
    let settled_ns = now_ns();
    if settled {
        (end_ns, cpu_after) = (settled_ns, Cpu::now(env.gateway));
    } else {
        problems.push(format!("the gateway had not recorded every notification as sent after {SETTLE_WAIT:?}"));
    }
    let acked_in_outage = match acked_at_recovery {
        Some(task) => Some(task.await.context("the recovery probe")?),
        None => None,
    };
    let attempts = fakes.send_attempts(provider) - attempts_before;
    let counters = Counters::read(env.http_port, provider).await?.since(counters_before);
    conn.close().await;

    let notified = latencies.len();
    latencies.sort_unstable();
    let lost = acked.saturating_sub(notified);
    if lost > 0 {
        problems.push(format!("{lost} of {acked} acknowledged messages notified nobody within {trail:?}"));
    }
    if duplicates > 0 {
        problems.push(format!("{duplicates} users notified twice"));
    }
    if errors > 0 {
        problems.push(format!("{errors} messages refused"));
    }
    if counters.failed > 0.0 {
        problems.push(format!("the gateway gave up on {} notifications", counters.failed));
    }
    if notified > 0 && counters.enqueues > 0.0 {
        #[allow(clippy::cast_precision_loss)]
        let per_notification = counters.lookups / notified as f64;
        eprintln!(
            "  store: {:.0} message writes (mean {:.2} ms), {:.0} outbox lookups (mean {:.2} ms, {per_notification:.3} per \
             notification); push_total sent {:.0}",
            counters.enqueues,
            counters.enqueues_secs * 1e3 / counters.enqueues,
            counters.lookups,
            counters.lookups_secs * 1e3 / counters.lookups.max(1.0),
            counters.sent
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let per_second = |count: usize, until_ns: u64| count as f64 / (until_ns.saturating_sub(first_ns).max(1) as f64 / 1e9);
    #[allow(clippy::cast_precision_loss)]
    let wall = end_ns.saturating_sub(first_ns).max(1) as f64 / 1e9;
    let delta = |before: Option<f64>, after: Option<f64>| before.zip(after).map(|(b, a)| a - b);
    let gateway_cpu = delta(cpu_before.gateway, cpu_after.gateway);
    let fakes_cpu = delta(cpu_before.fakes, cpu_after.fakes);
    let bench_cpu = delta(cpu_before.process, cpu_after.process).zip(fakes_cpu).map(|(all, fakes)| all - fakes);
    #[allow(clippy::cast_precision_loss)]
    let gateway_us = gateway_cpu.filter(|_| notified > 0).map(|cpu| cpu * 1e6 / notified as f64);
    let recovery_to_last_ms = recovery.filter(|_| notified > 0).map(|recovery| {
        #[allow(clippy::cast_precision_loss)]
        let ms = last_ns.saturating_sub(ns_at(recovery)) as f64 / 1e6;
        ms
    });
    Ok(PushRow {
        case: case.label(),
        load: String::new(),
        round,
        users: users.count,
        sent,
        acked,
        notified,
        lost,
        duplicates,
        errors,
        msg_rate: per_second(acked, last_ack_ns),
        rate: per_second(notified, last_ns),
        recorded_rate: if settled { per_second(notified, settled_ns) } else { 0.0 },
        #[allow(clippy::cast_precision_loss)]
        record_lag_ms: settled.then(|| settled_ns.saturating_sub(last_ns) as f64 / 1e6),
        p50: percentile_ms(&latencies, 50.0),
        p99: percentile_ms(&latencies, 99.0),
        max: percentile_ms(&latencies, 100.0),
        gateway_cores: gateway_cpu.map(|cpu| cpu / wall),
        gateway_us,
        fake_cores: fakes_cpu.map(|cpu| cpu / wall),
        bench_cores: bench_cpu.map(|cpu| cpu / wall),
        attempts,
        retried: counters.retried,
        failed: counters.failed,
        acked_in_outage,
        recovery_to_last_ms,
        problems,
    })
}

fn median(values: &[f64]) -> Option<f64> {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { f64::midpoint(values[mid - 1], values[mid]) })
}

fn median_of(rows: &[&PushRow], field: impl Fn(&PushRow) -> Option<f64>) -> Option<f64> {
    median(&rows.iter().filter_map(|row| field(row)).collect::<Vec<_>>())
}

pub fn print_tables(options: &PushOptions, rows: &[PushRow]) {
    let mut cases: Vec<&str> = Vec::new();
    for row in rows {
        if !cases.contains(&row.case) {
            cases.push(row.case);
        }
    }
    let throughput: Vec<&str> = cases.iter().copied().filter(|case| !case.contains("outage")).collect();
    if !throughput.is_empty() {
        println!(
            "\nPush notifications: 1 MQTT sender → N offline users with one device each, one message per user, \
             window {} messages awaiting their ack (saturation), or also one message every 1/rate s (paced); \
             latency = message sent → notification accepted by the fake, in ms; recorded/s = the same notifications \
             over the time until the gateway had recorded each as sent (its CPU is counted until then); {} rounds; \
             medians, with min..max of notifications/s.\n",
            options.window, options.rounds
        );
        println!(
            "| case | load | users | runs | lost | dup | msgs acked/s | notifications/s (median) | min..max | \
             recorded/s | p50 ms | p99 ms | gateway cores | gateway CPU µs/notification | fake cores | status |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for case in &throughput {
            let group: Vec<&PushRow> = rows.iter().filter(|row| row.case == *case).collect();
            let rates: Vec<f64> = group.iter().filter(|row| row.notified > 0).map(|row| row.rate).collect();
            println!(
                "| {case} | {} | {} | {} | {} | {} | {} | {} | {}..{} | {} | {} | {} | {} | {} | {} | {} |",
                group.first().map_or("", |row| row.load.as_str()),
                group.first().map_or(0, |row| row.users),
                group.len(),
                group.iter().map(|row| row.lost).sum::<usize>(),
                group.iter().map(|row| row.duplicates).sum::<usize>(),
                fmt_opt(median_of(&group, |row| Some(row.msg_rate).filter(|_| row.acked > 0)), 0),
                fmt_opt(median(&rates), 0),
                fmt_opt(rates.iter().copied().reduce(f64::min), 0),
                fmt_opt(rates.iter().copied().reduce(f64::max), 0),
                fmt_opt(median_of(&group, |row| Some(row.recorded_rate).filter(|&rate| rate > 0.0)), 0),
                fmt_opt(median_of(&group, |row| row.p50), 1),
                fmt_opt(median_of(&group, |row| row.p99), 1),
                fmt_opt(median_of(&group, |row| row.gateway_cores), 2),
                fmt_opt(median_of(&group, |row| row.gateway_us), 1),
                fmt_opt(median_of(&group, |row| row.fake_cores), 2),
                if group.iter().all(|row| row.ok()) { "ok" } else { "**FAIL**" }
            );
        }
    }
    if cases.iter().any(|case| case.contains("outage")) {
        println!(
            "\nOutbox under an outage: the fake FCM answers 503 UNAVAILABLE (no Retry-After) to every send for {} s \
             from the first message on; then it recovers. Every run:\n",
            options.outage.as_secs()
        );
        println!(
            "| round | users | sent | acked during the outage | notified | lost | dup | send attempts at the fake | \
             retries (gateway) | given up | recovery → last notification ms | p50 ms | p99 ms | status |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for row in rows.iter().filter(|row| row.case.contains("outage")) {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.round,
                row.users,
                row.sent,
                row.acked_in_outage.map_or_else(|| "-".into(), |n| n.to_string()),
                row.notified,
                row.lost,
                row.duplicates,
                row.attempts,
                row.retried,
                row.failed,
                fmt_opt(row.recovery_to_last_ms, 0),
                fmt_opt(row.p50, 0),
                fmt_opt(row.p99, 0),
                if row.ok() { "ok" } else { "**FAIL**" }
            );
        }
    }
    if !throughput.is_empty() {
        println!("\nEvery push throughput run:\n");
        println!(
            "| round | case | load | users | sent | acked | notified | lost | dup | errors | fake saw requests | \
             msgs acked/s | notifications/s | recorded/s | recorded ms after the last | p50 ms | p99 ms | max ms | \
             gateway cores | gateway CPU µs/notification | fake cores | bench cores | status |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for row in rows.iter().filter(|row| !row.case.contains("outage")) {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.round,
                row.case,
                row.load,
                row.users,
                row.sent,
                row.acked,
                row.notified,
                row.lost,
                row.duplicates,
                row.errors,
                row.attempts,
                row.msg_rate,
                row.rate,
                row.recorded_rate,
                fmt_opt(row.record_lag_ms, 0),
                fmt_opt(row.p50, 1),
                fmt_opt(row.p99, 1),
                fmt_opt(row.max, 1),
                fmt_opt(row.gateway_cores, 2),
                fmt_opt(row.gateway_us, 1),
                fmt_opt(row.fake_cores, 2),
                fmt_opt(row.bench_cores, 2),
                if row.ok() { "ok" } else { "**FAIL**" }
            );
        }
    }
}
