//! `trustgate bench`: decision latency and throughput through the broker, measured against
//! the broker's own floor.
//!
//! The load goes to a decision worker that is already running (`trustgate run` with the same
//! configuration): requests on the configured requests topic, each naming a reply topic of
//! the bench's own in `kafka_replyTopic` and carrying a `kafka_correlationId` that the
//! reply must echo. In the same run, the same load goes to an echo responder that the bench
//! runs itself on its own pair of topics and that replies without any decision: the floor.
//! Each round is four phases (floor then worker, at a fixed rate, then both at the maximum
//! rate with a bounded in-flight window); figures are medians over rounds.
//!
//! Optionally it also measures ingest throughput against a plain consume ([`ingest`]). With
//! `--catch-up-devices` it measures a fleet instead ([`catchup`]): a child `trustgate run`
//! catching up a topic of that many computers (plus `--catch-up-events` events) from an empty
//! store, its peak and settled memory, and its restart; then (unless `--catch-up-e2e false`)
//! the same four phases against that restarted, ready child, with requests naming devices of
//! its fleet ([`load::Naming::Fleet`]), so every decision is a hit on a store of that size. No
//! worker needs to be running for that.
//! Webhook deliveries are not measured here (the bench sends none); webhook accept → deny
//! latency is measured by `cargo test --test e2e webhook_latency -- --ignored --nocapture`.
//!
//! Everything is bounded in count and time, talks only to the configured broker, and deletes
//! the topics it created.
//!
//! | file | owns |
//! |---|---|
//! | [`load`] | the request generator (fixed rate and maximum) |
//! | [`collect`] | the reply consumer, correlation ids, matching |
//! | [`latency`] | the HDR histogram and percentiles |
//! | [`echo`] | the echo responder (the floor) |
//! | [`ingest`] | ingest vs plain-consume throughput |
//! | [`catchup`] | fleet catch-up and restart of a child process, its memory |
//! | [`topics`] | the run's own topics and isolated settings |
//! | [`report`] | medians, ratios, text and JSON output |

pub mod catchup;
pub mod collect;
pub mod echo;
pub mod ingest;
pub mod latency;
pub mod load;
pub mod report;
pub mod topics;

use anyhow::Context;
use collect::Collector;
use echo::Echo;
use load::{run_phase, Mode, Naming, PhaseResult, PhaseSpec, Target};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use report::{PhaseFigures, Report};
use std::time::{Duration, Instant};
use topics::BenchTopics;
use trustgate::config::Settings;
use trustgate::kafka::{client_config, Role};

/// Why webhook latency is not part of the report.
pub const WEBHOOK_SKIPPED: &str = "not measured: the bench sends no webhook deliveries; webhook latency is measured by `cargo test --test e2e webhook_latency -- --ignored --nocapture`";

/// Attempts at a first reply before the responder is declared absent (each waits 10 s).
const FIRST_REPLY_ATTEMPTS: u32 = 6;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub config: crate::args::ConfigArg,
    /// Requests per second in the fixed-rate phases.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Seconds each phase lasts.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Unanswered requests allowed in the maximum-rate phases.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub window: u64,
    /// Most requests in one maximum-rate phase, whatever the duration.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub max_requests: u64,
    /// Rounds of the four phases; every figure is the median over rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Also measure ingest: pre-fill a topic with this many records (0 skips it).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=50_000_000))]
    pub ingest_records: u64,
    /// Measure a fleet instead of the configured worker: a topic of this many SE computers (one
    /// per device), caught up by a `trustgate run` child process on an empty store, restarted,
    /// then benched end to end (see `--catch-up-e2e`) (0 skips it).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=50_000_000))]
    pub catch_up_devices: u64,
    /// With `--catch-up-devices`: SE events on the topic besides the computers, spread over the
    /// devices (half of them compromise-class).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=50_000_000))]
    pub catch_up_events: u64,
    /// With `--catch-up-devices`: once the restarted child is ready, run the four phases
    /// (`--rate`, `--duration`, `--window`, `--runs`) through the broker against it, every
    /// request naming a device of its fleet (uniformly over all of them, by MAC and hostname);
    /// the run fails if any measured reply is not a decision on a known device (e.g.
    /// `not_ready`). `false` measures the catch-up and restart only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub catch_up_e2e: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints the report.
pub async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    if args.catch_up_devices > 0 {
        let topics = BenchTopics::fresh();
        let result = catchup::measure(
            &settings,
            args.config.config.clone(),
            &topics,
            args.catch_up_devices,
            args.catch_up_events,
            args.catch_up_e2e.then_some(&args),
        )
        .await;
        topics::delete_all(&settings, &topics).await;
        let result = result?;
        if args.json {
            println!("{}", result.to_json()?);
        } else {
            print!("{}", result.to_text());
        }
        return result.check_decisions();
    }
    let report = measure(&settings, &args).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Runs the benchmark; the run's topics are deleted whether it succeeded or not.
async fn measure(settings: &Settings, args: &BenchArgs) -> anyhow::Result<Report> {
    let topics = BenchTopics::fresh();
    let result = async {
        let mut report = run_with(
            settings,
            args,
            &topics,
            &settings.topics.requests,
            Naming::Fixture,
        )
        .await?;
        report.ingest = match args.ingest_records {
            0 => None,
            n => Some(ingest::measure(settings, &topics.events, n).await?),
        };
        anyhow::Ok(report)
    }
    .await;
    topics::delete_all(settings, &topics).await;
    result
}

