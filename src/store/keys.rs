//! The store's key layout, encoded here and nowhere else.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | device | `D` guid | version byte (2) + postcard `DeviceState` + postcard `recent_refs` (its newest record references, at most `RECENT_REFS`) |
//! | ingest offset | `O` topic `\0` partition (i32 BE) | next offset (i64 BE) |
//! | source liveness | `F` source | newest record time, unix ms (i64 BE) |
//! | last applied record | `R` topic `\0` partition (i32 BE) | its Kafka timestamp, unix ms (i64 BE) |
//! | device record reference | `Y` guid `\0` partition (i32 BE) offset (i64 BE) | the record's Kafka timestamp, unix ms (i64 BE) |
//! | device reference count | `N` guid | how many `Y` keys the device may have, an upper bound (u64 BE); absent while it has fewer than 64 |
//!
//! A device's value and its `Y` keys together say where on the events topic its records are
//! (`trustgate history`, `decide --at`): the value carries the newest few, and when they
//! outgrow it (`RECENT_REFS`) they move to `Y` keys, one per record, so a redelivered record
//! rewrites its own key (or is found already carried). Most devices never get a `Y` key: a
//! record then costs sled one key, its device's (#11). `N`
//! counts the `Y` keys from above (a redelivery counts twice) so that ingest knows when to prune a
//! device's oldest references without reading them all each chunk (see
//! `Store::apply`, `MAX_REFS_PER_DEVICE`); a device with few references has no `N` key, its
//! `Y` keys are counted instead (`COUNTED_FROM`).
//!
//! One key per device: devices are found by hostname, MAC and processor id in the in-memory
//! decision index (`crate::index`), rebuilt from the device keyspace at open. Older builds also
//! kept those indexes here (`H` hostname `\0` guid, `M` mac `\0` guid, `P` id `\0` guid, empty
//! values); [`RETIRED`] names them so that opening the store removes them.

pub(crate) const DEVICE: u8 = b'D';
/// The hostname (`H`), MAC (`M`) and processor-id (`P`) index keyspaces of older builds.
pub(crate) const RETIRED: [u8; 3] = [b'H', b'M', b'P'];
pub(crate) const OFFSET: u8 = b'O';
/// Liveness keys keep the `F` (for "feed") they were first written with.
pub(crate) const LIVENESS: u8 = b'F';
/// The Kafka timestamp of the record just before each stored offset: on start, the record
/// found there must be the same one, or the topic was recreated under the same name.
pub(crate) const LAST_RECORD: u8 = b'R';
/// Where a device's records are on the events topic (`Y`: a letter no other keyspace uses).
pub(crate) const RECORD_REF: u8 = b'Y';
/// How many record references a device may have (an upper bound).
pub(crate) const REF_COUNT: u8 = b'N';

pub(crate) fn device(guid: &str) -> Vec<u8> {
    prefixed(DEVICE, guid.as_bytes())
}

/// `parts` contiguous key ranges (start inclusive, end exclusive) that together cover the
/// device keyspace exactly, for scanning it on several threads. Cut at the GUID's first
/// character: SE's GUIDs are lower-case hex UUIDs, so the cuts fall among the hex digits and
/// split a real fleet about evenly; any other GUID still falls in exactly one range.
pub(crate) fn device_ranges(parts: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let parts = parts.clamp(1, HEX.len());
    let mut cuts = vec![vec![DEVICE]];
    cuts.extend((1..parts).map(|i| vec![DEVICE, HEX[i * HEX.len() / parts]]));
    cuts.push(vec![DEVICE + 1]);
    cuts.windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

fn prefixed(space: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(space);
    key.extend_from_slice(rest);
    key
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

/// `Y guid \0`: the prefix of every record reference of one device. GUIDs hold no NUL
/// (`se::normalize_guid` refuses control characters), so one device's prefix never covers
/// another's keys.
pub(crate) fn record_ref_prefix(guid: &str) -> Vec<u8> {
    let mut key = prefixed(RECORD_REF, guid.as_bytes());
    key.push(0);
    key
}

/// `Y guid \0 partition offset`: one record of one device.
pub(crate) fn record_ref(guid: &str, partition: i32, offset: i64) -> Vec<u8> {
    let mut key = record_ref_prefix(guid);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// The (partition, offset) of a record reference key, given its device's prefix length.
pub(crate) fn decode_record_ref(key: &[u8], prefix_len: usize) -> Option<(i32, i64)> {
    let rest = key.get(prefix_len..)?;
    if rest.len() != 12 {
        return None;
    }
    Some((
        i32::from_be_bytes(rest[..4].try_into().ok()?),
        i64::from_be_bytes(rest[4..].try_into().ok()?),
    ))
}

pub(crate) fn ref_count(guid: &str) -> Vec<u8> {
    prefixed(REF_COUNT, guid.as_bytes())
}
