//! The servers under test (Mosquitto, Prosody, Mosquitto as the gateway's broker, the gateway),
//! each started as a child process in its own temporary directory on free loopback ports, and
//! stopped (SIGTERM, then SIGKILL after a grace period) at the end. ejabberd, which is stopped
//! differently, is in `ejabberd.rs`.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::component::{BARE_DOMAIN, BARE_SECRET};

/// Ports that are taken on the benchmark machines and must never be used.
const RESERVED_PORTS: [u16; 2] = [1883, 8080];

/// Hands out free loopback ports, never the same one twice.
#[derive(Default)]
pub struct Ports {
    given: HashSet<u16>,
}

impl Ports {
    pub fn free(&mut self) -> anyhow::Result<u16> {
        for _ in 0..100 {
            let port = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?.local_addr()?.port();
            if !RESERVED_PORTS.contains(&port) && self.given.insert(port) {
                return Ok(port);
            }
        }
        bail!("no free loopback port found")
    }
}

/// A server process that is ours; dropped = stopped.
pub struct Server {
    pub name: &'static str,
    child: Option<Child>,
    /// The process that does the work, when it is not `child` itself (ejabberd's launcher is a
    /// shell whose child is the Erlang VM).
    worker: Option<u32>,
    pub log: PathBuf,
}

impl Server {
    pub fn new(name: &'static str, child: Child, log: PathBuf) -> Self {
        Self { name, child: Some(child), worker: None, log }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn set_worker(&mut self, pid: u32) {
        self.worker = Some(pid);
    }

    pub fn worker(&self) -> Option<u32> {
        self.worker
    }

    /// Whether the process that does the work still runs (and is not a zombie).
    pub fn alive(&self) -> bool {
        self.worker.or_else(|| self.pid()).is_some_and(alive)
    }

    /// CPU time (user + system) the process that does the work has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.worker.or_else(|| self.pid())?))
    }

    /// Whether the launched process has exited (its status is collected).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))))
    }

    /// Waits until `address` accepts TCP connections, failing early if the process exits.
    pub fn wait_for_port(&mut self, address: SocketAddr, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("{} exited with {status} before listening on {address}; log:\n{}", self.name, self.log_tail());
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} is not listening on {address} after {within:?}; log:\n{}", self.name, self.log_tail());
            }
            // Short, so that the start-up time measured through it is not rounded up.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL. Returns whether it stopped on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Running, and not a zombie waiting to be reaped.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// User + system CPU time from a `/proc/<pid>/stat` file, in seconds.
pub fn proc_cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces), counted from field 3 (state).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc reports clock ticks in USER_HZ, which Linux fixes at 100 for user space.
    Some((utime + stime) / 100.0)
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0").unwrap_or(false)
}

/// Mosquitto with a minimal configuration: one loopback listener, anonymous clients, no
/// persistence, and a queue deep enough that a subscriber falling behind loses nothing.
pub fn start_mosquitto(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Server> {
    let log = dir.join("mosquitto.log");
    let config = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n\
         log_dest file {}\nlog_type error\nlog_type warning\n",
        log.display()
    );
    spawn_mosquitto(binary, dir, port, &config, "mosquitto", log)
}

