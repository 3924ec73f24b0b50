//! The embedded MQTT endpoint's packet handling, through a whole gateway running in this process
//! and real TCP connections on loopback.
//!
//! Input: the first byte chooses the state the bytes that follow arrive in:
//! - bit 0 set: after a valid CONNECT for `alice` (a JWT minted at start) and its CONNACK, so
//!   the authenticated packet handling sees them; clear: as the very first bytes of a connection;
//! - bit 1 set: that CONNECT asks for a persistent session (clean session 0);
//! - bit 2 set: the connection stays open until the endpoint has gone quiet before the fuzzer's
//!   side is closed, so answers that take the router's time are written too.
//!
//! After each input a good client must still connect and get a PINGRESP: a connection that
//! misbehaves may be closed, but must never take the endpoint down.

#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttc::{Connect, Packet};

/// HS256 secret of the fuzzing gateway; fuzz/corpus/mqtt_packets holds CONNECTs with long-lived
/// tokens signed with it, so that the fuzzer can also vary an accepted CONNECT.
const JWT_SECRET: &str = "switchboard-fuzzing-secret";

/// How long the endpoint has to close a connection whose client has finished sending.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Quiet time after which the endpoint is taken to have answered everything it will.
const QUIET: Duration = Duration::from_millis(5);
/// How long a good client may wait for CONNACK and PINGRESP.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

struct Gateway {
    mqtt: SocketAddr,
    alice_token: String,
    probe_token: String,
}

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(start)
}

/// Starts the gateway on a runtime of its own thread, which runs for the whole fuzzing process.
fn start() -> Gateway {
    // A panic in a connection task ends only that task; the fuzzer must hear of it.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        std::process::abort();
    }));
    let data = tempfile::tempdir().expect("a temporary data directory");
    let toml = format!(
        "[gateway]\ndata_dir = \"{}\"\n[auth]\njwt_secret = \"{JWT_SECRET}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nmessages_per_second = 1000000\nsessions_per_user = 1000000\nconnections_per_ip = 0\noffline_max = 1000000\n",
        data.path().display()
    );
    let config = switchboard_config::load_from_str(&toml).expect("the fuzzing configuration");
    let auth = switchboard_gateway::auth::Authenticator::from_config(&config.auth, data.path()).expect("authenticator");
    let token = |user: &str| {
        let user = switchboard_gateway::UserId::parse(user).expect("valid user");
        auth.mint(&user, Duration::from_secs(30 * 86_400)).expect("a token")
    };
    let (alice_token, probe_token) = (token("alice"), token("probe"));
    let (started, address) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || {
            let _data = data;
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async move {
                let running = switchboard::start(config, None).await.expect("the gateway starts");
                started.send(running.addresses["mqtt"]).expect("the fuzzer waits");
                running.stopping().await;
                panic!("the gateway stopped by itself");
            });
        })
        .expect("the gateway thread");
    let mqtt = address.recv().expect("the gateway's MQTT address");
    Gateway { mqtt, alice_token, probe_token }
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    packet.write(&mut buffer, usize::MAX).expect("an encodable packet");
    buffer.to_vec()
}

fn connect_packet(client_id: &str, user: &str, token: &str, clean: bool) -> Vec<u8> {
    let mut connect = Connect::new(client_id);
    connect.set_login(user, token);
    connect.clean_session = clean;
    connect.keep_alive = 60;
    encode(&Packet::Connect(connect))
}

/// Reads exactly `buffer.len()` bytes before `deadline`; `false` on end of stream or time out.
fn read_exact_by(stream: &mut TcpStream, buffer: &mut [u8], deadline: Instant) -> bool {
    let mut filled = 0;
    while filled < buffer.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buffer[filled..]) {
            Ok(0) => return false,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads and drops what the endpoint sends until it closes, goes quiet for `quiet` (when given),
/// or `limit` passes. Returns whether it closed.
fn drain(stream: &mut TcpStream, quiet: Option<Duration>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = quiet.map_or(left, |q| q.min(left));
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            // Reset: closed, if not politely.
            Err(_) => return true,
        }
    }
}

fn open(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("the endpoint accepts connections");
    let _ = stream.set_nodelay(true);
    stream
}

fn run_input(gateway: &Gateway, data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let (authenticated, persistent, linger) = (mode & 1 != 0, mode & 2 != 0, mode & 4 != 0);
    let mut stream = open(gateway.mqtt);
    if authenticated {
        let connect = connect_packet("fuzz", "alice", &gateway.alice_token, !persistent);
        stream.write_all(&connect).expect("CONNECT written");
        let mut connack = [0u8; 4];
        assert!(read_exact_by(&mut stream, &mut connack, Instant::now() + ANSWER_WAIT), "no CONNACK for a valid CONNECT");
        assert_eq!((connack[0], connack[1], connack[3]), (0x20, 2, 0), "a valid CONNECT is accepted: {connack:?}");
    }
    // The endpoint may close at any point of the input: later writes then fail, which is fine.
    let _ = stream.write_all(bytes);
    if linger {
        drain(&mut stream, Some(QUIET), Duration::from_millis(500));
    }
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream, None, CLOSE_WAIT);
}

/// A good client still gets in and is answered.
fn check_alive(gateway: &Gateway) {
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let client_id = format!("probe-{}", PROBES.fetch_add(1, Ordering::Relaxed));
    let mut stream = open(gateway.mqtt);
    let deadline = Instant::now() + ANSWER_WAIT;
    stream.write_all(&connect_packet(&client_id, "probe", &gateway.probe_token, true)).expect("CONNECT written");
    let mut connack = [0u8; 4];
    assert!(read_exact_by(&mut stream, &mut connack, deadline), "the endpoint no longer answers a good CONNECT");
    assert_eq!((connack[0], connack[1], connack[3]), (0x20, 2, 0), "a good CONNECT is refused: {connack:?}");
    stream.write_all(&encode(&Packet::PingReq)).expect("PINGREQ written");
    let mut pingresp = [0u8; 2];
    assert!(read_exact_by(&mut stream, &mut pingresp, deadline), "no PINGRESP");
    assert_eq!(pingresp, [0xd0, 0]);
    let _ = stream.write_all(&encode(&Packet::Disconnect));
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream, None, CLOSE_WAIT);
}

fuzz_target!(|data: &[u8]| {
    let gateway = gateway();
    run_input(gateway, data);
    check_alive(gateway);
});
