//! `trustgate stream`: the Secure Endpoint Event Stream. `create`, `list` and `delete` manage
//! streams through SE's API (`/v1/event_streams`, with the poller's API credentials); `create`
//! writes the new stream's `amqp_credentials` to `[amqp] credentials_path` (mode 0600), the
//! only time SE shows its password. `consume` runs the consumer alone.

use crate::args::{ConfigArg, EXIT_BAD_INPUT};
use clap::Subcommand;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use trustgate::amqp::streams::{StreamsApi, StreamsError};
use trustgate::config::Settings;

#[derive(clap::Args, Debug)]
pub struct StreamArgs {
    #[command(subcommand)]
    pub command: StreamCommand,
}

#[derive(Subcommand, Debug)]
pub enum StreamCommand {
    /// Create an event stream (POST /v1/event_streams) and write its AMQP credentials to
    /// `[amqp] credentials_path`.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// The stream's name.
        #[arg(long)]
        name: String,
        /// Only these event type ids (repeatable); all types when absent.
        #[arg(long = "event-type")]
        event_types: Vec<u64>,
        /// Only these group GUIDs (repeatable); all groups when absent.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List the organisation's event streams (GET /v1/event_streams).
    List(ConfigArg),
    /// Delete an event stream (DELETE /v1/event_streams/ID).
    Delete {
        #[command(flatten)]
        config: ConfigArg,
        /// The stream's id, as `list` prints it.
        id: u64,
    },
    /// Consume the stream's queue into the events topic (what `run` does with
    /// `[amqp] enabled = true`), alone.
    Consume(ConfigArg),
}

impl StreamArgs {
    /// The configuration file every subcommand takes.
    pub fn config(&self) -> &ConfigArg {
        match &self.command {
            StreamCommand::Create { config, .. } | StreamCommand::Delete { config, .. } => config,
            StreamCommand::List(c) | StreamCommand::Consume(c) => c,
        }
    }
}

/// `create`, `list` and `delete`: one call to SE each.
pub async fn manage(settings: Settings, command: StreamCommand) -> ExitCode {
    match manage_inner(&settings, command).await {
        Ok(code) => code,
        Err(e @ (StreamsError::NoCredentials | StreamsError::Limit(_))) => {
            eprintln!("trustgate: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(e) => {
            eprintln!("trustgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn manage_inner(
    settings: &Settings,
    command: StreamCommand,
) -> Result<ExitCode, StreamsError> {
    let api = StreamsApi::new(&settings.poller)?;
    match command {
        StreamCommand::Create {
            name,
            event_types,
            groups,
            ..
        } => {
            // Checked before the call: SE shows the password once, so there must be a place
            // to keep it.
            let Some(path) = settings.amqp.credentials_path.clone() else {
                eprintln!(
                    "trustgate: set amqp.credentials_path: SE shows the stream's password only once"
                );
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            };
            let created = api.create(&name, &event_types, &groups).await?;
            if let Err(e) = created.credentials.write(&path) {
                eprintln!(
                    "trustgate: stream {} created but its credentials could not be written ({e}); \
                     delete it (`trustgate stream delete {}`) and create it again",
                    created.id, created.id
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "created event stream {} ({}), queue {}; credentials written to {}",
                created.id,
                created.name,
                created.credentials.queue_name,
                path.display()
            );
        }
        StreamCommand::List(_) => {
            for s in api.list().await? {
                println!(
                    "{}\t{}\tevent types: {}\tgroups: {}",
                    s.id,
                    s.name,
                    list_or_all(&s.event_type),
                    list_or_all(&s.group_guid)
                );
            }
        }
        StreamCommand::Delete { id, .. } => {
            api.delete(id).await?;
            println!("deleted event stream {id}");
        }
        StreamCommand::Consume(_) => unreachable!("consume is not a management call"),
    }
    Ok(ExitCode::SUCCESS)
}

fn list_or_all<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "all".into()
    } else {
        items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
    }
}

/// The consumer alone, until `shutdown`; then deliveries in flight finish and the producer
/// flushes.
pub async fn consume(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let producer = trustgate::kafka::start_producer(&settings.kafka, &settings.topics).await?;
    let result = trustgate::amqp::run(&settings, producer.clone(), shutdown).await;
    trustgate::kafka::flush_producer(&producer).await;
    result
}
