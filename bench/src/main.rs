//! `switchboard-bench`: throughput and latency of Switchboard's MQTT, WebSocket and XMPP paths,
//! each beside the path of the peer server it replaces or joins, in one bounded run.
//!
//! Peer paths (N senders → 1 receiver):
//! - `mosquitto pub->sub`: MQTT publishers → 1 subscriber, straight through Mosquitto.
//! - `relay WS->WS`: WebSocket clients → 1 WebSocket listener through a bare tokio-tungstenite
//!   relay (`relay.rs`, this binary run as a process of its own).
//! - `prosody c2s->c2s`, `ejabberd c2s->c2s`: XMPP accounts → 1 XMPP account.
//! - `prosody c2s->component`, `ejabberd c2s->component`: XMPP accounts → `bench@component.localhost`
//!   on a bare XEP-0114 component (`component.rs`).
//! - `prosody component->c2s`, `ejabberd component->c2s`: the bare component (one connection,
//!   one address per sender) → 1 XMPP account.
//!
//! Gateway paths, and the peer path each is compared with:
//! - `gateway MQTT->MQTT (embedded)`: sender users → 1 receiver user on the embedded endpoint
//!   (vs Mosquitto).
//! - `gateway MQTT->MQTT (mosquitto broker)`: the same users on a Mosquitto that the gateway uses
//!   as its broker (`mqtt.url`, docs/mosquitto.md's password file and ACL) (vs Mosquitto alone).
//! - `gateway WS->WS`: WebSocket senders → 1 WebSocket user (vs the relay).
//! - `gateway MQTT->WS`: MQTT senders → 1 WebSocket user (vs Mosquitto, whose QoS 1 publishes its
//!   messages come in as: a quarter of the relay's rate was as much as this path carries at
//!   saturation, and more than Mosquitto does).
//! - `gateway MQTT->XMPP (prosody|ejabberd)`: MQTT users → 1 XMPP account, through a gateway joined
//!   to that server as its component (vs `<server> component->c2s`).
//! - `gateway XMPP->MQTT (prosody|ejabberd)`: XMPP accounts → 1 MQTT user (vs `<server> c2s->component`).
//!
//! Each case runs at saturation, then paced at half its own median saturation rate; each gateway
//! path and its peer path are also paced at a quarter of the peer's median saturation rate
//! ("quarter-peer"), `--rounds` times, interleaved. The summary gives medians and ends with one
//! table of gateway path against peer path: throughput ratio and p99 difference at quarter-peer
//! load, against the targets. Only the servers the selected cases (`--only`) need are started,
//! each once: Mosquitto, the broker Mosquitto, the relay, Prosody, ejabberd, and up to three
//! gateways (joined to Prosody, which also serves the MQTT and WebSocket cases; joined to
//! ejabberd; client of the broker).
//!
//! And the startup, idle-session and push cases (`idle.rs`, `push.rs`), against gateways of their
//! own: notifications per second to N offline users (`push FCM throughput`, `push APNs
//! throughput`), their latency below saturation (`push FCM latency`), and whether the outbox loses
//! anything while FCM answers 503 for a while (`push FCM outage`).
//!
//! Saturation is closed loop: each sender keeps at most `--window` messages outstanding, counted
//! by PUBACK on Mosquitto, by the gateway's `ack` frame for gateway users, and by the receiver's
//! progress where there is no per-message ack (XMPP c2s, the bare component, the relay). Paced is
//! open loop. Every step has a deadline, so the run always ends, and every server it started is
//! stopped. A Markdown table goes to stdout, progress to stderr.

mod compare;
mod component;
mod ejabberd;
mod idle;
mod load;
mod push;
mod relay;
mod servers;
mod setup;
mod ws;
mod xmpp;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use xmpp_parsers::jid::Jid;

use crate::load::{
    AckKind, MqttConn, MqttSpec, Outlet, Pace, Recorder, SETUP_WAIT, SendPlan, SenderState, now_ns,
};
use crate::push::{PUSH_CASES, PushCase, PushOptions, PushRow};
use crate::component::ComponentConn;
use crate::servers::{COMPONENT_DOMAIN, Server, XMPP_HOST, xmpp_password};
use crate::setup::Servers;
use crate::ws::WsConn;
use crate::xmpp::{Role, XmppConn};

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    about = "Benchmark Switchboard's MQTT, WebSocket and XMPP paths against Mosquitto, Prosody, ejabberd and a bare WebSocket relay"
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
    /// ejabberd's control script (run as the `ejabberd` user with `setpriv`).
    #[arg(long, default_value = "/usr/sbin/ejabberdctl")]
    ejabberdctl: PathBuf,
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The bare WebSocket relay, run by the benchmark itself as a server process of its own.
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        port: u16,
    },
}

