//! Decision requests (`schemas/decision-request.v1.json`): reading and validating them.
//!
//! A request is untrusted input: before it is read for meaning it passes [`crate::json::check`]
//! within [`REQUEST_LIMITS`], so a duplicate key (`"trusted":false,"trusted":true`), a number
//! past 64 bits, invalid UTF-8, deep nesting or an oversized body is `invalid_request`, never a
//! guess at what the caller meant.

use crate::json::{self, JsonError};
use crate::policy::{RequestIdentifiers, Subject};
use crate::se::{self, Platform, MAX_IDENTIFIER_BYTES};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The bounds of a request body. A request is a few hundred bytes and three levels deep.
pub const REQUEST_LIMITS: json::Limits = json::Limits {
    max_bytes: 64 * 1024,
    max_depth: 32,
};

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// The caller's id, echoed in the response.
    pub request_id: String,
    pub(crate) application: String,
    /// What the decision procedure reads: trust, platform and normalised identifiers.
    pub subject: Subject,
}

/// Why a request is invalid. Without a `request_id` there is nobody to answer: the Kafka path
/// dead-letters such a request instead of replying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    pub(crate) request_id: Option<String>,
    pub(crate) error: String,
}

impl InvalidRequest {
    /// The request's id, when one could be read: the `invalid_request` reply goes to it;
    /// without one the request is dead-lettered.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Why the request is invalid (the response's `error`).
    pub fn error(&self) -> &str {
        &self.error
    }
}

/// Reads and validates a request body.
pub fn parse(body: &[u8]) -> Result<ValidRequest, InvalidRequest> {
    let fail = |request_id: Option<String>, error: String| InvalidRequest { request_id, error };
    match json::check(body, REQUEST_LIMITS) {
        Ok(()) => {}
        Err(JsonError::Syntax(e)) => return Err(fail(None, format!("request is not JSON: {e}"))),
        Err(e @ JsonError::TooLarge { .. }) => {
            return Err(fail(None, format!("request refused: {e}")))
        }
        Err(e) => {
            return Err(fail(
                readable_request_id(body),
                format!("request refused: {e}"),
            ))
        }
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| fail(None, format!("request is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(fail(None, "request is not a JSON object".into()));
    };
    let request_id = match obj.get("request_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(_) => return Err(fail(None, "request_id must be a non-empty string".into())),
        None => return Err(fail(None, "request_id is required".into())),
    };
    validate(&obj, &request_id).map_err(|error| fail(Some(request_id.clone()), error))
}

/// The `request_id` of a request refused by the JSON checks, when it can still be read without
/// doubt (one top-level `request_id`, a non-empty string), so the caller hears why; otherwise
/// the request is unanswerable.
fn readable_request_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        // serde refuses a second `request_id`: two of them are not a readable id.
        #[serde(default)]
        request_id: Option<String>,
    }
    serde_json::from_slice::<Probe>(body)
        .ok()?
        .request_id
        .filter(|id| !id.is_empty())
}

fn validate(obj: &Map<String, Value>, request_id: &str) -> Result<ValidRequest, String> {
    let application = match obj.get("application") {
        Some(Value::String(app)) if !app.is_empty() => app.clone(),
        Some(_) => return Err("application must be a non-empty string".into()),
        None => return Err("application is required".into()),
    };
    // `user` is part of the contract and must be a string when present, but no rule reads it.
    optional_string(obj, "user")?;
    let device = match obj.get("device") {
        Some(Value::Object(device)) => device,
        Some(_) => return Err("device must be an object".into()),
        None => return Err("device is required".into()),
    };
    let trusted = match device.get("trusted") {
        Some(Value::Bool(t)) => *t,
        Some(_) => return Err("device.trusted must be a boolean".into()),
        None => return Err("device.trusted is required".into()),
    };
    let os = match optional_string(device, "os")? {
        Some(os) => Some(Platform::from_request(&os).ok_or_else(|| {
            format!("device.os {os:?} is not one of windows, macos, linux, ios, android, chromeos, other")
        })?),
        None => None,
    };
    let ids = identifiers(device)?;
    Ok(ValidRequest {
        request_id: request_id.to_owned(),
        application,
        subject: Subject { trusted, os, ids },
    })
}

