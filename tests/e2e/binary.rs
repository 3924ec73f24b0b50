//! The `switchboard` binary itself: its commands, its errors, and shutdown on a signal.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{MqttClient, WAIT, WsClient, message};
use crate::mosquitto::free_port;

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard");

fn switchboard(dir: &std::path::Path) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).env_remove("RUST_LOG");
    command
}

async fn output(command: &mut Command) -> (bool, String, String) {
    let output = command.output().await.expect("switchboard runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("switchboard.toml");
    std::fs::write(
        &file,
        "[gateway]\ndomain = \"im.example.com\"\n[auth]\njwt_secret = \"hunter2hunter2\"\n[mqtt]\nurl = \"mqtt://gw:brokerpw@127.0.0.1:1884\"\n",
    )
    .expect("write config");
    let (ok, stdout, stderr) = output(switchboard(dir.path()).arg("check-config").arg("--config").arg(&file)).await;
    assert!(ok, "{stderr}");
    let printed: toml::Table = stdout.parse().expect("check-config prints TOML");
    assert_eq!(printed["gateway"]["domain"].as_str(), Some("im.example.com"));
    assert_eq!(printed["limits"]["offline_ttl"].as_str(), Some("30d"), "defaults are shown too");
    assert!(!stdout.contains("hunter2") && !stdout.contains("brokerpw"), "{stdout}");
    assert_eq!(printed["auth"]["jwt_secret"].as_str(), Some("********"));
}

#[tokio::test]
async fn check_config_names_the_offending_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[mqtt]\nlisten = \"127.0.0.1:1883\"\ntopic_prefx = \"im\"\n").expect("write config");
    let (ok, _, stderr) = output(switchboard(dir.path()).arg("check-config").arg("--config").arg(&file)).await;
    assert!(!ok);
    assert!(stderr.contains("mqtt.topic_prefx"), "{stderr}");

    let (ok, _, stderr) = output(switchboard(dir.path()).arg("check-config").env("SWITCHBOARD_HTTP__LISTEN", "nowhere")).await;
    assert!(!ok);
    assert!(stderr.contains("http.listen") && stderr.contains("SWITCHBOARD_HTTP__LISTEN"), "{stderr}");

    let (ok, _, stderr) = output(switchboard(dir.path()).arg("check-config").arg("--config").arg("missing.toml")).await;
    assert!(!ok);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    let (ok, _, stderr) = output(switchboard(dir.path()).arg("run").arg("--config").arg(&file)).await;
    assert!(!ok, "run checks as strictly as check-config");
    assert!(stderr.contains("mqtt.topic_prefx"), "{stderr}");
}

/// A gateway process on free ports, with no configuration file: the embedded default.
struct Process {
    child: Child,
    http: SocketAddr,
    mqtt: SocketAddr,
}

impl Process {
    async fn start(dir: &std::path::Path) -> Self {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = switchboard(dir)
            .arg("run")
            .env("SWITCHBOARD_HTTP__LISTEN", http.to_string())
            .env("SWITCHBOARD_MQTT__LISTEN", mqtt.to_string())
            .env("SWITCHBOARD_LIMITS__MESSAGES_PER_SECOND", "100000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("switchboard starts");
        // Ready once both adapters said they listen.
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut listening = 0;
        while listening < 2 {
            let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("starts in time").expect("log line");
            let line = line.unwrap_or_else(|| panic!("switchboard exited during start"));
            if line.contains("listening") {
                listening += 1;
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, http, mqtt }
    }

    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits within its grace period").expect("exit status")
    }
}

#[tokio::test]
async fn token_and_run_share_the_generated_secret_of_the_embedded_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = output(switchboard(dir.path()).args(["token", "alice", "--ttl", "15m"])).await;
    assert!(ok, "{stderr}");
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "only the JWT on stdout");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert!(dir.path().join("data").join("jwt_secret").exists(), "the secret lives in ./data");

    let gateway = Process::start(dir.path()).await;
    let client = WsClient::connect(gateway.http, token).await;
    assert_eq!(client.jid, "alice@localhost");
    let (ok, _, _) = output(switchboard(dir.path()).args(["token", "Not Valid!"])).await;
    assert!(!ok, "an invalid user name is refused");
    assert!(gateway.terminate().await.success());
}

#[tokio::test]
async fn a_port_already_taken_is_named_by_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let (ok, _, stderr) = output(
        switchboard(dir.path())
            .arg("run")
            .env("SWITCHBOARD_HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("SWITCHBOARD_MQTT__LISTEN", &port),
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("mqtt.listen") && stderr.contains(&port), "{stderr}");
}

#[tokio::test]
async fn sigterm_closes_websocket_sessions_with_try_again_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, token, _) = output(switchboard(dir.path()).args(["token", "alice"])).await;
    let gateway = Process::start(dir.path()).await;
    let mut alice = WsClient::connect(gateway.http, token.trim()).await;
    let pid = gateway.child.id().expect("running").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
    assert_eq!(alice.close_code().await, Some(1013), "told to come back later, not just cut off");
    assert!(gateway.terminate().await.success());
}

#[tokio::test]
async fn sigterm_drains_in_flight_messages_and_loses_none_that_were_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, alice_token, _) = output(switchboard(dir.path()).args(["token", "alice"])).await;
    let (_, bob_token, _) = output(switchboard(dir.path()).args(["token", "bob"])).await;
    let gateway = Process::start(dir.path()).await;
    // bob exists but is away: everything for him goes to the store.
    WsClient::connect(gateway.http, bob_token.trim()).await.close().await;

    let mut alice = MqttClient::connect(gateway.mqtt, "alice", alice_token.trim(), true, "alice").await.expect("connects");
    alice.subscribe_in().await;
    let total = 400;
    for i in 0..total {
        alice.send(message(&format!("c{i}"), "bob", &format!("m{i}"))).await;
    }
    // Terminate while acks are still coming in.
    let mut acked = HashSet::new();
    while acked.len() < 20 {
        let ack = alice.recv_type("ack").await;
        acked.insert(ack["msg"].as_str().expect("msg").to_owned());
    }
    let pid = gateway.child.id().expect("running").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
    while let Some(frame) = alice.try_recv().await {
        if frame["type"] == "ack" {
            acked.insert(frame["msg"].as_str().expect("msg").to_owned());
        }
    }
    let status = gateway.terminate().await;
    assert!(status.success(), "a clean exit: {status}");

    let gateway = Process::start(dir.path()).await;
    let mut bob = WsClient::connect(gateway.http, bob_token.trim()).await;
    let mut received = HashSet::new();
    let mut last = -1_i64;
    while !acked.is_subset(&received) {
        let frame = tokio::time::timeout(Duration::from_secs(10), bob.recv_type("message"))
            .await
            .unwrap_or_else(|_| panic!("{} acked messages never arrived", acked.difference(&received).count()));
        let n: i64 = frame["body"].as_str().and_then(|b| b.strip_prefix('m')).and_then(|n| n.parse().ok()).expect("body");
        assert!(n > last, "in order: m{n} after m{last}");
        last = n;
        received.insert(frame["id"].as_str().expect("id").to_owned());
    }
    assert!(acked.len() >= 20, "{} acked", acked.len());
}
