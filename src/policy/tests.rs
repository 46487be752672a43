//! The decision table and every evaluation rule, as table tests.

use super::*;
use crate::fold::{CompromiseEvent, DeviceState, EventKey, Observation, Stamped};
use crate::se::Platform;
use rstest::rstest;

const GRACE: i64 = 600_000;
const FRESH: EvalContext = EvalContext {
    grace_millis: GRACE,
    liveness_age: Some(std::time::Duration::from_secs(1)),
    ready: true,
};

fn device(guid: &str, os: &str, compromised: bool) -> DeviceState {
    let mut d = DeviceState::new(guid);
    d.operating_system = Some(Stamped {
        at: 1,
        value: os.into(),
    });
    d.observation = Some(Observation {
        at: 1_000_000,
        compromised,
    });
    d.hostname = Some(Stamped {
        at: 1,
        value: format!("{guid}.corp.example.com"),
    });
    d.macs = Some(Stamped {
        at: 1,
        value: vec![format!("00000000000{}", &guid[guid.len() - 1..])],
    });
    d.windows_processor_id = Some(Stamped {
        at: 1,
        value: format!("cpu-{guid}"),
    });
    d.newest_record_at = Some(1_000_000);
    d
}

fn directory() -> MemoryDirectory {
    let mut dir = MemoryDirectory::default();
    dir.insert(device("win-clean-1", "Windows 10", false));
    dir.insert(device("win-bad-2", "Windows 10", true));
    dir.insert(device("mac-bad-3", "macOS 14.1", true));
    dir.insert(device("ios-bad-4", "iOS 16.0 (iPhone11,6)", true));
    dir.insert(device("linux-bad-5", "Ubuntu 20.04", true));
    dir
}

fn policy(require_trusted: bool, block_compromised: bool, unknown: UnknownDevice) -> Policy {
    Policy {
        name: "p".into(),
        require_trusted,
        block_compromised,
        unknown_device: unknown,
        stale_after: std::time::Duration::from_secs(900),
        on_stale: OnStale::LastKnown,
        mode: PolicyMode::Enforce,
    }
}

fn subject(trusted: bool, guid: Option<&str>, os: Option<Platform>) -> Subject {
    Subject {
        trusted,
        os,
        ids: RequestIdentifiers {
            connector_guid: guid.map(str::to_owned),
            ..Default::default()
        },
    }
}

/// The product's decision table: SE status × policy mode, for a trusted Windows device.
#[rstest]
#[case::require_trusted_compromised(true, "win-bad-2", Outcome::Deny, Reason::Compromised)]
#[case::require_trusted_clean(true, "win-clean-1", Outcome::Allow, Reason::TrustedNotCompromised)]
#[case::allow_all_compromised(false, "win-bad-2", Outcome::Allow, Reason::AllowAllEndpoints)]
#[case::allow_all_clean(false, "win-clean-1", Outcome::Allow, Reason::AllowAllEndpoints)]
fn decision_table(
    #[case] require_trusted: bool,
    #[case] guid: &str,
    #[case] outcome: Outcome,
    #[case] reason: Reason,
) {
    let d = evaluate(
        &policy(require_trusted, true, UnknownDevice::Allow),
        &subject(true, Some(guid), None),
        &directory(),
        &FRESH,
    );
    assert_eq!((d.outcome, d.reason), (outcome, reason));
}

/// "Require trusted": an untrusted device is denied whatever its SE status.
#[rstest]
#[case::compromised("win-bad-2")]
#[case::clean("win-clean-1")]
#[case::unknown("nobody-9")]
fn untrusted_is_denied_whatever_se_says(#[case] guid: &str) {
    let d = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &subject(false, Some(guid), None),
        &directory(),
        &FRESH,
    );
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Deny, Reason::UntrustedEndpoint)
    );
    assert_eq!(d.device.compromised, None, "SE not consulted");
}

#[test]
fn rule_2_precedes_rule_3_untrusted_allowed_under_allow_all() {
    let d = evaluate(
        &policy(false, true, UnknownDevice::Deny),
        &subject(false, Some("win-bad-2"), None),
        &directory(),
        &FRESH,
    );
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Allow, Reason::AllowAllEndpoints)
    );
}

