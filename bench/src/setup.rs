//! The servers of one run of the message paths: started once each, only those the selected cases
//! need, and stopped at the end (dropped early, they are killed).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;

use crate::ejabberd::{self, Ejabberd};
use crate::servers::{self, Gateway, MqttSide, Ports, Prosody, Server, xmpp_password};
use crate::{Cli, GatewayId, ServerId, XmppServer, relay};

/// The broker password of the gateway's own account (user `gateway` in the ACL).
const BROKER_GATEWAY_PASSWORD: &str = "bench-gateway-pw";

/// A gateway process and where its users connect.
pub struct GatewayProcess {
    pub gateway: Gateway,
    /// The embedded MQTT endpoint's port, or the broker's for `GatewayId::Broker`.
    pub mqtt_port: u16,
    pub http_port: u16,
}

#[derive(Default)]
pub struct Servers {
    pub mosquitto: Option<(Server, u16)>,
    pub broker: Option<(Server, u16)>,
    pub relay: Option<(Server, u16)>,
    pub prosody: Option<Prosody>,
    pub ejabberd: Option<Ejabberd>,
    pub gateways: HashMap<GatewayId, GatewayProcess>,
}

impl Servers {
    /// Starts every server in `wanted` and those they need. `accounts`: the XMPP accounts to
    /// register; `broker_users`: the gateway users who log in to the broker.
    pub fn start(
        cli: &Cli,
        gateway_binary: &Path,
        dir: &Path,
        wanted: &HashSet<ServerId>,
        accounts: &[String],
        broker_users: &[String],
    ) -> anyhow::Result<Self> {
        let mut wanted = wanted.clone();
        for id in wanted.clone() {
            wanted.extend(id.needs());
        }
        let mut ports = Ports::default();
        let mut servers = Self::default();
        let subdir = |name: &str| -> anyhow::Result<std::path::PathBuf> {
            let path = dir.join(name);
            std::fs::create_dir_all(&path)?;
            Ok(path)
        };
        if wanted.contains(&ServerId::Mosquitto) {
            let port = ports.free()?;
            eprintln!("starting mosquitto on 127.0.0.1:{port}");
            servers.mosquitto = Some((servers::start_mosquitto(&cli.mosquitto, &subdir("mosquitto")?, port)?, port));
        }
        if wanted.contains(&ServerId::Broker) {
            let port = ports.free()?;
            eprintln!("starting mosquitto as the gateway's broker on 127.0.0.1:{port}");
            let users: Vec<(String, String)> = std::iter::once(("gateway".to_owned(), BROKER_GATEWAY_PASSWORD.to_owned()))
                .chain(broker_users.iter().map(|user| (user.clone(), xmpp_password(user))))
                .collect();
            servers.broker = Some((servers::start_broker(&cli.mosquitto, &subdir("broker")?, port, &users)?, port));
        }
        if wanted.contains(&ServerId::Relay) {
            let port = ports.free()?;
            eprintln!("starting the WebSocket relay on 127.0.0.1:{port}");
            servers.relay = Some((relay::start(&subdir("relay")?, port)?, port));
        }
        if wanted.contains(&ServerId::Xmpp(XmppServer::Prosody)) {
            let (c2s, component) = (ports.free()?, ports.free()?);
            eprintln!("starting prosody (c2s 127.0.0.1:{c2s}, component 127.0.0.1:{component})");
            servers.prosody = Some(servers::start_prosody(&cli.prosody, &subdir("prosody")?, c2s, component, accounts)?);
        }
        if wanted.contains(&ServerId::Xmpp(XmppServer::Ejabberd)) {
            let ports = ejabberd::Ports {
                c2s: ports.free()?,
                component: ports.free()?,
                bare_component: ports.free()?,
                dist: ports.free()?,
            };
            eprintln!(
                "starting ejabberd (c2s 127.0.0.1:{}, components 127.0.0.1:{} and :{})",
                ports.c2s, ports.component, ports.bare_component
            );
            let dir = subdir("ejabberd")?;
            servers.ejabberd = Some(ejabberd::start(&cli.ejabberdctl, &dir, &ports, accounts)?);
        }
        for id in [GatewayId::Prosody, GatewayId::Ejabberd, GatewayId::Broker] {
            if !wanted.contains(&ServerId::Gateway(id)) {
                continue;
            }
            let http_port = ports.free()?;
            let (mqtt, mqtt_port, component_port, name) = match id {
                GatewayId::Prosody | GatewayId::Ejabberd => {
                    let mqtt_port = ports.free()?;
                    let component_port = if id == GatewayId::Prosody {
                        servers.prosody.as_ref().map(|prosody| prosody.component_port)
                    } else {
                        servers.ejabberd.as_ref().map(|ejabberd| ejabberd.component_port)
                    };
                    let name = if id == GatewayId::Prosody { "gateway" } else { "gateway-ejabberd" };
                    (MqttSide::Embedded(mqtt_port), mqtt_port, component_port, name)
                }
                GatewayId::Broker => {
                    let port = servers.broker.as_ref().map(|(_, port)| *port).context("no broker")?;
                    (MqttSide::Broker { port, password: BROKER_GATEWAY_PASSWORD.into() }, port, None, "gateway-broker")
                }
            };
            eprintln!("starting {} as {name} (mqtt 127.0.0.1:{mqtt_port}, http 127.0.0.1:{http_port})", gateway_binary.display());
            let gateway = servers::start_gateway(gateway_binary, &subdir(name)?, http_port, &mqtt, component_port)?;
            servers.gateways.insert(id, GatewayProcess { gateway, mqtt_port, http_port });
        }
        Ok(servers)
    }

