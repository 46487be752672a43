//! Decision requests (`schemas/decision-request.v1.json`): reading and validating them.
//!
//! A request is untrusted input: before it is read for meaning it passes [`crate::json::check`]
//! within [`REQUEST_LIMITS`], so a duplicate key (`"trusted":false,"trusted":true`), a number
//! past 64 bits, invalid UTF-8, deep nesting or an oversized body is `invalid_request`, never a
//! guess at what the caller meant.
//!
//! It is then read into typed fields ([`Raw`]: borrowed from the body where the text has no
//! escapes) instead of a `serde_json::Value` tree: the tree cost an allocation per key and value
//! and was most of a decision's CPU once device lookups moved to memory (issue #11). Each field
//! is read as whatever JSON it holds, never refused by serde, so every field is still judged by
//! the rules below in the same order and with the same `invalid_request` reasons.
//!
//! The decide path reads a [`BorrowedRequest`] ([`parse_borrowed`]): its request id and
//! application stay borrowed from the body, so a decision copies only what it keeps (the
//! normalised identifiers, and the request id into the response).

use crate::json::{self, JsonError};
use crate::policy::{RequestIdentifiers, Subject};
use crate::se::{self, Platform, MAX_IDENTIFIER_BYTES};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

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

/// A request that passed validation, its request id and application still borrowed from the
/// body (unless their JSON text held escapes): what one decision reads, without copying text
/// that the decision only looks at. [`parse`] gives the owned [`ValidRequest`].
#[derive(Debug)]
pub(crate) struct BorrowedRequest<'a> {
    pub(crate) request_id: Cow<'a, str>,
    pub(crate) application: Cow<'a, str>,
    pub(crate) subject: Subject,
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
    parse_borrowed(body).map(|req| ValidRequest {
        request_id: req.request_id.into_owned(),
        application: req.application.into_owned(),
        subject: req.subject,
    })
}

/// [`parse`], keeping the request id and application borrowed from `body`: the decide path's.
pub(crate) fn parse_borrowed(body: &[u8]) -> Result<BorrowedRequest<'_>, InvalidRequest> {
    let fail = |request_id: Option<String>, error: String| InvalidRequest { request_id, error };
    let text = match json::check_text(body, REQUEST_LIMITS) {
        Ok(text) => text,
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
    };
    // From the checked text: its UTF-8 is not checked a second time, string by string.
    let top: Object<Fields<'_>> =
        serde_json::from_str(text).map_err(|e| fail(None, format!("request is not JSON: {e}")))?;
    let Object::Is(fields) = top else {
        return Err(fail(None, "request is not a JSON object".into()));
    };
    let request_id = match &fields.request_id {
        Raw::Str(id) if !id.is_empty() => id.clone(),
        Raw::Missing => return Err(fail(None, "request_id is required".into())),
        _ => return Err(fail(None, "request_id must be a non-empty string".into())),
    };
    match validate(&fields) {
        Ok((application, subject)) => Ok(BorrowedRequest {
            request_id,
            application,
            subject,
        }),
        Err(error) => Err(fail(Some(request_id.into_owned()), error)),
    }
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

/// The top-level fields a request is read for; any other member is ignored (the JSON checks
/// already walked it).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow)]
    request_id: Raw<'a>,
    #[serde(default, borrow)]
    application: Raw<'a>,
    #[serde(default, borrow)]
    user: Raw<'a>,
    #[serde(default, borrow)]
    device: Object<DeviceFields<'a>>,
}

/// The `device` fields a request is read for.
#[derive(Deserialize)]
struct DeviceFields<'a> {
    #[serde(default, borrow)]
    trusted: Raw<'a>,
    #[serde(default, borrow)]
    os: Raw<'a>,
    #[serde(default, borrow)]
    connector_guid: Raw<'a>,
    #[serde(default, borrow)]
    windows_processor_id: Raw<'a>,
    #[serde(default, borrow)]
    hostname: Raw<'a>,
    #[serde(default, borrow)]
    mac_addresses: Raw<'a>,
}