#[test]
fn rule_4_se_check_off() {
    let d = evaluate(
        &policy(true, false, UnknownDevice::Deny),
        &subject(true, Some("win-bad-2"), None),
        &directory(),
        &FRESH,
    );
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::SeCheckOff));
}

#[rstest]
#[case::se_windows_overrides_request_ios(
    "win-bad-2",
    Some(Platform::Ios),
    Outcome::Deny,
    Reason::Compromised
)]
#[case::se_macos_checked("mac-bad-3", None, Outcome::Deny, Reason::Compromised)]
#[case::se_ios_not_checked("ios-bad-4", None, Outcome::Allow, Reason::PlatformNotChecked)]
#[case::se_linux_not_checked("linux-bad-5", None, Outcome::Allow, Reason::PlatformNotChecked)]
#[case::request_windows_beats_se_linux(
    "linux-bad-5",
    Some(Platform::Windows),
    Outcome::Deny,
    Reason::Compromised
)]
#[case::request_android_unknown_device(
    "nobody-9",
    Some(Platform::Android),
    Outcome::Allow,
    Reason::PlatformNotChecked
)]
#[case::unknown_platform_is_checked("nobody-9", None, Outcome::Allow, Reason::NotInSecureEndpoint)]
fn rule_6_platform(
    #[case] guid: &str,
    #[case] os: Option<Platform>,
    #[case] outcome: Outcome,
    #[case] reason: Reason,
) {
    let d = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &subject(true, Some(guid), os),
        &directory(),
        &FRESH,
    );
    assert_eq!((d.outcome, d.reason), (outcome, reason));
}

#[test]
fn rule_7_no_identifier_is_invalid() {
    let d = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &subject(true, None, Some(Platform::Windows)),
        &directory(),
        &FRESH,
    );
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Deny, Reason::InvalidRequest)
    );
    assert!(d.error.is_some());
}

#[rstest]
#[case::allow(UnknownDevice::Allow, Outcome::Allow)]
#[case::deny(UnknownDevice::Deny, Outcome::Deny)]
fn rule_7_unknown_device_follows_policy(#[case] unknown: UnknownDevice, #[case] outcome: Outcome) {
    let d = evaluate(
        &policy(true, true, unknown),
        &subject(true, Some("nobody-9"), Some(Platform::Windows)),
        &directory(),
        &FRESH,
    );
    assert_eq!(
        (d.outcome, d.reason),
        (outcome, Reason::NotInSecureEndpoint)
    );
    assert_eq!(d.device.matched_by, Some(MatchedBy::None));
    assert_eq!(d.device.compromised, None);
}

#[test]
fn strongest_identifier_decides() {
    // The GUID names a clean device; the MAC would match a compromised one: the GUID wins.
    let s = Subject {
        trusted: true,
        os: None,
        ids: RequestIdentifiers {
            connector_guid: Some("win-clean-1".into()),
            macs: vec!["000000000002".into()],
            ..Default::default()
        },
    };
    let d = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &s,
        &directory(),
        &FRESH,
    );
    assert_eq!(
        (d.device.matched_by, d.reason),
        (
            Some(MatchedBy::ConnectorGuid),
            Reason::TrustedNotCompromised
        )
    );
    // An unknown GUID falls through to the processor id, then MAC, then hostname.
    for (ids, by) in [
        (
            RequestIdentifiers {
                connector_guid: Some("x".into()),
                windows_processor_id: Some("cpu-win-bad-2".into()),
                ..Default::default()
            },
            MatchedBy::WindowsProcessorId,
        ),
        (
            RequestIdentifiers {
                macs: vec!["000000000002".into()],
                hostname: Some("win-clean-1".into()),
                ..Default::default()
            },
            MatchedBy::Mac,
        ),
        (
            RequestIdentifiers {
                hostname: Some("win-bad-2".into()),
                ..Default::default()
            },
            MatchedBy::Hostname,
        ),
    ] {
        let d = evaluate(
            &policy(true, true, UnknownDevice::Allow),
            &Subject {
                trusted: true,
                os: None,
                ids,
            },
            &directory(),
            &FRESH,
        );
        assert_eq!(d.device.matched_by, Some(by));
        assert_eq!(d.reason, Reason::Compromised);
        assert_eq!(d.device.connector_guid.as_deref(), Some("win-bad-2"));
    }
}

