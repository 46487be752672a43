//! `trustgate decide`: one decision request (JSON) on stdin, its response on stdout.

use crate::args::EXIT_BAD_INPUT;
use crate::local::{admin_client, admin_url, reach, Reach};
use anyhow::Context;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use trustgate::config::Settings;
use trustgate::decision::{Answer, Decider};
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
                Answer::Reply(resp) => serde_json::to_value(resp)?,
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
