//! The simulator's command line (`se-simulator`, and `trustgate simulate`, which embeds
//! [`SimulateArgs`]): serve a tenant on a loopback address until the caller's shutdown token.

use crate::faults::FaultSpec;
use crate::{Credentials, OsMix, ScenarioConfig, SimConfig, Simulator};
use anyhow::Context;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The flags of `se-simulator` and of `trustgate simulate`, which flattens them into its own
/// command line. Only clap builds one: the fields are private, and [`run`] checks what clap
/// cannot (shares, loopback, fault JSON).
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Address to listen on; loopback only (127.0.0.1:PORT, port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of simulated computers.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Seed of the scenario: the same seed gives the same tenant and the same history.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Accepted client ID (HTTP Basic user). Without it, any request is accepted.
    #[arg(long, requires = "api_key")]
    client_id: Option<String>,
    /// Accepted API key (HTTP Basic password).
    #[arg(long, env = "TRUSTGATE_SIM_API_KEY", hide_env_values = true, requires = "client_id",
          value_parser = parse_secret)]
    api_key: Option<SecretString>,
    /// Requests per hour before 429.
    #[arg(long, default_value_t = 3000)]
    hourly_limit: u32,
    /// Share of Windows computers (0..1).
    #[arg(long, default_value_t = 0.6)]
    windows_share: f64,
    /// Share of macOS computers (0..1).
    #[arg(long, default_value_t = 0.25)]
    macos_share: f64,
    /// Share of iOS computers (0..1); Linux gets the rest.
    #[arg(long, default_value_t = 0.1)]
    ios_share: f64,
    /// Share of computers compromised somewhere in the generated history.
    #[arg(long, default_value_t = 0.1)]
    initially_compromised: f64,
    /// How far back the generated history reaches.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    history: Duration,
    /// Compromise a random clean computer this often ("0s": never).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    compromise_every: Duration,
    /// Resolve each compromise this long after it ("0s": never).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    resolve_after: Duration,
    /// Log an operational event (policy update, scan, account event) this often ("0s": never).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    noise_every: Duration,
    /// Queue a fault at start, as JSON (repeatable), e.g. '{"kind":"status","status":503,"count":3}'.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// A RabbitMQ (`amqp://user:password@host:port`) that event streams push to: every event
    /// created after a stream (`POST /v1/event_streams`) goes to that stream's queue.
    #[arg(long, env = "TRUSTGATE_SIM_AMQP_URL", hide_env_values = true, value_parser = parse_secret)]
    amqp_url: Option<SecretString>,
    /// Allow a non-loopback `--listen` address, for a container network (compose) only: the
    /// simulator accepts test credentials and must never face a real network.
    #[arg(long)]
    allow_non_loopback: bool,
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// `0s` switches a schedule off.
fn every(d: Duration) -> anyhow::Result<Option<chrono::Duration>> {
    if d.is_zero() {
        return Ok(None);
    }
    Ok(Some(
        chrono::Duration::from_std(d).context("duration too large")?,
    ))
}

fn share(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "--{name} must be within 0..1, got {v}"
    );
    Ok(v)
}

impl SimulateArgs {
    /// The simulator configuration; links inside records point at `link_base`.
    fn config(&self, link_base: String) -> anyhow::Result<SimConfig> {
        let os_mix = OsMix {
            windows: share("windows-share", self.windows_share)?,
            macos: share("macos-share", self.macos_share)?,
            ios: share("ios-share", self.ios_share)?,
        };
        anyhow::ensure!(
            os_mix.windows + os_mix.macos + os_mix.ios <= 1.0 + 1e-9,
            "--windows-share, --macos-share and --ios-share add up to more than 1"
        );
        let credentials = match (&self.client_id, &self.api_key) {
            (Some(client_id), Some(api_key)) => Some(Credentials {
                client_id: client_id.clone(),
                api_key: api_key.clone(),
            }),
            _ => None,
        };
        Ok(SimConfig {
            scenario: ScenarioConfig {
                devices: self.devices,
                seed: self.seed,
                os_mix,
                initially_compromised: share("initially-compromised", self.initially_compromised)?,
                history: every(self.history)?.unwrap_or_else(|| chrono::Duration::seconds(1)),
                compromise_every: every(self.compromise_every)?,
                resolve_after: every(self.resolve_after)?,
                noise_every: every(self.noise_every)?,
                link_base,
            },
            credentials,
            hourly_limit: self.hourly_limit,
        })
    }

