//! One device in the decision index: its identifiers packed into a single allocation, and the
//! summary fields rules 5–8 read.

use crate::fold::{DeviceState, DeviceSummary, Observation, SummaryEvent};
use crate::se::Platform;
use crate::time::Millis;

/// A normalised MAC: 12 lower-case hex digits. Anything else in a stored state (it cannot come
/// from a record, `se::normalize_mac` drops it) could never equal a request's MAC.
const MAC_LEN: usize = 12;

/// One device's entry: about 80 bytes inline plus one text allocation, instead of a decoded
/// [`DeviceState`] with a `String` per identifier and a map of events.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The GUID, the hostname, the processor id, then each MAC (12 bytes), back to back.
    text: Box<str>,
    /// Where the GUID ends in `text`.
    guid_end: u32,
    /// Where the hostname ends (it starts at `guid_end`).
    host_end: u32,
    /// Where the processor id ends (it starts at `host_end`); the MACs follow.
    processor_end: u32,
    /// Whether the device has a hostname / processor id at all (as opposed to an empty one).
    has_host: bool,
    has_processor: bool,
    platform: Option<Platform>,
    observation: Option<Observation>,
    newest_record_at: Option<Millis>,
    /// Newest first, as [`DeviceSummary::events`]; empty (no allocation) for most devices.
    events: Box<[SummaryEvent]>,
}

/// A text offset; identifiers are at most 255 bytes (`se::ids`) and a device has few MACs, so
/// this cannot overflow for any state the fold produces. An absurd stored state saturates,
/// which only makes its identifiers unmatchable, never matches another device's.
fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Entry {
    /// The entry for a device state.
    pub(crate) fn new(state: &DeviceState) -> Entry {
        let summary = state.summary();
        let host = state.hostname.as_ref().map(|h| h.value.as_str());
        let processor = state
            .windows_processor_id
            .as_ref()
            .map(|p| p.value.as_str());
        let macs = state
            .macs
            .iter()
            .flat_map(|m| &m.value)
            .filter(|m| m.len() == MAC_LEN && m.is_ascii());
        let mut text = String::with_capacity(
            state.connector_guid.len()
                + host.map_or(0, str::len)
                + processor.map_or(0, str::len)
                + MAC_LEN * state.macs.as_ref().map_or(0, |m| m.value.len()),
        );
        text.push_str(&state.connector_guid);
        let guid_end = offset(text.len());
        text.push_str(host.unwrap_or_default());
        let host_end = offset(text.len());
        text.push_str(processor.unwrap_or_default());
        let processor_end = offset(text.len());
        for mac in macs {
            text.push_str(mac);
        }
        Entry {
            text: text.into_boxed_str(),
            guid_end,
            host_end,
            processor_end,
            has_host: host.is_some(),
            has_processor: processor.is_some(),
            platform: summary.platform,
            observation: summary.observation,
            newest_record_at: summary.newest_record_at,
            events: summary.events.into_boxed_slice(),
        }
    }

    fn slice(&self, start: u32, end: u32) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    pub(crate) fn guid(&self) -> &str {
        self.slice(0, self.guid_end)
    }

    pub(crate) fn hostname(&self) -> Option<&str> {
        self.has_host
            .then(|| self.slice(self.guid_end, self.host_end))
    }

    pub(crate) fn processor_id(&self) -> Option<&str> {
        self.has_processor
            .then(|| self.slice(self.host_end, self.processor_end))
    }

    /// The device's MACs, 12 lower-case hex digits each.
    pub(crate) fn macs(&self) -> impl Iterator<Item = &str> {
        self.text
            .get(self.processor_end as usize..)
            .unwrap_or_default()
            .as_bytes()
            .chunks_exact(MAC_LEN)
            // Each chunk is ASCII (only ASCII MACs are packed), so this never fails.
            .filter_map(|c| std::str::from_utf8(c).ok())
    }

    pub(crate) fn summary(&self) -> DeviceSummary {
        DeviceSummary {
            connector_guid: self.guid().into(),
            platform: self.platform,
            observation: self.observation,
            events: self.events.to_vec(),
            newest_record_at: self.newest_record_at,
        }
    }

    /// Heap bytes this entry holds besides its inline size (for the index's size report).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.text.len()
            + self.events.len() * std::mem::size_of::<SummaryEvent>()
            + self
                .events
                .iter()
                .filter_map(|e| e.detection_id.as_ref())
                .map(String::capacity)
                .sum::<usize>()
    }
}
