//! Hostile input, fuzzed (issue #14 item 4): every parser that reads bytes from outside, driven
//! by mutated fixtures and arbitrary bytes. Each target's property: no panic; the parse either
//! succeeds or returns its typed error; what succeeds keeps the invariants the rest of
//! trustgate relies on; no execution holds memory beyond a bound proportional to its input.
//!
//! Engine: proptest (already a dev-dependency), as a random mutation fuzzer seeded from the
//! fixtures (`engine.rs`), not cargo-fuzz. cargo-fuzz needs nightly's `-Zsanitizer` and a
//! separate `fuzz/` workspace built with `cargo install cargo-fuzz` and libFuzzer's C++; on
//! the stable toolchain this project builds with, that works only through `RUSTC_BOOTSTRAP=1`
//! (checked: rustc 1.95 compiles with `-Zsanitizer=address` and sancov that way), which is an
//! unsupported escape hatch to put in CI. proptest runs under `cargo test` on stable, adds no
//! dependency and shrinks a failing input to a small one. What it lacks is coverage guidance;
//! the structured mutations (duplicate members, nesting, numbers past 64 bits, invalid UTF-8,
//! oversized strings, splices between fixtures) stand in for it.
//!
//! `cargo test --test fuzz` runs 1,000 executions per target (seconds);
//! `scripts/fuzz` runs each target for minutes in release and records the figures.

mod engine;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use engine::{fixture_files, fuzz};
use secrecy::SecretString;
use std::time::Duration;
use trustgate::config::ConfigError;
use trustgate::decision::request::{self, REQUEST_LIMITS};
use trustgate::fold::{
    classify, Classified, DeviceState, FoldConfig, RecordError, RecordInput, RECORD_LIMITS,
};
use trustgate::json::{self, JsonError};
use trustgate::se::{split_records, Event};
use trustgate::webhook::{sign, AuthError, Verifier};

/// Each record of every fixture (page items, JSON-lines records), as bytes.
fn fixture_records(pick: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for (name, bytes) in fixture_files() {
        if !pick(&name) {
            continue;
        }
        let text = String::from_utf8(bytes).unwrap();
        let bodies: Vec<&str> = if name.ends_with(".jsonl") {
            text.lines().collect()
        } else {
            vec![text.as_str()]
        };
        for body in bodies {
            if let Ok(page) = split_records(body) {
                records.extend(page.records.iter().map(|r| r.get().as_bytes().to_vec()));
            }
        }
    }
    records.sort();
    records.dedup();
    assert!(!records.is_empty(), "no fixture records found");
    records
}

/// An identifier as the store may index it.
fn index_safe(what: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && !id.chars().any(char::is_control)
        && id.to_ascii_lowercase() == id;
    ok.then_some(())
        .ok_or_else(|| format!("{what} {id:?} is not index-safe"))
}

fn mac_safe(mac: &str) -> Result<(), String> {
    let ok = mac.len() == 12 && mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(())
        .ok_or_else(|| format!("MAC {mac:?} is not 12 lower-case hex digits"))
}

/// Classifies `value` under `kind` and checks what ingest would store or dead-letter: a record
/// the JSON checks refuse is never applied, and an applied one leaves index-safe identifiers.
fn check_record(value: &[u8], kind: Option<&[u8]>) -> Result<&'static str, String> {
    let input = RecordInput {
        value: Some(value),
        kind,
        source: Some(b"fuzz"),
        observed_at: None,
        timestamp: 1_700_000_000_000,
    };
    let strict = json::check(value, RECORD_LIMITS);
    match classify(&input, &FoldConfig::default(), 1_700_000_000_000) {
        Ok(classified) => {
            if let Err(e) = strict {
                return Err(format!("a record the JSON checks refuse ({e}) was applied"));
            }
            if let Classified::Device(fact) = classified {
                index_safe("connector_guid", &fact.connector_guid)?;
                let mut state = DeviceState::new(&fact.connector_guid);
                state.apply(&fact);
                if let Some(h) = &state.hostname {
                    index_safe("hostname", &h.value)?;
                }
                if let Some(p) = &state.windows_processor_id {
                    index_safe("windows_processor_id", &p.value)?;
                }
                for mac in state.macs.iter().flat_map(|m| &m.value) {
                    mac_safe(mac)?;
                }
                return Ok("applied");
            }
            Ok("heartbeat")
        }
        // The reason goes into the dead-letter header: it must say something.
        Err(e) if e.to_string().trim().is_empty() => Err("an empty dead-letter reason".into()),
        Err(RecordError::Refused(e)) => Ok(match e {
            JsonError::TooLarge { .. } => "refused:too_large",
            JsonError::NotUtf8 { .. } => "refused:not_utf8",
            JsonError::TooDeep { .. } => "refused:too_deep",
            JsonError::DuplicateKey { .. } => "refused:duplicate_key",
            JsonError::NumberOutOfRange { .. } => "refused:number",
            JsonError::Syntax(_) => "refused:syntax",
        }),
        Err(RecordError::NotJsonObject(_)) => Ok("not_json"),
        Err(RecordError::NoConnectorGuid) => Ok("no_device"),
        Err(_) => Ok("invalid_shape"),
    }
}

