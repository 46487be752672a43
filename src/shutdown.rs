//! The process's one shutdown trigger: SIGTERM or SIGINT cancels a [`CancellationToken`] that
//! every long-running component takes as an argument. Components never install signal
//! handlers of their own; the command line calls [`cancel_on_signal`] once per long-running
//! command.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT (from a spawned task; returns at once).
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        signalled().await;
        tracing::info!("Shutdown requested; draining.");
        token.cancel();
    });
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signalled() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler (never seen on Linux) Ctrl-C still works.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
