//! From an events-topic record (value, headers, timestamp) to a [`Fact`] about one device.

use super::device::{CompromiseEvent, EventKey, Fact, Observation, RecordIdentifiers, Stamped};
use super::FoldConfig;
use crate::json::{self, JsonError};
use crate::se::{self, Computer, Event, NetworkAddress};
use crate::time::{parse_rfc3339, Millis};
use crate::topic::Kind;
use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The parts of a Kafka record the fold reads. Header values are raw bytes as on the wire.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordInput<'a> {
    /// The record value: SE's JSON object (`None` for a tombstone, which is unusable).
    pub value: Option<&'a [u8]>,
    /// The `trustgate-kind` header; without it the kind is inferred from the value.
    pub kind: Option<&'a [u8]>,
    /// The `trustgate-source` header: which source wrote the record.
    pub source: Option<&'a [u8]>,
    /// The `trustgate-observed-at` header: when a computer record's inventory was read.
    pub observed_at: Option<&'a [u8]>,
    /// The Kafka record timestamp, as the producer (or broker) stamped it: [`classify`] clamps
    /// it to the applying instance's clock.
    pub timestamp: Millis,
}

/// A source's liveness record: the source is alive even when no device changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    source: String,
    at: Millis,
}

/// What a usable record is.
// Nearly every record is a device fact; boxing it would allocate once per record to shrink
// the rare heartbeat.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// A fact about one device.
    Device(Fact),
    /// A source's liveness record.
    Heartbeat(Heartbeat),
}

/// Why a record cannot be used. The text goes into the dead-letter header, so it names the cause.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record has no value (a tombstone).
    #[error("record has no value")]
    NoValue,
    /// The value is not well-formed JSON.
    #[error("value is not a JSON object: {0}")]
    NotJsonObject(serde_json::Error),
    /// The `trustgate-kind` header names no kind trustgate knows.
    #[error("unknown trustgate-kind header {0:?} (expected event, computer or heartbeat)")]
    UnknownKind(String),
    /// No kind header, and no field of the value tells an event from a computer.
    #[error("cannot tell the record's kind: no trustgate-kind header and the value has no event_type_id, is_compromised or operating_system")]
    UndeterminedKind,
    /// An event whose value does not have the shape of an SE event.
    #[error("invalid Secure Endpoint event: {0}")]
    InvalidEvent(serde_json::Error),
    /// A computer whose value does not have the shape of an SE computer.
    #[error("invalid Secure Endpoint computer: {0}")]
    InvalidComputer(serde_json::Error),
    /// The record is about no device trustgate could key.
    #[error("record names no device: connector_guid is missing, empty or not an identifier")]
    NoConnectorGuid,
    /// The value breaks a rule no SE record breaks (see [`RECORD_LIMITS`] and [`crate::json`]):
    /// too large, not UTF-8, nested too deep, a duplicate key, a number past 64 bits. Refused
    /// whatever its kind, so that no reader of the topic has to guess what it says.
    #[error("record refused: {0}")]
    Refused(JsonError),
}

/// The bounds of an events-topic value. SE's records are a few KiB (the largest in the fixtures
/// is 2 KiB, nested 4 deep); these leave ample room for SE to grow and none for a record built to
/// exhaust memory or stack.
pub const RECORD_LIMITS: json::Limits = json::Limits {
    max_bytes: 256 * 1024,
    max_depth: 32,
};

/// The top-level keys that tell an event from a computer when the kind header is missing.
#[derive(Deserialize)]
struct KindProbe {
    #[serde(default)]
    event_type_id: Option<IgnoredAny>,
    #[serde(default)]
    is_compromised: Option<IgnoredAny>,
    #[serde(default)]
    operating_system: Option<IgnoredAny>,
}