#[test]
fn se_event() {
    let seeds = fixture_records(|name| name.starts_with("events"));
    fuzz("se_event", seeds, |value| {
        if let Ok(event) = serde_json::from_slice::<Event>(value) {
            if let Some(guid) = event.connector_guid() {
                index_safe("connector_guid", &guid)?;
            }
        }
        check_record(value, None)?;
        check_record(value, Some(b"event"))
    });
}

#[test]
fn se_computer() {
    let seeds = fixture_records(|name| name.starts_with("computer"));
    fuzz("se_computer", seeds, |value| {
        check_record(value, None)?;
        check_record(value, Some(b"computer"))
    });
}

#[test]
fn page_slicing() {
    let seeds: Vec<Vec<u8>> = fixture_files()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".json") && !name.ends_with("headers.json"))
        .map(|(_, bytes)| bytes)
        .collect();
    fuzz("page_slicing", seeds, |bytes| {
        let body = String::from_utf8_lossy(bytes);
        let Ok(page) = split_records(&body) else {
            return Ok("refused");
        };
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        for record in &page.records {
            let r = record.get();
            // Records are slices of the body, never copies or re-serialisations.
            let start = r.as_ptr() as usize;
            if !range.contains(&start) || start + r.len() > range.end {
                return Err("a record is not a slice of the body".into());
            }
            if !r.trim_start().starts_with('{') {
                return Err(format!("a record that is not an object: {r:.40}"));
            }
        }
        Ok("sliced")
    });
}

/// Requests covering every field of `schemas/decision-request.v1.json`.
fn request_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"request_id":"r1","application":"vpn","device":{"trusted":true,"hostname":"fin-lt-0042"}}"#,
        r#"{"request_id":"6f1c2e2a-8a11-4f55-9d2b-1b0f2d7c9e01","application":"citrix","user":"ann@example.com","device":{"trusted":true,"os":"windows","connector_guid":"0D5E4F3A-1B2C-4D5E-8F90-123456789ABC","windows_processor_id":"BFEBFBFF000906EA","mac_addresses":["00:50:56:A1:2B:3C","00-50-56-a1-2b-3d"],"hostname":"WS-Q-0200.corp.example.com"}}"#,
        r#"{"request_id":"r3","application":"ssh","device":{"trusted":false,"os":"macOS"}}"#,
        r#"{"request_id":"r4","application":"a","user":null,"device":{"trusted":true,"os":"linux","hostname":null,"mac_addresses":null,"extra":{"nested":[1,2.5,"x"]}}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[test]
fn decision_request() {
    fuzz("decision_request", request_seeds(), |body| {
        match request::parse(body) {
            Ok(req) => {
                if let Err(e) = json::check(body, REQUEST_LIMITS) {
                    return Err(format!("a request the JSON checks refuse ({e}) was valid"));
                }
                if req.request_id.is_empty() {
                    return Err("a valid request without a request_id".into());
                }
                let ids = &req.subject.ids;
                if let Some(h) = &ids.hostname {
                    index_safe("hostname", h)?;
                }
                if ids.macs.len() > 32 {
                    return Err(format!("{} MACs in one request", ids.macs.len()));
                }
                if ids.macs.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("MACs not sorted and deduplicated".into());
                }
                ids.macs.iter().try_for_each(|m| mac_safe(m))?;
                Ok("valid")
            }
            Err(invalid) => {
                if invalid.error().trim().is_empty() {
                    return Err("an invalid request without a reason".into());
                }
                // Answered `invalid_request` on its id, or dead-lettered without one.
                match invalid.request_id() {
                    Some("") => Err("an empty request_id to answer".into()),
                    Some(_) => Ok("invalid_request"),
                    None => Ok("unanswerable"),
                }
            }
        }
    });
}

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM=";
const BEARER: &str = "bearer-token-for-the-fuzz-target";
const NOW: i64 = 1_764_370_000;

/// A delivery as text: `name: value` header lines, a blank line, the body; a header named
/// twice is sent twice.
fn delivery(headers: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut out = String::new();
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    out.push('\n');
    out.push_str(body);
    out.into_bytes()
}

