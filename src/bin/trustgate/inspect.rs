//! `trustgate inspect`: a device's state, found by connector GUID, MAC address or hostname.

use crate::args::{EXIT_BAD_INPUT, EXIT_NOT_FOUND};
use crate::local::{admin_client, admin_url, reach, Reach};
use anyhow::Context;
use std::process::ExitCode;
use trustgate::admin::{lookup, DeviceLookup};
use trustgate::config::Settings;

/// Prints the devices that `id` matches (exit 1 when none does).
pub async fn run(settings: Settings, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    if id.trim().is_empty() {
        eprintln!("trustgate: give a connector GUID, MAC address or hostname");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let found: Option<DeviceLookup> = match reach(&settings)? {
        Reach::NoStore(missing) => {
            eprintln!("trustgate: {missing}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Reach::Store(store) => lookup(&store, id, settings.fold.grace_millis())?,
        Reach::Instance => {
            let resp = admin_client(&settings)?
                .get(admin_url(
                    &settings,
                    &format!("/v1/devices/{}", urlencode(id)),
                ))
                .send()
                .await
                .context("the store is in use; asking the running instance's admin listener")?;
            match resp.status() {
                reqwest::StatusCode::NOT_FOUND => None,
                s if s.is_success() => Some(resp.json().await?),
                s => anyhow::bail!("admin listener answered {s}"),
            }
        }
    };
    let Some(found) = found else {
        eprintln!("trustgate: no device matches {id:?}");
        return Ok(ExitCode::from(EXIT_NOT_FOUND));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for d in &found.devices {
            println!(
                "{}  {}  os={}  compromised={}  open_events={}  macs={}  state_as_of={}",
                d.connector_guid,
                d.hostname.as_deref().unwrap_or("-"),
                d.operating_system.as_deref().unwrap_or("-"),
                d.compromised,
                d.open_events.len(),
                d.mac_addresses.join(","),
                d.state_as_of.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes an identifier for a URL path or query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
