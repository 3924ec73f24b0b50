//! A real ejabberd (Debian's package) for one test: config, spool, logs, Erlang cookie (`HOME`)
//! and pidfile in a temporary directory; c2s, component and Erlang distribution ports free on
//! loopback (no epmd: `ERL_DIST_PORT`); a node name of its own; run as the `ejabberd` user
//! (ejabberdctl run as root wraps itself in `su`, which forks); registered users; a restart that
//! keeps its data.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::mosquitto::ReservedPort;
use crate::prosody::{COMPONENT, SECRET, XmppUser, login, password};

/// Boot (~3 s on a quiet machine), ejabberdctl calls (each boots an Erlang VM) and shutdown get
/// more room than a stanza: the machine may be busy compiling.
const SLOW: Duration = Duration::from_secs(60);

const EJABBERDCTL: &str = "/usr/sbin/ejabberdctl";

pub struct Ejabberd {
    /// The launcher: `setpriv` execs `env`, which execs ejabberdctl (a shell) whose child is beam.smp.
    child: Option<Child>,
    /// beam.smp, the node itself.
    beam: Option<u32>,
    pub c2s: SocketAddr,
    pub component: SocketAddr,
    node: String,
    dir: tempfile::TempDir,
    /// Kept across restarts (see [`ReservedPort`]).
    _ports: [ReservedPort; 3],
}

