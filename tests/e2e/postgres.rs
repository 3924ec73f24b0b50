//! A real PostgreSQL (Debian's package) private to this test binary: `initdb` into a temporary
//! directory, `postgres` on a free loopback port with its socket in that directory and fsync on,
//! run as the `postgres` user when the tests run as root (PostgreSQL refuses root). One server is
//! started on first use and shared by every test of the process; each test gets a new, empty
//! database from [`database_url`].
//!
//! A static is never dropped, so the server cannot be stopped from Rust. A small shell watchdog
//! runs it instead, `initdb` included, and owns the directory: its standard input is a pipe only
//! this process holds, and never writes to. End of file on it, which comes when this process exits
//! however it exits, stops the server (immediate shutdown) and removes the directory. The server
//! runs under `setpriv --pdeathsig KILL`, so it dies with the watchdog should that be killed.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection;
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::mosquitto::free_port;

/// The bootstrap superuser `initdb` creates; every connection uses it (trust authentication).
const USER: &str = "postgres";
/// How long `initdb` and a fresh server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(60);

/// `$1` is the directory, removed at the end, `$2` PostgreSQL's `bin`, `$3` the port, `$4` the
/// superuser; the rest is the prefix that runs a command as the server's user.
const WATCHDOG: &str = r#"
dir=$1 bin=$2 port=$3 user=$4; shift 4
# A signal to the whole process group (^C) stops initdb or the server on its own; this script goes
# on, to clean up.
trap '' HUP INT QUIT TERM
exec 3<&0 </dev/null
{
  "$@" "$bin/initdb" --pgdata="$dir/data" --username="$user" --auth=trust --encoding=UTF8 --no-locale &&
    [ ! -e "$dir/stop" ] &&
    exec "$@" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
      -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=300
} 3<&- &
server=$!
# Until the server has its signal handlers (after initdb), QUIT is ignored: repeat it.
{ read -r line <&3; : >"$dir/stop"; while kill -QUIT "$server"; do sleep 0.2; done; } 2>/dev/null &
watchdog=$!
wait "$server"
echo "$?" >"$dir/exited"
# Had the server ended on its own, its pid must not be signalled once it is recycled.
kill -KILL "$watchdog" 2>/dev/null
read -r line <&3
rm -rf "$dir"
"#;

struct Server {
    port: u16,
    dir: PathBuf,
    /// The watchdog; its stdin, the pipe, stays open as long as this process lives.
    watchdog: Mutex<Child>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

/// A new, empty database on this test binary's PostgreSQL (started on first use), as
/// `postgres://<user>@127.0.0.1:<port>/<database>`.
pub async fn database_url() -> String {
    let server = SERVER.get_or_init(Server::start).await;
    let name = format!("t_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&server.url("postgres")).await.expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("CREATE DATABASE {name}: {error}"));
    let _ = admin.close().await;
    server.url(&name)
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    async fn start() -> Self {
        let bin = binaries();
        let as_root = is_root().await;
        let dir = tempfile::Builder::new().prefix("switchboard-pg-").tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log file");
        if as_root {
            let status = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status().await.expect("chown");
            assert!(status.success(), "chown the PostgreSQL directory to the postgres user");
        }
        // From here the watchdog removes the directory.
        let dir = dir.keep();
        let port = free_port();
        // Spawned with std, not tokio: it outlives the runtime of the test that started it.
        let watchdog = std::process::Command::new("sh")
            .args(["-c", WATCHDOG, "postgres-watchdog"])
            .arg(&dir)
            .arg(&bin)
            .arg(port.to_string())
            .arg(USER)
            .args(as_server_user(as_root))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("sh starts");
        let server = Self { port, dir, watchdog: Mutex::new(watchdog) };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + STARTUP;
        let url = self.url("postgres");
        loop {
            match sqlx::PgConnection::connect(&url).await {
                Ok(connection) => {
                    let _ = connection.close().await;
                    return;
                }
                Err(error) => {
                    let exited = self.dir.join("exited").exists()
                        || self.watchdog.lock().map(|mut w| matches!(w.try_wait(), Ok(Some(_)))).unwrap_or(true);
                    if exited || tokio::time::Instant::now() >= deadline {
                        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                        panic!(
                            "PostgreSQL in {} {} ({error}): {log}",
                            self.dir.display(),
                            if exited { "exited" } else { "did not accept connections in time" }
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What runs a command as the `postgres` user when this process is root, and either way has it
/// killed if its parent dies.
fn as_server_user(as_root: bool) -> Vec<&'static str> {
    let mut prefix = vec!["setpriv"];
    if as_root {
        prefix.extend(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    }
    prefix.extend(["--pdeathsig", "KILL"]);
    prefix
}

async fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().await.expect("id runs");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// `bin` of the newest PostgreSQL under /usr/lib/postgresql.
fn binaries() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under /usr/lib/postgresql/<version>/bin (initdb, postgres): \
             run ./scripts/test, which installs Debian's postgresql package"
        ),
    }
}
