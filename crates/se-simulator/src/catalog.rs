//! The event-type catalogue served by `/v1/event_types`, and the types the scenario emits.
//!
//! The names are the 102 entries of a real `GET /v1/event_types` dump (op7ic/amphunt, 2020, also
//! `tests/fixtures/event-types.json`). That dump has no descriptions; SE's documented examples
//! give two, and the rest repeat the name rather than invent text.

/// `(id, name)` in the order of the real dump.
pub(crate) const EVENT_TYPES: &[(u64, &str)] = &[
    (553648130, "Policy Update"),
    (554696714, "Scan Started"),
    (554696715, "Scan Completed, No Detections"),
    (1091567628, "Scan Completed With Detections"),
    (2165309453, "Scan Failed"),
    (1090519054, "Threat Detected"),
    (553648143, "Threat Quarantined"),
    (2164260880, "Quarantine Failure"),
    (570425394, "Quarantine Restore Requested"),
    (553648149, "Quarantined Item Restored"),
    (2164260884, "Quarantine Restore Failed"),
    (2181038130, "Quarantine Request Failed to be Delivered"),
    (553648154, "Cloud Recall Restore from Quarantine"),
    (553648155, "Cloud Recall Quarantine Successful"),
    (2164260892, "Cloud Recall Restore from Quarantine Failed"),
    (2164260893, "Cloud Recall Quarantine Attempt Failed"),
    (553648158, "Install Started"),
    (2164260895, "Install Failure"),
    (553648166, "Uninstall"),
    (2164260903, "Uninstall Failure"),
    (1003, "Email Confirmation"),
    (1004, "Forgotten Password Reset"),
    (1005, "Password Has Been Reset"),
    (2164260866, "Policy Update Failure"),
    (553648146, "Cloud Recall Restore of False Positive"),
    (553648147, "Cloud Recall Detection"),
    (553648168, "Execution Blocked"),
    (553648150, "Quarantine Restore Started"),
    (570425396, "Application Registered"),
    (570425397, "Application Deregistered"),
    (570425398, "Application Authorized"),
    (570425399, "Application Deauthorized"),
    (1090524040, "APK Threat Detected"),
    (1090524041, "APK Custom Threat Detected"),
    (1090519084, "DFC Threat Detected"),
    (1107296261, "Adobe Reader compromise"),
    (1107296262, "Microsoft Word compromise"),
    (1107296263, "Microsoft Excel compromise"),
    (1107296264, "Microsoft PowerPoint compromise"),
    (1107296266, "Adobe Reader launched a shell"),
    (1107296267, "Microsoft Word launched a shell"),
    (1107296268, "Microsoft Excel launched a shell"),
    (1107296269, "Microsoft PowerPoint launched a shell"),
    (1107296270, "Apple QuickTime compromise"),
    (1107296271, "Apple QuickTime launched a shell"),
    (1107296272, "Executed malware"),
    (1107296273, "Suspected botnet connection"),
    (553648170, "Reboot Pending"),
    (553648171, "Reboot Completed"),
    (1107296274, "Cloud IOC"),
    (1107296275, "Microsoft Calculator compromise"),
    (1107296276, "Microsoft Notepad compromise"),
    (553648173, "File Fetch Completed"),
    (2164260910, "File Fetch Failed"),
    (554696756, "Endpoint IOC Scan Started"),
    (554696757, "Endpoint IOC Scan Completed, No Detections"),
    (1091567670, "Endpoint IOC Scan Completed With Detections"),
    (2165309495, "Endpoint IOC Scan Failed"),
    (2164260914, "Endpoint IOC Definition Update Failure"),
    (553648179, "Endpoint IOC Definition Update Success"),
    (2164260911, "Endpoint IOC Configuration Update Failure"),
    (553648176, "Endpoint IOC Configuration Update Success"),
    (1090519089, "Endpoint IOC Scan Detection Summary"),
    (1107296277, "Connection to suspicious domain"),
    (1107296278, "Threat Detected in Low Prevalence Executable"),
    (1107296279, "Vulnerable Application Detected"),
    (1107296280, "Suspicious Download"),
    (1107296281, "Microsoft CHM Compromise"),
    (1107296282, "Suspicious Cscript Launch"),
    (1090519096, "Update: Reboot Required"),
    (1090519097, "Update: Reboot Advised"),
    (2164260922, "Update: Unexpected Reboot Required"),
    (553648137, "Product Update Failed"),
    (553648135, "Product Update Started"),
    (553648136, "Product Update Completed"),
    (1107296285, "Cognitive Incident"),
    (1107296284, "Potential Ransomware"),
    (1107296283, "Possible Webshell"),
    (1090519103, "Exploit Prevention"),
    (2164260931, "Critical Fault Raised"),
    (1090519107, "Major Fault Raised"),
    (553648195, "Minor Fault Raised"),
    (553648196, "Fault Cleared"),
    (1090519081, "Rootkit Detection"),
    (1090519105, "Malicious Activity Detection"),
    (1090519102, "iOS Network Detection"),
    (553648199, "Malicious Activity Block"),
    (1090519112, "System Process Protection"),
    (553648202, "Endpoint Isolation Start Success"),
    (2164260939, "Endpoint Isolation Start Failure"),
    (553648204, "Endpoint Isolation Stop Success"),
    (2164260941, "Endpoint Isolation Stop Failure"),
    (553648206, "Endpoint Isolation Update Success"),
    (2164260943, "Endpoint Isolation Update Failure"),
    (553648208, "Orbital Install Success"),
    (2164260945, "Orbital Install Failure"),
    (553648210, "Orbital Update Success"),
    (2164260947, "Orbital Update Failure"),
    (553648215, "Endpoint Isolation Unlock Limit Reached"),
    (1107296257, "Potential Dropper Infection"),
    (1107296258, "Multiple Infected Files"),
    (1107296344, "SecureX Threat Hunting Incident"),
];

