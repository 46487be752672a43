//! A `/v1/events` `data[]` item.

use super::NetworkAddress;
use serde::{de, Deserialize, Deserializer};

/// The fields of an SE event that trustgate relies on. Everything else SE sends is ignored here
/// but kept on the events topic, because the topic carries SE's bytes, not this struct.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// SE's event id: 64-bit, above 2^53, not time-ordered. Bridges written in JavaScript often
    /// send it as a string to avoid float rounding, so both forms are accepted.
    #[serde(default, deserialize_with = "u64_or_string")]
    pub id: Option<u64>,
    /// The event type (see `/v1/event_types`); type ids exceed `i32`.
    #[serde(deserialize_with = "required_u64_or_string")]
    pub event_type_id: u64,
    /// RFC 3339 as SE sends it; kept as text so a malformed date never rejects the event.
    #[serde(default)]
    pub(crate) date: Option<String>,
    #[serde(default)]
    pub(crate) detection_id: Option<String>,
    /// Top-level copy of `computer.connector_guid` that SE adds on most events.
    #[serde(default)]
    connector_guid: Option<String>,
    #[serde(default)]
    pub(crate) computer: Option<EventComputer>,
}

/// The `computer` object embedded in an event.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub(crate) struct EventComputer {
    #[serde(default)]
    connector_guid: Option<String>,
    #[serde(default)]
    pub(crate) hostname: Option<String>,
    #[serde(default)]
    pub(crate) network_addresses: Vec<NetworkAddress>,
}

impl Event {
    /// The device this event is about: `connector_guid`, else `computer.connector_guid`.
    pub fn connector_guid(&self) -> Option<String> {
        self.connector_guid
            .as_deref()
            .and_then(super::normalize_guid)
            .or_else(|| {
                self.computer
                    .as_ref()?
                    .connector_guid
                    .as_deref()
                    .and_then(super::normalize_guid)
            })
    }
}

fn u64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<IntOrString>::deserialize(d)?
        .map(IntOrString::into_u64)
        .transpose()
        .map_err(de::Error::custom)
}

fn required_u64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    IntOrString::deserialize(d)?
        .into_u64()
        .map_err(de::Error::custom)
}

/// An integer JSON token or a string of digits. serde_json reads integer tokens straight into
/// `u64`, so no value passes through `f64`; a float token (`6.4e18`) is refused, not rounded.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u64),
    Text(String),
}

impl IntOrString {
    fn into_u64(self) -> Result<u64, String> {
        match self {
            IntOrString::Int(n) => Ok(n),
            IntOrString::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("expected an unsigned 64-bit integer, got {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_above_two_pow_53_survive_exactly() {
        let e: Event = serde_json::from_str(
            r#"{"id":6533241145273614339,"event_type_id":1090519054,"connector_guid":"ABC"}"#,
        )
        .unwrap();
        assert_eq!(e.id, Some(6533241145273614339));
        assert_eq!(e.connector_guid().as_deref(), Some("abc"));
    }

    #[test]
    fn string_ids_and_type_ids_above_i32_are_read() {
        let e: Event =
            serde_json::from_str(r#"{"id":"6533241145273614339","event_type_id":2164260880}"#)
                .unwrap();
        assert_eq!(e.id, Some(6533241145273614339));
        assert_eq!(e.event_type_id, 2164260880);
    }

    #[test]
    fn float_ids_are_refused_rather_than_rounded() {
        let r = serde_json::from_str::<Event>(r#"{"id":6.5e18,"event_type_id":1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn guid_falls_back_to_the_embedded_computer() {
        let e: Event = serde_json::from_str(
            r#"{"event_type_id":1,"computer":{"connector_guid":"g-1","hostname":"h"}}"#,
        )
        .unwrap();
        assert_eq!(e.connector_guid().as_deref(), Some("g-1"));
    }
}
