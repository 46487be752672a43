//! `trustgate demo`: the whole story in one command, with nothing to install.
//!
//! Owns the demo's wiring only; every part it runs is the production code path:
//! an in-process Kafka-compatible broker (librdkafka's mock cluster, [`cluster`]), the SE API
//! simulator with a scenario that compromises and resolves devices, `trustgate run`'s components
//! ([`trustgate::app::start`]: poller, ingest, decision worker, admin listener), an auth-traffic
//! generator that asks for decisions over Kafka ([`traffic`]), and a live terminal view
//! ([`view`]) of devices, compromises, decisions per second by reason, latency and the story as
//! it happens. Its intervals and `resolution_grace` are short so that a compromise and its
//! resolution both happen within a minute, within the simulator's rate limit.

mod cluster;
mod traffic;
mod view;

use anyhow::Context;
use se_simulator::{self as simulator, Credentials, ScenarioConfig, SimConfig, Simulator};
use secrecy::SecretString;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trustgate::config::{self, Settings};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Run this many seconds, then print a summary and exit 0 (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Simulated computers.
    #[arg(long, default_value_t = 24)]
    pub devices: usize,
    /// Scenario seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Decision requests per second from the auth-traffic generator.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
}

const CLIENT_ID: &str = "demo-client";
const API_KEY: &str = "demo-key";

/// Runs the demo until `shutdown` (or `--duration`); returns the summary line's counts.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<view::Summary> {
    let dir = tempfile::tempdir().context("creating the demo's working directory")?;
    let cluster = cluster::start().context("starting the in-process Kafka cluster")?;

    let sim = Simulator::new(SimConfig {
        scenario: ScenarioConfig {
            devices: args.devices,
            seed: args.seed,
            initially_compromised: 0.15,
            compromise_every: Some(chrono::Duration::seconds(12)),
            resolve_after: Some(chrono::Duration::seconds(25)),
            ..ScenarioConfig::default()
        },
        credentials: Some(Credentials {
            client_id: CLIENT_ID.into(),
            api_key: SecretString::from(API_KEY),
        }),
        hourly_limit: 20_000,
    });
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = sim_listener.local_addr()?;
    let sim_task = tokio::spawn(simulator::serve(
        sim_listener,
        sim.clone(),
        shutdown.clone(),
    ));

    let settings = demo_settings(&cluster.bootstrap, sim_addr, dir.path())?;
    cluster.create_topics(&settings.topics)?;
    let running = trustgate::app::start(settings.clone(), shutdown.clone()).await?;
    let view = view::View::new(running.store.clone(), settings.fold.grace_millis());
    let traffic = traffic::Traffic::start(
        &settings,
        sim_addr,
        CLIENT_ID,
        API_KEY,
        args.rate,
        view.clone(),
        shutdown.clone(),
    )
    .await
    .context("starting the auth-traffic generator")?;
    view.say(format!(
        "trustgate demo: {} simulated devices, SE API simulator on {sim_addr}, admin on http://{}",
        args.devices, running.admin_addr
    ));

    let ticker = tokio::spawn(view.clone().run(shutdown.clone()));
    match args.duration {
        Some(secs) => tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
            _ = shutdown.cancelled() => {}
        },
        None => shutdown.cancelled().await,
    }
    shutdown.cancel();
    traffic.stop().await;
    let _ = ticker.await;
    running.join(shutdown.clone()).await?;
    let _ = sim_task.await;
    let summary = view.summary();
    println!("{}", summary.line());
    println!("{}", summary.by_reason());
    Ok(summary)
}

/// Embedded defaults with the demo's short intervals.
fn demo_settings(
    brokers: &str,
    sim: std::net::SocketAddr,
    dir: &std::path::Path,
) -> anyhow::Result<Settings> {
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
[topics]
create = false
[store]
path = "{store}"
cache_bytes = 33554432
[admin]
listen = "127.0.0.1:0"
[compromise]
resolution_grace = "3s"
[policy.global]
stale_after = "30s"
[poller]
enabled = true
base_url = "http://{sim}"
client_id = "{CLIENT_ID}"
api_key = "{API_KEY}"
events_interval = "2s"
events_overlap = "1m"
inventory_interval = "5s"
initial_lookback = "24h"
requests_per_hour = 7200
burst = 10
reserve = 50
state_path = "{poller}"
"#,
        store = dir.join("store").display(),
        poller = dir.join("poller").display(),
    );
    Ok(config::load_str(&text, "demo", std::iter::empty())?.settings)
}