/// An XMPP server under test.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum XmppServer {
    Prosody,
    Ejabberd,
}

impl XmppServer {
    /// The gateway joined to it.
    fn gateway(self) -> GatewayId {
        match self {
            Self::Prosody => GatewayId::Prosody,
            Self::Ejabberd => GatewayId::Ejabberd,
        }
    }
}

/// A gateway process. Each is started only when a selected case needs it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum GatewayId {
    /// Embedded MQTT endpoint, joined to Prosody; also the one of the MQTT and WebSocket cases.
    Prosody,
    /// Embedded MQTT endpoint, joined to ejabberd.
    Ejabberd,
    /// A client of the broker Mosquitto (`mqtt.url`), no XMPP link.
    Broker,
}

/// One path through the servers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Case {
    Mosquitto,
    GatewayMqtt,
    BrokerMqtt,
    Relay,
    GatewayWs,
    GatewayMqttToWs,
    C2s(XmppServer),
    C2sToComponent(XmppServer),
    ComponentToC2s(XmppServer),
    GatewayMqttToXmpp(XmppServer),
    GatewayXmppToMqtt(XmppServer),
}

/// In run order: each peer path just before the gateway paths compared with it.
const CASES: [Case; 16] = [
    Case::Mosquitto,
    Case::GatewayMqtt,
    Case::BrokerMqtt,
    Case::GatewayMqttToWs,
    Case::Relay,
    Case::GatewayWs,
    Case::C2s(XmppServer::Prosody),
    Case::C2sToComponent(XmppServer::Prosody),
    Case::ComponentToC2s(XmppServer::Prosody),
    Case::GatewayMqttToXmpp(XmppServer::Prosody),
    Case::GatewayXmppToMqtt(XmppServer::Prosody),
    Case::C2s(XmppServer::Ejabberd),
    Case::C2sToComponent(XmppServer::Ejabberd),
    Case::ComponentToC2s(XmppServer::Ejabberd),
    Case::GatewayMqttToXmpp(XmppServer::Ejabberd),
    Case::GatewayXmppToMqtt(XmppServer::Ejabberd),
];

/// Which server process a case's CPU is read from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum ServerId {
    Mosquitto,
    /// Mosquitto as the gateway's external broker (its own process, password file and ACL).
    Broker,
    Relay,
    Xmpp(XmppServer),
    Gateway(GatewayId),
}

impl ServerId {
    fn name(self) -> &'static str {
        match self {
            Self::Mosquitto => "mosquitto",
            Self::Broker => "broker",
            Self::Relay => "relay",
            Self::Xmpp(XmppServer::Prosody) => "prosody",
            Self::Xmpp(XmppServer::Ejabberd) => "ejabberd",
            Self::Gateway(_) => "gateway",
        }
    }

    /// The servers it cannot run without.
    fn needs(self) -> Option<Self> {
        match self {
            Self::Gateway(GatewayId::Prosody) => Some(Self::Xmpp(XmppServer::Prosody)),
            Self::Gateway(GatewayId::Ejabberd) => Some(Self::Xmpp(XmppServer::Ejabberd)),
            Self::Gateway(GatewayId::Broker) => Some(Self::Broker),
            _ => None,
        }
    }
}

/// How a case's senders connect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Senders {
    /// Plain MQTT clients of Mosquitto.
    Mosquitto,
    /// Gateway users over MQTT: on the embedded endpoint, or on the broker for `GatewayId::Broker`.
    GatewayMqtt(GatewayId),
    /// Gateway users over WebSocket.
    GatewayWs,
    /// WebSocket clients of the bare relay.
    Relay,
    /// XMPP accounts.
    Xmpp(XmppServer),
    /// The bare component (one connection, one local part per sender).
    Component(XmppServer),
}