/// One field's value as far as validation needs it. Reading it never fails: what it holds is
/// judged afterwards, so a wrong type is an `invalid_request` with the field's own reason.
#[derive(Debug, Default)]
enum Raw<'a> {
    /// The field is absent.
    #[default]
    Missing,
    Null,
    Bool(bool),
    /// Borrowed from the body unless the JSON string held escapes.
    Str(Cow<'a, str>),
    /// An array: each item's text, or `None` for an item that is not a string.
    Array(Vec<Option<Cow<'a, str>>>),
    /// A number or an object.
    Other,
}

/// A value that is read as `T` when it is an object: the top level and `device`.
#[derive(Default)]
enum Object<T> {
    #[default]
    Missing,
    Is(T),
    /// Present but not an object (`null` included).
    Not,
}

/// Consumes whatever an array or object holds, keeping nothing.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Raw::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Raw::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Raw::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Raw::Other)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Raw::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Raw::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Raw::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(Item(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map)?;
                Ok(Raw::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// An array item: its text when it is a string.
struct Item<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Item<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Item(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Item(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Item(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Item(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Item(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Item(None))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Item(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Item(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Item(Some(Cow::Owned(v))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq)?;
                Ok(Item(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map)?;
                Ok(Item(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object::Is)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq)?;
                Ok(Object::Not)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Object::Not)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Object::Not)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Object::Not)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Object::Not)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Object::Not)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Object::Not)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Object::Not)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn validate<'a>(fields: &Fields<'a>) -> Result<(Cow<'a, str>, Subject), String> {
    let application = match &fields.application {
        Raw::Str(app) if !app.is_empty() => app.clone(),
        Raw::Missing => return Err("application is required".into()),
        _ => return Err("application must be a non-empty string".into()),
    };
    // `user` is part of the contract and must be a string when present, but no rule reads it.
    optional_string(&fields.user, "user")?;
    let device = match &fields.device {
        Object::Is(device) => device,
        Object::Not => return Err("device must be an object".into()),
        Object::Missing => return Err("device is required".into()),
    };
    let trusted = match device.trusted {
        Raw::Bool(t) => t,
        Raw::Missing => return Err("device.trusted is required".into()),
        _ => return Err("device.trusted must be a boolean".into()),
    };
    let os = match optional_string(&device.os, "os")? {
        Some(os) => Some(Platform::from_request(os).ok_or_else(|| {
            format!("device.os {os:?} is not one of windows, macos, linux, ios, android, chromeos, other")
        })?),
        None => None,
    };
    let ids = identifiers(device)?;
    Ok((application, Subject { trusted, os, ids }))
}

/// At most this many MAC addresses in one request: each is a store lookup, and no real device
/// has more, so a longer list is a malformed (or hostile) request, answered `invalid_request`.
pub(crate) const MAX_MAC_ADDRESSES: usize = 32;

fn identifiers(device: &DeviceFields<'_>) -> Result<RequestIdentifiers, String> {
    let guid = identifier(&device.connector_guid, "connector_guid")?;
    let processor = identifier(&device.windows_processor_id, "windows_processor_id")?;
    let hostname = identifier(&device.hostname, "hostname")?;
    let macs = match &device.mac_addresses {
        Raw::Missing | Raw::Null => Vec::new(),
        Raw::Array(items) if items.len() > MAX_MAC_ADDRESSES => {
            return Err(format!(
                "device.mac_addresses holds {} entries; at most {MAX_MAC_ADDRESSES} are accepted",
                items.len()
            ))
        }
        Raw::Array(items) => {
            let mut macs = Vec::with_capacity(items.len());
            for item in items {
                let text = item
                    .as_deref()
                    .ok_or("device.mac_addresses must hold strings")?;
                macs.push(se::normalize_mac(text).ok_or_else(|| {
                    format!("device.mac_addresses: {text:?} is not a MAC address")
                })?);
            }
            macs.sort();
            macs.dedup();
            macs
        }
        _ => return Err("device.mac_addresses must be an array".into()),
    };
    Ok(RequestIdentifiers {
        connector_guid: guid.and_then(se::normalize_guid),
        windows_processor_id: processor.and_then(se::normalize_processor_id),
        macs,
        hostname: hostname.and_then(se::normalize_hostname),
    })
}

/// A field that must be a string when present; `null` and blank text count as absent.
fn optional_string<'r>(raw: &'r Raw<'_>, field: &str) -> Result<Option<&'r str>, String> {
    match raw {
        Raw::Missing | Raw::Null => Ok(None),
        Raw::Str(s) if s.trim().is_empty() => Ok(None),
        Raw::Str(s) => Ok(Some(s)),
        _ => Err(format!("{field} must be a string")),
    }
}

/// An identifier field: a string of at most [`MAX_IDENTIFIER_BYTES`]. A longer one is no SE
/// identifier; refusing it says so, where dropping it would match the device by a weaker one.
fn identifier<'r>(raw: &'r Raw<'_>, field: &str) -> Result<Option<&'r str>, String> {
    let value = optional_string(raw, field)?;
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
    use serde_json::{Map, Value};

    /// The parser as it was before requests were read into typed fields (a `serde_json::Value`
    /// tree): the model the typed parser must agree with on every body, reasons included.
    mod reference {
        use super::super::{readable_request_id, MAX_MAC_ADDRESSES, REQUEST_LIMITS};
        use super::super::{InvalidRequest, ValidRequest};
        use crate::json::{self, JsonError};
        use crate::policy::{RequestIdentifiers, Subject};
        use crate::se::{self, Platform, MAX_IDENTIFIER_BYTES};
        use serde_json::{Map, Value};

        /// Reads and validates a request body.
        pub(super) fn parse(body: &[u8]) -> Result<ValidRequest, InvalidRequest> {
            let fail =
                |request_id: Option<String>, error: String| InvalidRequest { request_id, error };
            match json::check(body, REQUEST_LIMITS) {
                Ok(()) => {}
                Err(JsonError::Syntax(e)) => {
                    return Err(fail(None, format!("request is not JSON: {e}")))
                }
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

        fn optional_string(
            obj: &Map<String, Value>,
            field: &str,
        ) -> Result<Option<String>, String> {
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
    }

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

    /// Issue #11: the typed parser agrees with the `Value`-tree parser it replaced on every
    /// body, valid or not: the same request, or the same reason and request id.
    mod agrees_with_the_tree_parser {
        use super::*;
        use proptest::prelude::*;

        fn same(body: &[u8]) -> Result<(), TestCaseError> {
            let typed = format!("{:?}", parse(body));
            let tree = format!("{:?}", reference::parse(body));
            prop_assert_eq!(typed, tree, "body {}", String::from_utf8_lossy(body));
            Ok(())
        }

        fn text() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(String::new()),
                Just("  ".to_owned()),
                Just("r1".to_owned()),
                Just("Windows".to_owned()),
                Just(" macOS ".to_owned()),
                Just("beos".to_owned()),
                Just("AA:BB:CC:DD:EE:FF".to_owned()),
                Just("aa-bb-cc-dd-ee-f".to_owned()),
                Just("0D5E4F3A-1B2C-4D5E".to_owned()),
                Just("FIN-LT-0042.corp.".to_owned()),
                Just("quote\"and\\slash\u{e9}".to_owned()),
                Just("a".repeat(MAX_IDENTIFIER_BYTES)),
                Just(format!(" {} ", "a".repeat(MAX_IDENTIFIER_BYTES))),
                Just("a".repeat(MAX_IDENTIFIER_BYTES + 1)),
                "[a-fA-F0-9:. -]{0,20}",
            ]
            .prop_map(Value::String)
        }

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                Just(Value::from(2.5)),
                text(),
                text(),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                4 => scalar(),
                2 => proptest::collection::vec(scalar(), 0..40).prop_map(Value::Array),
                1 => proptest::collection::vec(proptest::collection::vec(scalar(), 0..3)
                    .prop_map(Value::Array), 0..3).prop_map(Value::Array),
                1 => scalar().prop_map(|v| serde_json::json!({ "k": v })),
            ]
        }

        fn object(
            keys: &'static [&'static str],
            member: BoxedStrategy<Value>,
        ) -> BoxedStrategy<Value> {
            proptest::collection::vec((proptest::sample::select(keys), member), 0..keys.len() + 1)
                .prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                })
                .boxed()
        }

        fn device() -> BoxedStrategy<Value> {
            let keys = &[
                "trusted",
                "os",
                "connector_guid",
                "windows_processor_id",
                "hostname",
                "mac_addresses",
                "extra",
            ];
            prop_oneof![4 => object(keys, value().boxed()), 1 => value()].boxed()
        }

        fn request() -> BoxedStrategy<Value> {
            let member = prop_oneof![3 => value(), 2 => device()].boxed();
            let keys = &[
                "request_id",
                "application",
                "user",
                "device",
                "device",
                "extra",
            ];
            prop_oneof![8 => object(keys, member), 1 => value()].boxed()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4_000))]
            #[test]
            fn on_generated_requests(request in request()) {
                same(&serde_json::to_vec(&request).unwrap())?;
            }

            #[test]
            fn on_mutated_bytes(seed in 0usize..4, cut in any::<prop::sample::Index>(),
                byte in any::<u8>()) {
                let seeds = [
                    &br#"{"request_id":"r1","application":"vpn","device":{"trusted":true,"hostname":"fin-lt-0042"}}"#[..],
                    br#"{"request_id":"r","application":"citrix","user":"ann","device":{"trusted":true,"os":"windows","connector_guid":"0D5E","windows_processor_id":"BFEB","mac_addresses":["00:50:56:A1:2B:3C","00-50-56-a1-2b-3d"],"hostname":"WS.corp"}}"#,
                    br#"{"request_id":"r3","application":"ssh","device":{"trusted":false,"os":"macOS"}}"#,
                    br#"{"request_id":"r4","application":"a","user":null,"device":{"trusted":true,"os":"linux","hostname":null,"mac_addresses":null,"extra":{"nested":[1,2.5,"x"]}}}"#,
                ];
                let mut body = seeds[seed].to_vec();
                let at = cut.index(body.len());
                body[at] = byte;
                same(&body)?;
            }
        }
    }
}