#[test]
fn ambiguous_match_is_compromised_if_any_is() {
    let mut dir = directory();
    let mut twin = device("win-twin-7", "Windows 10", false);
    twin.hostname = Some(Stamped {
        at: 1,
        value: "win-bad-2.corp.example.com".into(),
    });
    dir.insert(twin);
    let s = Subject {
        trusted: true,
        os: None,
        ids: RequestIdentifiers {
            hostname: Some("win-bad-2".into()),
            ..Default::default()
        },
    };
    let d = evaluate(&policy(true, true, UnknownDevice::Allow), &s, &dir, &FRESH);
    assert!(d.device.ambiguous);
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::Compromised));
    assert_eq!(
        d.device.connector_guid.as_deref(),
        Some("win-bad-2"),
        "the compromised one is reported"
    );
}

#[test]
fn open_detection_compromises_a_clean_flag() {
    let mut dir = directory();
    let mut d = device("win-late-8", "Windows 10", false);
    d.events.insert(
        EventKey::Id {
            id: 1,
            event_type_id: 1090519054,
        },
        CompromiseEvent {
            event_type_id: 1090519054,
            detection_id: None,
            date: Some(0),
            first_seen: 1_000_000 - GRACE + 1,
        },
    );
    dir.insert(d);
    let r = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &subject(true, Some("win-late-8"), None),
        &dir,
        &FRESH,
    );
    assert_eq!(r.reason, Reason::Compromised);
    assert_eq!(r.device.state_as_of, Some(1_000_000));
}

#[rstest]
#[case::fresh_last_known(Some(60), OnStale::LastKnown, Reason::Compromised, false)]
#[case::stale_last_known(Some(3600), OnStale::LastKnown, Reason::Compromised, true)]
#[case::stale_deny_clean_device(Some(3600), OnStale::Deny, Reason::StateStale, true)]
#[case::never_fed_deny(None, OnStale::Deny, Reason::StateStale, true)]
fn staleness(
    #[case] age_secs: Option<u64>,
    #[case] on_stale: OnStale,
    #[case] reason: Reason,
    #[case] stale: bool,
) {
    let p = Policy {
        on_stale,
        ..policy(true, true, UnknownDevice::Allow)
    };
    let ctx = EvalContext {
        grace_millis: GRACE,
        liveness_age: age_secs.map(std::time::Duration::from_secs),
        ready: true,
    };
    let guid = if reason == Reason::StateStale {
        "win-clean-1"
    } else {
        "win-bad-2"
    };
    let d = evaluate(&p, &subject(true, Some(guid), None), &directory(), &ctx);
    assert_eq!(d.reason, reason);
    assert_eq!(d.stale.is_some(), stale);
}

#[test]
fn stale_deny_comes_after_rules_1_to_4() {
    let p = Policy {
        on_stale: OnStale::Deny,
        ..policy(true, true, UnknownDevice::Allow)
    };
    let ctx = EvalContext {
        grace_millis: GRACE,
        liveness_age: None,
        ready: true,
    };
    let d = evaluate(
        &p,
        &subject(false, Some("win-clean-1"), None),
        &directory(),
        &ctx,
    );
    assert_eq!(d.reason, Reason::UntrustedEndpoint);
    let p = Policy {
        require_trusted: false,
        ..p
    };
    let d = evaluate(
        &p,
        &subject(true, Some("win-clean-1"), None),
        &directory(),
        &ctx,
    );
    assert_eq!(
        (d.reason, d.stale.is_some()),
        (Reason::AllowAllEndpoints, true)
    );
}

#[test]
fn not_ready_denies_after_rules_1_to_4_whatever_the_policy() {
    let lenient = policy(true, true, UnknownDevice::Allow);
    let ctx = EvalContext {
        ready: false,
        ..FRESH
    };
    for guid in ["win-clean-1", "not-a-known-device"] {
        let d = evaluate(
            &lenient,
            &subject(true, Some(guid), None),
            &directory(),
            &ctx,
        );
        assert_eq!(
            (d.outcome, d.reason),
            (Outcome::Deny, Reason::NotReady),
            "{guid}"
        );
    }
    let untrusted = evaluate(
        &lenient,
        &subject(false, Some("win-clean-1"), None),
        &directory(),
        &ctx,
    );
    assert_eq!(untrusted.reason, Reason::UntrustedEndpoint);
    let off = Policy {
        block_compromised: false,
        ..lenient
    };
    let d = evaluate(
        &off,
        &subject(true, Some("win-clean-1"), None),
        &directory(),
        &ctx,
    );
    assert_eq!(d.reason, Reason::SeCheckOff);
}

