//! `switchboard-bench`: throughput and latency of Switchboard's MQTT, WebSocket and XMPP paths,
//! with Mosquitto and Prosody as the baselines, in one bounded run.
//!
//! Cases (each at saturation, then paced at half the median saturation rate of the same path, then
//! paced at one fixed rate for all paths; `--rounds` times, interleaved; medians in the summary):
//! 1. `mosquitto pub->sub`: N publishers → 1 subscriber, straight through Mosquitto.
//! 2. `gateway MQTT->MQTT`: N sender users → 1 receiver user through the embedded MQTT endpoint.
//! 3. `gateway MQTT->WS`: N MQTT sender users → 1 WebSocket receiver.
//! 4. `prosody c2s->c2s`: N XMPP accounts → 1 XMPP account, straight through Prosody.
//! 5. `gateway MQTT->XMPP`: N MQTT sender users → 1 XMPP account on Prosody, through the
//!    gateway's component link.
//! 6. `gateway XMPP->MQTT`: N XMPP accounts on Prosody → 1 MQTT receiver user.
//!
//! And the push cases (`push.rs`), against a gateway of their own with a `[push]` section and fake
//! FCM and APNs servers in this process: notifications per second to N offline users
//! (`push FCM throughput`, `push APNs throughput`), their latency below saturation
//! (`push FCM latency`), and whether the outbox loses anything while FCM answers 503 for a while
//! (`push FCM outage`).
//!
//! Saturation is closed loop: each sender keeps at most `--window` messages outstanding, counted
//! by PUBACK on Mosquitto, by the gateway's `ack` frame for gateway users, and by the receiver's
//! progress for XMPP senders (c2s has no per-message ack). Paced is open loop. Every step has a
//! deadline, so the run always ends. A Markdown table goes to stdout, progress to stderr.

mod idle;
mod load;
mod push;
mod servers;
mod xmpp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use xmpp_parsers::jid::Jid;

use crate::load::{
    AckKind, MqttConn, MqttSpec, Outlet, Pace, Recorder, SETUP_WAIT, SendPlan, SenderState, WsConn, now_ns,
};
use crate::push::{PUSH_CASES, PushCase, PushOptions, PushRow};
use crate::servers::{COMPONENT_DOMAIN, Gateway, Ports, Prosody, Server, XMPP_HOST, xmpp_password};
use crate::xmpp::{Role, XmppConn};

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    about = "Benchmark Switchboard's MQTT, WebSocket and XMPP paths against Mosquitto and Prosody"
)]
struct Cli {
    /// The switchboard binary (default: next to this one, else $CARGO_TARGET_DIR/release or the
    /// workspace's target/release).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Messages per saturation case.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Messages per paced case (fewer when that would last more than `--paced-max-secs`, at the
    /// paced rate or, if lower, at the path's median saturation rate).
    #[arg(long, default_value_t = 20_000)]
    paced_messages: usize,
    /// Longest a paced case may be planned to last, in seconds.
    #[arg(long, default_value_t = 10)]
    paced_max_secs: u64,
    /// Concurrent senders per case.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Closed loop: unacknowledged messages allowed per sender.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Sending time budget of a saturation case, in seconds: a path too slow to carry `--messages`
    /// in that time sends fewer.
    #[arg(long, default_value_t = 10)]
    saturation_max_secs: u64,
    /// Deadline of each saturation case, in seconds (a paced case gets its planned duration plus
    /// this, at most 20 s).
    #[arg(long, default_value_t = 40)]
    case_timeout: u64,
    /// Also run every path paced at this same rate (messages/s), for latencies compared at equal
    /// load; 0 = skip.
    #[arg(long, default_value_t = 5000.0)]
    fixed_rate: f64,
    /// Keep the temporary directory (server configurations, logs, the gateway's store) and print its path.
    #[arg(long)]
    keep: bool,
    /// Rounds of every case (interleaved); the summary shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The Mosquitto broker binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// The Prosody binary (`prosodyctl` is expected beside it).
    #[arg(long, default_value = "/usr/bin/prosody")]
    prosody: PathBuf,
    /// Idle-session populations to measure (`idle sessions` case), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    idle_sessions: Vec<usize>,
    /// Gateway starts timed (`startup` case).
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// Run only the cases whose name contains this text (repeatable), e.g. `--only XMPP`, `--only push`.
    #[arg(long)]
    only: Vec<String>,
    /// Push throughput cases: offline users, one message and so one notification each.
    #[arg(long, default_value_t = 10_000)]
    push_users: usize,
    /// Push latency case (`push FCM latency`): offline users, one message each, sent at `--push-paced-rate`.
    #[arg(long, default_value_t = 2000)]
    push_paced_users: usize,
    /// Push latency case: messages per second (so notifications per second), below saturation.
    #[arg(long, default_value_t = 200.0)]
    push_paced_rate: f64,
    /// Push outage case: offline users messaged while the fake FCM is down.
    #[arg(long, default_value_t = 1000)]
    push_outage_users: usize,
    /// Push outage case: how long the fake FCM answers 503, in seconds.
    #[arg(long, default_value_t = 5)]
    push_outage_secs: u64,
    /// Push cases: sending time budget, in seconds (the notifications then get 20 s more, and the
    /// outage case the outage plus 40 s more).
    #[arg(long, default_value_t = 30)]
    push_max_secs: u64,
}