/// The receiving side of a case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Receiving {
    /// A subscriber on Mosquitto.
    Mosquitto,
    /// Gateway user `rcv` over MQTT (`im/rcv/in`).
    GatewayMqtt(GatewayId),
    /// Gateway user `wsrcv` over WebSocket.
    GatewayWs,
    /// The bare relay's listener.
    Relay,
    /// XMPP account `xrcv@localhost`.
    Xmpp(XmppServer),
    /// `bench@component.localhost` on the bare component.
    Component(XmppServer),
}

/// What a gateway path must reach, relative to its peer path's median saturation rate.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    /// Reported, no target.
    Report,
}

impl Case {
    fn label(self) -> &'static str {
        use XmppServer::{Ejabberd, Prosody};
        match self {
            Self::Mosquitto => "mosquitto pub->sub",
            Self::GatewayMqtt => "gateway MQTT->MQTT (embedded)",
            Self::BrokerMqtt => "gateway MQTT->MQTT (mosquitto broker)",
            Self::Relay => "relay WS->WS",
            Self::GatewayWs => "gateway WS->WS",
            Self::GatewayMqttToWs => "gateway MQTT->WS",
            Self::C2s(Prosody) => "prosody c2s->c2s",
            Self::C2s(Ejabberd) => "ejabberd c2s->c2s",
            Self::C2sToComponent(Prosody) => "prosody c2s->component",
            Self::C2sToComponent(Ejabberd) => "ejabberd c2s->component",
            Self::ComponentToC2s(Prosody) => "prosody component->c2s",
            Self::ComponentToC2s(Ejabberd) => "ejabberd component->c2s",
            Self::GatewayMqttToXmpp(Prosody) => "gateway MQTT->XMPP (prosody)",
            Self::GatewayMqttToXmpp(Ejabberd) => "gateway MQTT->XMPP (ejabberd)",
            Self::GatewayXmppToMqtt(Prosody) => "gateway XMPP->MQTT (prosody)",
            Self::GatewayXmppToMqtt(Ejabberd) => "gateway XMPP->MQTT (ejabberd)",
        }
    }

    fn senders(self) -> Senders {
        match self {
            Self::Mosquitto => Senders::Mosquitto,
            Self::GatewayMqtt | Self::GatewayMqttToWs => Senders::GatewayMqtt(GatewayId::Prosody),
            Self::BrokerMqtt => Senders::GatewayMqtt(GatewayId::Broker),
            Self::GatewayMqttToXmpp(server) => Senders::GatewayMqtt(server.gateway()),
            Self::Relay => Senders::Relay,
            Self::GatewayWs => Senders::GatewayWs,
            Self::C2s(server) | Self::C2sToComponent(server) | Self::GatewayXmppToMqtt(server) => Senders::Xmpp(server),
            Self::ComponentToC2s(server) => Senders::Component(server),
        }
    }

    fn receiving(self) -> Receiving {
        match self {
            Self::Mosquitto => Receiving::Mosquitto,
            Self::GatewayMqtt => Receiving::GatewayMqtt(GatewayId::Prosody),
            Self::BrokerMqtt => Receiving::GatewayMqtt(GatewayId::Broker),
            Self::GatewayXmppToMqtt(server) => Receiving::GatewayMqtt(server.gateway()),
            Self::Relay => Receiving::Relay,
            Self::GatewayWs | Self::GatewayMqttToWs => Receiving::GatewayWs,
            Self::C2s(server) | Self::ComponentToC2s(server) | Self::GatewayMqttToXmpp(server) => Receiving::Xmpp(server),
            Self::C2sToComponent(server) => Receiving::Component(server),
        }
    }

    /// The server processes the messages cross, whose CPU is the case's.
    fn servers(self) -> Vec<ServerId> {
        match self {
            Self::Mosquitto => vec![ServerId::Mosquitto],
            Self::Relay => vec![ServerId::Relay],
            Self::GatewayMqtt | Self::GatewayWs | Self::GatewayMqttToWs => vec![ServerId::Gateway(GatewayId::Prosody)],
            Self::BrokerMqtt => vec![ServerId::Gateway(GatewayId::Broker), ServerId::Broker],
            Self::C2s(server) | Self::C2sToComponent(server) | Self::ComponentToC2s(server) => vec![ServerId::Xmpp(server)],
            Self::GatewayMqttToXmpp(server) | Self::GatewayXmppToMqtt(server) => {
                vec![ServerId::Gateway(server.gateway()), ServerId::Xmpp(server)]
            }
        }
    }

    /// For a gateway path: the peer path it is compared with, and its target.
    fn peer(self) -> Option<(Self, Target)> {
        match self {
            Self::GatewayMqtt => Some((Self::Mosquitto, Target::AtLeast(1.0))),
            Self::BrokerMqtt => Some((Self::Mosquitto, Target::Report)),
            Self::GatewayWs => Some((Self::Relay, Target::AtLeast(0.5))),
            // Its senders publish at QoS 1 as Mosquitto's do. A quarter of the relay's rate was as
            // much as this path carries at saturation (and more than Mosquitto does), so its
            // quarter-peer row measured a queue.
            Self::GatewayMqttToWs => Some((Self::Mosquitto, Target::Report)),
            Self::GatewayMqttToXmpp(server) => Some((Self::ComponentToC2s(server), Target::AtLeast(0.9))),
            Self::GatewayXmppToMqtt(server) => Some((Self::C2sToComponent(server), Target::AtLeast(0.9))),
            _ => None,
        }
    }
}