/// The four phases, floor against worker, with requests on `requests` naming devices so;
/// the worker must be running already.
async fn run_with(
    settings: &Settings,
    args: &BenchArgs,
    topics: &BenchTopics,
    requests: &str,
    naming: Naming,
) -> anyhow::Result<Report> {
    let partitions = requests_partitions(settings, requests).await?;
    topics::create(
        settings,
        &[
            (&topics.replies, 1),
            (&topics.echo_requests, partitions),
            (&topics.echo_replies, 1),
        ],
    )
    .await?;
    let epoch = Instant::now();
    let producer: FutureProducer = client_config(&settings.kafka, Role::Producer)
        .create()
        .context("creating the bench producer")?;
    let echo = Echo::start(
        settings,
        &topics.echo_requests,
        &format!("{}-echo", topics.run),
    )?;
    let worker = Side::start(settings, topics, requests, &topics.replies, naming, epoch)?;
    // The floor gets the same bodies: same sizes on the wire, and the echo copies them back.
    let floor = Side::start(
        settings,
        topics,
        &topics.echo_requests,
        &topics.echo_replies,
        naming,
        epoch,
    )?;
    let mut tags = 0u32..;
    let mut tag = || tags.next().expect("tags do not run out");
    let phases = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        for (side, name) in [(&floor, "echo responder"), (&worker, "decision worker")] {
            side.warm_up(&producer, args, &mut tag, epoch)
                .with_context(|| format!("no reply from the {name}"))?;
        }
        let mut rounds: [Vec<PhaseResult>; 4] = Default::default();
        for _ in 0..args.runs {
            for (i, (side, mode)) in [
                (&floor, Mode::Fixed { rate: args.rate }),
                (&worker, Mode::Fixed { rate: args.rate }),
                (
                    &floor,
                    Mode::Max {
                        window: args.window,
                    },
                ),
                (
                    &worker,
                    Mode::Max {
                        window: args.window,
                    },
                ),
            ]
            .into_iter()
            .enumerate()
            {
                rounds[i].push(side.phase(&producer, args, mode, tag(), epoch));
            }
        }
        Ok(rounds)
    });
    echo.stop().await;
    let [floor_fixed, worker_fixed, floor_max, worker_max] = phases?;
    Ok(Report {
        brokers: settings.kafka.brokers.clone(),
        requests_topic: requests.to_owned(),
        rate: args.rate,
        duration_s: args.duration,
        window: args.window,
        runs: args.runs,
        worker_fixed: PhaseFigures::from_rounds(&worker_fixed),
        floor_fixed: PhaseFigures::from_rounds(&floor_fixed),
        worker_max: PhaseFigures::from_rounds(&worker_max),
        floor_max: PhaseFigures::from_rounds(&floor_max),
        ingest: None,
        webhook: WEBHOOK_SKIPPED,
    })
}

/// The requests topic's partition count (the echo's request topic gets as many); the topic
/// must exist, which it does once the worker has started.
async fn requests_partitions(settings: &Settings, requests: &str) -> anyhow::Result<i32> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(&settings.kafka, Role::Admin).create()?;
    let topic = requests.to_owned();
    let metadata = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
    })
    .await??;
    let partitions = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    anyhow::ensure!(
        partitions > 0,
        "the requests topic {requests} does not exist: start `trustgate run` with this configuration first"
    );
    Ok(partitions as i32)
}

/// One responder under load: where its requests go and the consumer of its replies.
struct Side {
    target: Target,
    collector: Collector,
}

impl Side {
    fn start(
        settings: &Settings,
        topics: &BenchTopics,
        requests: &str,
        replies: &str,
        naming: Naming,
        epoch: Instant,
    ) -> anyhow::Result<Side> {
        let mut config = client_config(&settings.kafka, Role::Ingest);
        config.set("group.id", format!("{}-replies", topics.run));
        Ok(Side {
            target: Target {
                requests: requests.to_owned(),
                replies: replies.to_owned(),
                naming,
            },
            collector: Collector::start(config, replies, epoch)
                .with_context(|| format!("consuming {replies}"))?,
        })
    }

    fn phase(
        &self,
        producer: &FutureProducer,
        args: &BenchArgs,
        mode: Mode,
        tag: u32,
        epoch: Instant,
    ) -> PhaseResult {
        let spec = PhaseSpec {
            tag,
            mode,
            duration: Duration::from_secs(args.duration),
            max_requests: args.max_requests,
        };
        run_phase(producer, &self.collector, &self.target, spec, epoch)
    }

    /// Waits for a first reply (a consumer group may still be forming), then runs one
    /// discarded second of load so that connections and caches are warm.
    fn warm_up(
        &self,
        producer: &FutureProducer,
        args: &BenchArgs,
        tag: &mut impl FnMut() -> u32,
        epoch: Instant,
    ) -> anyhow::Result<()> {
        let probe = |tag: u32| PhaseSpec {
            tag,
            mode: Mode::Max { window: 1 },
            duration: Duration::from_secs(1),
            max_requests: 1,
        };
        let answered = (0..FIRST_REPLY_ATTEMPTS).any(|_| {
            run_phase(producer, &self.collector, &self.target, probe(tag()), epoch).received > 0
        });
        anyhow::ensure!(answered, "nothing answered on {}", self.target.requests);
        let warm = PhaseSpec {
            tag: tag(),
            mode: Mode::Fixed { rate: args.rate },
            duration: Duration::from_secs(1),
            max_requests: args.max_requests,
        };
        run_phase(producer, &self.collector, &self.target, warm, epoch);
        Ok(())
    }
}
