//! A real Prosody (Debian's package) for one test: its own config, data and log in a temporary
//! directory, c2s and component ports free on loopback, run as the `prosody` user (as root it
//! half-starts), registered users, and a restart that keeps its data and its ports.
//! `PROSODY_LOG_LEVEL` sets its log level (default `warn`); with `PROSODY_LOG_COPY` naming a
//! directory, each test's Prosody log is copied there when the test ends.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::Message;
use xmpp_parsers::presence::Presence;

use crate::common::WAIT;
use crate::mosquitto::ReservedPort;

pub const COMPONENT: &str = "gw.localhost";
pub const SECRET: &str = "component-secret";

pub struct Prosody {
    child: Option<Child>,
    pub c2s: SocketAddr,
    pub component: SocketAddr,
    dir: tempfile::TempDir,
    /// Kept across restarts (see [`ReservedPort`]).
    _ports: [ReservedPort; 2],
}

impl Prosody {
    pub async fn start(users: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = [ReservedPort::new(), ReservedPort::new()];
        let (c2s, component) = (ports[0].address, ports[1].address);
        let path = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::write(
            dir.path().join("prosody.cfg.lua"),
            format!(
                r#"pidfile = "{path}/prosody.pid"
data_path = "{path}/data"
certificates = "{path}"
log = {{ {level} = "{path}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "presence"; "message"; "offline" }}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
network_settings = {{ nagle = false }}
VirtualHost "localhost"
Component "{COMPONENT}"
    component_secret = "{SECRET}"
"#,
                c2s_port = c2s.port(),
                level = std::env::var("PROSODY_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
                component_port = component.port(),
            ),
        )
        .expect("config");
        let status = Command::new("chown").args(["-R", "prosody:prosody"]).arg(dir.path()).status().await.expect("chown");
        assert!(status.success(), "chown the Prosody directory");
        let mut prosody = Self { child: None, c2s, component, dir, _ports: ports };
        for user in users {
            prosody.register(user).await;
        }
        prosody.spawn().await;
        prosody
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    async fn register(&self, user: &str) {
        let status = Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config())
            .args(["register", user, "localhost", &password(user)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("prosodyctl (Debian's prosody) is installed");
        assert!(status.success(), "register {user}");
    }

    async fn spawn(&mut self) {
        let child = Command::new("setpriv")
            .args(["--reuid=prosody", "--regid=prosody", "--init-groups", "prosody", "--config"])
            .arg(self.config())
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prosody starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(self.c2s).await.is_err()
            || tokio::net::TcpStream::connect(self.component).await.is_err()
        {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default();
                panic!("prosody exited with {status}: {log}");
            }
            assert!(tokio::time::Instant::now() < deadline, "prosody did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, wait for it to exit, start again with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            if tokio::time::timeout(WAIT, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    pub fn gateway_config(&self) -> String {
        format!("[gateway]\ndomain = \"{COMPONENT}\"\n[xmpp]\nserver = \"{}\"\nsecret = \"{SECRET}\"\n", self.component)
    }

    /// A logged-in, available XMPP user of this server.
    pub async fn user(&self, name: &str) -> XmppUser {
        login(self.c2s, name, &password(name)).await
    }
}

/// Logs `name@localhost` in over plaintext c2s at `c2s`, fetches the roster and sends initial
/// presence: a logged-in, available XMPP user of whichever server listens there.
pub async fn login(c2s: SocketAddr, name: &str, password: &str) -> XmppUser {
    let jid = BareJid::new(&format!("{name}@localhost")).expect("jid");
    let timeouts = Timeouts { read_timeout: Duration::from_secs(60), response_timeout: Duration::from_secs(15) };
    let mut client = Client::new_plaintext(jid.clone(), password.to_owned(), DnsConfig::addr(&c2s.to_string()), timeouts);
    loop {
        match tokio::time::timeout(WAIT, client.next()).await.expect("logs in within time") {
            Some(Event::Online { .. }) => break,
            Some(_) => {}
            None => panic!("{name}: client ended before login"),
        }
    }
    let mut user = XmppUser { client };
    // Fetching the roster makes this resource "interested" (RFC 6121 §2.1.6): the server then
    // delivers subscription answers to it.
    user.send_xml("<iq xmlns='jabber:client' type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>").await;
    user.send(Stanza::Presence(Presence::available())).await;
    user
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if let Some(to) = std::env::var_os("PROSODY_LOG_COPY") {
            let name = format!("prosody-{}-{}.log", std::process::id(), self.c2s.port());
            let _ = std::fs::copy(self.dir.path().join("prosody.log"), std::path::Path::new(&to).join(name));
        }
    }
}

/// The password every test user is registered with.
pub fn password(user: &str) -> String {
    format!("{user}-password")
}

pub struct XmppUser {
    pub client: Client,
}

impl XmppUser {
    pub async fn send(&mut self, stanza: Stanza) {
        self.client.send_stanza(stanza).await.expect("stanza sent");
    }

    pub async fn send_xml(&mut self, xml: &str) {
        let element: tokio_xmpp::minidom::Element = xml.parse().expect("test XML");
        let stanza = Stanza::try_from(element).expect("a stanza");
        self.send(stanza).await;
    }

    pub async fn chat(&mut self, to: &str, body: &str) {
        let to = Jid::new(to).expect("jid");
        let message = Message::chat(to).with_body(xmpp_parsers::message::Lang::new(), body.to_owned());
        self.send(Stanza::Message(message)).await;
    }

    /// The next stanza as an element, skipping the server's own noise (roster pushes, presence of
    /// other resources) only if `pick` says so.
    pub async fn recv_where(&mut self, pick: impl Fn(&tokio_xmpp::minidom::Element) -> bool) -> tokio_xmpp::minidom::Element {
        loop {
            match tokio::time::timeout(WAIT, self.client.next()).await.expect("a stanza in time") {
                Some(Event::Stanza(stanza)) => {
                    let element = tokio_xmpp::minidom::Element::from(stanza);
                    if pick(&element) {
                        return element;
                    }
                }
                Some(_) => {}
                None => panic!("xmpp client ended"),
            }
        }
    }

    pub async fn recv_message_with_body(&mut self) -> tokio_xmpp::minidom::Element {
        self.recv_where(|e| e.name() == "message" && e.get_child("body", "jabber:client").is_some()).await
    }
}
