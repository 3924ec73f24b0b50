//! `switchboard run | check-config | token` (CONTRACT §6).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_config::Config;
use switchboard_gateway::UserId;
use switchboard_gateway::auth::Authenticator;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "An instant-messaging gateway between XMPP, MQTT, WebSocket and push")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (with no file: embedded broker and store, HTTP on 127.0.0.1:8080).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print it, secrets masked.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a JWT for a user (for development).
    Token {
        user: String,
        /// Lifetime: 30s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Token { user, ttl, config } => token(&user, &ttl, config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(switchboard_config::load(path.as_deref())?)
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    print!("{}", toml::to_string(&config).context("cannot print the configuration")?);
    Ok(())
}

fn token(user: &str, ttl: &str, path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    let user = UserId::parse(user)?;
    let ttl: switchboard_config::Duration = ttl.parse().map_err(|e: String| anyhow::anyhow!("--ttl: {e}"))?;
    let auth = Authenticator::from_config(&config.auth, &config.gateway.data_dir)?;
    println!("{}", auth.mint(&user, ttl.get())?);
    Ok(())
}

fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Logs go to stderr: stdout is for what a command prints (check-config, token).
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async move {
        let running = switchboard::start(config, Some(metrics)).await?;
        tokio::select! {
            signal = shutdown_signal() => {
                tracing::info!(signal, "shutting down");
            }
            () = running.stopping() => {}
        }
        let clean = running.shutdown().await;
        tracing::info!(clean, "stopped");
        Ok(())
    })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers only Ctrl-C through tokio's portable path remains.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