/// Classifies one record, as applied by an instance whose clock reads `now`. Pure: the same
/// input and `now` always give the same result.
///
/// No time taken from the record (its Kafka timestamp, `trustgate-observed-at`, an event's
/// `date`, a computer's `last_seen`) comes out later than `now`: a producer whose clock runs
/// ahead, or one forged record stamped a year ahead, must not keep `stale` off nor let its
/// clean observation outrank detections the others saw.
pub fn classify(
    input: &RecordInput<'_>,
    config: &FoldConfig,
    now: Millis,
) -> Result<Classified, RecordError> {
    let value = input.value.ok_or(RecordError::NoValue)?;
    json::check(value, RECORD_LIMITS).map_err(|e| match e {
        JsonError::Syntax(e) => RecordError::NotJsonObject(e),
        hostile => RecordError::Refused(hostile),
    })?;
    let clamped = RecordInput {
        timestamp: input.timestamp.min(now),
        ..*input
    };
    let input = &clamped;
    match record_kind(input, value)? {
        Kind::Heartbeat => Ok(Classified::Heartbeat(heartbeat(input, value))),
        Kind::Event => {
            let event: Event = serde_json::from_slice(value).map_err(RecordError::InvalidEvent)?;
            event_fact(&event, value, input.timestamp, now, config).map(Classified::Device)
        }
        Kind::Computer => {
            let computer: Computer =
                serde_json::from_slice(value).map_err(RecordError::InvalidComputer)?;
            computer_fact(&computer, input, now).map(Classified::Device)
        }
    }
}

fn record_kind(input: &RecordInput<'_>, value: &[u8]) -> Result<Kind, RecordError> {
    if let Some(raw) = input.kind {
        let text = String::from_utf8_lossy(raw);
        return Kind::parse(text.trim()).ok_or_else(|| RecordError::UnknownKind(text.into_owned()));
    }
    let probe: KindProbe = serde_json::from_slice(value).map_err(RecordError::NotJsonObject)?;
    if probe.event_type_id.is_some() {
        Ok(Kind::Event)
    } else if probe.is_compromised.is_some() || probe.operating_system.is_some() {
        Ok(Kind::Computer)
    } else {
        Err(RecordError::UndeterminedKind)
    }
}

fn heartbeat(input: &RecordInput<'_>, value: &[u8]) -> Heartbeat {
    #[derive(Deserialize)]
    struct Body {
        source: Option<String>,
    }
    let from_header = input
        .source
        .map(|s| String::from_utf8_lossy(s).trim().to_owned());
    let from_value = || {
        serde_json::from_slice::<Body>(value)
            .ok()
            .and_then(|b| b.source)
    };
    Heartbeat {
        source: from_header
            .or_else(from_value)
            .unwrap_or_else(|| "unknown".to_owned()),
        at: input.timestamp,
    }
}

fn event_fact(
    event: &Event,
    raw: &[u8],
    timestamp: Millis,
    now: Millis,
    config: &FoldConfig,
) -> Result<Fact, RecordError> {
    let guid = event.connector_guid().ok_or(RecordError::NoConnectorGuid)?;
    // `timestamp` is already clamped to the applying instance's clock; so is the event's date
    // (a date ahead would hold the detection open, and the device's identifiers, until then).
    let date = event
        .date
        .as_deref()
        .and_then(parse_rfc3339)
        .map(|d| d.min(now));
    // Identifiers are as of the event's own date; a record without one is as of its arrival.
    let at = date.unwrap_or(timestamp);
    let computer = event.computer.as_ref();
    let identifiers = RecordIdentifiers {
        hostname: computer
            .and_then(|c| c.hostname.as_deref())
            .and_then(se::normalize_hostname)
            .map(|value| Stamped { at, value }),
        macs: computer.and_then(|c| stamped_macs(&c.network_addresses, at)),
        ..RecordIdentifiers::default()
    };
    let compromise_event = config.is_compromise_class(event.event_type_id).then(|| {
        let key = match event.id {
            Some(id) => EventKey::Id {
                id,
                event_type_id: event.event_type_id,
            },
            None => EventKey::Hash(hash16(raw)),
        };
        let known = CompromiseEvent {
            event_type_id: event.event_type_id,
            detection_id: event.detection_id.clone(),
            date,
            first_seen: timestamp,
        };
        (key, known)
    });
    Ok(Fact {
        connector_guid: guid,
        record_timestamp: timestamp,
        identifiers,
        last_seen: None,
        observation: None,
        compromise_event,
    })
}

