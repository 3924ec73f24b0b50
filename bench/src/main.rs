//! `switchboard-bench`: throughput and latency of Switchboard's MQTT and WebSocket paths, with
//! Mosquitto as the baseline, in one bounded run.
//!
//! Cases (each at saturation, then paced at half the median saturation rate of the same path, then
//! paced at one fixed rate for all paths; `--rounds` times, interleaved; medians in the summary):
//! 1. `mosquitto pub->sub`: N publishers → 1 subscriber, straight through Mosquitto.
//! 2. `gateway MQTT->MQTT`: N sender users → 1 receiver user through the embedded MQTT endpoint.
//! 3. `gateway MQTT->WS`: N MQTT sender users → 1 WebSocket receiver.
//!
//! Saturation is closed loop (each sender keeps at most `--window` messages unacknowledged: by
//! PUBACK on Mosquitto, by the gateway's `ack` frame on the gateway); paced is open loop. Every
//! step has a deadline, so the run always ends. A Markdown table goes to stdout, progress to stderr.

mod load;
mod servers;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use rumqttc::QoS;

use crate::load::{AckKind, MqttConn, MqttSpec, Pace, Recorder, SETUP_WAIT, SendPlan, SenderState, WsConn, now_ns};
use crate::servers::{Gateway, Ports, Server};

#[derive(Parser)]
#[command(name = "switchboard-bench", about = "Benchmark Switchboard's MQTT and WebSocket paths against Mosquitto")]
struct Cli {
    /// The switchboard binary (default: next to this one, else $CARGO_TARGET_DIR/release or the
    /// workspace's target/release).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Messages per saturation case.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Messages per paced case (fewer when that would last more than `--paced-max-secs`).
    #[arg(long, default_value_t = 20_000)]
    paced_messages: usize,
    /// Longest a paced case may be planned to last, in seconds.
    #[arg(long, default_value_t = 15)]
    paced_max_secs: u64,
    /// Concurrent senders per case.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Closed loop: unacknowledged messages allowed per sender.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Deadline of each saturation case, in seconds (a paced case gets its planned duration plus this).
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
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path3 {
    Mosquitto,
    GatewayMqtt,
    GatewayWs,
}

impl Path3 {
    fn label(self) -> &'static str {
        match self {
            Self::Mosquitto => "mosquitto pub->sub",
            Self::GatewayMqtt => "gateway MQTT->MQTT",
            Self::GatewayWs => "gateway MQTT->WS",
        }
    }
}

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
    tokens: std::collections::HashMap<String, String>,
}

impl Env<'_> {
    fn token(&self, user: &str) -> anyhow::Result<&str> {
        self.tokens.get(user).map(String::as_str).with_context(|| format!("no token for {user}"))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.senders == 0 || cli.messages < cli.senders || cli.window == 0 {
        bail!("--senders and --window must be positive and --messages at least --senders");
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
    runtime.block_on(run(&cli, &gateway_binary))
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
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("release").join("switchboard"));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| format!("no switchboard binary in {candidates:?}; build it or pass --gateway"))
}

