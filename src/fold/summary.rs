//! What a decision needs of one device, derived from its full state: the compact form the
//! decision index holds and the device directory hands to policy.
//!
//! A [`DeviceState`] carries everything the fold must remember to stay idempotent (stamps on
//! every identifier, each event's identity and first sighting); a decision reads far less: the
//! SE platform, the latest observation, the time and detection id of each remembered
//! compromise-class event, and the time of the newest record. [`DeviceSummary`] is that, with
//! the compromise rule giving exactly the verdict the full state gives (a property test in
//! `fold/tests.rs` holds the two to it). Its GUID is a [`SummaryGuid`], inline, so that reading
//! a summary out of the decision index allocates nothing for the common device.

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
    pub connector_guid: SummaryGuid,
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
            connector_guid: self.connector_guid.as_str().into(),
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

/// The bytes of a GUID [`SummaryGuid`] keeps inline: an SE connector GUID is a 36-character
/// UUID, and 38 bytes make the whole value 40 bytes.
const INLINE_GUID_BYTES: usize = 38;

/// A connector GUID as a [`DeviceSummary`] carries it: inline when it fits (every SE GUID does),
/// so that the decision index hands a summary out, and a decision passes its GUID on to the
/// response, without allocating. Reads, compares, hashes, prints and serialises as its text.
#[derive(Clone)]
pub struct SummaryGuid(GuidRepr);

#[derive(Clone)]
enum GuidRepr {
    Inline {
        len: u8,
        bytes: [u8; INLINE_GUID_BYTES],
    },
    /// A longer GUID (none from SE; any stored text stays representable).
    Heap(Box<str>),
}

impl SummaryGuid {
    /// The GUID's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // `bytes[..len]` is a copy of a whole `&str` (see `From<&str>`).
            GuidRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            GuidRepr::Heap(text) => text,
        }
    }
}

impl From<&str> for SummaryGuid {
    fn from(text: &str) -> Self {
        if text.len() <= INLINE_GUID_BYTES {
            let mut bytes = [0; INLINE_GUID_BYTES];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            SummaryGuid(GuidRepr::Inline {
                len: text.len() as u8,
                bytes,
            })
        } else {
            SummaryGuid(GuidRepr::Heap(text.into()))
        }
    }
}

impl From<String> for SummaryGuid {
    fn from(text: String) -> Self {
        SummaryGuid::from(text.as_str())
    }
}

impl From<SummaryGuid> for String {
    fn from(guid: SummaryGuid) -> Self {
        guid.as_str().to_owned()
    }
}

impl std::ops::Deref for SummaryGuid {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SummaryGuid {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for SummaryGuid {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SummaryGuid {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SummaryGuid {}

impl PartialEq<str> for SummaryGuid {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SummaryGuid {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for SummaryGuid {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for SummaryGuid {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SummaryGuid {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for SummaryGuid {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Debug for SummaryGuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for SummaryGuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for SummaryGuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod guid_tests {
    use super::SummaryGuid;

    /// Inline or not, a GUID reads, compares and prints as its text.
    #[test]
    fn a_guid_is_its_text() {
        for text in [
            "",
            "g1",
            &"a".repeat(38),
            &"b".repeat(39),
            "0d5e4f3a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
        ] {
            let guid = SummaryGuid::from(text);
            assert_eq!(guid.as_str(), text);
            assert_eq!(guid, text);
            assert_eq!(format!("{guid:?}"), format!("{text:?}"));
            assert_eq!(guid.to_string(), text);
            assert_eq!(
                serde_json::to_string(&guid).unwrap(),
                serde_json::to_string(text).unwrap()
            );
            assert_eq!(SummaryGuid::from(text.to_owned()), guid.clone());
        }
        let (a, long_b) = (SummaryGuid::from("a"), SummaryGuid::from("b".repeat(40)));
        assert!(a < long_b && long_b.cmp(&a) == std::cmp::Ordering::Greater);
    }
}