fn computer_fact(
    computer: &Computer,
    input: &RecordInput<'_>,
    now: Millis,
) -> Result<Fact, RecordError> {
    let guid = se::normalize_guid(&computer.connector_guid).ok_or(RecordError::NoConnectorGuid)?;
    // An observation can never be later than the record that carries it: a producer's clock
    // must not be able to push an observation past detections it could not have seen.
    let observed_at = input
        .observed_at
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .and_then(parse_rfc3339)
        .map_or(input.timestamp, |t| t.min(input.timestamp));
    let at = observed_at;
    let identifiers = RecordIdentifiers {
        hostname: computer
            .hostname
            .as_deref()
            .and_then(se::normalize_hostname)
            .map(|value| Stamped { at, value }),
        macs: stamped_macs(&computer.network_addresses, at),
        windows_processor_id: computer
            .windows_processor_id
            .as_deref()
            .and_then(se::normalize_processor_id)
            .map(|value| Stamped { at, value }),
        operating_system: computer
            .operating_system
            .as_deref()
            .map(str::trim)
            .filter(|os| !os.is_empty())
            .map(|os| Stamped {
                at,
                value: os.to_owned(),
            }),
    };
    Ok(Fact {
        connector_guid: guid,
        record_timestamp: input.timestamp,
        identifiers,
        last_seen: computer
            .last_seen
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|t| t.min(now)),
        observation: computer
            .is_compromised
            .map(|compromised| Observation { at, compromised }),
        compromise_event: None,
    })
}

fn stamped_macs(addresses: &[NetworkAddress], at: Millis) -> Option<Stamped<Vec<String>>> {
    let mut macs: Vec<String> = addresses
        .iter()
        .filter_map(|a| a.mac.as_deref().and_then(se::normalize_mac))
        .collect();
    macs.sort();
    macs.dedup();
    (!macs.is_empty()).then_some(Stamped { at, value: macs })
}

