//! The process's one shutdown trigger: SIGTERM or SIGINT cancels a [`CancellationToken`] that
//! every long-running component takes as an argument. Components never install signal
//! handlers of their own; the command line calls [`cancel_on_signal`] once per long-running
//! command, before start-up.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
///
/// The handlers are installed before this returns (a SIGTERM that arrives right after would
/// otherwise still have its default action and kill the process without a drain); the wait
/// runs on a spawned task.
pub fn cancel_on_signal(token: CancellationToken) {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        first_of(term.ok(), int.ok()).await;
        tracing::info!("Shutdown requested; draining.");
        token.cancel();
    });
}

async fn first_of(term: Option<Signal>, int: Option<Signal>) {
    async fn recv(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            // A handler that could not be installed (never seen on Linux) never fires.
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = recv(term) => {}
        _ = recv(int) => {}
    }
}
