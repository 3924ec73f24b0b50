//! A real Mosquitto (Debian's package) started for one test, on a free loopback port, with the
//! password and ACL files from docs/mosquitto/; optionally also a TLS listener with the test
//! certificate of push-fakes/fixtures.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::common::WAIT;

pub struct Mosquitto {
    child: Option<Child>,
    pub address: SocketAddr,
    /// The TLS listener, for [`Mosquitto::start_tls`].
    pub tls_address: Option<SocketAddr>,
    dir: tempfile::TempDir,
    _ports: Vec<ReservedPort>,
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// A loopback port kept for one server for as long as this lives, across the server's restarts:
/// a socket bound with SO_REUSEADDR that never listens. The server can still listen there
/// (Prosody, ejabberd, Mosquitto and the gateway bind with SO_REUSEADDR too), but while it is
/// down neither another bind to port 0 nor an outgoing connection's ephemeral port can take the
/// port. Without it, in a parallel run, a restarting Prosody once found its component port
/// taken by another test's server and came back without it.
pub struct ReservedPort {
    _socket: tokio::net::TcpSocket,
    pub address: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind port 0");
        let address = socket.local_addr().expect("local addr");
        Self { _socket: socket, address }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }
}

impl Mosquitto {
    /// `users` are (name, password) pairs; `gateway` is the gateway's own account in the ACL.
    pub async fn start(users: &[(&str, &str)]) -> Self {
        Self::start_with(users, false, false).await
    }

    /// With persistence: sessions and their queued messages survive a graceful restart.
    pub async fn start_persistent(users: &[(&str, &str)]) -> Self {
        Self::start_with(users, true, false).await
    }

    /// The same, with a second listener speaking TLS (certificate `server.pem` of the test CA
    /// `ca.pem`, for 127.0.0.1), sharing the users and the ACL, as in docs/mosquitto.md.
    pub async fn start_tls(users: &[(&str, &str)]) -> Self {
        Self::start_with(users, false, true).await
    }

    async fn start_with(users: &[(&str, &str)], persistent: bool, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "").expect("password file");
        for (user, password) in users {
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .status()
                .await
                .expect("mosquitto_passwd (Debian's mosquitto) is installed");
            assert!(status.success(), "mosquitto_passwd for {user}");
        }
        let acl = dir.path().join("acl");
        std::fs::write(&acl, include_str!("../../docs/mosquitto/acl")).expect("acl file");
        let mut ports = vec![ReservedPort::new()];
        let port = ports[0].port();
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence {persistent}\npersistence_location {}/\nmax_queued_messages 100000\nmax_inflight_messages 0\nlog_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n",
            passwd.display(),
            acl.display(),
            dir.path().display(),
            dir.path().join("mosquitto.log").display()
        );
        let mut tls_address = None;
        if tls {
            ports.push(ReservedPort::new());
            let tls_port = ports[1].port();
            // Copied beside the configuration, where the mosquitto user can read them.
            for file in ["ca.pem", "server.pem", "server.key.pem"] {
                std::fs::copy(crate::common::fixture(file), dir.path().join(file)).expect("copy a TLS fixture");
            }
            // cafile, certfile and keyfile belong to the listener above them.
            text.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                dir.path().join("ca.pem").display(),
                dir.path().join("server.pem").display(),
                dir.path().join("server.key.pem").display()
            ));
            tls_address = Some(SocketAddr::from(([127, 0, 0, 1], tls_port)));
        }
        std::fs::write(dir.path().join("mosquitto.conf"), text).expect("config");
        // Started as root, Mosquitto drops to its own user before opening its files.
        let _ = Command::new("chown").args(["-R", "mosquitto:"]).arg(dir.path()).status().await;
        let mut broker = Self { child: None, address: SocketAddr::from(([127, 0, 0, 1], port)), tls_address, dir, _ports: ports };
        broker.spawn().await;
        broker
    }

    async fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto (Debian's package) is installed");
        self.child = Some(child);
        self.wait_listening().await;
    }

    async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let tls_up = match self.tls_address {
                Some(address) => tokio::net::TcpStream::connect(address).await.is_ok(),
                None => true,
            };
            if tls_up && tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait() {
                    panic!("mosquitto exited with {status}: {}", self.log());
                }
            assert!(tokio::time::Instant::now() < deadline, "mosquitto did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM (a persistent broker saves its sessions), then starts it again on the same port.
    pub async fn restart_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            if tokio::time::timeout(WAIT, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        self.spawn().await;
    }

    /// SIGSTOP: connections stay open, nothing is read or answered until [`Mosquitto::resume`].
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("mosquitto is running");
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().await.expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Kills and starts it again on the same port; it forgets every session (no persistence).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

impl Drop for Mosquitto {
    /// A failed test shows the broker's side: its errors and every client's connections.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL).collect();
            eprintln!("mosquitto {}: the last {} lines of its log:", self.address, tail.len());
            tail.iter().rev().for_each(|line| eprintln!("  {line}"));
        }
    }
}

/// Lines of a broker's log shown when its test fails.
const LOG_TAIL: usize = 60;
