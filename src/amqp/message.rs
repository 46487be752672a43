//! What one stream message is: an SE event for a device (published byte-for-byte, keyed by its
//! connector GUID), an account event that concerns no device (counted and acknowledged, as the
//! poller skips them), or something unusable (dead-lettered with the reason).
//!
//! A message without a connector GUID is dead-lettered when its type is compromise-class: such
//! a detection could deny a login, so losing it quietly is not an option; it must be visible on
//! the dead-letter topic. Other types without a GUID are SE's account events (password resets,
//! …).

use crate::se::Event;
use std::collections::HashSet;

/// The verdict on one message body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Publish to the events topic under this key.
    Event { guid: String },
    /// An event about no device: count it and acknowledge it.
    Account,
    /// Not usable: dead-letter it with this reason, then acknowledge it.
    DeadLetter { reason: String },
}

/// Classifies `body`; `compromise_types` are the event types that need a device.
pub(super) fn classify(body: &[u8], compromise_types: &HashSet<u64>) -> Verdict {
    let dead = |reason: String| Verdict::DeadLetter { reason };
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return dead(format!("not UTF-8 ({e})")),
    };
    // serde would read a struct from an array too (`[1, 2]` as id and type).
    if !text.trim_start().starts_with('{') {
        return dead("not an SE event: not a JSON object".into());
    }
    let event: Event = match serde_json::from_str(text) {
        Ok(event) => event,
        Err(e) => return dead(format!("not an SE event: {e}")),
    };
    match event.connector_guid() {
        Some(guid) => Verdict::Event { guid },
        None if compromise_types.contains(&event.event_type_id) => dead(format!(
            "no connector_guid for device event type {}",
            event.event_type_id
        )),
        None => Verdict::Account,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> HashSet<u64> {
        [1090519054].into()
    }

    #[test]
    fn events_are_keyed_by_their_normalised_guid() {
        let body = br#"{"id":1,"event_type_id":1090519054,"computer":{"connector_guid":"ABC-1"}}"#;
        assert_eq!(
            classify(body, &types()),
            Verdict::Event {
                guid: "abc-1".into()
            }
        );
    }

    #[test]
    fn account_events_are_not_dead_letters_but_guidless_detections_are() {
        let account = br#"{"id":2,"event_type_id":1004,"date":"2026-01-01T00:00:00+00:00"}"#;
        assert_eq!(classify(account, &types()), Verdict::Account);
        let detection = br#"{"id":3,"event_type_id":1090519054}"#;
        assert!(matches!(
            classify(detection, &types()),
            Verdict::DeadLetter { reason } if reason.contains("no connector_guid")
        ));
    }

    #[test]
    fn garbage_is_dead_lettered_with_the_reason() {
        for (body, why) in [
            (&b"not json"[..], "not an SE event"),
            (&b"[1,2]"[..], "not an SE event"),
            (&b"{\"connector_guid\":\"g\"}"[..], "event_type_id"),
            (&b"\xff\xfe"[..], "not UTF-8"),
        ] {
            match classify(body, &types()) {
                Verdict::DeadLetter { reason } => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