fn signature_seeds() -> Vec<Vec<u8>> {
    let body = r#"{"id":1,"event_type_id":1090519054,"connector_guid":"g-1"}"#;
    let ts = NOW.to_string();
    let sig_a = sign(SECRET_A, "msg_1", NOW, body.as_bytes()).unwrap();
    let sig_b = sign(SECRET_B, "msg_2", NOW - 100, body.as_bytes()).unwrap();
    vec![
        delivery(
            &[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.clone()),
                ("webhook-signature", sig_a.clone()),
            ],
            body,
        ),
        delivery(
            &[
                ("webhook-id", "msg_2".into()),
                ("webhook-timestamp", (NOW - 100).to_string()),
                ("webhook-signature", format!("v1a,abc {sig_b} v1,AAAA")),
            ],
            body,
        ),
        delivery(
            &[
                ("authorization", format!("Bearer {BEARER}")),
                ("webhook-id", "msg_3".into()),
            ],
            body,
        ),
        delivery(
            &[
                ("webhook-id", "msg_1".into()),
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts),
                ("webhook-signature", sig_a),
            ],
            "[]",
        ),
    ]
}

/// Splits a delivery back into headers and body; `None` for bytes no HTTP/1 request can carry
/// as a header (hyper refuses them before the verifier).
fn parse_delivery(bytes: &[u8]) -> Option<(HeaderMap, &[u8])> {
    let split = bytes.windows(2).position(|w| w == b"\n\n")?;
    let (head, body) = (&bytes[..split], &bytes[split + 2..]);
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        headers.append(name, value);
    }
    Some((headers, body))
}

#[test]
fn webhook_signature() {
    let verifier = Verifier::new(
        &[SecretString::from(SECRET_A), SecretString::from(SECRET_B)],
        Some(&SecretString::from(BEARER)),
        Duration::from_secs(300),
    )
    .unwrap();
    fuzz("webhook_signature", signature_seeds(), |bytes| {
        let Some((headers, body)) = parse_delivery(bytes) else {
            return Ok("not_http");
        };
        let delivery = match verifier.verify(&headers, body, NOW) {
            Ok(d) => d,
            Err(AuthError::Missing) => return Ok("refused:missing"),
            Err(AuthError::Malformed) => return Ok("refused:malformed"),
            Err(AuthError::Stale) => return Ok("refused:stale"),
            Err(AuthError::Mismatch) => return Ok("refused:mismatch"),
            Err(AuthError::BadToken) => return Ok("refused:bad_token"),
        };
        // Whatever the mutation did, only a genuine delivery is authentic.
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if delivery.signed {
            let id = delivery
                .id
                .as_deref()
                .ok_or("a signed delivery without an id")?;
            if (NOW - delivery.timestamp).abs() > 300 {
                return Err(format!("timestamp {} accepted", delivery.timestamp));
            }
            let presented = text("webhook-signature").ok_or("no signature header")?;
            let genuine = [SECRET_A, SECRET_B].iter().any(|secret| {
                let expected = sign(secret, id, delivery.timestamp, body).unwrap();
                presented
                    .split_ascii_whitespace()
                    .any(|s| s.trim_end_matches('=') == expected.trim_end_matches('='))
            });
            if !genuine
                || text("webhook-timestamp") != Some(delivery.timestamp.to_string().as_str())
            {
                return Err("a forged signature was accepted".into());
            }
        } else if text("authorization").map(|a| a.split_once(' ').map(|(_, t)| t.trim()))
            != Some(Some(BEARER))
        {
            return Err("a delivery without the bearer token was accepted".into());
        }
        Ok(if delivery.signed {
            "authentic:signed"
        } else {
            "authentic:bearer"
        })
    });
}

#[test]
fn config_toml() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read(root.join("trustgate.example.toml")).unwrap();
    let seeds = vec![
        example,
        b"[kafka]\nbrokers = \"127.0.0.1:9092\"\n".to_vec(),
        br#"[kafka]
brokers = "b1:9092,b2:9092"
security_protocol = "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "u"
sasl_password = "p"
[kafka.properties]
"ssl.key.pem" = "x"
[admin]
listen = "0.0.0.0:9464"
token = "t"
[webhook]
enabled = true
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[[policy.custom]]
name = "vpn"
applications = ["vpn"]
require_trusted = true
"#
        .to_vec(),
    ];
    fuzz("config_toml", seeds, |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Ok("not_utf8"); // `load` reads the file as UTF-8 first
        };
        match trustgate::config::load_str(text, "fuzz.toml", std::iter::empty()) {
            Ok(loaded) => {
                // `check-config` prints this: it must be TOML again.
                let shown = loaded.redacted_toml();
                shown
                    .parse::<toml::Table>()
                    .map(|_| "loaded")
                    .map_err(|e| format!("check-config output is not TOML: {e}"))
            }
            Err(e) if e.to_string().is_empty() => Err("an empty configuration error".into()),
            Err(ConfigError::Parse { .. }) => Ok("error:parse"),
            Err(ConfigError::Invalid(_)) => Ok("error:invalid"),
            Err(_) => Ok("error:other"),
        }
    });
}

/// RELIABILITY.md's table is what `scripts/reliability-table` makes of the catalog and the
/// recorded results: a figure typed into it, or a results line not yet rendered, fails here.
#[test]
fn reliability_table_is_generated() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/reliability-table"))
        .arg("--check")
        .output()
        .expect("python3 runs scripts/reliability-table");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