/// One path through the servers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Mosquitto,
    GatewayMqtt,
    GatewayWs,
    Prosody,
    GatewayMqttToXmpp,
    GatewayXmppToMqtt,
}

const CASES: [Case; 6] = [
    Case::Mosquitto,
    Case::GatewayMqtt,
    Case::GatewayWs,
    Case::Prosody,
    Case::GatewayMqttToXmpp,
    Case::GatewayXmppToMqtt,
];

/// Which server process a case's CPU is read from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerId {
    Mosquitto,
    Gateway,
    Prosody,
}

impl ServerId {
    fn name(self) -> &'static str {
        match self {
            Self::Mosquitto => "mosquitto",
            Self::Gateway => "gateway",
            Self::Prosody => "prosody",
        }
    }
}

/// How a case's senders connect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Senders {
    /// Plain MQTT clients of Mosquitto.
    Mosquitto,
    /// Gateway users on the embedded MQTT endpoint.
    Gateway,
    /// XMPP accounts on Prosody.
    Xmpp,
}

/// The receiving side of a case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Receiving {
    /// A subscriber on Mosquitto.
    Mosquitto,
    /// Gateway user `rcv` over MQTT (`im/rcv/in`).
    GatewayMqtt,
    /// Gateway user `wsrcv` over WebSocket.
    GatewayWs,
    /// XMPP account `xrcv@localhost` on Prosody.
    Xmpp,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Self::Mosquitto => "mosquitto pub->sub",
            Self::GatewayMqtt => "gateway MQTT->MQTT",
            Self::GatewayWs => "gateway MQTT->WS",
            Self::Prosody => "prosody c2s->c2s",
            Self::GatewayMqttToXmpp => "gateway MQTT->XMPP",
            Self::GatewayXmppToMqtt => "gateway XMPP->MQTT",
        }
    }

    fn senders(self) -> Senders {
        match self {
            Self::Mosquitto => Senders::Mosquitto,
            Self::GatewayMqtt | Self::GatewayWs | Self::GatewayMqttToXmpp => Senders::Gateway,
            Self::Prosody | Self::GatewayXmppToMqtt => Senders::Xmpp,
        }
    }

    fn receiving(self) -> Receiving {
        match self {
            Self::Mosquitto => Receiving::Mosquitto,
            Self::GatewayMqtt | Self::GatewayXmppToMqtt => Receiving::GatewayMqtt,
            Self::GatewayWs => Receiving::GatewayWs,
            Self::Prosody | Self::GatewayMqttToXmpp => Receiving::Xmpp,
        }
    }

    fn servers(self) -> &'static [ServerId] {
        match self {
            Self::Mosquitto => &[ServerId::Mosquitto],
            Self::GatewayMqtt | Self::GatewayWs => &[ServerId::Gateway],
            Self::Prosody => &[ServerId::Prosody],
            Self::GatewayMqttToXmpp | Self::GatewayXmppToMqtt => &[ServerId::Gateway, ServerId::Prosody],
        }
    }
}

/// The XMPP receiver account and the XMPP senders' accounts on Prosody.
const XMPP_RECEIVER: &str = "xrcv";

fn xmpp_sender(k: usize) -> String {
    format!("xsnd{k}")
}

/// Tells one case's messages from another's.
static CASE_TAG: AtomicU64 = AtomicU64::new(0);

struct Row {
    case: &'static str,
    load: String,
    round: usize,
    messages: usize,
    sent: usize,
    received: usize,
    lost: usize,
    duplicates: usize,
    errors: usize,
    rate: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    server_cores: Option<f64>,
    server_us_per_msg: Option<f64>,
    /// Per server process, when the case goes through more than one: (name, cores, µs/msg).
    split: Vec<(&'static str, Option<f64>, Option<f64>)>,
    client_cores: Option<f64>,
    problems: Vec<String>,
}

impl Row {
    fn failed(case: &'static str, load: String, round: usize, problem: String) -> Self {
        Self {
            case,
            load,
            round,
            messages: 0,
            sent: 0,
            received: 0,
            lost: 0,
            duplicates: 0,
            errors: 0,
            rate: 0.0,
            p50: None,
            p99: None,
            p999: None,
            server_cores: None,
            server_us_per_msg: None,
            split: Vec::new(),
            client_cores: None,
            problems: vec![problem],
        }
    }

    fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Env<'a> {
    cli: &'a Cli,
    mosquitto: &'a Server,
    mosquitto_port: u16,
    gateway: &'a Gateway,
    mqtt_port: u16,
    http_port: u16,
    prosody: &'a Prosody,
    tokens: std::collections::HashMap<String, String>,
}

impl Env<'_> {
    fn token(&self, user: &str) -> anyhow::Result<&str> {
        self.tokens.get(user).map(String::as_str).with_context(|| format!("no token for {user}"))
    }

    fn server(&self, id: ServerId) -> &Server {
        match id {
            ServerId::Mosquitto => self.mosquitto,
            ServerId::Gateway => &self.gateway.server,
            ServerId::Prosody => &self.prosody.server,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.senders == 0 || cli.messages < cli.senders || cli.window == 0 {
        bail!("--senders and --window must be positive and --messages at least --senders");
    }
    if cli.push_paced_rate <= 0.0 {
        bail!("--push-paced-rate must be positive");
    }
    let gateway_binary = match &cli.gateway {
        Some(path) => path.clone(),
        None => default_gateway_binary()?,
    };
    if !gateway_binary.is_file() {
        bail!("gateway binary {} not found (build it, or pass --gateway)", gateway_binary.display());
    }
    // One thread: the servers need the other core (NOTES.md).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The fake push providers get a thread of their own (named, so that its CPU time can be read).
    let fakes = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(push::FAKES_THREAD)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&cli, &gateway_binary, fakes.handle()));
    fakes.shutdown_timeout(Duration::from_secs(1));
    result
}

fn default_gateway_binary() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("switchboard"));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(Path::new(&dir).join("release").join("switchboard"));
    }
    candidates
        .push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("release").join("switchboard"));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| format!("no switchboard binary in {candidates:?}; build it or pass --gateway"))
}

