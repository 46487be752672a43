//! `trustgate demo --duration N`: the one-command story runs with nothing installed (in-process
//! broker, simulator, poller) and exits 0 with a summary that scripts can read.

use std::process::Command;

#[test]
fn demo_tells_the_story_and_summarises() {
    let out = Command::new(env!("CARGO_BIN_EXE_trustgate"))
        .args(["demo", "--duration", "30", "--rate", "50"])
        .output()
        .expect("running trustgate demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let summary = stdout
        .lines()
        .find(|l| l.contains(" decisions: "))
        .expect("a summary line");
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let [total, allow, deny] = numbers[..] else {
        panic!("{summary}")
    };
    assert_eq!(total, allow + deny, "{summary}");
    assert!(total > 100, "traffic flowed: {summary}");
    assert!(deny > 0, "compromised devices were denied: {summary}");
    let reasons = stdout
        .lines()
        .find(|l| l.starts_with("by reason:"))
        .expect("reasons line");
    assert!(
        reasons.contains("compromised") && reasons.contains("trusted_not_compromised"),
        "{reasons}"
    );
    // The story: a device compromised during the run is blocked as it happens.
    assert!(
        stdout.contains("is compromised in Secure Endpoint: its logins are now denied"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("devices ") && l.contains("decisions/s")),
        "live status lines"
    );
}
