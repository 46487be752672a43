//! `trustgate run`: wires ingest, the decision worker, the admin listener and (when enabled) the
//! poller, the webhook listener and the AMQP stream consumer together, and shuts them down in
//! order.
//!
//! Shutdown (the token, which the binary cancels on SIGTERM/SIGINT): the admin listener and the decision worker stop
//! taking new work and finish what is in flight (the worker waits for every reply it produced
//! to be acknowledged and commits its offsets, then leaves the group); ingest stores the chunk
//! in flight; the producer is flushed and the store is synced. Nothing is awaited forever:
//! the whole sequence is bounded by `SHUTDOWN_BUDGET` (20 s).

use crate::admin::{self, AdminState, ComponentHealth};
use crate::audit;
use crate::config::Settings;
use crate::decision::{worker, Decider};
use crate::ingest::{self, IngestContext, IngestStatus};
use crate::kafka::SharedProducer;
use crate::kafka::{client_config, Role};
use crate::liveness::LivenessClock;
use crate::publish::EventsPublisher;
use crate::store::Store;
use crate::webhook;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest a clean shutdown may take before the process gives up waiting.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(20);

/// A running instance's handles, for the binary and for tests that run it in-process.
pub struct Running {
    /// The store the components share, for reading device state beside them.
    pub store: Store,
    /// Ingest's progress (caught up, lag per partition), for waiting until the store is current.
    pub ingest: IngestStatus,
    /// Where the admin listener is bound; the port is known here when `[admin] listen` asks
    /// for port 0.
    pub admin_addr: std::net::SocketAddr,
    tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
    producer: SharedProducer,
    /// The online replay, waited for (it stops on shutdown) before the store's last flush.
    replay: crate::replay::OnlineReplay,
}

