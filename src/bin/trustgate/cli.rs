//! The command line: subcommands, and which module runs each.

use crate::args::{ConfigArg, EXIT_BAD_INPUT};
use clap::{Parser, Subcommand, ValueEnum};
use std::future::Future;
use std::process::ExitCode;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use trustgate::config::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "trustgate",
    version,
    about = "Trusted-endpoint decisions from Cisco Secure Endpoint state"
)]
pub struct Cli {
    /// Log format (overrides `[log] format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run ingest, the decision worker and the admin listener.
    Run(ConfigArg),
    /// Read one decision request (JSON) on stdin and print the response.
    Decide(crate::decide::DecideArgs),
    /// Print a device's state, found by connector GUID, MAC or hostname.
    Inspect {
        #[command(flatten)]
        config: ConfigArg,
        /// A connector GUID, MAC address or hostname.
        id: String,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print a device's records in time order, with each compromise and resolution and what a
    /// trusted device would have been answered after each.
    History(crate::history::HistoryArgs),
    /// Print the decision audit (every decision, from the audit topic), filtered.
    Audit(crate::audit::AuditArgs),
    /// Replay the audited requests of a period against a candidate policy set and show which
    /// decisions would change.
    WhatIf(crate::whatif::WhatIfArgs),
    /// Rebuild the device state from the beginning of the events topic into a fresh store and
    /// swap it in (no instance may hold the store); also repairs a damaged store.
    Replay(crate::replay::ReplayArgs),
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig(ConfigArg),
    /// Run the Secure Endpoint poller alone, or print its request budget with --plan.
    Poll(crate::poll::PollArgs),
    /// The Secure Endpoint Event Stream (AMQP): create, list, delete streams; consume one alone.
    Stream(crate::stream::StreamArgs),
    /// Serve a simulated Secure Endpoint v1 API (test double and demo data source).
    Simulate(se_simulator::SimulateArgs),
    /// The whole story in one command: in-process broker, SE simulator, poller, decisions.
    Demo(crate::demo::DemoArgs),
    /// Measure decision latency and throughput through the broker against an echo floor
    /// (needs `trustgate run` with the same configuration; see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = match &cli.command {
        Command::Run(c) | Command::CheckConfig(c) => c.config.clone(),
        Command::Decide(d) => d.config.config.clone(),
        Command::History(h) => h.config.config.clone(),
        Command::Inspect { config, .. } => config.config.clone(),
        Command::Poll(p) => p.config.config.clone(),
        Command::Audit(a) => a.config.config.clone(),
        Command::WhatIf(w) => w.config.config.clone(),
        Command::Replay(r) => r.config.config.clone(),
        Command::Stream(s) => s.config().config.clone(),
        Command::Simulate(_) | Command::Demo(_) => None,
        Command::Bench(args) => args.config.config.clone(),
    };
    let loaded = match config::load(config_path.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("trustgate: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let settings = loaded.settings.clone();
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => settings.log.format,
    };
    // The demo's terminal view is its output; only problems are logged beside it.
    let level = match cli.command {
        Command::Demo(_) => "warn",
        _ => settings.log.level.as_str(),
    };
    trustgate::telemetry::logging::init_logging(format, level);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(_) => {
            until_signalled(&runtime, |shutdown| trustgate::app::run(settings, shutdown))
                .map(|_| ExitCode::SUCCESS)
        }
        Command::CheckConfig(_) => {
            print!("{}", loaded.redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Decide(args) => runtime.block_on(crate::decide::run(settings, args)),
        Command::History(args) => runtime.block_on(crate::history::run(settings, args)),
        Command::Inspect { id, json, .. } => {
            runtime.block_on(crate::inspect::run(settings, &id, json))
        }
        Command::Audit(args) => runtime.block_on(crate::audit::run(settings, args)),
        Command::WhatIf(args) => runtime.block_on(crate::whatif::run(settings, args)),
        Command::Replay(args) => until_signalled(&runtime, |interrupt| {
            crate::replay::run(settings, args, interrupt)
        }),
        Command::Poll(args) if args.plan => Ok(crate::poll::plan(&settings, &args)),
        Command::Poll(_) => {
            until_signalled(&runtime, |shutdown| crate::poll::run(settings, shutdown))
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Stream(args) => match args.command {
            crate::stream::StreamCommand::Consume(_) => until_signalled(&runtime, |shutdown| {
                crate::stream::consume(settings, shutdown)
            })
            .map(|_| ExitCode::SUCCESS),
            command => Ok(runtime.block_on(crate::stream::manage(settings, command))),
        },
        Command::Simulate(args) => {
            until_signalled(&runtime, |shutdown| se_simulator::run(args, shutdown))
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            until_signalled(&runtime, |shutdown| crate::demo::run(args, shutdown))
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Bench(args) => runtime
            .block_on(crate::bench::run(settings, args))
            .map(|_| ExitCode::SUCCESS),
    }
}

/// Runs a long-running command on `runtime` until it returns. The command gets the process's
/// shutdown token; SIGTERM/SIGINT cancel it (the one signal handler, installed here).
fn until_signalled<F: Future>(
    runtime: &Runtime,
    command: impl FnOnce(CancellationToken) -> F,
) -> F::Output {
    let shutdown = CancellationToken::new();
    runtime.block_on(async {
        trustgate::shutdown::cancel_on_signal(shutdown.clone());
        command(shutdown).await
    })
}
