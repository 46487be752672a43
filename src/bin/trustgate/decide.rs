//! `trustgate decide`: one decision request (JSON) on stdin, its response on stdout, and its
//! audit record (source `cli`): written here when deciding on the store, by the instance when
//! asking a running one.

use crate::args::EXIT_BAD_INPUT;
use crate::local::{admin_client, admin_url, reach, Reach};
use anyhow::Context;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trustgate::audit::{self, AuditSource};
use trustgate::config::Settings;
use trustgate::decision::{Answer, Decider, DecisionResponse};
use trustgate::ingest::IngestStatus;
use trustgate::liveness::LivenessClock;

/// Answers the request on stdin from the store, or through the running instance.
pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the request from stdin")?;
    let response = match reach(&settings)? {
        Reach::NoStore(missing) => {
            eprintln!("trustgate: {missing}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Reach::Store(store) => {
            let liveness = LivenessClock::starting_at(store.newest_liveness()?);
            let decider = Decider::new(
                Arc::new(settings.policies.clone()),
                store,
                settings.fold.grace_millis(),
                liveness,
                IngestStatus::offline(),
            );
            match decider.decide(&body) {
                Answer::Reply(resp) => {
                    // The answer first: the audit never delays it.
                    println!("{}", serde_json::to_string_pretty(&resp)?);
                    write_audit(&settings, &body, &resp).await;
                    return Ok(ExitCode::SUCCESS);
                }
                Answer::Unanswerable(error) => {
                    eprintln!("trustgate: invalid request: {error}");
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
            }
        }
        Reach::Instance => {
            let resp = admin_client(&settings)?
                .post(admin_url(&settings, "/v1/decide"))
                .header("content-type", "application/json")
                .header(trustgate::admin::HEADER_SOURCE, "cli")
                .body(body)
                .send()
                .await
                .context("the store is in use; asking the running instance's admin listener")?;
            let status = resp.status();
            let value: serde_json::Value = resp.json().await?;
            if status.is_client_error() {
                eprintln!(
                    "trustgate: invalid request: {}",
                    value["error"].as_str().unwrap_or("unknown")
                );
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
            anyhow::ensure!(
                status.is_success(),
                "admin listener answered {status}: {value}"
            );
            value
        }
    };
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(ExitCode::SUCCESS)
}

/// How long writing the audit record may take (start-up, topic check, acknowledgement) before
/// `decide` gives up on it; the decision was printed already.
const AUDIT_BUDGET: Duration = Duration::from_secs(15);

/// Writes the decision's audit record (source `cli`) and waits for its acknowledgement. A
/// failure is reported on stderr and changes neither the answer nor the exit code.
async fn write_audit(settings: &Settings, body: &[u8], resp: &DecisionResponse) {
    if !settings.audit.enabled {
        return;
    }
    let written = tokio::time::timeout(AUDIT_BUDGET, async {
        let producer = trustgate::kafka::start_producer(&settings.kafka, &settings.topics).await?;
        let (sink, writer) =
            audit::channel(true, producer, &settings.topics.audit, &settings.policies);
        sink.record(AuditSource::Cli, body, resp);
        drop(sink);
        let writer = writer.expect("an enabled audit has a writer");
        anyhow::Ok(writer.run(CancellationToken::new()).await)
    })
    .await;
    match written {
        Ok(Ok(summary)) if summary.written == 1 => {}
        Ok(Ok(summary)) => {
            eprintln!("trustgate: the decision's audit record was not acknowledged ({summary:?})")
        }
        Ok(Err(e)) => eprintln!("trustgate: the decision's audit record was not written: {e:#}"),
        Err(_) => eprintln!(
            "trustgate: the decision's audit record was not written within {AUDIT_BUDGET:?}"
        ),
    }
}