/// Starts every component. Returns once the admin listener is bound.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Running> {
    // Before any component runs: a counter incremented before the recorder exists goes to no
    // recorder and is lost (ingest applied its first chunk first, once, in CI).
    let metrics = crate::telemetry::metrics::install();
    let store = Store::open(&settings.store.path, settings.store.cache_bytes)
        .with_context(|| format!("opening the store at {}", settings.store.path.display()))?;
    // The producer connects lazily and the topics are created in the background: a broker that
    // is down at start leaves the service up and not ready (ingest waits for the events topic),
    // and it recovers by itself once the broker answers.
    let producer = SharedProducer::create(client_config(&settings.kafka, Role::Producer))
        .context("creating the producer")?;
    let mut tasks = tokio::task::JoinSet::new();
    if settings.topics.create {
        let (kafka, topics, topics_shutdown) = (
            settings.kafka.clone(),
            settings.topics.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let created =
                crate::kafka::ensure_topics_until_created(&kafka, &topics, &topics_shutdown).await;
            ("topic set-up", created.map_err(anyhow::Error::from))
        });
    }
    let status = IngestStatus::default();
    let health = ComponentHealth::default();
    let grace = settings.fold.grace_millis();
    let liveness = LivenessClock::starting_at(store.newest_liveness()?);
    let decider = Decider::new(
        Arc::new(settings.policies.clone()),
        store.clone(),
        grace,
        liveness.clone(),
        status.clone(),
    );
    let (audit, audit_writer) = audit::channel(
        settings.audit.enabled,
        producer.clone(),
        &settings.topics.audit,
        &settings.policies,
    );
    if let Some(writer) = audit_writer {
        // Ends once every sink (the worker's, the admin listener's) is dropped, i.e. after
        // the last decision, and has then waited for that decision's record; bounded after
        // `shutdown` in any case.
        let audit_shutdown = shutdown.clone();
        tasks.spawn(async move {
            writer.run(audit_shutdown).await;
            ("audit writer", Ok(()))
        });
    }
    audit::warn_report_only(&settings.policies);

    let ingest_ctx = IngestContext {
        settings: settings.clone(),
        store: store.clone(),
        producer: producer.clone(),
        status: status.clone(),
        liveness: liveness.clone(),
    };
    let ingest_shutdown = shutdown.clone();
    tasks.spawn_blocking(move || ("ingest", ingest::run(ingest_ctx, ingest_shutdown)));

    let worker_ctx = worker::WorkerContext {
        settings: settings.clone(),
        decider: decider.clone(),
        producer: producer.clone(),
        ingest: status.clone(),
        audit: audit.clone(),
    };
    let worker_shutdown = shutdown.clone();
    tasks.spawn(async move {
        (
            "decision worker",
            worker::run(worker_ctx, worker_shutdown).await,
        )
    });

    let listener = tokio::net::TcpListener::bind(settings.admin.listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", settings.admin.listen))?;
    let admin_addr = listener.local_addr()?;
    let replay = crate::replay::OnlineReplay::new(
        &settings,
        store.clone(),
        status.clone(),
        shutdown.clone(),
    );
    let admin_state = AdminState {
        decider,
        audit,
        store: store.clone(),
        ingest: status.clone(),
        grace_millis: grace,
        liveness: liveness.clone(),
        stale_after: settings.policies.global.stale_after,
        metrics,
        health: health.clone(),
        history: crate::history::HistorySource::new(&settings),
        replay: replay.clone(),
        whatif: crate::whatif::WhatIfContext::new(&settings).with_shutdown(shutdown.clone()),
    };
    let admin_access =
        admin::AdminAccess::new(settings.admin.token.as_ref(), admin::AdminLimits::default());
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        (
            "admin listener",
            admin::serve(listener, admin_state, admin_access, admin_shutdown).await,
        )
    });

    if settings.poller.enabled {
        let publisher = EventsPublisher::new(
            producer.clone(),
            settings.topics.events.clone(),
            crate::poller::SOURCE,
        );
        let (poller_settings, poller_shutdown) = (settings.clone(), shutdown.clone());
        let poller_health = health.clone();
        // A poller that stops for good (401/403, unusable state) is reported unhealthy but does
        // not take decisions down: the liveness age grows into `stale` and each policy's `on_stale` rules.
        // A panic in the poller is caught here and counts as such a stop, so it neither takes
        // the instance down nor reaches `join` as a nameless panicked task.
        tasks.spawn(async move {
            use futures::FutureExt;
            let polled = std::panic::AssertUnwindSafe(crate::poller::run(
                poller_settings,
                publisher,
                poller_shutdown,
            ))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(anyhow::anyhow!("poller panicked: {}", panic_text(&*panic)))
            });
            if let Err(e) = polled {
                tracing::error!(
                    error = format!("{e:#}"),
                    "Poller stopped; decisions continue from the last known state."
                );
                poller_health.fail("poller", format!("{e:#}"));
            }
            ("poller", Ok(()))
        });
    }
    if settings.webhook.enabled {
        spawn_webhook(&settings, &producer, &shutdown, &mut tasks).await?;
    }
    if settings.amqp.enabled {
        let (amqp_settings, amqp_producer, amqp_shutdown) =
            (settings.clone(), producer.clone(), shutdown.clone());
        let amqp_health = health.clone();
        // Like the poller: a stream consumer that cannot start (no credentials file, no queue)
        // is reported unhealthy and leaves decisions to the other sources and `stale`; lost
        // connections are retried inside it and never end it.
        tasks.spawn(async move {
            use futures::FutureExt;
            let consumed = std::panic::AssertUnwindSafe(crate::amqp::run(
                &amqp_settings,
                amqp_producer,
                amqp_shutdown,
            ))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(anyhow::anyhow!(
                    "AMQP stream consumer panicked: {}",
                    panic_text(&*panic)
                ))
            });
            if let Err(e) = consumed {
                tracing::error!(
                    error = format!("{e:#}"),
                    "AMQP stream consumer stopped; decisions continue from the last known state."
                );
                amqp_health.fail("amqp", format!("{e:#}"));
            }
            ("amqp stream consumer", Ok(()))
        });
    }

    Ok(Running {
        store,
        ingest: status,
        admin_addr,
        tasks,
        producer,
        replay,
    })
}

