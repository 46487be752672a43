//! `trustgate decide`: one decision request (JSON) on stdin, its response on stdout, and its
//! audit record (source `cli`): written here when deciding on the store, by the instance when
//! asking a running one. `--at` (or `"at"` in the request) decides on the device's state at
//! that time, read back from the events topic (`trustgate::history`).

use crate::args::{ConfigArg, EXIT_BAD_INPUT};
use crate::local::{admin_client, admin_url, reach, Reach};
use anyhow::Context;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trustgate::audit::AuditFilter;
use trustgate::audit::{self, AuditSource};
use trustgate::config::Settings;
use trustgate::decision::{Answer, Decider, DecisionResponse};
use trustgate::history::{requested_at, HistorySource};
use trustgate::ingest::IngestStatus;
use trustgate::liveness::LivenessClock;

#[derive(clap::Args, Debug)]
pub struct DecideArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Decide on the device's state as it was at this time (RFC 3339): its records up to then.
    /// Sets the request's `"at"`; the response carries `as_of`.
    #[arg(long, value_parser = AuditFilter::parse_time)]
    pub at: Option<i64>,
}

/// Answers the request on stdin from the store, or through the running instance.
pub async fn run(settings: Settings, args: DecideArgs) -> anyhow::Result<ExitCode> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the request from stdin")?;
    if let Some(at) = args.at {
        body = with_at(body, at);
    }
    let response = match reach(&settings)? {
        Reach::NoStore(missing) => {
            eprintln!("trustgate: {missing}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Reach::Store(store) => {
            let liveness = LivenessClock::starting_at(store.newest_liveness()?);
            let decider = Decider::new(
                Arc::new(settings.policies.clone()),
                store.clone(),
                settings.fold.grace_millis(),
                liveness,
                IngestStatus::offline(),
            );
            let answer = match requested_at(&body) {
                Some(at) => {
                    let source = HistorySource::new(&settings);
                    let when = at.clone().unwrap_or_default();
                    let body = body.clone();
                    tokio::task::spawn_blocking(move || {
                        decider.decide_as_of(&body, at, |req| {
                            source.past_directory(&store, &req.subject, when)
                        })
                    })
                    .await?
                }
                None => decider.decide(&body),
            };
            match answer {
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

/// The request with `"at"` set to `at` (RFC 3339). A body that is not a JSON object, or that
/// the request checks refuse (a duplicate key would be resolved by re-serialising it), is left
/// as it is: the decision path says what is wrong with it.
fn with_at(body: Vec<u8>, at: i64) -> Vec<u8> {
    if trustgate::json::check(&body, trustgate::decision::request::REQUEST_LIMITS).is_err() {
        return body;
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut request)) => {
            request.insert(
                "at".into(),
                serde_json::Value::String(trustgate::time::format_millis(at)),
            );
            serde_json::to_vec(&request).unwrap_or(body)
        }
        _ => body,
    }
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
