use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const S: Millis = 1000;
const OVERLAP: Millis = 600 * S;

#[test]
fn first_poll_looks_back_then_polls_from_the_watermark_minus_overlap() {
    let mut c = Cursor::default();
    assert_eq!(c.start_date(100_000 * S, OVERLAP, 86_400 * S), 13_600 * S);
    c.advance(Some(90_000 * S), 100_000 * S, OVERLAP);
    assert_eq!(c.start_date(200_000 * S, OVERLAP, 86_400 * S), 89_400 * S);
}

#[test]
fn the_watermark_never_moves_back_nor_past_the_poll_time() {
    let mut c = Cursor::default();
    c.advance(Some(50 * S), 60 * S, OVERLAP);
    c.advance(Some(40 * S), 70 * S, OVERLAP);
    assert_eq!(c.watermark, Some(50 * S));
    // A future-dated event (skewed clock) does not jump the cursor beyond the poll.
    c.advance(Some(10_000 * S), 80 * S, OVERLAP);
    assert_eq!(c.watermark, Some(80 * S));
}

#[test]
fn an_empty_first_poll_starts_the_watermark_at_the_poll() {
    let mut c = Cursor::default();
    c.advance(None, 70 * S, OVERLAP);
    assert_eq!(c.watermark, Some(70 * S));
    c.advance(None, 99 * S, OVERLAP);
    assert_eq!(c.watermark, Some(70 * S), "an empty later poll keeps it");
}

#[test]
fn identities_are_kept_for_exactly_the_overlap_window() {
    let mut c = Cursor::default();
    c.mark("old".into(), 1_000 * S);
    c.mark("edge".into(), 1_400 * S);
    c.mark("new".into(), 2_000 * S);
    c.advance(Some(2_000 * S), 2_000 * S, OVERLAP);
    // The next poll starts at 1400 s inclusive: "edge" comes back and must still be known.
    assert!(!c.seen("old"));
    assert!(c.seen("edge"));
    assert!(c.seen("new"));
}

#[test]
fn keys_use_id_and_type_or_a_hash_of_the_bytes() {
    assert_eq!(
        event_key(Some(6533241145273614339), 1090519054, b"{}"),
        "6533241145273614339:1090519054"
    );
    let a = event_key(None, 1, br#"{"a":1}"#);
    assert!(a.starts_with("sha256:"));
    assert_ne!(a, event_key(None, 1, br#"{"a":2}"#));
    // The same id under another type is another event (Threat Detected vs Quarantined).
    assert_ne!(event_key(Some(7), 1, b""), event_key(Some(7), 2, b""));
}

#[test]
fn a_checkpoint_survives_a_restart_and_big_ids_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cp = Checkpoint::new(dir.path().join("state"), tenant("a"));
    assert_eq!(cp.load().unwrap(), Cursor::default(), "nothing yet");
    let mut c = Cursor::default();
    c.mark(event_key(Some(u64::MAX - 1), 2164260880, b""), 5 * S);
    c.advance(Some(5 * S), 6 * S, OVERLAP);
    cp.store(&c).unwrap();
    let back = Checkpoint::new(dir.path().join("state"), tenant("a"))
        .load()
        .unwrap();
    assert_eq!(back, c);
    assert!(back.seen(&format!("{}:2164260880", u64::MAX - 1)));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(FILE)]);
}

#[test]
fn a_corrupt_checkpoint_is_an_error_not_a_silent_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
    assert!(matches!(
        Checkpoint::new(dir.path(), tenant("a")).load(),
        Err(CheckpointError::Corrupt { .. })
    ));
}

/// One simulated event: when it happened and when SE started returning it.
#[derive(Debug, Clone)]
struct Sim {
    key: String,
    date: Millis,
    visible_at: Millis,
}

fn feed() -> impl Strategy<Value = Vec<Sim>> {
    // Few distinct seconds, so many events share a timestamp; lateness up to the overlap.
    prop::collection::vec((0i64..400, 0i64..=600), 1..300).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (sec, late))| Sim {
                key: format!("{}:1090519054", 6_500_000_000_000_000_000u64 + i as u64),
                date: 10_000 * S + sec * 5 * S,
                visible_at: 10_000 * S + sec * 5 * S + late * S,
            })
            .collect()
    })
}

