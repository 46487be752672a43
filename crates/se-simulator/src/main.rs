//! `se-simulator`: serves a simulated Secure Endpoint v1 API on a loopback address until SIGTERM
//! or SIGINT, then exits 0. The same command is `trustgate simulate`.
//!
//! Owns what a process needs and the library does not: the log set-up, the signal handlers and
//! the exit code. The flags and the serving are the library's ([`SimulateArgs`],
//! [`se_simulator::run`]); its "Simulated SE tenant ready." line carries the bound `addr`, which
//! is how a caller that asked for port 0 learns the port.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use se_simulator::SimulateArgs;
use std::io::IsTerminal;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "se-simulator",
    version,
    about = "A simulated Cisco Secure Endpoint v1 API"
)]
struct Cli {
    /// Log format on stderr: text, or JSON with one object per line and the fields flattened
    /// (as `trustgate --log-format json` writes). `RUST_LOG` sets the level (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    args: SimulateArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match serve(cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("se-simulator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Serves until a signal; `Ok` after a clean shutdown, whichever signal asked for it.
fn serve(args: SimulateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone())?;
        se_simulator::run(args, shutdown).await
    })
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT. Both handlers are installed before this
/// returns, that is before the address is logged: a signal sent once the address is known
/// always shuts down cleanly instead of killing the process.
fn cancel_on_signal(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "Shutting down.");
        shutdown.cancel();
    });
    Ok(())
}
