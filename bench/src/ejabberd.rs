//! ejabberd (Debian's package) for the run: configuration, spool, logs, Erlang cookie (`HOME`) and
//! pidfile in its temporary directory; c2s, component and Erlang distribution ports free on
//! loopback; a node name of its own; run as the `ejabberd` user. NOTES.md has the traps: the
//! stock shaper (3000 B/s per user), `ejabberdctl` forking through `su` when run as root, and
//! `epmd`, which would listen on 0.0.0.0:4369 and outlive the node unless the distribution port
//! is given (`ERL_DIST_PORT`).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::component::{BARE_DOMAIN, BARE_SECRET};
use crate::servers::{COMPONENT_DOMAIN, COMPONENT_SECRET, Server, XMPP_HOST, alive, xmpp_password};

/// Boot (about 3 s on a quiet machine), each `ejabberdctl` call (it boots an Erlang VM) and the
/// shutdown get this long: the machine may be busy.
const SLOW: Duration = Duration::from_secs(60);

pub struct Ejabberd {
    /// The launcher (`setpriv` execs `env`, which execs ejabberdctl, a shell); its worker is the
    /// node's `beam.smp`, whose CPU is what is measured.
    pub server: Server,
    pub c2s_port: u16,
    /// The gateway's component port.
    pub component_port: u16,
    /// The bare component's, a listener of its own: ejabberd routes every domain of a listener's
    /// `hosts` to whichever component authenticates on it, so on a shared listener the gateway
    /// would also receive `component.localhost`'s messages.
    pub bare_component_port: u16,
    ctl: Ctl,
}

/// How to reach the node with `ejabberdctl`.
struct Ctl {
    binary: PathBuf,
    dir: PathBuf,
    node: String,
}

impl Ctl {
    /// `ejabberdctl` as the `ejabberd` user with this run's files, cookie and node.
    fn command(&self) -> Command {
        let mut command = Command::new("setpriv");
        // The Erlang VM reads its working directory, which must be one the ejabberd user can enter.
        command
            .current_dir(&self.dir)
            .args(["--reuid=ejabberd", "--regid=ejabberd", "--init-groups", "env"])
            .arg(format!("HOME={}", self.dir.display()))
            .arg(&self.binary)
            .arg("--config-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(self.dir.join("ejabberd.yml"))
            .arg("--ctl-config")
            .arg(self.dir.join("ejabberdctl.cfg"))
            .arg("--spool")
            .arg(self.dir.join("spool"))
            .arg("--logs")
            .arg(self.dir.join("logs"))
            .args(["--node", &self.node]);
        command
    }

    /// One command against the running node, bounded by `SLOW`.
    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ejabberdctl")?;
        let pid = child.id();
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        match wait.recv_timeout(SLOW) {
            Ok(output) => Ok(output?),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                bail!("ejabberdctl {args:?} took more than {SLOW:?}")
            }
        }
    }
}

/// ejabberd with `users` registered on `localhost`, the gateway's component `gw.localhost` and the
/// bare one of `component.rs`, each on an XEP-0114 listener of its own, no shapers, no STARTTLS, only the modules
/// a chat needs (no `mod_offline`: a message to an unavailable account bounces, as on Prosody).
pub struct Ports {
    pub c2s: u16,
    pub component: u16,
    pub bare_component: u16,
    /// Erlang distribution.
    pub dist: u16,
}