/// At most this many MAC addresses in one request: each is a store lookup, and no real device
/// has more, so a longer list is a malformed (or hostile) request, answered `invalid_request`.
pub(crate) const MAX_MAC_ADDRESSES: usize = 32;

fn identifiers(device: &Map<String, Value>) -> Result<RequestIdentifiers, String> {
    let guid = identifier(device, "connector_guid")?;
    let processor = identifier(device, "windows_processor_id")?;
    let hostname = identifier(device, "hostname")?;
    let macs = match device.get("mac_addresses") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() > MAX_MAC_ADDRESSES => {
            return Err(format!(
                "device.mac_addresses holds {} entries; at most {MAX_MAC_ADDRESSES} are accepted",
                items.len()
            ))
        }
        Some(Value::Array(items)) => {
            let mut macs = Vec::with_capacity(items.len());
            for item in items {
                let text = item
                    .as_str()
                    .ok_or("device.mac_addresses must hold strings")?;
                macs.push(se::normalize_mac(text).ok_or_else(|| {
                    format!("device.mac_addresses: {text:?} is not a MAC address")
                })?);
            }
            macs.sort();
            macs.dedup();
            macs
        }
        Some(_) => return Err("device.mac_addresses must be an array".into()),
    };
    Ok(RequestIdentifiers {
        connector_guid: guid.as_deref().and_then(se::normalize_guid),
        windows_processor_id: processor.as_deref().and_then(se::normalize_processor_id),
        macs,
        hostname: hostname.as_deref().and_then(se::normalize_hostname),
    })
}

fn optional_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

