//! The one HTTP/1 serve loop behind trustgate's listeners (admin and webhook): hyper directly
//! rather than `axum::serve`, which has no header-read timeout (a client that opened
//! connections and never finished a request head would hold them for ever), an optional cap on
//! open connections, and a bounded drain on shutdown. What each listener serves, and its own
//! limits inside a request, stay with that listener.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How one listener treats its connections.
pub(crate) struct Connections {
    /// Names the listener in its log lines ("Admin", "Webhook").
    pub(crate) name: &'static str,
    /// A request head must arrive within this long, or the connection is closed.
    pub(crate) header_timeout: Duration,
    /// Open connections at most; `None`: no cap. A permit is taken before `accept`, so past
    /// the cap new connections wait in the kernel's backlog instead of each costing a task and
    /// a buffer.
    pub(crate) max_open: Option<usize>,
    /// How long shutdown waits for requests in flight before closing what is left.
    pub(crate) drain: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then stops accepting and drains (bounded by
/// `connections.drain`).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Connections {
        name,
        header_timeout,
        max_open,
        drain,
    } = connections;
    let addr = listener.local_addr()?;
    let service = TowerToHyperService::new(router);
    let cap = Arc::new(Semaphore::new(max_open.unwrap_or(Semaphore::MAX_PERMITS)));
    let graceful = GracefulShutdown::new();
    tracing::info!(%addr, "{name} listener started.");
    loop {
        let accepted = tokio::select! {
            permit = cap.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    accepted = listener.accept() => accepted.map(|(stream, _)| (stream, permit)),
                    _ = shutdown.cancelled() => break,
                },
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, permit) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually fd exhaustion: back off instead of spinning.
                tracing::warn!(error = %e, "{name} listener could not accept a connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "{name} connection ended with an error.");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("{name} listener stopping; draining requests in flight.");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("{name} requests still in flight after {drain:?}; closing them.");
    }
    Ok(())
}