/// The XMPP receiver account and the XMPP senders' accounts, on Prosody and on ejabberd.
const XMPP_RECEIVER: &str = "xrcv";

fn xmpp_sender(k: usize) -> String {
    format!("xsnd{k}")
}

/// Tells one case's messages from another's.
static CASE_TAG: AtomicU64 = AtomicU64::new(0);

/// Which load a row was measured at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    Saturation,
    /// Paced at half the path's own median saturation rate.
    Half,
    /// Paced at a quarter of the peer path's median saturation rate (a gateway path and its peer
    /// at the same rate).
    PeerQuarter,
}

struct Row {
    case: &'static str,
    load: String,
    kind: Load,
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
    fn failed(case: &'static str, load: String, kind: Load, round: usize, problem: String) -> Self {
        Self {
            case,
            load,
            kind,
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
    servers: &'a Servers,
    tokens: HashMap<String, String>,
}

impl Env<'_> {
    fn token(&self, user: &str) -> anyhow::Result<&str> {
        self.tokens.get(user).map(String::as_str).with_context(|| format!("no token for {user}"))
    }

    /// How gateway user `user` logs in over MQTT to gateway `id`: (port, password, presence
    /// topic). On the broker, with her broker password and a retained presence; on the embedded
    /// endpoint, with her JWT.
    fn mqtt_login(&self, id: GatewayId, user: &str) -> anyhow::Result<(u16, String, Option<String>)> {
        let process = self.servers.gateway(id)?;
        Ok(match id {
            GatewayId::Broker => (process.mqtt_port, xmpp_password(user), Some(format!("im/{user}/presence"))),
            GatewayId::Prosody | GatewayId::Ejabberd => (process.mqtt_port, self.token(user)?.to_owned(), None),
        })
    }

    fn ws_url(&self, user: &str) -> anyhow::Result<String> {
        let process = self.servers.gateway(GatewayId::Prosody)?;
        Ok(format!("ws://127.0.0.1:{}/ws?token={}", process.http_port, self.token(user)?))
    }

    fn relay_url(&self, path: &str) -> anyhow::Result<String> {
        let (_, port) = self.servers.relay.as_ref().context("relay not started")?;
        Ok(format!("ws://127.0.0.1:{port}{path}"))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Relay { port }) = cli.command {
        return relay::serve(port);
    }
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

/// The message paths: the servers the selected cases need, every case of `paths` `--rounds` times
/// at saturation, then paced (at half its own rate, and a gateway path and its peer at a quarter of
/// the peer's rate), then the tables. Returns (failed runs, runs).
async fn run_paths(cli: &Cli, gateway_binary: &Path, dir: &Path, paths: &[Case]) -> anyhow::Result<(usize, usize)> {
    let wanted: HashSet<ServerId> = paths.iter().flat_map(|path| path.servers()).collect();
    let accounts: Vec<String> =
        std::iter::once(XMPP_RECEIVER.to_owned()).chain((0..cli.senders).map(xmpp_sender)).collect();
    let users: Vec<String> =
        ["rcv", "wsrcv"].into_iter().map(str::to_owned).chain((0..cli.senders).map(|k| format!("snd{k}"))).collect();
    let servers = Servers::start(cli, gateway_binary, dir, &wanted, &accounts, &users)?;
    let mut tokens = HashMap::new();
    // Any gateway signs the same tokens (one JWT secret); the broker's users log in with passwords.
    if let Some(process) = servers.gateways.get(&GatewayId::Prosody).or_else(|| servers.gateways.get(&GatewayId::Ejabberd)) {
        for user in &users {
            tokens.insert(user.clone(), process.gateway.token(user)?);
        }
    }
    let env = Env { cli, servers: &servers, tokens };

    // Rounds are interleaved (every path once, then again), so a noisy minute hits all paths alike.
    let mut rows = Vec::new();
    for round in 1..=cli.rounds {
        for &path in paths {
            let row = run_case(&env, path, Pace::Closed, Load::Saturation, 0.0, cli.messages, round).await;
            eprintln!("{}", summary(&row));
            rows.push(row);
        }
    }
    let saturation: HashMap<Case, Option<f64>> = paths
        .iter()
        .map(|&path| {
            let rates: Vec<f64> =
                rows.iter().filter(|row| row.case == path.label() && row.received > 0).map(|row| row.rate).collect();
            (path, median(&rates))
        })
        .collect();
    let paced = paced_plan(paths, &saturation);
    for round in 1..=cli.rounds {
        for &(path, kind, rate) in &paced {
            let row = match rate {
                Some(rate) if rate >= 1.0 => {
                    // A path that cannot carry the paced rate drains at its saturation rate: plan
                    // (count, deadline) with the lower of the two.
                    let carried = saturation.get(&path).copied().flatten().map_or(rate, |max| max.min(rate)).max(1.0);
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
                    let count = cli.paced_messages.min((carried * cli.paced_max_secs as f64) as usize).max(cli.senders);
                    let pace = Pace::Rate { rate, senders: cli.senders };
                    run_case(&env, path, pace, kind, carried, count, round).await
                }
                _ => {
                    let load = if kind == Load::PeerQuarter { "quarter-peer" } else { "paced" };
                    Row::failed(path.label(), load.into(), kind, round, "not run: no saturation rate was measured".into())
                }
            };
            eprintln!("{}", summary(&row));
            rows.push(row);
        }
    }

    let gone = servers.gone();
    let failures: Vec<&Row> = rows.iter().filter(|row| !row.ok()).collect();
    let tails = if failures.is_empty() { Vec::new() } else { servers.log_tails() };
    let killed = servers.stop();
    print_table(cli, &rows);
    compare::print(paths, &rows);
    for (name, tail) in &gone {
        println!("\nThe {name} process was gone at the end of the run; log:\n{tail}");
    }
    if !killed.is_empty() {
        eprintln!("note: needed SIGKILL: {}", killed.join(", "));
    }
    if !failures.is_empty() {
        println!("\nProblems:");
        for row in &failures {
            for problem in &row.problems {
                println!("- {} ({}): {problem}", row.case, row.load);
            }
        }
        for (name, tail) in &tails {
            eprintln!("{name} log tail:\n{tail}");
        }
    }
    Ok((failures.len(), rows.len()))
}

/// The paced runs of a round, in order: every path at half its median saturation rate; then each
/// gateway path and its peer path (once, if it serves several) at a quarter of the peer's.
fn paced_plan(paths: &[Case], saturation: &HashMap<Case, Option<f64>>) -> Vec<(Case, Load, Option<f64>)> {
    let rate_of = |path: &Case| saturation.get(path).copied().flatten();
    let mut plan: Vec<(Case, Load, Option<f64>)> =
        paths.iter().map(|&path| (path, Load::Half, rate_of(&path).map(|rate| (rate / 2.0).round()))).collect();
    for &path in paths {
        let Some((peer, _)) = path.peer() else { continue };
        if !paths.contains(&peer) {
            continue;
        }
        let quarter = rate_of(&peer).map(|rate| (rate / 4.0).round());
        for case in [peer, path] {
            if !plan.iter().any(|&(other, kind, _)| other == case && kind == Load::PeerQuarter) {
                plan.push((case, Load::PeerQuarter, quarter));
            }
        }
    }
    plan
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
async fn run_case(env: &Env<'_>, path: Case, pace: Pace, kind: Load, carried: f64, count: usize, round: usize) -> Row {
    let load = match (pace, kind) {
        (Pace::Closed, _) => "saturation".to_owned(),
        (Pace::Rate { rate, .. }, Load::PeerQuarter) => format!("quarter-peer {rate:.0}/s"),
        (Pace::Rate { rate, .. }, _) => format!("paced {rate:.0}/s"),
    };
    eprintln!("round {round}: {} {load}: {count} messages", path.label());
    match case(env, path, pace, carried, count, load.clone()).await {
        Ok(row) => Row { round, kind, ..row },
        Err(error) => Row { messages: count, ..Row::failed(path.label(), load, kind, round, format!("{error:#}")) },
    }
}

/// A connection of the receiving side.
enum ReceiverConn {
    Mqtt(MqttConn),
    Ws(WsConn),
    Xmpp(XmppConn),
    Component(ComponentConn),
}

impl ReceiverConn {
    fn failure(&self) -> Option<String> {
        match self {
            Self::Mqtt(conn) => conn.failure(),
            Self::Ws(conn) => conn.failure(),
            Self::Xmpp(conn) => conn.failure(),
            Self::Component(conn) => conn.failure(),
        }
    }

    async fn close(self) {
        match self {
            Self::Mqtt(conn) => conn.close().await,
            Self::Ws(conn) => conn.close().await,
            Self::Xmpp(conn) => conn.close().await,
            Self::Component(conn) => conn.close().await,
        }
    }
}

/// A sender's connection.
enum SenderConn {
    Mqtt(MqttConn),
    Ws(WsConn),
    Xmpp(XmppConn),
    /// The bare component's one connection, shared by every sender (closed apart).
    Shared,
}

impl SenderConn {
    fn failure(&self) -> Option<String> {
        match self {
            Self::Mqtt(conn) => conn.failure(),
            Self::Ws(conn) => conn.failure(),
            Self::Xmpp(conn) => conn.failure(),
            Self::Shared => None,
        }
    }

    async fn close(self) {
        match self {
            Self::Mqtt(conn) => conn.close().await,
            Self::Ws(conn) => conn.close().await,
            Self::Xmpp(conn) => conn.close().await,
            Self::Shared => {}
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
    let servers = env.servers;
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
            let (_, port) = servers.mosquitto.as_ref().context("mosquitto not started")?;
            let spec = MqttSpec {
                port: *port,
                client_id: format!("bench-sub-{run_id}"),
                credentials: None,
                subscribe: Some(format!("bench/{run_id}/#")),
                presence: None,
            };
            ("sub".to_owned(), ReceiverConn::Mqtt(MqttConn::receiver(spec, recorder.clone()).await?))
        }
        Receiving::GatewayMqtt(id) => {
            let (port, password, presence) = env.mqtt_login(id, "rcv")?;
            let spec = MqttSpec {
                port,
                client_id: format!("bench-rcv-{run_id}"),
                credentials: Some(("rcv", &password)),
                subscribe: Some("im/rcv/in".into()),
                presence,
            };
            let conn = MqttConn::receiver(spec, recorder.clone()).await?;
            let to = if matches!(path.senders(), Senders::Xmpp(_)) {
                format!("rcv@{COMPONENT_DOMAIN}")
            } else {
                "rcv".to_owned()
            };
            (to, ReceiverConn::Mqtt(conn))
        }
        Receiving::GatewayWs => {
            let conn = WsConn::receiver(&env.ws_url("wsrcv")?, recorder.clone()).await?;
            ("wsrcv".to_owned(), ReceiverConn::Ws(conn))
        }
        Receiving::Relay => {
            let conn = WsConn::receiver(&env.relay_url("/listen")?, recorder.clone()).await?;
            ("listener".to_owned(), ReceiverConn::Ws(conn))
        }
        Receiving::Xmpp(server) => {
            let jid = format!("{XMPP_RECEIVER}@{XMPP_HOST}");
            let role = Role::Receiver(recorder.clone());
            let conn = XmppConn::connect(servers.c2s_port(server)?, &jid, &xmpp_password(XMPP_RECEIVER), role).await?;
            (jid, ReceiverConn::Xmpp(conn))
        }
        Receiving::Component(server) => {
            let role = component::Role::Receiver(recorder.clone());
            let conn = ComponentConn::connect(servers.bare_component_port(server)?, role).await?;
            (component::receiver_jid(), ReceiverConn::Component(conn))
        }
    };
    let mut receiver = Some(receiver);

    let ack_kind = match path.senders() {
        Senders::Mosquitto => AckKind::PubAck,
        Senders::GatewayMqtt(_) | Senders::GatewayWs => AckKind::Frame,
        Senders::Relay | Senders::Xmpp(_) | Senders::Component(_) => AckKind::Receiver,
    };
    let states: Vec<Arc<SenderState>> = counts
        .iter()
        .map(|&n| {
            let state = SenderState::new(ack_kind, cli.window);
            state.expected_acks.store(n + 1, Ordering::Relaxed);
            state
        })
        .collect();
    let shared = match path.senders() {
        Senders::Component(server) => {
            let role = component::Role::Senders(states.clone());
            Some(ComponentConn::connect(servers.bare_component_port(server)?, role).await?)
        }
        _ => None,
    };
    let mut senders_conns: Vec<Sender> = Vec::with_capacity(senders);
    for (k, state) in states.into_iter().enumerate() {
        let sender = match path.senders() {
            Senders::Mosquitto => {
                let (_, port) = servers.mosquitto.as_ref().context("mosquitto not started")?;
                let spec = MqttSpec {
                    port: *port,
                    client_id: format!("bench-pub{k}-{run_id}"),
                    credentials: None,
                    subscribe: None,
                    presence: None,
                };
                let conn = MqttConn::sender(spec, state.clone()).await?;
                let outlet =
                    Outlet::Mqtt { client: conn.client.clone(), topic: format!("bench/{run_id}/p{k}"), to: to.clone() };
                Sender { conn: SenderConn::Mqtt(conn), state, outlet }
            }
            Senders::GatewayMqtt(id) => {
                // Her own `in` topic carries the acks.
                let user = format!("snd{k}");
                let (port, password, presence) = env.mqtt_login(id, &user)?;
                let spec = MqttSpec {
                    port,
                    client_id: format!("bench-{user}-{run_id}"),
                    credentials: Some((&user, &password)),
                    subscribe: Some(format!("im/{user}/in")),
                    presence,
                };
                let conn = MqttConn::sender(spec, state.clone()).await?;
                let outlet =
                    Outlet::Mqtt { client: conn.client.clone(), topic: format!("im/{user}/out"), to: to.clone() };
                Sender { conn: SenderConn::Mqtt(conn), state, outlet }
            }
            Senders::GatewayWs | Senders::Relay => {
                let url = if path.senders() == Senders::Relay {
                    env.relay_url("/send")?
                } else {
                    env.ws_url(&format!("snd{k}"))?
                };
                let conn = WsConn::sender(&url, state.clone()).await?;
                let outlet = Outlet::Ws { queue: conn.queue()?, to: to.clone() };
                Sender { conn: SenderConn::Ws(conn), state, outlet }
            }
            Senders::Xmpp(server) => {
                let account = xmpp_sender(k);
                let jid = format!("{account}@{XMPP_HOST}");
                let role = Role::Sender(state.clone());
                let conn = XmppConn::connect(servers.c2s_port(server)?, &jid, &xmpp_password(&account), role).await?;
                let outlet = conn.outlet(&Jid::new(&to).with_context(|| format!("bad JID {to}"))?)?;
                Sender { conn: SenderConn::Xmpp(conn), state, outlet }
            }
            Senders::Component(_) => {
                let queue = shared.as_ref().context("no component connection")?.queue()?;
                Sender { conn: SenderConn::Shared, state, outlet: Outlet::Component { queue, to: to.clone() } }
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
        detail.extend(shared.as_ref().and_then(ComponentConn::failure));
        detail.extend(recorder.report().errors);
        bail!("warm-up messages did not all arrive within {SETUP_WAIT:?} {detail:?}");
    }

    let cpu_before: Vec<Option<f64>> = path.servers().iter().map(|&id| servers.server(id).and_then(Server::cpu_seconds)).collect();
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
    let cpu_after: Vec<Option<f64>> = path.servers().iter().map(|&id| servers.server(id).and_then(Server::cpu_seconds)).collect();
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
    if let Some(failure) = shared.as_ref().and_then(ComponentConn::failure) {
        problems.push(format!("component connection: {failure}"));
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
        // Set by `run_case`.
        kind: Load::Saturation,
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
    if let Some(conn) = shared {
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