/// An identifier field: a string of at most [`MAX_IDENTIFIER_BYTES`]. A longer one is no SE
/// identifier; refusing it says so, where dropping it would match the device by a weaker one.
fn identifier(device: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    let value = optional_string(device, field)?;
    match value {
        Some(v) if v.trim().len() > MAX_IDENTIFIER_BYTES => Err(format!(
            "device.{field} is {} bytes long; at most {MAX_IDENTIFIER_BYTES} are accepted",
            v.trim().len()
        )),
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_parses_and_normalises() {
        let req = parse(br#"{"request_id":"r1","application":"vpn","user":"ann","device":{"trusted":true,"os":"Windows",
            "connector_guid":"ABC","mac_addresses":["AA-BB-CC-DD-EE-FF"],"hostname":"FIN-LT-0042"}}"#)
        .unwrap();
        assert_eq!(req.subject.os, Some(Platform::Windows));
        assert_eq!(req.subject.ids.connector_guid.as_deref(), Some("abc"));
        assert_eq!(req.subject.ids.macs, vec!["aabbccddeeff".to_string()]);
        assert_eq!(req.subject.ids.hostname.as_deref(), Some("fin-lt-0042"));
    }

    #[test]
    fn errors_keep_the_request_id_when_there_is_one() {
        let err = parse(br#"{"request_id":"r2","device":{"trusted":true}}"#).unwrap_err();
        assert_eq!(err.request_id.as_deref(), Some("r2"));
        assert!(err.error.contains("application"));
        let err = parse(br#"{"application":"a"}"#).unwrap_err();
        assert_eq!(err.request_id, None);
        assert!(parse(b"not json").unwrap_err().error.contains("not JSON"));
    }

    #[test]
    fn more_than_32_mac_addresses_is_an_invalid_request() {
        let request = |n: usize| {
            let macs: Vec<String> = (0..n).map(|i| format!("02-00-00-00-00-{i:02X}")).collect();
            serde_json::to_vec(&serde_json::json!({"request_id":"r","application":"a",
                "device":{"trusted":true,"mac_addresses":macs}}))
            .unwrap()
        };
        assert_eq!(parse(&request(32)).unwrap().subject.ids.macs.len(), 32);
        let err = parse(&request(33)).unwrap_err();
        assert_eq!(err.request_id.as_deref(), Some("r"));
        assert!(err.error.contains("mac_addresses"), "{}", err.error);
    }

    #[test]
    fn trusted_must_be_a_boolean() {
        let err = parse(br#"{"request_id":"r","application":"a","device":{"trusted":"yes"}}"#)
            .unwrap_err();
        assert!(err.error.contains("device.trusted"));
    }

    /// Issue #14 item 4: hostile bodies are `invalid_request`, answered to their `request_id`
    /// when one can be read without doubt.
    mod hostile {
        use super::*;
        use rstest::rstest;

        #[test]
        fn two_trusted_values_are_refused_not_guessed() {
            // serde_json alone keeps the last value: this request was taken as trusted.
            let err = parse(
                br#"{"request_id":"r","application":"a","device":{"trusted":false,"trusted":true}}"#,
            )
            .unwrap_err();
            assert_eq!(err.request_id.as_deref(), Some("r"));
            assert!(
                err.error.contains("duplicate key \"trusted\""),
                "{}",
                err.error
            );
        }

        #[rstest]
        #[case(
            r#"{"request_id":"r","application":"a","application":"b","device":{"trusted":true}}"#
        )]
        #[case(r#"{"request_id":"r","application":"a","device":{"trusted":true,"hostname":"x","hostname":"y"}}"#)]
        #[case(r#"{"request_id":"r","application":"a","device":{"trusted":true},"device":{"trusted":false}}"#)]
        fn any_duplicate_key_is_invalid(#[case] body: &str) {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.request_id.as_deref(), Some("r"));
            assert!(err.error.contains("duplicate key"), "{}", err.error);
        }

        #[test]
        fn two_request_ids_leave_the_request_unanswerable() {
            let err =
                parse(br#"{"request_id":"r1","request_id":"r2","application":"a","device":{"trusted":true}}"#)
                    .unwrap_err();
            assert_eq!(err.request_id, None);
        }

        #[test]
        fn an_oversized_request_is_invalid() {
            let body = format!(
                r#"{{"request_id":"r","application":"a","device":{{"trusted":true}},"pad":"{}"}}"#,
                "x".repeat(REQUEST_LIMITS.max_bytes)
            );
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.request_id, None, "not read at all");
            assert!(err.error.contains("at most 65536"), "{}", err.error);
        }

        #[rstest]
        #[case::deep(format!(r#"{{"request_id":"r","application":"a","device":{{"trusted":true}},"x":{}{}}}"#, "[".repeat(40), "]".repeat(40)).into_bytes(), "nested deeper")]
        #[case::number(br#"{"request_id":"r","application":"a","device":{"trusted":true},"n":18446744073709551616}"#.to_vec(), "64-bit")]
        #[case::utf8(b"{\"request_id\":\"r\",\"application\":\"a\",\"user\":\"\xff\",\"device\":{\"trusted\":true}}".to_vec(), "UTF-8")]
        fn other_hostile_bodies_are_invalid(#[case] body: Vec<u8>, #[case] says: &str) {
            let err = parse(&body).unwrap_err();
            assert_eq!(err.request_id.as_deref(), Some("r"));
            assert!(err.error.contains(says), "{}", err.error);
        }

        #[rstest]
        #[case("connector_guid")]
        #[case("windows_processor_id")]
        #[case("hostname")]
        fn an_overlong_identifier_is_invalid(#[case] field: &str) {
            let body = |len: usize| {
                let mut device = Map::new();
                device.insert("trusted".into(), Value::Bool(true));
                device.insert(field.into(), Value::String("a".repeat(len)));
                serde_json::to_vec(&serde_json::json!({"request_id":"r","application":"a",
                    "device": device}))
                .unwrap()
            };
            parse(&body(MAX_IDENTIFIER_BYTES)).unwrap();
            let err = parse(&body(MAX_IDENTIFIER_BYTES + 1)).unwrap_err();
            assert!(err.error.contains(field), "{}", err.error);
        }
    }
}
