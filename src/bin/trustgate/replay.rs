//! `trustgate replay`: the device state rebuilt from the beginning of the events topic into a
//! fresh store, swapped in for the live one (offline: no instance may hold the store).

use crate::args::{ConfigArg, EXIT_BAD_INPUT};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use trustgate::config::Settings;
use trustgate::replay::{self, Previous, ReplayError, ReplayOptions, ReplayReport, Swap};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Rebuild even though retention or compaction deleted the topic's oldest records (the
    /// rebuilt state will not know the detections they held).
    #[arg(long)]
    pub accept_truncated: bool,
    /// Delete the replaced store once the rebuilt one is in place (by default it is kept as
    /// `<store>.before-replay-<unix ms>`).
    #[arg(long)]
    pub remove_previous: bool,
}

/// Runs the replay; `interrupt` (SIGINT/SIGTERM) abandons it with the live store untouched.
pub async fn run(
    settings: Settings,
    args: ReplayArgs,
    interrupt: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let options = ReplayOptions {
        accept_truncated: args.accept_truncated,
        remove_previous: args.remove_previous,
    };
    match replay::replay_offline(&settings, options, interrupt).await {
        Ok(report) => {
            print_report(&report);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ ReplayError::InUse { .. }) => {
            eprintln!(
                "trustgate: {e}. Stop that instance and run `trustgate replay` again; \
                 a replay through the running instance (POST /v1/admin/replay) is not available yet."
            );
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        Err(e @ ReplayError::Truncated { .. }) => {
            eprintln!("trustgate: {e}. Pass --accept-truncated to rebuild from what is left.");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        Err(e @ ReplayError::Extent(replay::ExtentError::NoTopic(_))) => {
            eprintln!("trustgate: {e}; nothing to replay (the store is unchanged).");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        Err(e) => Err(anyhow::Error::new(e).context("replay failed; the store is unchanged")),
    }
}

fn print_report(r: &ReplayReport) {
    println!(
        "Replayed {} records from {} partition(s) of {} into {} device(s) in {:.2} s.",
        r.records,
        r.partitions.len(),
        r.topic,
        r.devices,
        r.elapsed.as_secs_f64()
    );
    let how = match r.swap {
        Swap::Installed => "installed; there was no store there",
        Swap::Exchanged => "swapped in atomically",
        Swap::TwoRenames => "swapped in with two renames (no atomic exchange here)",
    };
    println!("Store: {} ({how}).", r.store.display());
    let damage = |unreadable: &Option<String>, corrupt: usize| match (unreadable, corrupt) {
        (Some(reason), _) => format!(" It did not open: {reason}."),
        (None, 0) => String::new(),
        (None, n) => format!(" It held {n} corrupt device value(s)."),
    };
    match &r.previous {
        Previous::None => {}
        Previous::Kept {
            path,
            unreadable,
            corrupt,
        } => println!(
            "Previous store kept at {}; delete it once satisfied.{}",
            path.display(),
            damage(unreadable, *corrupt)
        ),
        Previous::Removed {
            unreadable,
            corrupt,
        } => println!("Previous store removed.{}", damage(unreadable, *corrupt)),
    }
}