pub fn start(binary: &Path, dir: &Path, ports: &Ports, users: &[String]) -> anyhow::Result<Ejabberd> {
    let Ports { c2s: c2s_port, component: component_port, bare_component: bare_port, dist: dist_port } = *ports;
    for sub in ["spool", "logs"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::write(
        dir.join("ejabberd.yml"),
        format!(
            r#"loglevel: warning
hosts:
  - {XMPP_HOST}
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
      "{COMPONENT_DOMAIN}":
        password: "{COMPONENT_SECRET}"
  -
    port: {bare_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "{BARE_DOMAIN}":
        password: "{BARE_SECRET}"
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
"#
        ),
    )?;
    let path = dir.display();
    fs::write(
        dir.join("ejabberdctl.cfg"),
        format!(
            "ERL_DIST_PORT={dist_port}\nINET_DIST_INTERFACE=127.0.0.1\nEJABBERD_PID_PATH={path}/ejabberd.pid\n\
             ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n"
        ),
    )?;
    fs::write(
        dir.join("inetrc"),
        "{lookup,[\"file\",\"native\"]}.\n{host,{127,0,0,1}, [\"localhost\"]}.\n{file, resolv, \"/etc/resolv.conf\"}.\n",
    )?;
    let status = Command::new("chown").args(["-R", "ejabberd:ejabberd"]).arg(dir).status().context("chown")?;
    if !status.success() {
        bail!("chown -R ejabberd:ejabberd {} failed", dir.display());
    }
    let node = format!("switchboardbench{}@localhost", std::process::id());
    let ctl = Ctl { binary: binary.to_owned(), dir: dir.to_owned(), node };
    let log = dir.join("ejabberd.out");
    let output = fs::File::create(&log)?;
    let child = ctl
        .command()
        .arg("foreground")
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .context("cannot start ejabberdctl foreground")?;
    let mut ejabberd = Ejabberd {
        server: Server::new("ejabberd", child, log),
        c2s_port,
        component_port,
        bare_component_port: bare_port,
        ctl,
    };
    // A configuration error makes `foreground` exit after about a second: wait_for_port sees it.
    for port in [c2s_port, component_port, bare_port] {
        ejabberd.server.wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), SLOW)?;
    }
    let launcher = ejabberd.server.pid().context("no launcher")?;
    let beam = beam_of(launcher, &ejabberd.ctl.node).context("no beam.smp under the ejabberd launcher")?;
    ejabberd.server.set_worker(beam);
    // Registering is an RPC to the node (about a second each, mostly booting the control VM).
    let ctl = &ejabberd.ctl;
    let results: Vec<anyhow::Result<Output>> = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .iter()
            .map(|user| scope.spawn(move || ctl.run(&["register", user, XMPP_HOST, &xmpp_password(user)])))
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))).collect()
    });
    for (user, result) in users.iter().zip(results) {
        let output = result?;
        if !output.status.success() {
            bail!(
                "ejabberdctl register {user} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(ejabberd)
}

impl Ejabberd {
    /// `ejabberdctl stop`, then waits for the launcher and the node to exit; SIGKILL to those two
    /// only if they have not by the deadline. Returns whether it stopped by itself.
    pub fn stop(&mut self) -> bool {
        let stopped = self.ctl.run(&["stop"]).is_ok_and(|output| output.status.success());
        let deadline = Instant::now() + SLOW;
        while stopped && Instant::now() < deadline {
            if self.server.exited() && !self.server.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // `Server::stop` kills the launcher; the node is its own process.
        if let Some(beam) = self.server.worker().filter(|&pid| alive(pid)) {
            let _ = Command::new("kill").args(["-KILL", &beam.to_string()]).status();
        }
        self.server.stop();
        false
    }
}

impl Drop for Ejabberd {
    /// A run that ends early: no RPC from here, SIGKILL to the node (the launcher follows with
    /// `Server`'s own drop).
    fn drop(&mut self) {
        if let Some(beam) = self.server.worker().filter(|&pid| alive(pid)) {
            let _ = Command::new("kill").args(["-KILL", &beam.to_string()]).status();
        }
    }
}

/// The node's beam.smp, a child of the launcher shell. (The shell also forks subshells, which
/// share its command line, and runs a short-lived `erl` of its own to parse
/// `INET_DIST_INTERFACE`: the node is the beam.smp named on its command line.)
fn beam_of(launcher: u32, node: &str) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children.split_whitespace().filter_map(|pid| pid.parse().ok()).find(|pid| {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "beam.smp")
            && fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == node.as_bytes()))
    })
}