async fn run(cli: &Cli, gateway_binary: &Path, fakes_runtime: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("switchboard-bench-").tempdir()?;
    {
        // The servers that drop privileges (Mosquitto, Prosody) must be able to reach their subdirectory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    }
    let selected = |label: &str| cli.only.is_empty() || cli.only.iter().any(|only| label.contains(only.as_str()));
    let paths: Vec<Case> = CASES.into_iter().filter(|case| selected(case.label())).collect();
    let push_cases: Vec<PushCase> = PUSH_CASES.into_iter().filter(|case| selected(case.label())).collect();
    let (timed_starts, idle_populations) = (selected("startup"), selected("idle sessions"));
    if paths.is_empty() && push_cases.is_empty() && !timed_starts && !idle_populations {
        bail!("--only matches no case");
    }
    if timed_starts || idle_populations {
        let options = idle::IdleOptions { sessions: cli.idle_sessions.clone(), starts: cli.starts };
        let startup = if timed_starts { Some(idle::startup(gateway_binary, dir.path(), &options).await?) } else { None };
        let populations = if idle_populations {
            idle::raise_file_limit(250_000);
            idle::populations(gateway_binary, dir.path(), &options).await?
        } else {
            Vec::new()
        };
        idle::print_tables(startup.as_ref(), &populations);
    }
    let (mut failed, mut runs) = (0, 0);
    if !paths.is_empty() {
        (failed, runs) = run_paths(cli, gateway_binary, dir.path(), &paths).await?;
    }
    if !push_cases.is_empty() {
        let options = PushOptions {
            users: cli.push_users,
            paced_users: cli.push_paced_users,
            paced_rate: cli.push_paced_rate,
            outage_users: cli.push_outage_users,
            outage: Duration::from_secs(cli.push_outage_secs),
            max_secs: cli.push_max_secs,
            window: cli.window,
            rounds: cli.rounds,
        };
        let rows = push::run(&options, gateway_binary, dir.path(), &push_cases, fakes_runtime).await?;
        push::print_tables(&options, &rows);
        let failures: Vec<&PushRow> = rows.iter().filter(|row| !row.ok()).collect();
        if !failures.is_empty() {
            println!("\nProblems:");
            for row in &failures {
                for problem in &row.problems {
                    println!("- {} (round {}): {problem}", row.case, row.round);
                }
            }
        }
        failed += failures.len();
        runs += rows.len();
    }
    if cli.keep {
        eprintln!("kept {}", dir.keep().display());
    }
    if failed > 0 {
        bail!("{failed} of {runs} runs failed");
    }
    Ok(())
}

/// The message paths: Mosquitto, Prosody and a gateway joined to Prosody, every case of `paths`
/// `--rounds` times, then the tables. Returns (failed runs, runs).
async fn run_paths(cli: &Cli, gateway_binary: &Path, dir: &Path, paths: &[Case]) -> anyhow::Result<(usize, usize)> {
    let mosquitto_dir = dir.join("mosquitto");
    let prosody_dir = dir.join("prosody");
    let gateway_dir = dir.join("gateway");
    std::fs::create_dir_all(&mosquitto_dir)?;
    std::fs::create_dir_all(&prosody_dir)?;
    std::fs::create_dir_all(&gateway_dir)?;

    let mut ports = Ports::default();
    let (mosquitto_port, mqtt_port, http_port) = (ports.free()?, ports.free()?, ports.free()?);
    let (c2s_port, component_port) = (ports.free()?, ports.free()?);
    eprintln!("starting mosquitto on 127.0.0.1:{mosquitto_port}");
    let mut mosquitto = servers::start_mosquitto(&cli.mosquitto, &mosquitto_dir, mosquitto_port)?;
    eprintln!("starting prosody (c2s 127.0.0.1:{c2s_port}, component 127.0.0.1:{component_port})");
    let accounts: Vec<String> =
        std::iter::once(XMPP_RECEIVER.to_owned()).chain((0..cli.senders).map(xmpp_sender)).collect();
    let mut prosody = servers::start_prosody(&cli.prosody, &prosody_dir, c2s_port, component_port, &accounts)?;
    eprintln!("starting {} (mqtt 127.0.0.1:{mqtt_port}, http 127.0.0.1:{http_port})", gateway_binary.display());
    let mut gateway =
        servers::start_gateway(gateway_binary, &gateway_dir, http_port, mqtt_port, prosody.component_port)?;

    let mut tokens = std::collections::HashMap::new();
    for user in ["rcv", "wsrcv"].into_iter().map(str::to_owned).chain((0..cli.senders).map(|k| format!("snd{k}"))) {
        let token = gateway.token(&user)?;
        tokens.insert(user, token);
    }
    let env = Env {
        cli,
        mosquitto: &mosquitto,
        mosquitto_port,
        gateway: &gateway,
        mqtt_port,
        http_port,
        prosody: &prosody,
        tokens,
    };

    // Rounds are interleaved (every path once, then again), so a noisy minute hits all paths alike.
    let mut rows = Vec::new();
    for round in 1..=cli.rounds {
        for &path in paths {
            let row = run_case(&env, path, Pace::Closed, 0.0, cli.messages, round).await;
            eprintln!("{}", summary(&row));
            rows.push(row);
        }
    }
    // Paced at half the median saturation rate of the same path.
    let mut saturation = std::collections::HashMap::new();
    let mut paced_rates = Vec::new();
    for &path in paths {
        let rates: Vec<f64> =
            rows.iter().filter(|row| row.case == path.label() && row.received > 0).map(|row| row.rate).collect();
        let rate = median(&rates);
        saturation.insert(path.label(), rate);
        paced_rates.push((path, rate.map(|rate| (rate / 2.0).round())));
    }
    // And, for latencies compared at equal load, every path at the same fixed rate.
    if cli.fixed_rate >= 1.0 {
        paced_rates.extend(paths.iter().map(|&path| (path, Some(cli.fixed_rate))));
    }
    for round in 1..=cli.rounds {
        for &(path, rate) in &paced_rates {
            let row = match rate {
                Some(rate) if rate >= 1.0 => {
                    // A path that cannot carry the paced rate drains at its saturation rate: plan
                    // (count, deadline) with the lower of the two.
                    let carried =
                        saturation.get(path.label()).copied().flatten().map_or(rate, |max| max.min(rate)).max(1.0);
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
                    let count = cli.paced_messages.min((carried * cli.paced_max_secs as f64) as usize).max(cli.senders);
                    let pace = Pace::Rate { rate, senders: cli.senders };
                    run_case(&env, path, pace, carried, count, round).await
                }
                _ => {
                    Row::failed(path.label(), "paced".into(), round, "not run: no saturation rate was measured".into())
                }
            };
            eprintln!("{}", summary(&row));
            rows.push(row);
        }
    }

    let gateway_alive = gateway.server.pid().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let prosody_alive = prosody.server.pid().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    // The gateway first: it is a component of Prosody.
    let gateway_clean = gateway.server.stop();
    let prosody_clean = prosody.server.stop();
    let mosquitto_clean = mosquitto.stop();
    print_table(cli, &rows);
    if !gateway_alive {
        println!("\nThe gateway process was gone at the end of the run; log:\n{}", gateway.server.log_tail());
    }
    if !prosody_alive {
        println!("\nThe Prosody process was gone at the end of the run; log:\n{}", prosody.server.log_tail());
    }
    if !gateway_clean || !prosody_clean || !mosquitto_clean {
        eprintln!(
            "note: a server needed SIGKILL (gateway clean: {gateway_clean}, prosody clean: {prosody_clean}, \
             mosquitto clean: {mosquitto_clean})"
        );
    }
    let failures: Vec<&Row> = rows.iter().filter(|row| !row.ok()).collect();
    if !failures.is_empty() {
        println!("\nProblems:");
        for row in &failures {
            for problem in &row.problems {
                println!("- {} ({}): {problem}", row.case, row.load);
            }
        }
        eprintln!("gateway log tail:\n{}", gateway.server.log_tail());
        eprintln!("prosody log tail:\n{}", prosody.server.log_tail());
    }
    Ok((failures.len(), rows.len()))
}

fn summary(row: &Row) -> String {
    format!(
        "{} {}: sent {} received {} lost {} errors {} rate {:.0}/s p50 {} p99 {}{}",
        row.case,
        row.load,
        row.sent,
        row.received,
        row.lost,
        row.errors,
        row.rate,
        fmt_ms(row.p50),
        fmt_ms(row.p99),
        if row.ok() { String::new() } else { format!(" FAIL: {}", row.problems.join("; ")) }
    )
}

/// `carried`: for a paced case, the rate at which the path is expected to drain (the paced rate,
/// or its saturation rate if lower), which sets the deadline.
async fn run_case(env: &Env<'_>, path: Case, pace: Pace, carried: f64, count: usize, round: usize) -> Row {
    let load = match pace {
        Pace::Closed => "saturation".to_owned(),
        Pace::Rate { rate, .. } => format!("paced {rate:.0}/s"),
    };
    eprintln!("round {round}: {} {load}: {count} messages", path.label());
    match case(env, path, pace, carried, count, load.clone()).await {
        Ok(row) => Row { round, ..row },
        Err(error) => Row { messages: count, ..Row::failed(path.label(), load, round, format!("{error:#}")) },
    }
}

/// A connection of the receiving side.
enum ReceiverConn {
    Mqtt(MqttConn),
    Ws(WsConn),
    Xmpp(XmppConn),
}

impl ReceiverConn {
    fn failure(&self) -> Option<String> {
        match self {
            Self::Mqtt(conn) => conn.failure(),
            Self::Ws(conn) => conn.failure(),
            Self::Xmpp(conn) => conn.failure(),
        }
    }

    async fn close(self) {
        match self {
            Self::Mqtt(conn) => conn.close().await,
            Self::Ws(conn) => conn.close().await,
            Self::Xmpp(conn) => conn.close().await,
        }
    }
}

/// A sender's connection.
enum SenderConn {
    Mqtt(MqttConn),
    Xmpp(XmppConn),
}

impl SenderConn {
    fn failure(&self) -> Option<String> {
        match self {
            Self::Mqtt(conn) => conn.failure(),
            Self::Xmpp(conn) => conn.failure(),
        }
    }

    async fn close(self) {
        match self {
            Self::Mqtt(conn) => conn.close().await,
            Self::Xmpp(conn) => conn.close().await,
        }
    }
}

struct Sender {
    conn: SenderConn,
    state: Arc<SenderState>,
    outlet: Outlet,
}

async fn case(env: &Env<'_>, path: Case, pace: Pace, carried: f64, count: usize, load: String) -> anyhow::Result<Row> {
    let cli = env.cli;
    let senders = cli.senders;
    let counts: Vec<usize> = (0..senders).map(|k| count / senders + usize::from(k < count % senders)).collect();
    let tag = CASE_TAG.fetch_add(1, Ordering::Relaxed) + 1;
    let recorder = Recorder::new(&counts, tag);
    let run_id = now_ns();

    // The receiver first: on the gateway a user must have connected before anyone can message her,
    // and an XMPP account must be available before chat messages to its bare JID reach it.
    // `to` is how the senders address the receiver (a gateway frame's `to`, or a JID).
    let (to, receiver) = match path.receiving() {
        Receiving::Mosquitto => {
            let spec = MqttSpec {
                port: env.mosquitto_port,
                client_id: format!("bench-sub-{run_id}"),
                credentials: None,
                subscribe: Some(format!("bench/{run_id}/#")),
            };
            ("sub".to_owned(), ReceiverConn::Mqtt(MqttConn::receiver(spec, recorder.clone()).await?))
        }
        Receiving::GatewayMqtt => {
            let spec = MqttSpec {
                port: env.mqtt_port,
                client_id: format!("bench-rcv-{run_id}"),
                credentials: Some(("rcv", env.token("rcv")?)),
                subscribe: Some("im/rcv/in".into()),
            };
            let conn = MqttConn::receiver(spec, recorder.clone()).await?;
            let to = if path.senders() == Senders::Xmpp { format!("rcv@{COMPONENT_DOMAIN}") } else { "rcv".to_owned() };
            (to, ReceiverConn::Mqtt(conn))
        }
        Receiving::GatewayWs => {
            let conn = WsConn::receiver(env.http_port, env.token("wsrcv")?, recorder.clone()).await?;
            ("wsrcv".to_owned(), ReceiverConn::Ws(conn))
        }
        Receiving::Xmpp => {
            let jid = format!("{XMPP_RECEIVER}@{XMPP_HOST}");
            let role = Role::Receiver(recorder.clone());
            let conn = XmppConn::connect(env.prosody.c2s_port, &jid, &xmpp_password(XMPP_RECEIVER), role).await?;
            (jid, ReceiverConn::Xmpp(conn))
        }
    };
    let mut receiver = Some(receiver);

    let ack_kind = match path.senders() {
        Senders::Mosquitto => AckKind::PubAck,
        Senders::Gateway => AckKind::Frame,
        Senders::Xmpp => AckKind::Receiver,
    };
    let mut senders_conns: Vec<Sender> = Vec::with_capacity(senders);
    for (k, &n) in counts.iter().enumerate() {
        let state = SenderState::new(ack_kind, cli.window);
        state.expected_acks.store(n + 1, Ordering::Relaxed);
        let sender = match path.senders() {
            Senders::Mosquitto => {
                let spec = MqttSpec {
                    port: env.mosquitto_port,
                    client_id: format!("bench-pub{k}-{run_id}"),
                    credentials: None,
                    subscribe: None,
                };
                let conn = MqttConn::sender(spec, state.clone()).await?;
                let outlet =
                    Outlet::Mqtt { client: conn.client.clone(), topic: format!("bench/{run_id}/p{k}"), to: to.clone() };
                Sender { conn: SenderConn::Mqtt(conn), state, outlet }
            }
            Senders::Gateway => {
                // Username is the user, password her JWT; her own `in` topic carries the acks.
                let user = format!("snd{k}");
                let spec = MqttSpec {
                    port: env.mqtt_port,
                    client_id: format!("bench-{user}-{run_id}"),
                    credentials: Some((&user, env.token(&user)?)),
                    subscribe: Some(format!("im/{user}/in")),
                };
                let conn = MqttConn::sender(spec, state.clone()).await?;
                let outlet =
                    Outlet::Mqtt { client: conn.client.clone(), topic: format!("im/{user}/out"), to: to.clone() };
                Sender { conn: SenderConn::Mqtt(conn), state, outlet }
            }
            Senders::Xmpp => {
                let account = xmpp_sender(k);
                let jid = format!("{account}@{XMPP_HOST}");
                let role = Role::Sender(state.clone());
                let conn = XmppConn::connect(env.prosody.c2s_port, &jid, &xmpp_password(&account), role).await?;
                let outlet = conn.outlet(&Jid::new(&to).with_context(|| format!("bad JID {to}"))?)?;
                Sender { conn: SenderConn::Xmpp(conn), state, outlet }
            }
        };
        senders_conns.push(sender);
    }
    if ack_kind == AckKind::Receiver {
        recorder.credit_senders(senders_conns.iter().map(|sender| sender.state.clone()).collect());
    }

    // Warm-up: one message per sender, end to end, proves every route before the clock starts.
    for (k, sender) in senders_conns.iter().enumerate() {
        // Its ack frees the place it takes (no place is taken where no ack comes).
        if ack_kind != AckKind::Receiver
            && let Ok(permit) = sender.state.window.try_acquire()
        {
            permit.forget();
        }
        if !tokio::time::timeout(SETUP_WAIT, sender.outlet.send(tag, k, None))
            .await
            .context("warm-up send timed out")?
        {
            bail!("sender {k}: connection gone before the warm-up message");
        }
    }
    if tokio::time::timeout(SETUP_WAIT, recorder.all_warm.notified()).await.is_err() {
        let mut detail = Vec::new();
        for sender in &senders_conns {
            detail.extend(sender.conn.failure());
            detail.extend(load_errors(&sender.state));
        }
        detail.extend(receiver.as_ref().and_then(ReceiverConn::failure));
        detail.extend(recorder.report().errors);
        bail!("warm-up messages did not all arrive within {SETUP_WAIT:?} {detail:?}");
    }

    let cpu_before: Vec<Option<f64>> = path.servers().iter().map(|&id| env.server(id).cpu_seconds()).collect();
    let client_cpu_before = servers::proc_cpu_seconds("/proc/self/stat");
    let start = tokio::time::Instant::now();
    let start_ns = now_ns();
    let timeout = match pace {
        Pace::Closed => Duration::from_secs(cli.case_timeout),
        #[allow(clippy::cast_precision_loss)]
        Pace::Rate { rate, .. } => {
            Duration::from_secs_f64(count as f64 / rate.min(carried).max(1.0))
                + Duration::from_secs(cli.case_timeout.min(20))
        }
    };
    let deadline = start + timeout;
    let stop_sending = match pace {
        Pace::Closed => start + Duration::from_secs(cli.saturation_max_secs),
        Pace::Rate { .. } => deadline,
    };

    let mut tasks = Vec::with_capacity(senders);
    for (k, sender) in senders_conns.iter().enumerate() {
        let plan = SendPlan {
            index: k,
            count: counts[k],
            tag,
            outlet: sender.outlet.clone(),
            pace,
            start,
            stop_sending,
            deadline,
        };
        tasks.push(tokio::spawn(load::send(sender.state.clone(), plan)));
    }
    let mut results = Vec::with_capacity(senders);
    for task in tasks {
        results.push(task.await.unwrap_or_default());
    }
    let sent_by: Vec<usize> = results.iter().map(|sent| sent.count).collect();
    let sent: usize = sent_by.iter().sum();
    let cut = results.iter().any(|sent| sent.cut);
    // Cut by the time budget: what was sent is what should arrive.
    if cut {
        recorder.expect(sent);
    }
    // Whatever has not arrived by the deadline counts as lost.
    let _ = tokio::time::timeout_at(deadline, recorder.all_received.notified()).await;
    let measured_end_ns = now_ns();
    let cpu_after: Vec<Option<f64>> = path.servers().iter().map(|&id| env.server(id).cpu_seconds()).collect();
    let client_cpu_after = servers::proc_cpu_seconds("/proc/self/stat");
    // Senders with acks should also get every ack (gateway) / PUBACK (Mosquitto); a little grace for the last ones.
    if ack_kind != AckKind::Receiver {
        let ack_deadline =
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(5)).max(tokio::time::Instant::now());
        for sender in &senders_conns {
            let state = &sender.state;
            let settled = state.acks.load(Ordering::Relaxed) + state.error_count.load(Ordering::Relaxed);
            if settled < state.expected_acks.load(Ordering::Relaxed) {
                let _ = tokio::time::timeout_at(ack_deadline, state.all_acked.notified()).await;
            }
        }
    }

    let report = recorder.report();
    let mut problems = Vec::new();
    let mut errors = report.errors.len();
    let mut acks_missing = 0;
    for (k, sender) in senders_conns.iter().enumerate() {
        let state = &sender.state;
        errors += state.error_count.load(Ordering::Relaxed);
        if ack_kind != AckKind::Receiver {
            // Every message handed to the connection, plus the warm-up one, should have been acknowledged.
            let expected = sent_by.get(k).copied().unwrap_or(0) + 1;
            let settled = state.acks.load(Ordering::Relaxed) + state.error_count.load(Ordering::Relaxed);
            acks_missing += expected.saturating_sub(settled);
        }
        if let Some(failure) = sender.conn.failure() {
            problems.push(format!("sender {k} connection: {failure}"));
        }
        for error in load_errors(state) {
            problems.push(format!("sender {k} got {error}"));
        }
    }
    if let Some(failure) = receiver.as_ref().and_then(ReceiverConn::failure) {
        problems.push(format!("receiver connection: {failure}"));
    }
    for code in &report.errors {
        problems.push(format!("receiver got error {code}"));
    }
    // Lost = handed to the sending connection but never received (unsent ones are reported apart).
    let lost = sent.saturating_sub(report.distinct);
    if results.iter().any(|sent| !sent.complete && !sent.cut) {
        problems.push(format!("only {sent} of {count} messages could be sent before the {timeout:?} deadline"));
    }
    if lost > 0 {
        problems.push(format!("{lost} of {sent} messages sent were not received before the {timeout:?} deadline"));
    }
    if report.duplicates > 0 {
        problems.push(format!("{} duplicate deliveries", report.duplicates));
    }
    if acks_missing > 0 {
        problems.push(format!(
            "{acks_missing} acks missing at the senders ({})",
            if ack_kind == AckKind::PubAck { "PUBACK" } else { "ack frames" }
        ));
    }

    let span_ns = report.last_ns.saturating_sub(start_ns).max(1);
    #[allow(clippy::cast_precision_loss)]
    let rate = report.distinct as f64 / (span_ns as f64 / 1e9);
    #[allow(clippy::cast_precision_loss)]
    let wall = measured_end_ns.saturating_sub(start_ns) as f64 / 1e9;
    let per_server: Vec<Option<f64>> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(before, after)| before.zip(*after).map(|(before, after)| after - before))
        .collect();
    // The servers' CPU together; unknown if any is unknown.
    let cpu = per_server.iter().copied().sum::<Option<f64>>();
    #[allow(clippy::cast_precision_loss)]
    let per_msg = |cpu: Option<f64>| cpu.filter(|_| report.distinct > 0).map(|cpu| cpu * 1e6 / report.distinct as f64);
    let cores = |cpu: Option<f64>| cpu.map(|cpu| cpu / wall.max(1e-9));
    let split = if per_server.len() > 1 {
        path.servers().iter().zip(&per_server).map(|(id, &cpu)| (id.name(), cores(cpu), per_msg(cpu))).collect()
    } else {
        Vec::new()
    };
    let row = Row {
        case: path.label(),
        load,
        round: 0,
        messages: count,
        sent,
        received: report.distinct,
        lost,
        duplicates: report.duplicates,
        errors,
        rate,
        p50: report.percentile_ms(50.0),
        p99: report.percentile_ms(99.0),
        p999: report.percentile_ms(99.9),
        server_cores: cores(cpu),
        server_us_per_msg: per_msg(cpu),
        split,
        client_cores: client_cpu_before.zip(client_cpu_after).map(|(before, after)| (after - before) / wall.max(1e-9)),
        problems,
    };

    for Sender { conn, state, outlet } in senders_conns {
        // The outlet holds the XMPP connection's queue open: drop it first.
        drop((outlet, state));
        conn.close().await;
    }
    if let Some(conn) = receiver.take() {
        conn.close().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(row)
}

