//! The command line: subcommands and what each one runs.

use crate::admin::{lookup, DeviceLookup};
use crate::config::{self, LogFormat, Settings};
use crate::decision::{Answer, Decider};
use crate::feed::FeedClock;
use crate::store::{Store, StoreError};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    Decide(ConfigArg),
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
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig(ConfigArg),
    /// Run the Secure Endpoint poller alone, or print its request budget with --plan.
    Poll(crate::poller::PollArgs),
    /// Serve a simulated Secure Endpoint v1 API (test double and demo data source).
    Simulate(crate::simulator::SimulateArgs),
    /// The whole story in one command: in-process broker, SE simulator, poller, decisions.
    Demo(crate::demo::DemoArgs),
    /// Measure decision latency and throughput through the broker against an echo floor
    /// (needs `trustgate run` with the same configuration; see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// The TOML configuration file (defaults and TRUSTGATE_* variables apply without one).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Exit codes shared by `decide` and `inspect`.
pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

/// Runs a parsed command line.
pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = match &cli.command {
        Command::Run(c) | Command::Decide(c) | Command::CheckConfig(c) => c.config.clone(),
        Command::Inspect { config, .. } => config.config.clone(),
        Command::Poll(p) => p.config.config.clone(),
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
    crate::telemetry::init_logging(format, level);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(_) => runtime
            .block_on(crate::app::run(settings))
            .map(|_| ExitCode::SUCCESS),
        Command::CheckConfig(_) => {
            print!("{}", loaded.redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Decide(_) => runtime.block_on(decide(settings)),
        Command::Inspect { id, json, .. } => runtime.block_on(inspect(settings, &id, json)),
        Command::Poll(args) => crate::poller::command::main(settings, &args, &runtime),
        Command::Simulate(args) => runtime
            .block_on(crate::simulator::run(args))
            .map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => runtime
            .block_on(crate::demo::run(args))
            .map(|_| ExitCode::SUCCESS),
        Command::Bench(args) => runtime
            .block_on(crate::bench::run_cli(settings, args))
            .map(|_| ExitCode::SUCCESS),
    }
}

/// The store, or `None` when a running instance holds it (then ask it over HTTP).
fn open_store(settings: &Settings) -> anyhow::Result<Option<Store>> {
    match Store::open(&settings.store.path, settings.store.cache_bytes) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn admin_url(settings: &Settings, path: &str) -> String {
    format!("http://{}{}", settings.admin.listen, path)
}

async fn decide(settings: Settings) -> anyhow::Result<ExitCode> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the request from stdin")?;
    let response = match open_store(&settings)? {
        Some(store) => {
            let feed = FeedClock::starting_at(store.feeds()?.values().max().copied());
            let decider = Decider::new(
                Arc::new(settings.policies.clone()),
                store,
                settings.fold.grace_millis(),
                feed,
            );
            match decider.decide(&body) {
                Answer::Reply(resp) => serde_json::to_value(resp)?,
                Answer::Unanswerable(error) => {
                    eprintln!("trustgate: invalid request: {error}");
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
            }
        }
        None => {
            let resp = reqwest::Client::new()
                .post(admin_url(&settings, "/v1/decide"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .context("the store is in use; asking the running instance's admin listener")?;
            let status = resp.status();
            let value: serde_json::Value = resp.json().await?;
            if status.is_client_error() {
                eprintln!(
                    "trustgate: invalid request: {}",
                    value["error"].as_str().unwrap_or("unknown")
                );
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
            anyhow::ensure!(
                status.is_success(),
                "admin listener answered {status}: {value}"
            );
            value
        }
    };
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(ExitCode::SUCCESS)
}

async fn inspect(settings: Settings, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    if id.trim().is_empty() {
        eprintln!("trustgate: give a connector GUID, MAC address or hostname");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let found: Option<DeviceLookup> = match open_store(&settings)? {
        Some(store) => lookup(&store, id, settings.fold.grace_millis())?,
        None => {
            let resp = reqwest::Client::new()
                .get(admin_url(
                    &settings,
                    &format!("/v1/devices/{}", urlencode(id)),
                ))
                .send()
                .await
                .context("the store is in use; asking the running instance's admin listener")?;
            match resp.status() {
                reqwest::StatusCode::NOT_FOUND => None,
                s if s.is_success() => Some(resp.json().await?),
                s => anyhow::bail!("admin listener answered {s}"),
            }
        }
    };
    let Some(found) = found else {
        eprintln!("trustgate: no device matches {id:?}");
        return Ok(ExitCode::from(EXIT_NOT_FOUND));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for d in &found.devices {
            println!(
                "{}  {}  os={}  compromised={}  open_events={}  macs={}  state_as_of={}",
                d.connector_guid,
                d.hostname.as_deref().unwrap_or("-"),
                d.operating_system.as_deref().unwrap_or("-"),
                d.compromised,
                d.open_events.len(),
                d.mac_addresses.join(","),
                d.state_as_of.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