impl Ejabberd {
    pub async fn start(users: &[&str]) -> Self {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = [ReservedPort::new(), ReservedPort::new(), ReservedPort::new()];
        let (c2s, component, dist_port) = (ports[0].address, ports[1].address, ports[2].port());
        let node = format!("switchboard{}x{}@localhost", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
        let path = dir.path().display().to_string();
        for sub in ["spool", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("ejabberd dirs");
        }
        // No shapers (the stock config slows every c2s user to 3000 B/s); no certificate, so no
        // STARTTLS: PLAIN and SCRAM over plain TCP; only the modules presence, rosters and
        // messages need (presence itself is built in; mod_ping also answers the gateway's
        // delivery pings), and mod_admin_extra for the offline message count.
        std::fs::write(
            dir.path().join("ejabberd.yml"),
            format!(
                r#"loglevel: info
hosts:
  - localhost
auth_method: internal
auth_password_format: plain
shaper: {{}}
shaper_rules: {{}}
listen:
  -
    port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    starttls_required: false
  -
    port: {component_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "{COMPONENT}":
        password: "{SECRET}"
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_admin_extra: {{}}
  mod_disco: {{}}
  mod_offline: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
"#,
                c2s_port = c2s.port(),
                component_port = component.port(),
            ),
        )
        .expect("config");
        // Distribution on a port of its own, on loopback, without starting epmd (which would
        // listen on 0.0.0.0:4369 and outlive the node); the pidfile out of /run.
        std::fs::write(
            dir.path().join("ejabberdctl.cfg"),
            format!(
                "ERL_DIST_PORT={dist_port}\nINET_DIST_INTERFACE=127.0.0.1\nEJABBERD_PID_PATH={path}/ejabberd.pid\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n"
            ),
        )
        .expect("ejabberdctl config");
        std::fs::write(
            dir.path().join("inetrc"),
            "{lookup,[\"file\",\"native\"]}.\n{host,{127,0,0,1}, [\"localhost\"]}.\n{file, resolv, \"/etc/resolv.conf\"}.\n",
        )
        .expect("inetrc");
        let status = Command::new("chown").args(["-R", "ejabberd:ejabberd"]).arg(dir.path()).status().await.expect("chown");
        assert!(status.success(), "chown the ejabberd directory");
        let mut ejabberd = Self { child: None, beam: None, c2s, component, node, dir, _ports: ports };
        ejabberd.spawn().await;
        // Registering is an RPC to the running node (~1 s each, mostly booting the control VM).
        let ejabberd_ref = &ejabberd;
        let registered = futures::future::join_all(users.iter().map(|user| async move {
            ejabberd_ref.ctl(&["register", user, "localhost", &password(user)]).await
        }));
        for (user, (ok, output)) in users.iter().zip(registered.await) {
            assert!(ok, "register {user}: {output}");
        }
        ejabberd
    }

    /// ejabberdctl as the `ejabberd` user with this run's files, cookie and node.
    fn ejabberdctl(&self) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new("setpriv");
        // The Erlang VM reads from its working directory: the test's own may belong to root
        // with mode 0700 (a `mktemp -d` checkout), which the ejabberd user cannot enter.
        command
            .current_dir(dir)
            .args(["--reuid=ejabberd", "--regid=ejabberd", "--init-groups", "env"])
            .arg(format!("HOME={}", dir.display()))
            .arg(EJABBERDCTL)
            .arg("--config-dir")
            .arg(dir)
            .arg("--config")
            .arg(dir.join("ejabberd.yml"))
            .arg("--ctl-config")
            .arg(dir.join("ejabberdctl.cfg"))
            .arg("--spool")
            .arg(dir.join("spool"))
            .arg("--logs")
            .arg(dir.join("logs"))
            .args(["--node", &self.node]);
        command
    }

    /// Runs one ejabberdctl command against the node: success and what it printed.
    async fn ctl(&self, args: &[&str]) -> (bool, String) {
        let mut command = self.ejabberdctl();
        command.args(args).stdin(Stdio::null()).kill_on_drop(true);
        match tokio::time::timeout(SLOW, command.output()).await {
            Ok(Ok(output)) => (
                output.status.success(),
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
            ),
            Ok(Err(error)) => (false, format!("ejabberdctl (Debian's ejabberd) is installed: {error}")),
            Err(_) => (false, format!("ejabberdctl {args:?} took more than {SLOW:?}")),
        }
    }

    fn output_file(&self) -> PathBuf {
        self.dir.path().join("ejabberd.out")
    }

    /// The end of what the node printed, for a failure message.
    fn output_tail(&self) -> String {
        let output = std::fs::read_to_string(self.output_file()).unwrap_or_default();
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn spawn(&mut self) {
        let output = std::fs::File::create(self.output_file()).expect("output file");
        let errors = output.try_clone().expect("output file");
        let mut command = self.ejabberdctl();
        command.arg("foreground").stdin(Stdio::null()).stdout(output).stderr(errors).kill_on_drop(true);
        self.child = Some(command.spawn().expect("ejabberdctl (Debian's ejabberd) starts"));
        let deadline = tokio::time::Instant::now() + SLOW;
        while tokio::net::TcpStream::connect(self.c2s).await.is_err()
            || tokio::net::TcpStream::connect(self.component).await.is_err()
        {
            // A bad config makes `foreground` exit after about a second.
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("ejabberd exited with {status}:\n{}", self.output_tail());
            }
            assert!(tokio::time::Instant::now() < deadline, "ejabberd did not start listening:\n{}", self.output_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.beam = self.child.as_ref().and_then(Child::id).and_then(|launcher| beam_of(launcher, &self.node));
        assert!(self.beam.is_some(), "beam.smp runs under the launcher");
    }

    /// Stops it, then starts it again with the same spool (users, rosters, offline messages).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// `ejabberdctl stop`, then waits for the launcher and beam.smp to exit; SIGKILL to those two
    /// PIDs only if they have not within the deadline.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let beam = self.beam.take();
        let (stopped, output) = self.ctl(&["stop"]).await;
        let deadline = tokio::time::Instant::now() + SLOW;
        let exited = stopped && tokio::time::timeout_at(deadline, child.wait()).await.is_ok() && {
            loop {
                if !beam.is_some_and(alive) {
                    break true;
                }
                if tokio::time::Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if !exited {
            eprintln!("ejabberd did not stop by itself ({output}); killing it");
            if let Some(pid) = beam.filter(|pid| alive(*pid)) {
                kill(pid);
            }
            let _ = child.kill().await;
            let deadline = tokio::time::Instant::now() + SLOW;
            while beam.is_some_and(alive) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    pub fn gateway_config(&self) -> String {
        format!("[gateway]\ndomain = \"{COMPONENT}\"\n[xmpp]\nserver = \"{}\"\nsecret = \"{SECRET}\"\n", self.component)
    }

    /// How many messages ejabberd holds offline for `user@localhost`.
    pub async fn offline_count(&self, user: &str) -> usize {
        let (ok, output) = self.ctl(&["get_offline_count", user, "localhost"]).await;
        assert!(ok, "get_offline_count {user}: {output}");
        output.trim().parse().unwrap_or_else(|_| panic!("get_offline_count {user}: {output}"))
    }

    /// A logged-in, available XMPP user of this server.
    pub async fn user(&self, name: &str) -> XmppUser {
        login(self.c2s, name, &password(name)).await
    }
}

impl Drop for Ejabberd {
    /// A test that fails midway: no RPC from here, SIGKILL to the node and its launcher.
    fn drop(&mut self) {
        // (No recorded PID if it never came up: look for it under the launcher then.)
        let launcher = self.child.as_ref().and_then(Child::id);
        let beam = self.beam.take().or_else(|| launcher.and_then(|launcher| beam_of(launcher, &self.node))).filter(|pid| alive(*pid));
        if let Some(pid) = beam {
            kill(pid);
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        // Gone before its directory is removed (a running node keeps writing to its spool).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while beam.is_some_and(alive) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The node's beam.smp, a child of the launcher shell. (The shell also forks subshells, which
/// share its command line, and runs a short-lived `erl` of its own to parse
/// `INET_DIST_INTERFACE`: the node is the beam.smp named on its command line.)
fn beam_of(launcher: u32, node: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children.split_whitespace().filter_map(|pid| pid.parse().ok()).find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "beam.smp")
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == node.as_bytes()))
    })
}

/// Running, and not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}