fn load_errors(state: &SenderState) -> Vec<String> {
    state.errors.lock().map(|errors| errors.clone()).unwrap_or_default()
}

fn fmt_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
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

fn median_of(rows: &[&Row], field: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
    median(&rows.iter().filter_map(|row| field(row)).collect::<Vec<_>>())
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn print_table(cli: &Cli, rows: &[Row]) {
    println!(
        "{} senders → 1 receiver, QoS 1 for every MQTT client, window {} outstanding messages per sender at \
         saturation; latency = send → receipt in ms; {} rounds, interleaved; medians, with min..max of msgs/s.\n",
        cli.senders, cli.window, cli.rounds
    );
    println!(
        "| case | load | msgs/run | runs | lost | msgs/s (median) | min..max | p50 ms | p99 ms | p99.9 ms | server cores | server CPU µs/msg | status |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // One line per (path, load), paths in run order, loads in run order within a path.
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for row in rows {
        let key = (row.case, row.load.as_str());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.sort_by_key(|&(case, _)| rows.iter().position(|row| row.case == case).unwrap_or(0));
    for &(case, load) in &keys {
        let group: Vec<&Row> = rows.iter().filter(|row| row.case == case && row.load == load).collect();
        let Some(first) = group.first() else { continue };
        let rates: Vec<f64> = group.iter().filter(|row| row.received > 0).map(|row| row.rate).collect();
        let min = rates.iter().copied().reduce(f64::min);
        let max = rates.iter().copied().reduce(f64::max);
        let lost: usize = group.iter().map(|row| row.lost).sum();
        let ok = group.iter().all(|row| row.ok());
        println!(
            "| {case} | {} | {} | {} | {lost} | {} | {}..{} | {} | {} | {} | {} | {} | {} |",
            first.load,
            // Planned, or what was sent when a saturation case ran out of its time budget.
            fmt_opt(median_of(&group, |row| Some(if row.sent > 0 { row.sent } else { row.messages } as f64)), 0),
            group.len(),
            fmt_opt(median(&rates), 0),
            fmt_opt(min, 0),
            fmt_opt(max, 0),
            fmt_opt(median_of(&group, |row| row.p50), 3),
            fmt_opt(median_of(&group, |row| row.p99), 3),
            fmt_opt(median_of(&group, |row| row.p999), 3),
            fmt_opt(median_of(&group, |row| row.server_cores), 2),
            fmt_opt(median_of(&group, |row| row.server_us_per_msg), 1),
            if ok { "ok" } else { "**FAIL**" }
        );
    }
    // Where a case crosses two servers, "server" above is both together; here each apart.
    let mut names: Vec<&str> = Vec::new();
    for row in rows {
        for &(name, _, _) in &row.split {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if !names.is_empty() {
        println!("\nCPU of each server, for the cases that go through two (medians):\n");
        let header: Vec<String> = names.iter().map(|name| format!("{name} cores | {name} CPU µs/msg")).collect();
        println!("| case | load | {} |", header.join(" | "));
        println!("|---|---|{}", "---|---|".repeat(names.len()));
        for &(case, load) in &keys {
            let group: Vec<&Row> =
                rows.iter().filter(|row| row.case == case && row.load == load && !row.split.is_empty()).collect();
            if group.is_empty() {
                continue;
            }
            let cells: Vec<String> = names
                .iter()
                .map(|&name| {
                    let pick = |row: &Row, cores: bool| {
                        row.split
                            .iter()
                            .find(|entry| entry.0 == name)
                            .and_then(|entry| if cores { entry.1 } else { entry.2 })
                    };
                    format!(
                        "{} | {}",
                        fmt_opt(median_of(&group, |row| pick(row, true)), 2),
                        fmt_opt(median_of(&group, |row| pick(row, false)), 1)
                    )
                })
                .collect();
            println!("| {case} | {load} | {} |", cells.join(" | "));
        }
    }
    println!("\nEvery run:\n");
    println!(
        "| round | case | load | sent | received | lost | dup | errors | msgs/s | p50 ms | p99 ms | p99.9 ms | server cores | server CPU µs/msg | bench cores | status |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            row.round,
            row.case,
            row.load,
            row.sent,
            row.received,
            row.lost,
            row.duplicates,
            row.errors,
            row.rate,
            fmt_opt(row.p50, 3),
            fmt_opt(row.p99, 3),
            fmt_opt(row.p999, 3),
            fmt_opt(row.server_cores, 2),
            fmt_opt(row.server_us_per_msg, 1),
            fmt_opt(row.client_cores, 2),
            if row.ok() { "ok" } else { "**FAIL**" }
        );
    }
}