    fn fault_specs(&self) -> anyhow::Result<Vec<FaultSpec>> {
        self.faults
            .iter()
            .map(|f| serde_json::from_str(f).with_context(|| format!("--fault {f}")))
            .collect()
    }
}

/// Serves the simulator described by `args` until `shutdown` is cancelled (the caller owns the
/// signals).
pub async fn run(args: SimulateArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.listen.ip().is_loopback() || args.allow_non_loopback,
        "--listen must be a loopback address (the simulator accepts test credentials), got {}; \
         --allow-non-loopback permits it inside a container network",
        args.listen
    );

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let sim = Simulator::new(args.config(format!("http://{addr}"))?);
    for spec in args.fault_specs()? {
        sim.inject_fault(spec)?;
    }
    let stats = sim.stats();
    tracing::info!(
        %addr,
        devices = stats.computers,
        events = stats.events,
        compromised = stats.compromised,
        seed = args.seed,
        client_id = args.client_id.as_deref().unwrap_or("(any)"),
        hourly_limit = args.hourly_limit,
        "Simulated SE tenant ready."
    );
    if args.client_id.is_none() {
        tracing::warn!("No --client-id/--api-key: every request is accepted.");
    }
    let pusher = match &args.amqp_url {
        Some(url) => {
            use secrecy::ExposeSecret;
            Some(sim.push_streams_to(url.expose_secret(), shutdown.clone())?)
        }
        None => None,
    };
    let served = crate::serve(listener, sim, shutdown).await;
    if let Some(pusher) = pusher {
        let _ = pusher.await;
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        let argv = ["se-simulator"].iter().chain(args);
        Ok(Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn flags_map_onto_the_scenario() {
        let args = parse(&[
            "--listen=127.0.0.1:0",
            "--devices=7",
            "--seed=9",
            "--windows-share=0.5",
            "--macos-share=0.5",
            "--ios-share=0",
            "--compromise-every=30s",
            "--resolve-after=0s",
            "--hourly-limit=10",
        ])
        .unwrap();
        let config = args.config("http://x".into()).unwrap();
        let s = &config.scenario;
        assert_eq!((s.devices, s.seed, config.hourly_limit), (7, 9, 10));
        assert_eq!(
            s.os_mix,
            OsMix {
                windows: 0.5,
                macos: 0.5,
                ios: 0.0
            }
        );
        assert_eq!(s.compromise_every, Some(chrono::Duration::seconds(30)));
        assert_eq!(s.resolve_after, None, "0s switches resolution off");
        assert!(config.credentials.is_none());
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let args = parse(&["--client-id", "cid", "--api-key", "SENTINEL-KEY-42"]).unwrap();
        let config = args.config("http://x".into()).unwrap();
        assert_eq!(config.credentials.as_ref().unwrap().client_id, "cid");
        for text in [format!("{args:?}"), format!("{config:?}")] {
            assert!(!text.contains("SENTINEL-KEY-42"), "{text}");
        }
    }

    #[test]
    fn inconsistent_flags_are_refused() {
        assert!(
            parse(&["--client-id", "cid"]).is_err(),
            "a client ID needs a key"
        );
        let too_many = parse(&["--windows-share=0.8", "--macos-share=0.3"]).unwrap();
        assert!(too_many.config("http://x".into()).is_err());
        assert!(parse(&["--compromise-every=soon"]).is_err());
    }

    #[test]
    fn fault_flags_are_fault_specs() {
        let args = parse(&[
            "--fault",
            r#"{"kind":"status","status":503,"count":3}"#,
            "--fault",
            r#"{"kind":"drop","path":"/v1/events"}"#,
        ])
        .unwrap();
        let specs = args.fault_specs().unwrap();
        assert_eq!(specs[0].fault, crate::faults::Fault::Status { status: 503 });
        assert_eq!(specs[1].path.as_deref(), Some("/v1/events"));
        let bad = parse(&["--fault", r#"{"kind":"explode"}"#]).unwrap();
        assert!(bad.fault_specs().is_err());
    }

    #[tokio::test]
    async fn only_loopback_addresses_are_served() {
        let args = parse(&["--listen=0.0.0.0:0"]).unwrap();
        let err = run(args, CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