/// A panic payload's message, when it is text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Binds the webhook listener and serves it in `tasks` until `shutdown`, draining deliveries
/// in flight (they still hold the shared producer, flushed after every task ended).
async fn spawn_webhook(
    settings: &Settings,
    producer: &SharedProducer,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
) -> anyhow::Result<()> {
    let publisher = EventsPublisher::new(
        producer.clone(),
        settings.topics.events.clone(),
        webhook::SOURCE,
    );
    let limits = webhook::Limits::from_settings(&settings.webhook);
    let state = webhook::WebhookState::new(&settings.webhook, limits, publisher)?;
    let listen = settings.webhook.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the webhook listener on {listen}"))?;
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        (
            "webhook listener",
            webhook::serve(listener, state, shutdown).await,
        )
    });
    Ok(())
}

impl Running {
    /// Waits for every component to stop. A core component (ingest, decision worker, a
    /// listener) that fails cancels the others (via `shutdown`) so the process never half-runs;
    /// the poller instead reports itself through `/healthz` (see `start`).
    pub async fn join(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            // A panicked component is a failed one: the others are stopped and waited for, and
            // the producer and store are still flushed below (returning here would drop the
            // remaining tasks mid-chunk and skip both flushes).
            let (name, result) = match joined {
                Ok(done) => done,
                Err(e) => ("a component", Err(anyhow::anyhow!("panicked: {e}"))),
            };
            if let Err(e) = result {
                tracing::error!(
                    component = name,
                    error = format!("{e:#}"),
                    "Component failed; shutting down."
                );
                shutdown.cancel();
                first_error.get_or_insert(e.context(format!("{name} failed")));
            }
        }
        // Every component stopped: the instance is stopping, and so is a replay under way.
        shutdown.cancel();
        self.replay.stopped().await;
        crate::kafka::flush_producer(&self.producer).await;
        self.store.flush().await?;
        first_error.map_or(Ok(()), Err)
    }
}

/// Runs until `shutdown` (the binary cancels it on SIGTERM/SIGINT) or until a core component
/// fails, then shuts down within `SHUTDOWN_BUDGET` (20 s).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(settings, shutdown.clone()).await?;
    let join = running.join(shutdown.clone());
    tokio::pin!(join);
    tokio::select! {
        result = &mut join => result,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_BUDGET).await } => {
            anyhow::bail!("shutdown did not finish within {SHUTDOWN_BUDGET:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Issue #10 item 6: a component that panics does not skip the ordered shutdown: the others
    /// are cancelled and waited for, then the producer and the store are flushed.
    #[tokio::test]
    async fn a_panicking_component_still_gets_the_ordered_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::DEFAULT_CACHE_BYTES).unwrap();
        // Creating a producer does not connect; flushing one with nothing queued returns.
        let producer = SharedProducer::create(
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:9")
                .clone(),
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let finished = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let (token, flag) = (shutdown.clone(), finished.clone());
        tasks.spawn(async move {
            token.cancelled().await;
            // Stands for ingest storing its chunk in flight.
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
            ("ingest", Ok(()))
        });
        tasks.spawn(async {
            if true {
                panic!("component bug");
            }
            ("decision worker", Ok(()))
        });
        let settings = crate::config::load_str("", "defaults", std::iter::empty())
            .unwrap()
            .settings;
        let replay = crate::replay::OnlineReplay::new(
            &settings,
            store.clone(),
            IngestStatus::default(),
            shutdown.clone(),
        );
        let running = Running {
            store,
            ingest: IngestStatus::default(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            tasks,
            producer,
            replay,
        };
        let outcome = tokio::time::timeout(SHUTDOWN_BUDGET, running.join(shutdown.clone()))
            .await
            .expect("join ends once every component stopped");
        let error = format!("{:#}", outcome.unwrap_err());
        assert!(error.contains("panicked"), "{error}");
        assert!(shutdown.is_cancelled(), "the others were told to stop");
        assert!(
            finished.load(Ordering::SeqCst),
            "the others were waited for"
        );
    }

    #[test]
    fn a_panic_message_is_read_from_either_payload() {
        let text = std::panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_text(&*text), "static text");
        let formatted = std::panic::catch_unwind(|| panic!("formatted {}", 7)).unwrap_err();
        assert_eq!(panic_text(&*formatted), "formatted 7");
    }
}