/// Issue #10 item 3: a request's FQDN finds a compromised device SE knows by its short name
/// (today's one-way match ended in `not_in_secure_endpoint`, an allow by default); an FQDN under
/// another domain does not.
#[test]
fn a_request_fqdn_finds_a_device_known_by_its_short_name() {
    let mut dir = MemoryDirectory::default();
    let mut bad = device("ws-q-0200", "Windows 10", true);
    bad.hostname = Some(Stamped {
        at: 1,
        value: "ws-q-0200".into(),
    });
    dir.insert(bad);
    let decide = |host: &str| {
        evaluate(
            &policy(true, true, UnknownDevice::Allow),
            &Subject {
                trusted: true,
                os: None,
                ids: RequestIdentifiers {
                    hostname: Some(host.into()),
                    ..Default::default()
                },
            },
            &dir,
            &FRESH,
        )
    };
    let d = decide("ws-q-0200.corp.example.com");
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::Compromised));
    assert_eq!(d.device.matched_by, Some(MatchedBy::Hostname));
    let mut dir2 = MemoryDirectory::default();
    let mut fqdn = device("ws-q-0201", "Windows 10", true);
    fqdn.hostname = Some(Stamped {
        at: 1,
        value: "ws-q-0201.corp.example.com".into(),
    });
    dir2.insert(fqdn);
    let other_domain = evaluate(
        &policy(true, true, UnknownDevice::Deny),
        &Subject {
            trusted: true,
            os: None,
            ids: RequestIdentifiers {
                hostname: Some("ws-q-0201.other.example.org".into()),
                ..Default::default()
            },
        },
        &dir2,
        &FRESH,
    );
    assert_eq!(other_domain.device.matched_by, Some(MatchedBy::None));
}

/// A directory that cannot be read: every lookup fails.
struct Unreadable;

impl DeviceDirectory for Unreadable {
    fn device(&self, _: &str) -> Result<Option<crate::fold::DeviceSummary>, DirectoryError> {
        Err(DirectoryError::new(std::io::Error::other("disk gone")))
    }
    fn guids_by_processor_id(&self, _: &str) -> Result<Vec<String>, DirectoryError> {
        Err(DirectoryError::new(std::io::Error::other("disk gone")))
    }
    fn guids_by_mac(&self, _: &str) -> Result<Vec<String>, DirectoryError> {
        Err(DirectoryError::new(std::io::Error::other("disk gone")))
    }
    fn guids_by_hostname(&self, _: &str) -> Result<Vec<String>, DirectoryError> {
        Err(DirectoryError::new(std::io::Error::other("disk gone")))
    }
}

#[test]
fn an_unreadable_directory_denies_with_its_error_text() {
    let d = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &subject(true, Some("win-clean-1"), None),
        &Unreadable,
        &FRESH,
    );
    assert_eq!(
        (d.outcome, d.reason, d.error.as_deref()),
        (Outcome::Deny, Reason::StoreUnavailable, Some("disk gone"))
    );
}

fn report_only(p: Policy) -> Policy {
    Policy {
        mode: PolicyMode::ReportOnly,
        ..p
    }
}

/// Issue #12 item 5: a compromised device under a report-only policy is allowed, and the
/// decision says enforcement would have denied it as compromised.
#[test]
fn report_only_allows_a_compromised_device_and_records_the_deny() {
    let d = evaluate(
        &report_only(policy(true, true, UnknownDevice::Allow)),
        &subject(true, Some("win-bad-2"), None),
        &directory(),
        &FRESH,
    );
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::ReportOnly));
    assert_eq!(d.would, Some((Outcome::Deny, Reason::Compromised)));
    assert_eq!(
        d.device.compromised,
        Some(true),
        "the state is still reported"
    );
}