fn hash16(bytes: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Classifies as an instance whose clock is far ahead of every record here.
    fn classify_now(input: &RecordInput<'_>, cfg: &FoldConfig) -> Result<Classified, RecordError> {
        classify(input, cfg, Millis::MAX)
    }

    fn input(value: &str, ts: Millis) -> RecordInput<'_> {
        RecordInput {
            value: Some(value.as_bytes()),
            timestamp: ts,
            ..Default::default()
        }
    }

    #[test]
    fn kind_is_inferred_without_headers() {
        let cfg = FoldConfig::default();
        let event = classify_now(
            &input(r#"{"event_type_id":1090519054,"connector_guid":"G"}"#, 5),
            &cfg,
        )
        .unwrap();
        let Classified::Device(fact) = event else {
            panic!("device expected")
        };
        assert!(fact.compromise_event.is_some());
        let computer = classify_now(
            &input(r#"{"connector_guid":"G","is_compromised":false}"#, 5),
            &cfg,
        )
        .unwrap();
        let Classified::Device(fact) = computer else {
            panic!("device expected")
        };
        assert_eq!(
            fact.observation,
            Some(Observation {
                at: 5,
                compromised: false
            })
        );
        assert!(matches!(
            classify_now(&input(r#"{"x":1}"#, 5), &cfg),
            Err(RecordError::UndeterminedKind)
        ));
        assert!(matches!(
            classify_now(&input("garbage", 5), &cfg),
            Err(RecordError::NotJsonObject(_))
        ));
    }

    #[test]
    fn observed_at_is_capped_at_the_record_timestamp() {
        let cfg = FoldConfig::default();
        let value = r#"{"connector_guid":"G","is_compromised":false}"#;
        let future = "2100-01-01T00:00:00Z";
        let rec = RecordInput {
            observed_at: Some(future.as_bytes()),
            ..input(value, 1_000)
        };
        let Classified::Device(fact) = classify_now(&rec, &cfg).unwrap() else {
            panic!()
        };
        assert_eq!(fact.observation.unwrap().at, 1_000);
        let past = "1970-01-01T00:00:00.500Z";
        let rec = RecordInput {
            observed_at: Some(past.as_bytes()),
            ..input(value, 1_000)
        };
        let Classified::Device(fact) = classify_now(&rec, &cfg).unwrap() else {
            panic!()
        };
        assert_eq!(fact.observation.unwrap().at, 500);
    }

    #[test]
    fn computer_without_flag_is_not_an_observation() {
        let cfg = FoldConfig::default();
        let Classified::Device(fact) = classify_now(
            &input(
                r#"{"connector_guid":"G","operating_system":"Windows 10","hostname":"H"}"#,
                1,
            ),
            &cfg,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(fact.observation, None);
        assert_eq!(fact.identifiers.hostname.unwrap().value, "h");
    }

    #[test]
    fn unreadable_date_takes_the_record_timestamp() {
        let cfg = FoldConfig::default();
        let Classified::Device(fact) = classify_now(
            &input(
                r#"{"id":7,"event_type_id":1090519054,"connector_guid":"G","date":"yesterday"}"#,
                42,
            ),
            &cfg,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(fact.compromise_event.unwrap().1.time(), 42);
    }

    #[test]
    fn heartbeats_carry_their_source() {
        let cfg = FoldConfig::default();
        let rec = RecordInput {
            kind: Some(b"heartbeat"),
            source: Some(b"poll"),
            ..input(r#"{"source":"poll"}"#, 9)
        };
        assert_eq!(
            classify_now(&rec, &cfg).unwrap(),
            Classified::Heartbeat(Heartbeat {
                source: "poll".into(),
                at: 9
            })
        );
    }

    #[test]
    fn unknown_kind_header_is_refused() {
        let cfg = FoldConfig::default();
        let rec = RecordInput {
            kind: Some(b"weird"),
            ..input(r#"{"event_type_id":1}"#, 9)
        };
        assert!(matches!(
            classify_now(&rec, &cfg),
            Err(RecordError::UnknownKind(_))
        ));
    }

    #[test]
    /// Issue #10 item 2: a heartbeat stamped a year ahead is as of the applying instance's now.
    fn a_heartbeat_stamped_a_year_ahead_is_as_of_now() {
        let input = RecordInput {
            value: Some(br#"{"source":"poll"}"#),
            kind: Some(b"heartbeat"),
            timestamp: 1_790_000_000_000 + 365 * 86_400_000,
            ..Default::default()
        };
        let Classified::Heartbeat(beat) =
            classify(&input, &FoldConfig::default(), 1_790_000_000_000).unwrap()
        else {
            panic!("heartbeat expected")
        };
        assert_eq!(beat.at, 1_790_000_000_000);
    }

    /// Issue #14 item 4: values no SE record looks like are refused whole, with a reason that
    /// names the rule, whatever their kind header says. Each of these was applied before.
    mod hostile {
        use super::*;
        use crate::json::JsonError;
        use rstest::rstest;

        const EVENT: &str = r#"{"id":7,"event_type_id":1090519054,"connector_guid":"G","date":"2024-01-01T00:00:00Z""#;

        fn refused(value: &[u8], kind: Option<&'static [u8]>) -> JsonError {
            let rec = RecordInput {
                value: Some(value),
                kind,
                timestamp: 5,
                ..Default::default()
            };
            match classify_now(&rec, &FoldConfig::default()) {
                Err(RecordError::Refused(e)) => e,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }

        #[rstest]
        #[case(None)]
        #[case(Some(&b"event"[..]))]
        fn an_oversized_record_is_refused(#[case] kind: Option<&'static [u8]>) {
            let value = format!(
                r#"{EVENT},"note":"{}"}}"#,
                "x".repeat(RECORD_LIMITS.max_bytes)
            );
            let e = refused(value.as_bytes(), kind);
            assert!(matches!(e, JsonError::TooLarge { .. }), "{e}");
            assert!(RecordError::Refused(e)
                .to_string()
                .contains("at most 262144"));
        }

        #[test]
        fn deep_nesting_is_refused_even_in_a_field_nobody_reads() {
            let depth = 40; // below serde_json's own limit of 128, above any SE record
            let value = format!(
                r#"{EVENT},"extra":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            let e = refused(value.as_bytes(), Some(b"event"));
            assert!(matches!(e, JsonError::TooDeep { max: 32, .. }), "{e}");
        }

        #[test]
        fn invalid_utf8_is_refused_even_in_a_field_nobody_reads() {
            let mut value = format!(r#"{EVENT},"file":{{"name":""#).into_bytes();
            value.extend_from_slice(b"\xc3\x28.exe\"}}");
            let e = refused(&value, None);
            assert!(matches!(e, JsonError::NotUtf8 { .. }), "{e}");
        }

        #[rstest]
        #[case(r#"{"connector_guid":"G","is_compromised":false,"timestamp":18446744073709551616}"#)]
        #[case(r#"{"connector_guid":"G","is_compromised":false,"x":[-99999999999999999999]}"#)]
        fn numbers_past_64_bits_are_refused(#[case] value: &str) {
            let e = refused(value.as_bytes(), Some(b"computer"));
            assert!(matches!(e, JsonError::NumberOutOfRange { .. }), "{e}");
        }

        #[rstest]
        #[case(
            r#"{"connector_guid":"G","is_compromised":true,"is_compromised":false}"#,
            "is_compromised"
        )]
        #[case(
            r#"{"connector_guid":"G","connector_guid":"H","is_compromised":true}"#,
            "connector_guid"
        )]
        #[case(
            r#"{"id":1,"id":2,"event_type_id":1090519054,"connector_guid":"G"}"#,
            "id"
        )]
        #[case(r#"{"event_type_id":1090519054,"connector_guid":"G","computer":{"hostname":"a","hostname":"b"}}"#, "hostname")]
        #[case(
            r#"{"connector_guid":"G","is_compromised":true,"links":{"self":"a","self":"b"}}"#,
            "self"
        )]
        fn a_duplicate_key_is_refused_not_guessed(#[case] value: &str, #[case] key: &str) {
            for kind in [None, Some(&b"computer"[..]), Some(&b"event"[..])] {
                match refused(value.as_bytes(), kind) {
                    JsonError::DuplicateKey { key: k, .. } => assert_eq!(k, key),
                    e => panic!("{e}"),
                }
            }
        }

        #[test]
        fn a_hostile_heartbeat_is_refused_too() {
            let e = refused(
                br#"{"source":"poll","source":"webhook"}"#,
                Some(b"heartbeat"),
            );
            assert!(matches!(e, JsonError::DuplicateKey { .. }), "{e}");
        }

        #[test]
        fn every_fixture_record_passes_the_checks() {
            let cfg = FoldConfig::default();
            let pages = [
                include_str!("../../tests/fixtures/computers-page.json"),
                include_str!("../../tests/fixtures/events-correlation-detection-id.json"),
                include_str!("../../tests/fixtures/events-query-detection-sha256.json"),
            ];
            let lines = include_str!("../../tests/fixtures/events-elastic.jsonl").lines();
            for body in pages.into_iter().chain(lines) {
                for record in crate::se::split_records(body).unwrap().records {
                    let result = classify_now(&input(record.get(), 1), &cfg);
                    assert!(
                        !matches!(result, Err(RecordError::Refused(_))),
                        "{result:?}"
                    );
                }
            }
        }
    }
}