/// Mosquitto as the gateway's external broker, configured as docs/mosquitto.md says: password
/// file (`users`: name and password, the gateway's account among them), the documented ACL,
/// persistence; otherwise as `start_mosquitto`, so that the two differ only by what the gateway
/// needs.
pub fn start_broker(binary: &Path, dir: &Path, port: u16, users: &[(String, String)]) -> anyhow::Result<Server> {
    let passwd = dir.join("passwd");
    fs::write(&passwd, "")?;
    let mosquitto_passwd = binary.with_file_name("mosquitto_passwd");
    // Debian puts the broker in /usr/sbin and mosquitto_passwd in /usr/bin.
    let mosquitto_passwd = if mosquitto_passwd.is_file() { mosquitto_passwd } else { PathBuf::from("mosquitto_passwd") };
    for (user, password) in users {
        let out = Command::new(&mosquitto_passwd)
            .arg("-b")
            .arg(&passwd)
            .args([user, password])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", mosquitto_passwd.display()))?;
        if !out.status.success() {
            bail!("mosquitto_passwd {user} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    let acl = dir.join("acl");
    fs::write(&acl, include_str!("../../docs/mosquitto/acl"))?;
    let log = dir.join("mosquitto.log");
    let config = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence true\n\
         persistence_location {}/\nmax_queued_messages 1000000\nlog_dest file {}\nlog_type error\nlog_type warning\n",
        passwd.display(),
        acl.display(),
        dir.display(),
        log.display()
    );
    spawn_mosquitto(binary, dir, port, &config, "broker", log)
}

fn spawn_mosquitto(
    binary: &Path,
    dir: &Path,
    port: u16,
    config_text: &str,
    name: &'static str,
    log: PathBuf,
) -> anyhow::Result<Server> {
    let config = dir.join("mosquitto.conf");
    fs::write(&config, config_text)?;
    if is_root() {
        // Started as root it drops to the `mosquitto` user before opening its log file.
        let status = Command::new("chown").args(["-R", "mosquitto:"]).arg(dir).status().context("chown")?;
        if !status.success() {
            bail!("chown -R mosquitto: {} failed", dir.display());
        }
    }
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = Server::new(name, child, log);
    server.wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(15))?;
    Ok(server)
}

/// The XMPP domain of Prosody's users.
pub const XMPP_HOST: &str = "localhost";
/// The gateway's component domain on the XMPP servers: gateway user `u` is `u@gw.localhost` over XMPP.
pub const COMPONENT_DOMAIN: &str = "gw.localhost";
pub const COMPONENT_SECRET: &str = "bench-component-secret";

pub fn xmpp_password(user: &str) -> String {
    format!("{user}-pw")
}

pub struct Prosody {
    pub server: Server,
    pub c2s_port: u16,
    pub component_port: u16,
}

/// Prosody with a minimal configuration for measuring routing: c2s and component listeners on
/// loopback, no TLS, the gateway's component `gw.localhost` and the bare one of `component.rs`, only the modules a chat needs (no `limits`;
/// `offline`, which Prosody loads unless told not to, disabled: a message to an unavailable
/// account bounces), warnings only in the log. Runs as
/// the `prosody` user (as root it half-starts), with `users` registered beforehand.
pub fn start_prosody(
    binary: &Path,
    dir: &Path,
    c2s_port: u16,
    component_port: u16,
    users: &[String],
) -> anyhow::Result<Prosody> {
    fs::create_dir_all(dir.join("data"))?;
    fs::create_dir_all(dir.join("certs"))?;
    let path = dir.display();
    let log = dir.join("prosody.log");
    let config = dir.join("prosody.cfg.lua");
    fs::write(
        &config,
        format!(
            r#"pidfile = "{path}/prosody.pid"
data_path = "{path}/data"
certificates = "{path}/certs"
log = {{ warn = "{log}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "presence"; "message" }}
modules_disabled = {{ "s2s"; "offline" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
network_settings = {{ nagle = false }}
VirtualHost "{XMPP_HOST}"
Component "{COMPONENT_DOMAIN}"
    component_secret = "{COMPONENT_SECRET}"
Component "{BARE_DOMAIN}"
    component_secret = "{BARE_SECRET}"
"#,
            log = log.display()
        ),
    )?;
    if is_root() {
        // prosodyctl run as root switches to `prosody` too: it must be able to write the data.
        let status = Command::new("chown").args(["-R", "prosody:prosody"]).arg(dir).status().context("chown")?;
        if !status.success() {
            bail!("chown -R prosody:prosody {} failed", dir.display());
        }
    }
    let prosodyctl = binary.with_file_name("prosodyctl");
    for user in users {
        let out = Command::new(&prosodyctl)
            .arg("--config")
            .arg(&config)
            .args(["register", user, XMPP_HOST, &xmpp_password(user)])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", prosodyctl.display()))?;
        if !out.status.success() {
            bail!(
                "prosodyctl register {user} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut command = if is_root() {
        // `setpriv` execs, so the child's PID is Prosody's.
        let mut command = Command::new("setpriv");
        command.args(["--reuid=prosody", "--regid=prosody", "--init-groups"]).arg(binary);
        command
    } else {
        Command::new(binary)
    };
    let child = command
        .arg("--config")
        .arg(&config)
        .arg("-F")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = Server::new("prosody", child, log);
    server.wait_for_port(SocketAddr::from(([127, 0, 0, 1], c2s_port)), Duration::from_secs(20))?;
    server.wait_for_port(SocketAddr::from(([127, 0, 0, 1], component_port)), Duration::from_secs(20))?;
    Ok(Prosody { server, c2s_port, component_port })
}

pub struct Gateway {
    pub server: Server,
    pub config: PathBuf,
    binary: PathBuf,
}

pub const JWT_SECRET: &str = "bench-secret-123";

/// The gateway's MQTT side.
pub enum MqttSide {
    /// The embedded endpoint, listening on this port.
    Embedded(u16),
    /// A client of the broker on this port, logged in as user `gateway` with `password`.
    Broker { port: u16, password: String },
}

/// The gateway binary with its MQTT side as `mqtt` says, the HTTP/WebSocket listener on the given
/// port, its store in `dir`, the per-user rate limit out of the way, and, with a
/// `component_port`, joined to that XMPP server's component port as `gw.localhost`. Returns once
/// `/healthz` says every configured link (the XMPP one and the broker included) is up.
pub fn start_gateway(
    binary: &Path,
    dir: &Path,
    http_port: u16,
    mqtt: &MqttSide,
    component_port: Option<u16>,
) -> anyhow::Result<Gateway> {
    let xmpp = component_port.map_or_else(String::new, |port| {
        format!("[xmpp]\nserver = \"127.0.0.1:{port}\"\nsecret = \"{COMPONENT_SECRET}\"\n")
    });
    start_gateway_config(binary, dir, COMPONENT_DOMAIN, http_port, mqtt, &xmpp)
}

/// The gateway with the embedded MQTT endpoint on `mqtt_port`, for `domain`, with `extra` (TOML
/// sections) appended to its configuration instead of the XMPP link. Returns once `/healthz`
/// answers 200: every configured link and provider (the push providers' credentials included) is up.
pub fn start_gateway_with(
    binary: &Path,
    dir: &Path,
    domain: &str,
    http_port: u16,
    mqtt_port: u16,
    extra: &str,
) -> anyhow::Result<Gateway> {
    start_gateway_config(binary, dir, domain, http_port, &MqttSide::Embedded(mqtt_port), extra)
}

fn start_gateway_config(
    binary: &Path,
    dir: &Path,
    domain: &str,
    http_port: u16,
    mqtt: &MqttSide,
    extra: &str,
) -> anyhow::Result<Gateway> {
    let data = dir.join("data");
    fs::create_dir_all(&data)?;
    let config = dir.join("switchboard.toml");
    let mqtt_section = match mqtt {
        MqttSide::Embedded(port) => format!("listen = \"127.0.0.1:{port}\""),
        // Its client id stays the same for the whole run: the broker keeps its session under it.
        MqttSide::Broker { port, password } => {
            format!("url = \"mqtt://gateway:{password}@127.0.0.1:{port}\"\nclient_id = \"switchboard-bench\"")
        }
    };
    fs::write(
        &config,
        format!(
            "[gateway]\ndomain = \"{domain}\"\ndata_dir = \"{}\"\n\n[auth]\njwt_secret = \"{JWT_SECRET}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[mqtt]\n{mqtt_section}\n\n\
             [limits]\nmessages_per_second = 1000000\nconnections_per_ip = 0\n\n{extra}",
            data.display()
        ),
    )?;
    let log = dir.join("switchboard.log");
    let child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("switchboard.out"))?)
        .stderr(fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = Server::new("switchboard", child, log);
    if let MqttSide::Embedded(mqtt_port) = mqtt {
        server.wait_for_port(SocketAddr::from(([127, 0, 0, 1], *mqtt_port)), Duration::from_secs(30))?;
    }
    server.wait_for_port(SocketAddr::from(([127, 0, 0, 1], http_port)), Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = http_status(http_port, "/healthz");
        if status == Some(200) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "GET /healthz answered {status:?}, not 200, after 30 s (a link or provider not up?); log:\n{}",
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Gateway { server, config, binary: binary.to_owned() })
}

/// The status code of `GET path` on 127.0.0.1:`port`, if it answers within a second.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 32];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut head[read..]).ok()?;
        if n == 0 {
            break;
        }
        read += n;
    }
    // "HTTP/1.1 200 OK"
    std::str::from_utf8(&head[..read]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

impl Gateway {
    /// `switchboard token <user> --config FILE`.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .args(["token", user, "--ttl", "1h", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .context("switchboard token")?;
        if !out.status.success() {
            bail!("switchboard token {user} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let token = String::from_utf8(out.stdout)?.trim().to_owned();
        if token.is_empty() {
            bail!("switchboard token {user} printed nothing");
        }
        Ok(token)
    }
}