/// Report-only never denies, whatever enforcement would answer (not ready and an unreadable
/// store included), and records exactly what enforcement answers; enforcement is unchanged.
#[rstest]
#[case::compromised("win-bad-2", true, FRESH, Outcome::Deny, Reason::Compromised)]
#[case::clean(
    "win-clean-1",
    true,
    FRESH,
    Outcome::Allow,
    Reason::TrustedNotCompromised
)]
#[case::untrusted("win-clean-1", false, FRESH, Outcome::Deny, Reason::UntrustedEndpoint)]
#[case::unknown_denied("nobody-9", true, FRESH, Outcome::Deny, Reason::NotInSecureEndpoint)]
#[case::not_ready("win-clean-1", true, EvalContext { ready: false, ..FRESH }, Outcome::Deny, Reason::NotReady)]
#[case::stale("win-clean-1", true, EvalContext { liveness_age: None, ..FRESH }, Outcome::Deny, Reason::StateStale)]
fn report_only_never_denies_and_records_enforcement(
    #[case] guid: &str,
    #[case] trusted: bool,
    #[case] ctx: EvalContext,
    #[case] outcome: Outcome,
    #[case] reason: Reason,
) {
    let strict = Policy {
        on_stale: OnStale::Deny,
        ..policy(true, true, UnknownDevice::Deny)
    };
    let s = subject(trusted, Some(guid), None);
    let enforced = evaluate(&strict, &s, &directory(), &ctx);
    assert_eq!((enforced.outcome, enforced.reason), (outcome, reason));
    assert_eq!(enforced.would, None, "enforce records no would-be decision");
    let reported = evaluate(&report_only(strict), &s, &directory(), &ctx);
    assert_eq!(
        (reported.outcome, reported.reason, reported.would),
        (Outcome::Allow, Reason::ReportOnly, Some((outcome, reason)))
    );
    assert_eq!(reported.device, enforced.device);
    assert_eq!(reported.stale, enforced.stale);
}

#[test]
fn report_only_allows_over_an_unreadable_store() {
    let d = evaluate(
        &report_only(policy(true, true, UnknownDevice::Allow)),
        &subject(true, Some("win-clean-1"), None),
        &Unreadable,
        &FRESH,
    );
    assert_eq!(
        (d.outcome, d.reason, d.would),
        (
            Outcome::Allow,
            Reason::ReportOnly,
            Some((Outcome::Deny, Reason::StoreUnavailable))
        )
    );
    assert_eq!(d.error.as_deref(), Some("disk gone"));
}

/// The audit's device state: the latest observation's time, and the detection ids of the
/// open compromise-class events only (a cleared detection is not why the device is compromised).
#[test]
fn the_verdict_carries_observation_time_and_open_detection_ids() {
    let mut dir = directory();
    let mut d = device("win-late-8", "Windows 10", false);
    let event = |id: u64, detection: Option<&str>, seen: i64| {
        (
            EventKey::Id {
                id,
                event_type_id: 1090519054,
            },
            CompromiseEvent {
                event_type_id: 1090519054,
                detection_id: detection.map(str::to_owned),
                date: Some(0),
                first_seen: seen,
            },
        )
    };
    for (key, e) in [
        event(1, Some("det-open"), 1_000_000 - GRACE + 1),
        event(2, Some("det-open"), 1_000_000 + 5),
        event(3, None, 1_000_000 + 6),
        event(4, Some("det-cleared"), 1_000_000 - GRACE - 1),
    ] {
        d.events.insert(key, e);
    }
    dir.insert(d);
    let r = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &subject(true, Some("win-late-8"), None),
        &dir,
        &FRESH,
    );
    assert_eq!(r.reason, Reason::Compromised);
    assert_eq!(r.device.observed_at, Some(1_000_000));
    assert_eq!(r.device.detection_ids, vec!["det-open".to_owned()]);

    let clean = evaluate(
        &policy(true, true, UnknownDevice::Allow),
        &subject(true, Some("win-clean-1"), None),
        &dir,
        &FRESH,
    );
    assert_eq!(clean.device.observed_at, Some(1_000_000));
    assert!(clean.device.detection_ids.is_empty());
}
