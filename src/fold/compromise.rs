//! Which SE event types mark a device compromised, and how long a clean observation takes to
//! reflect them.

use std::collections::HashSet;
use std::time::Duration;

/// The default compromise-class event types (ids from `/v1/event_types`). Threat Quarantined
/// (553648143) is deliberately absent: SE keeps a quarantined device compromised until the
/// compromise is resolved, so a quarantine alone never clears anything.
pub(crate) const DEFAULT_COMPROMISE_EVENT_TYPES: &[u64] = &[
    1090519054, // Threat Detected
    1107296272, // Executed malware
    1107296274, // Cloud IOC
    1107296257, // Potential Dropper Infection
    1107296258, // Multiple Infected Files
    2164260880, // Quarantine Failure
    2164260893, // Cloud Recall Quarantine Attempt Failed
    553648147,  // Retrospective / Cloud Recall Detection
    1090519103, // Exploit Prevention
    1090519105, // Malicious Activity Detection
    1090519112, // System Process Protection
    1107296284, // Potential Ransomware
    1107296283, // Possible Webshell
    1107296273, // Suspected botnet connection
    1090519081, // Rootkit Detection
    1090519084, // DFC Threat Detected
    553648145,  // Threat Detected in Exclusion
    1107296278, // Threat Detected in Low Prevalence Executable
    1091567628, // Scan Completed With Detections
    1091567670, // Endpoint IOC Scan Completed With Detections
    1090519089, // Endpoint IOC Scan Detection Summary
    1107296285, // Cognitive Incident
    1107296344, // SecureX Threat Hunting Incident
    // Application compromise: Java, Adobe Reader, Word, Excel, PowerPoint, QuickTime,
    // Calculator, Notepad, CHM.
    1107296260, 1107296261, 1107296262, 1107296263, 1107296264, 1107296270, 1107296275, 1107296276,
    1107296281,
    // Launched a shell: Java, Adobe Reader, Word, Excel, PowerPoint, QuickTime.
    1107296265, 1107296266, 1107296267, 1107296268, 1107296269, 1107296271,
];

/// What the fold needs to know from configuration.
#[derive(Debug, Clone)]
pub struct FoldConfig {
    pub(crate) compromise_event_types: HashSet<u64>,
    /// How long SE's `is_compromised` flag may lag behind a detection. A clean observation clears
    /// only the detections that are older than this at the time of the observation.
    pub(crate) resolution_grace: Duration,
}

impl Default for FoldConfig {
    fn default() -> Self {
        FoldConfig {
            compromise_event_types: DEFAULT_COMPROMISE_EVENT_TYPES.iter().copied().collect(),
            resolution_grace: Duration::from_secs(600),
        }
    }
}

impl FoldConfig {
    /// Whether events of this type mark a device compromised.
    pub fn is_compromise_class(&self, event_type_id: u64) -> bool {
        self.compromise_event_types.contains(&event_type_id)
    }

    /// `resolution_grace` in milliseconds, as the compromise rule takes it.
    pub fn grace_millis(&self) -> i64 {
        i64::try_from(self.resolution_grace.as_millis()).unwrap_or(i64::MAX)
    }
}