/// Polls the simulated feed every `interval` like the event loop does, crashing (losing the
/// in-memory cursor, keeping what was published) after the polls in `crashes`.
fn run(events: &[Sim], interval: Millis, crashes: &[bool]) -> BTreeMap<String, usize> {
    let mut published: BTreeMap<String, usize> = BTreeMap::new();
    let mut stored = Cursor::default();
    let mut cursor = stored.clone();
    let end = events.iter().map(|e| e.visible_at).max().unwrap() + 2 * interval;
    let mut now = 10_000 * S;
    let mut poll = 0;
    while now <= end {
        let start = cursor.start_date(now, OVERLAP, 3_600 * S);
        let mut newest = None;
        for e in events
            .iter()
            .filter(|e| e.visible_at <= now && e.date >= start)
        {
            if !cursor.seen(&e.key) {
                *published.entry(e.key.clone()).or_default() += 1;
                cursor.mark(e.key.clone(), e.date);
            }
            newest = newest.max(Some(e.date));
        }
        if crashes.get(poll).copied().unwrap_or(false) {
            cursor = stored.clone();
        } else {
            cursor.advance(newest, now, OVERLAP);
            stored = cursor.clone();
        }
        now += interval;
        poll += 1;
    }
    published
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_event_is_published_exactly_once_without_crashes(
        events in feed(),
        interval_s in 1i64..900,
    ) {
        let published = run(&events, interval_s * S, &[]);
        prop_assert_eq!(published.len(), events.len());
        prop_assert!(published.values().all(|n| *n == 1), "{:?}", published);
    }

    #[test]
    fn crashes_before_the_checkpoint_lose_nothing(
        events in feed(),
        interval_s in 1i64..900,
        crashes in prop::collection::vec(any::<bool>(), 0..400),
    ) {
        let published = run(&events, interval_s * S, &crashes);
        prop_assert_eq!(published.len(), events.len());
    }
}

fn tenant(client_id: &str) -> Tenant {
    Tenant {
        base_url: "https://api.amp.cisco.com".into(),
        client_id: Some(client_id.into()),
    }
}

/// Issue #10 item 6: a cursor made for another tenant (another `client_id` or `base_url`, or
/// written before cursors recorded theirs) is never used.
#[test]
fn a_cursor_from_another_tenant_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cursor::default();
    c.mark(event_key(Some(1), 2, b""), 5 * S);
    c.advance(Some(5 * S), 6 * S, OVERLAP);
    Checkpoint::new(dir.path(), tenant("a")).store(&c).unwrap();
    assert_eq!(Checkpoint::new(dir.path(), tenant("a")).load().unwrap(), c);
    assert_eq!(
        Checkpoint::new(dir.path(), tenant("b")).load().unwrap(),
        Cursor::default()
    );
    let eu = Tenant {
        base_url: "https://api.eu.amp.cisco.com".into(),
        ..tenant("a")
    };
    assert_eq!(
        Checkpoint::new(dir.path(), eu).load().unwrap(),
        Cursor::default()
    );
    // A checkpoint from before tenants were recorded: whose it is cannot be told.
    std::fs::write(dir.path().join(FILE), serde_json::to_vec(&c).unwrap()).unwrap();
    assert_eq!(
        Checkpoint::new(dir.path(), tenant("a")).load().unwrap(),
        Cursor::default()
    );
}

/// Issue #10 item 6: two pollers on one `state_path` are refused by the lock, which is
/// released with its holder.
#[test]
fn two_pollers_on_one_state_path_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Checkpoint::new(dir.path().join("state"), tenant("a"))
        .lock()
        .unwrap();
    let second = Checkpoint::new(dir.path().join("state"), tenant("b")).lock();
    assert!(
        matches!(second, Err(CheckpointError::Locked { .. })),
        "{second:?}"
    );
    drop(first);
    Checkpoint::new(dir.path().join("state"), tenant("b"))
        .lock()
        .unwrap();
}
