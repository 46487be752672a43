//! One device in the decision index: its identifiers packed into a single allocation, and the
//! summary fields rules 5–8 read.

use crate::fold::{DeviceState, DeviceSummary, Observation, SummaryEvent};
use crate::se::Platform;
use crate::time::Millis;

/// A normalised MAC: 12 lower-case hex digits. Anything else in a stored state (it cannot come
/// from a record, `se::normalize_mac` drops it) could never equal a request's MAC.
const MAC_LEN: usize = 12;

/// One device's entry: 56 bytes inline plus one text allocation, instead of a decoded
/// [`DeviceState`] with a `String` per identifier and a map of events. The optional fields are
/// presence bits in `flags` beside plain values, and the rarely present events sit behind a
/// thin pointer: at a million devices every byte here is a megabyte (#11: the index is most of
/// a caught-up instance's memory).
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
    /// `HAS_HOST`, `HAS_PROCESSOR`, `HAS_OBSERVATION`, `COMPROMISED`, `HAS_NEWEST`.
    flags: u8,
    platform: Option<Platform>,
    /// The observation's time, when `HAS_OBSERVATION`.
    observed_at: Millis,
    /// When `HAS_NEWEST`.
    newest_record_at: Millis,
    /// Newest first, as [`DeviceSummary::events`]; `None` (no allocation) for most devices.
    events: Option<Box<Box<[SummaryEvent]>>>,
}

/// The device has a hostname / a processor id at all (as opposed to an empty one).
const HAS_HOST: u8 = 1;
const HAS_PROCESSOR: u8 = 1 << 1;
/// The device has an inventory observation; `COMPROMISED` is its verdict.
const HAS_OBSERVATION: u8 = 1 << 2;
const COMPROMISED: u8 = 1 << 3;
/// The device has a newest record time.
const HAS_NEWEST: u8 = 1 << 4;

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
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let observation = summary.observation;
        Entry {
            text: text.into_boxed_str(),
            guid_end,
            host_end,
            processor_end,
            flags: flag(host.is_some(), HAS_HOST)
                | flag(processor.is_some(), HAS_PROCESSOR)
                | flag(observation.is_some(), HAS_OBSERVATION)
                | flag(observation.is_some_and(|o| o.compromised), COMPROMISED)
                | flag(summary.newest_record_at.is_some(), HAS_NEWEST),
            platform: summary.platform,
            observed_at: observation.map_or(0, |o| o.at),
            newest_record_at: summary.newest_record_at.unwrap_or(0),
            events: (!summary.events.is_empty())
                .then(|| Box::new(summary.events.into_boxed_slice())),
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

    fn has(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }

    pub(crate) fn hostname(&self) -> Option<&str> {
        self.has(HAS_HOST)
            .then(|| self.slice(self.guid_end, self.host_end))
    }

    pub(crate) fn processor_id(&self) -> Option<&str> {
        self.has(HAS_PROCESSOR)
            .then(|| self.slice(self.host_end, self.processor_end))
    }

    fn events(&self) -> &[SummaryEvent] {
        self.events.as_deref().map_or(&[], |events| &events[..])
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
            observation: self.has(HAS_OBSERVATION).then(|| Observation {
                at: self.observed_at,
                compromised: self.has(COMPROMISED),
            }),
            events: self.events().to_vec(),
            newest_record_at: self.has(HAS_NEWEST).then_some(self.newest_record_at),
        }
    }

    /// Heap bytes this entry holds besides its inline size (for the index's size report).
    pub(crate) fn heap_bytes(&self) -> usize {
        let events = self.events();
        self.text.len()
            + self.events.as_ref().map_or(0, |_| {
                std::mem::size_of::<Box<[SummaryEvent]>>() + std::mem::size_of_val(events)
            })
            + events
                .iter()
                .filter_map(|e| e.detection_id.as_ref())
                .map(String::capacity)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inline size is what a million devices multiply: it must not creep back.
    #[test]
    fn an_entry_is_56_bytes_inline() {
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 56);
    }
}