pub(crate) const THREAT_DETECTED: u64 = 1090519054;
pub(crate) const THREAT_QUARANTINED: u64 = 553648143;
pub(crate) const QUARANTINE_FAILURE: u64 = 2164260880;
pub(crate) const POLICY_UPDATE: u64 = 553648130;
pub(crate) const SCAN_STARTED: u64 = 554696714;
pub(crate) const SCAN_COMPLETED_CLEAN: u64 = 554696715;
/// An account event: it concerns a console user, not a device, so it has no connector GUID.
pub(crate) const EMAIL_CONFIRMATION: u64 = 1003;

/// The name of an event type, as `/v1/event_types` lists it.
pub(crate) fn name(id: u64) -> Option<&'static str> {
    EVENT_TYPES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
}

/// SE's documented description where one is known, else the name.
pub(crate) fn description(id: u64) -> &'static str {
    match id {
        THREAT_DETECTED => "A threat was found on this system.",
        THREAT_QUARANTINED => "A threat was successfully quarantined.",
        _ => name(id).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_types_are_in_the_catalogue() {
        for id in [
            THREAT_DETECTED,
            THREAT_QUARANTINED,
            QUARANTINE_FAILURE,
            POLICY_UPDATE,
            SCAN_STARTED,
            SCAN_COMPLETED_CLEAN,
            EMAIL_CONFIRMATION,
        ] {
            assert!(name(id).is_some(), "{id} missing");
        }
        assert_eq!(name(THREAT_DETECTED), Some("Threat Detected"));
    }

    #[test]
    fn catalogue_matches_the_real_dump() {
        let fixture: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../../tests/fixtures/event-types.json")).unwrap();
        assert_eq!(fixture.len(), EVENT_TYPES.len());
        for (f, (id, n)) in fixture.iter().zip(EVENT_TYPES) {
            assert_eq!(f["id"].as_u64(), Some(*id));
            assert_eq!(f["name"].as_str(), Some(*n));
        }
    }
}