    pub fn server(&self, id: ServerId) -> Option<&Server> {
        match id {
            ServerId::Mosquitto => self.mosquitto.as_ref().map(|(server, _)| server),
            ServerId::Broker => self.broker.as_ref().map(|(server, _)| server),
            ServerId::Relay => self.relay.as_ref().map(|(server, _)| server),
            ServerId::Xmpp(XmppServer::Prosody) => self.prosody.as_ref().map(|prosody| &prosody.server),
            ServerId::Xmpp(XmppServer::Ejabberd) => self.ejabberd.as_ref().map(|ejabberd| &ejabberd.server),
            ServerId::Gateway(id) => self.gateways.get(&id).map(|process| &process.gateway.server),
        }
    }

    /// The c2s port of an XMPP server.
    pub fn c2s_port(&self, server: XmppServer) -> anyhow::Result<u16> {
        match server {
            XmppServer::Prosody => self.prosody.as_ref().map(|prosody| prosody.c2s_port),
            XmppServer::Ejabberd => self.ejabberd.as_ref().map(|ejabberd| ejabberd.c2s_port),
        }
        .context("XMPP server not started")
    }

    /// Where the bare component of `component.rs` connects to an XMPP server.
    pub fn bare_component_port(&self, server: XmppServer) -> anyhow::Result<u16> {
        match server {
            XmppServer::Prosody => self.prosody.as_ref().map(|prosody| prosody.component_port),
            XmppServer::Ejabberd => self.ejabberd.as_ref().map(|ejabberd| ejabberd.bare_component_port),
        }
        .context("XMPP server not started")
    }

    pub fn gateway(&self, id: GatewayId) -> anyhow::Result<&GatewayProcess> {
        self.gateways.get(&id).with_context(|| format!("gateway {id:?} not started"))
    }

    /// The servers that are gone, with the end of their logs.
    pub fn gone(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, &Server)> = Vec::new();
        all.extend(self.mosquitto.as_ref().map(|(server, _)| ("mosquitto".to_owned(), server)));
        all.extend(self.broker.as_ref().map(|(server, _)| ("broker".to_owned(), server)));
        all.extend(self.relay.as_ref().map(|(server, _)| ("relay".to_owned(), server)));
        all.extend(self.prosody.as_ref().map(|prosody| ("prosody".to_owned(), &prosody.server)));
        all.extend(self.ejabberd.as_ref().map(|ejabberd| ("ejabberd".to_owned(), &ejabberd.server)));
        for (id, process) in &self.gateways {
            all.push((format!("gateway {id:?}"), &process.gateway.server));
        }
        all.into_iter().filter(|(_, server)| !server.alive()).map(|(name, server)| (name, server.log_tail())).collect()
    }

    /// The end of every server's log, for a failed run.
    pub fn log_tails(&self) -> Vec<(String, String)> {
        let mut tails = Vec::new();
        for (id, process) in &self.gateways {
            tails.push((format!("gateway {id:?}"), process.gateway.server.log_tail()));
        }
        tails.extend(self.prosody.as_ref().map(|prosody| ("prosody".to_owned(), prosody.server.log_tail())));
        tails.extend(self.ejabberd.as_ref().map(|ejabberd| ("ejabberd".to_owned(), ejabberd.server.log_tail())));
        tails
    }

    /// Stops everything, the gateways first (they are clients of the others). Returns the names
    /// of those that needed SIGKILL.
    pub fn stop(mut self) -> Vec<String> {
        let mut killed = Vec::new();
        for (id, mut process) in self.gateways.drain() {
            if !process.gateway.server.stop() {
                killed.push(format!("gateway {id:?}"));
            }
        }
        if let Some(prosody) = self.prosody.as_mut()
            && !prosody.server.stop()
        {
            killed.push("prosody".into());
        }
        if let Some(ejabberd) = self.ejabberd.as_mut()
            && !ejabberd.stop()
        {
            killed.push("ejabberd".into());
        }
        for (name, server) in [("mosquitto", &mut self.mosquitto), ("broker", &mut self.broker), ("relay", &mut self.relay)] {
            if let Some((server, _)) = server.as_mut()
                && !server.stop()
            {
                killed.push(name.into());
            }
        }
        killed
    }
}