async fn run(cli: &Cli, gateway_binary: &Path) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("switchboard-bench-").tempdir()?;
    let mosquitto_dir = dir.path().join("mosquitto");
    let gateway_dir = dir.path().join("gateway");
    std::fs::create_dir_all(&mosquitto_dir)?;
    std::fs::create_dir_all(&gateway_dir)?;

    let mut ports = Ports::default();
    let (mosquitto_port, mqtt_port, http_port) = (ports.free()?, ports.free()?, ports.free()?);
    eprintln!("starting mosquitto on 127.0.0.1:{mosquitto_port}");
    let mut mosquitto = servers::start_mosquitto(&cli.mosquitto, &mosquitto_dir, mosquitto_port)?;
    eprintln!("starting {} (mqtt 127.0.0.1:{mqtt_port}, http 127.0.0.1:{http_port})", gateway_binary.display());
    let mut gateway = servers::start_gateway(gateway_binary, &gateway_dir, http_port, mqtt_port)?;

    let mut tokens = std::collections::HashMap::new();
    for user in ["rcv", "wsrcv"].into_iter().map(str::to_owned).chain((0..cli.senders).map(|k| format!("snd{k}"))) {
        let token = gateway.token(&user)?;
        tokens.insert(user, token);
    }
    let env = Env { cli, mosquitto: &mosquitto, mosquitto_port, gateway: &gateway, mqtt_port, http_port, tokens };

    let paths = [Path3::Mosquitto, Path3::GatewayMqtt, Path3::GatewayWs];
    // Rounds are interleaved (every path once, then again), so a noisy minute hits all paths alike.
    let mut rows = Vec::new();
    for round in 1..=cli.rounds {
        for path in paths {
            let row = run_case(&env, path, Pace::Closed, cli.messages, round).await;
            eprintln!("{}", summary(&row));
            rows.push(row);
        }
    }
    // Paced at half the median saturation rate of the same path.
    let mut paced_rates = Vec::new();
    for path in paths {
        let rates: Vec<f64> =
            rows.iter().filter(|row| row.case == path.label() && row.received > 0).map(|row| row.rate).collect();
        paced_rates.push((path, median(&rates).map(|rate| (rate / 2.0).round())));
    }
    // And, for latencies compared at equal load, every path at the same fixed rate.
    if cli.fixed_rate >= 1.0 {
        paced_rates.extend(paths.iter().map(|&path| (path, Some(cli.fixed_rate))));
    }
    for round in 1..=cli.rounds {
        for &(path, rate) in &paced_rates {
            let row = match rate {
                Some(rate) if rate >= 1.0 => {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
                    let count = cli.paced_messages.min((rate * cli.paced_max_secs as f64) as usize).max(cli.senders);
                    run_case(&env, path, Pace::Rate { rate, senders: cli.senders }, count, round).await
                }
                _ => Row::failed(path.label(), "paced".into(), round, "not run: no saturation rate was measured".into()),
            };
            eprintln!("{}", summary(&row));
            rows.push(row);
        }
    }

    let kept = if cli.keep { Some(dir.keep()) } else { None };
    let gateway_alive = gateway.server.pid().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let gateway_clean = gateway.server.stop();
    let mosquitto_clean = mosquitto.stop();
    print_table(cli, &rows);
    if let Some(kept) = kept {
        eprintln!("kept {}", kept.display());
    }
    if !gateway_alive {
        println!("\nThe gateway process was gone at the end of the run; log:\n{}", gateway.server.log_tail());
    }
    if !gateway_clean || !mosquitto_clean {
        eprintln!("note: a server needed SIGKILL (gateway clean: {gateway_clean}, mosquitto clean: {mosquitto_clean})");
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
        bail!("{} of {} runs failed", failures.len(), rows.len());
    }
    Ok(())
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

async fn run_case(env: &Env<'_>, path: Path3, pace: Pace, count: usize, round: usize) -> Row {
    let load = match pace {
        Pace::Closed => "saturation".to_owned(),
        Pace::Rate { rate, .. } => format!("paced {rate:.0}/s"),
    };
    eprintln!("round {round}: {} {load}: {count} messages", path.label());
    match case(env, path, pace, count, load.clone()).await {
        Ok(row) => Row { round, ..row },
        Err(error) => Row { messages: count, ..Row::failed(path.label(), load, round, format!("{error:#}")) },
    }
}

