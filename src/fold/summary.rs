//! What a decision needs of one device, derived from its full state: the compact form the
//! decision index holds and the device directory hands to policy.
//!
//! A [`DeviceState`] carries everything the fold must remember to stay idempotent (stamps on
//! every identifier, each event's identity and first sighting); a decision reads far less: the
//! SE platform, the latest observation, the time and detection id of each remembered
//! compromise-class event, and the time of the newest record. [`DeviceSummary`] is that, with
//! the compromise rule giving exactly the verdict the full state gives (a property test in
//! `fold/tests.rs` holds the two to it).

use super::{DeviceState, Observation};
use crate::se::Platform;
use crate::time::Millis;

/// One remembered compromise-class event, as the compromise rule and the audit read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryEvent {
    /// [`CompromiseEvent::time`](super::CompromiseEvent): the later of SE's `date` and the
    /// event's first sighting.
    pub time: Millis,
    /// SE's detection id, when it has one (for the audit's `detection_ids`).
    pub detection_id: Option<String>,
}

/// A device as decisions read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The device's normalised connector GUID.
    pub connector_guid: String,
    /// The platform SE's `operating_system` names, if it names one (rule 6).
    pub platform: Option<Platform>,
    /// The latest inventory observation of `is_compromised`.
    pub observation: Option<Observation>,
    /// Every remembered compromise-class event, newest first.
    pub events: Vec<SummaryEvent>,
    /// Kafka timestamp of the newest record applied for this device (`state_as_of`).
    pub newest_record_at: Option<Millis>,
}

impl DeviceState {
    /// The summary decisions read; see [`DeviceSummary`].
    pub fn summary(&self) -> DeviceSummary {
        let mut events: Vec<SummaryEvent> = self
            .events
            .values()
            .map(|e| SummaryEvent {
                time: e.time(),
                detection_id: e.detection_id.clone(),
            })
            .collect();
        // Newest first; ties by detection id, so that equal states give equal summaries.
        events.sort_by(|a, b| {
            b.time
                .cmp(&a.time)
                .then_with(|| a.detection_id.cmp(&b.detection_id))
        });
        DeviceSummary {
            connector_guid: self.connector_guid.clone(),
            platform: self
                .operating_system
                .as_ref()
                .and_then(|os| Platform::from_se_operating_system(&os.value)),
            observation: self.observation,
            events,
            newest_record_at: self.newest_record_at,
        }
    }
}

impl DeviceSummary {
    /// The compromise rule, exactly as [`DeviceState::is_compromised`] states it: the latest
    /// observation says compromised, or an event is later than (that observation − `grace`);
    /// with no observation, any event counts.
    pub fn is_compromised(&self, grace_millis: i64) -> bool {
        match self.observation {
            Some(obs) => obs.compromised || self.open_events(grace_millis).next().is_some(),
            None => !self.events.is_empty(),
        }
    }

    /// The events the latest observation has not cleared (all of them without an
    /// observation), newest first, as [`DeviceState::open_events`] selects them.
    pub fn open_events(&self, grace_millis: i64) -> impl Iterator<Item = &SummaryEvent> {
        let cutoff = self.observation.map(|o| o.at.saturating_sub(grace_millis));
        // Newest first: the open ones are a prefix.
        self.events
            .iter()
            .take_while(move |e| cutoff.is_none_or(|c| e.time > c))
    }
}
