//! `se-simulator`: serve a simulated Secure Endpoint v1 API on a loopback address until SIGINT or
//! SIGTERM. The same command is `trustgate simulate`.

use clap::Parser;
use se_simulator::SimulateArgs;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "se-simulator",
    version,
    about = "A simulated Cisco Secure Endpoint v1 API"
)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });
    se_simulator::run(cli.args, shutdown).await
}
