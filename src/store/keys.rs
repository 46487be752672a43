//! The store's key layout, encoded here and nowhere else.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | device | `D` guid | version byte + postcard `DeviceState` |
//! | hostname index | `H` hostname `\0` guid | empty |
//! | MAC index | `M` mac `\0` guid | empty |
//! | processor-id index | `P` id `\0` guid | empty |
//! | ingest offset | `O` topic `\0` partition (i32 BE) | next offset (i64 BE) |
//! | source liveness | `F` source | newest record time, unix ms (i64 BE) |
//! | last applied record | `R` topic `\0` partition (i32 BE) | its Kafka timestamp, unix ms (i64 BE) |
//!
//! Index values are normalised (lower case; MACs as 12 hex digits) and never contain `\0`.
//! The hostname index is scanned by prefix: a stored `fin-lt-0042.corp.example.com` is found
//! by `fin-lt-0042` because the byte after the prefix is `.`; the other way, a stored
//! `fin-lt-0042` is found by `fin-lt-0042.corp.example.com` through exact lookups of the
//! request's name cut before each dot.

use crate::fold::DeviceState;
use std::collections::BTreeSet;

pub(crate) const DEVICE: u8 = b'D';
pub(crate) const HOSTNAME: u8 = b'H';
pub(crate) const MAC: u8 = b'M';
pub(crate) const PROCESSOR: u8 = b'P';
pub(crate) const OFFSET: u8 = b'O';
/// Liveness keys keep the `F` (for "feed") they were first written with.
pub(crate) const LIVENESS: u8 = b'F';
/// The Kafka timestamp of the record just before each stored offset: on start, the record
/// found there must be the same one, or the topic was recreated under the same name.
pub(crate) const LAST_RECORD: u8 = b'R';

pub(crate) fn device(guid: &str) -> Vec<u8> {
    prefixed(DEVICE, guid.as_bytes())
}

fn prefixed(space: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(space);
    key.extend_from_slice(rest);
    key
}

/// `space value` with no terminator: the prefix for a hostname scan.
pub(crate) fn index_value_prefix(space: u8, value: &str) -> Vec<u8> {
    prefixed(space, value.as_bytes())
}

/// `space value \0`: the prefix of every entry for exactly `value`.
pub(crate) fn index_entry_prefix(space: u8, value: &str) -> Vec<u8> {
    let mut key = index_value_prefix(space, value);
    key.push(0);
    key
}

fn index_entry(space: u8, value: &str, guid: &str) -> Vec<u8> {
    let mut key = index_entry_prefix(space, value);
    key.extend_from_slice(guid.as_bytes());
    key
}

/// Given what follows a hostname-scan prefix, the GUID if the stored name is the requested
/// name exactly (`\0guid`) or that name followed by a domain (`.domain\0guid`).
pub(crate) fn hostname_match(rest: &[u8]) -> Option<String> {
    let nul = rest.iter().position(|b| *b == 0)?;
    let suffix = &rest[..nul];
    (suffix.is_empty() || suffix.first() == Some(&b'.'))
        .then(|| String::from_utf8_lossy(&rest[nul + 1..]).into_owned())
}

/// Every index entry a device state implies.
pub(crate) fn index_keys(state: &DeviceState) -> BTreeSet<Vec<u8>> {
    let guid = &state.connector_guid;
    let mut keys = BTreeSet::new();
    if let Some(h) = &state.hostname {
        keys.insert(index_entry(HOSTNAME, &h.value, guid));
    }
    if let Some(p) = &state.windows_processor_id {
        keys.insert(index_entry(PROCESSOR, &p.value, guid));
    }
    for mac in state.macs.iter().flat_map(|m| &m.value) {
        keys.insert(index_entry(MAC, mac, guid));
    }
    keys
}

pub(crate) fn offset_prefix(topic: &str) -> Vec<u8> {
    let mut key = prefixed(OFFSET, topic.as_bytes());
    key.push(0);
    key
}

pub(crate) fn offset(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = offset_prefix(topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// `R topic \0`: the prefix of every last-record key of `topic`.
pub(crate) fn last_record_prefix(topic: &str) -> Vec<u8> {
    let mut key = prefixed(LAST_RECORD, topic.as_bytes());
    key.push(0);
    key
}

/// `R topic \0 partition`: where the last applied record's time is kept.
pub(crate) fn last_record(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = last_record_prefix(topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub(crate) fn liveness(source: &str) -> Vec<u8> {
    prefixed(LIVENESS, source.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_prefix_matches_exact_and_domain_suffix_only() {
        assert_eq!(hostname_match(b"\0g1").as_deref(), Some("g1"));
        assert_eq!(
            hostname_match(b".corp.example.com\0g2").as_deref(),
            Some("g2")
        );
        assert_eq!(
            hostname_match(b"1\0g3"),
            None,
            "fin-lt-00421 is not fin-lt-0042"
        );
    }
}
