//! `trustgate poll`: the poller alone (one per tenant), or `--plan` to print its budget.

use crate::args::ConfigArg;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use trustgate::config::Settings;
use trustgate::poller::plan::{Plan, Tenant};
use trustgate::publish::EventsPublisher;

#[derive(clap::Args, Debug)]
pub struct PollArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the request budget for a tenant of this size instead of polling.
    #[arg(long, requires_all = ["computers", "events_per_hour"])]
    pub plan: bool,
    /// With --plan: how many computers the tenant has.
    #[arg(long)]
    pub computers: Option<u64>,
    /// With --plan: how many events the tenant produces per hour.
    #[arg(long)]
    pub events_per_hour: Option<u64>,
}

/// `trustgate poll --plan`: prints the budget; fails when the poller cannot fit.
pub fn plan(settings: &Settings, args: &PollArgs) -> ExitCode {
    let tenant = Tenant {
        computers: args.computers.unwrap_or(0),
        events_per_hour: args.events_per_hour.unwrap_or(0),
    };
    let plan = Plan::new(&settings.poller, tenant).with_stream(settings.amqp.enabled);
    print!("{}", plan.render(tenant));
    let warnings = plan.warnings();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The poller alone, until `shutdown`; then in-flight pages finish and the producer flushes.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let producer = trustgate::kafka::start_producer(&settings.kafka, &settings.topics).await?;
    let publisher = EventsPublisher::new(
        producer.clone(),
        settings.topics.events.clone(),
        trustgate::poller::SOURCE,
    );
    let result = trustgate::poller::run(settings, publisher, shutdown).await;
    trustgate::kafka::flush_producer(&producer).await;
    result
}