async fn case(env: &Env<'_>, path: Path3, pace: Pace, count: usize, load: String) -> anyhow::Result<Row> {
    let cli = env.cli;
    let senders = cli.senders;
    let counts: Vec<usize> = (0..senders).map(|k| count / senders + usize::from(k < count % senders)).collect();
    let recorder = Recorder::new(&counts);
    let run_id = now_ns();

    // The receiver first: on the gateway a user must have connected before anyone can message her.
    let (receiver_user, mut mqtt_receiver, mut ws_receiver) = match path {
        Path3::Mosquitto => {
            let spec = MqttSpec {
                port: env.mosquitto_port,
                client_id: format!("bench-sub-{run_id}"),
                credentials: None,
                subscribe: Some(format!("bench/{run_id}/#")),
            };
            ("sub", Some(MqttConn::receiver(spec, recorder.clone()).await?), None)
        }
        Path3::GatewayMqtt => {
            let spec = MqttSpec {
                port: env.mqtt_port,
                client_id: format!("bench-rcv-{run_id}"),
                credentials: Some(("rcv", env.token("rcv")?)),
                subscribe: Some("im/rcv/in".into()),
            };
            ("rcv", Some(MqttConn::receiver(spec, recorder.clone()).await?), None)
        }
        Path3::GatewayWs => ("wsrcv", None, Some(WsConn::receiver(env.http_port, env.token("wsrcv")?, recorder.clone()).await?)),
    };

    let ack_kind = if path == Path3::Mosquitto { AckKind::PubAck } else { AckKind::Frame };
    let mut senders_conns = Vec::with_capacity(senders);
    for (k, &n) in counts.iter().enumerate() {
        let state = SenderState::new(ack_kind, cli.window);
        state.expected_acks.store(n + 1, Ordering::Relaxed);
        let user = format!("snd{k}");
        let (spec, topic) = if path == Path3::Mosquitto {
            let spec = MqttSpec {
                port: env.mosquitto_port,
                client_id: format!("bench-pub{k}-{run_id}"),
                credentials: None,
                subscribe: None,
            };
            (spec, format!("bench/{run_id}/p{k}"))
        } else {
            // Username is the user, password her JWT; her own `in` topic carries the acks.
            let spec = MqttSpec {
                port: env.mqtt_port,
                client_id: format!("bench-{user}-{run_id}"),
                credentials: Some((&user, env.token(&user)?)),
                subscribe: Some(format!("im/{user}/in")),
            };
            (spec, format!("im/{user}/out"))
        };
        let conn = MqttConn::sender(spec, state.clone()).await?;
        senders_conns.push((conn, state, topic));
    }

    // Warm-up: one message per sender, end to end, proves every route before the clock starts.
    for (k, (conn, state, topic)) in senders_conns.iter().enumerate() {
        if let Ok(permit) = state.window.try_acquire() {
            permit.forget();
        }
        let frame = load::frame(k, None, receiver_user);
        tokio::time::timeout(SETUP_WAIT, conn.client.publish(topic.clone(), QoS::AtLeastOnce, false, frame))
            .await
            .context("warm-up publish timed out")??;
    }
    if tokio::time::timeout(SETUP_WAIT, recorder.all_warm.notified()).await.is_err() {
        let mut detail = Vec::new();
        for (conn, state, _) in &senders_conns {
            detail.extend(conn.failure());
            detail.extend(load_errors(state));
        }
        detail.extend(mqtt_receiver.as_ref().and_then(MqttConn::failure));
        detail.extend(ws_receiver.as_ref().and_then(WsConn::failure));
        bail!("warm-up messages did not all arrive within {SETUP_WAIT:?} {detail:?}");
    }

    let server = if path == Path3::Mosquitto { env.mosquitto } else { &env.gateway.server };
    let cpu_before = server.cpu_seconds();
    let client_cpu_before = servers::proc_cpu_seconds("/proc/self/stat");
    let start = tokio::time::Instant::now();
    let start_ns = now_ns();
    let timeout = match pace {
        Pace::Closed => Duration::from_secs(cli.case_timeout),
        #[allow(clippy::cast_precision_loss)]
        Pace::Rate { rate, .. } => Duration::from_secs_f64(count as f64 / rate) + Duration::from_secs(cli.case_timeout.min(20)),
    };
    let deadline = start + timeout;

    let mut tasks = Vec::with_capacity(senders);
    for (k, (conn, state, topic)) in senders_conns.iter().enumerate() {
        let plan = SendPlan {
            index: k,
            count: counts[k],
            topic: topic.clone(),
            to: receiver_user.to_owned(),
            pace,
            start,
            deadline,
        };
        tasks.push(tokio::spawn(load::send(conn.client.clone(), state.clone(), plan)));
    }
    let mut sent_by = Vec::with_capacity(senders);
    for task in tasks {
        sent_by.push(task.await.unwrap_or(0));
    }
    let sent: usize = sent_by.iter().sum();
    // Whatever has not arrived by the deadline counts as lost.
    let _ = tokio::time::timeout_at(deadline, recorder.all_received.notified()).await;
    let measured_end_ns = now_ns();
    let cpu_after = server.cpu_seconds();
    let client_cpu_after = servers::proc_cpu_seconds("/proc/self/stat");
    // Senders should also get every ack (gateway) / PUBACK (Mosquitto); a little grace for the last ones.
    let ack_deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5)).max(tokio::time::Instant::now());
    for (_, state, _) in &senders_conns {
        let settled = state.acks.load(Ordering::Relaxed) + state.error_count.load(Ordering::Relaxed);
        if settled < state.expected_acks.load(Ordering::Relaxed) {
            let _ = tokio::time::timeout_at(ack_deadline, state.all_acked.notified()).await;
        }
    }

    let report = recorder.report();
    let mut problems = Vec::new();
    let mut errors = report.errors.len();
    let mut acks_missing = 0;
    for (k, (conn, state, _)) in senders_conns.iter().enumerate() {
        errors += state.error_count.load(Ordering::Relaxed);
        // Every message handed to the connection, plus the warm-up one, should have been acknowledged.
        let expected = sent_by.get(k).copied().unwrap_or(0) + 1;
        let settled = state.acks.load(Ordering::Relaxed) + state.error_count.load(Ordering::Relaxed);
        acks_missing += expected.saturating_sub(settled);
        if let Some(failure) = conn.failure() {
            problems.push(format!("sender {k} connection: {failure}"));
        }
        for error in load_errors(state) {
            problems.push(format!("sender {k} got {error}"));
        }
    }
    if let Some(failure) = mqtt_receiver.as_ref().and_then(MqttConn::failure) {
        problems.push(format!("receiver connection: {failure}"));
    }
    if let Some(failure) = ws_receiver.as_ref().and_then(WsConn::failure) {
        problems.push(format!("receiver connection: {failure}"));
    }
    for code in &report.errors {
        problems.push(format!("receiver got error frame {code}"));
    }
    // Lost = handed to the sending connection but never received (unsent ones are reported apart).
    let lost = sent.saturating_sub(report.distinct);
    if sent < count {
        problems.push(format!("only {sent} of {count} messages could be sent before the {timeout:?} deadline"));
    }
    if lost > 0 {
        problems.push(format!("{lost} of {sent} messages sent were not received before the {timeout:?} deadline"));
    }
    if report.duplicates > 0 {
        problems.push(format!("{} duplicate deliveries", report.duplicates));
    }
    if acks_missing > 0 {
        problems.push(format!("{acks_missing} acks missing at the senders ({})", if path == Path3::Mosquitto { "PUBACK" } else { "ack frames" }));
    }

    let span_ns = report.last_ns.saturating_sub(start_ns).max(1);
    #[allow(clippy::cast_precision_loss)]
    let rate = report.distinct as f64 / (span_ns as f64 / 1e9);
    #[allow(clippy::cast_precision_loss)]
    let wall = measured_end_ns.saturating_sub(start_ns) as f64 / 1e9;
    let cpu = cpu_before.zip(cpu_after).map(|(before, after)| after - before);
    #[allow(clippy::cast_precision_loss)]
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
        server_cores: cpu.map(|cpu| cpu / wall.max(1e-9)),
        server_us_per_msg: cpu.filter(|_| report.distinct > 0).map(|cpu| cpu * 1e6 / report.distinct as f64),
        client_cores: client_cpu_before.zip(client_cpu_after).map(|(before, after)| (after - before) / wall.max(1e-9)),
        problems,
    };

    for (conn, _, _) in senders_conns {
        conn.close().await;
    }
    if let Some(conn) = mqtt_receiver.take() {
        conn.close().await;
    }
    if let Some(conn) = ws_receiver.take() {
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
        "{} senders → 1 receiver, QoS 1 everywhere, window {} unacknowledged messages per sender at saturation; \
         latency = send → receipt in ms; {} rounds, interleaved; medians, with min..max of msgs/s.\n",
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
    for (case, load) in keys {
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
            first.messages,
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
