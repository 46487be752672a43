//! The harness's child processes: killed when their handle is dropped, so that a failing
//! assertion leaves nothing running, and the listening addresses they announce in their logs,
//! so that every listener binds port 0 instead of a "free" port picked in advance (another
//! test can take that port between the pick and the bind).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long a child may take to announce its listener (a debug build on 2 busy cores).
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(60);

/// A child process that is killed (and reaped) when this handle is dropped, including while a
/// failing test unwinds. Derefs to [`Child`] for `try_wait`, `kill` and [`super::stop`].
pub struct Spawned(Child);

impl Spawned {
    pub fn new(child: Child) -> Spawned {
        Spawned(child)
    }
}

impl Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Both are no-ops for a child already reaped (std remembers its status), so a stopped
        // child's pid, possibly reused since, is never signalled.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address in the `addr` field of the first line of `log` that carries `message`, as our
/// text log format writes it (`… Admin listener started. addr=127.0.0.1:40123`, with or without
/// ANSI colours).
pub fn announced_addr(log: &str, message: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|line| line.contains(message))
        .find_map(|line| {
            let plain = strip_ansi(line);
            let (_, rest) = plain.split_once(" addr=")?;
            rest.split_whitespace().next()?.parse().ok()
        })
}

/// Waits until `log()` announces `message` with an address. Panics with the log when `child`
/// exits first or the announcement takes longer than a minute.
pub fn wait_announced(child: &mut Child, log: impl Fn() -> String, message: &str) -> SocketAddr {
    let deadline = Instant::now() + ANNOUNCE_WITHIN;
    loop {
        if let Some(addr) = announced_addr(&log(), message) {
            return addr;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited with {status} before logging {message:?}:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{message:?} not logged within {ANNOUNCE_WITHIN:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drops ANSI escape sequences (`ESC [ … letter`), which the text format puts around fields.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_announced_address_is_read_through_colours() {
    let coloured = "\u{1b}[2m2026-12-01T07:01:21Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
        \u{1b}[2mtrustgate::admin\u{1b}[0m\u{1b}[2m:\u{1b}[0m Admin listener started. \
        \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:34011";
    let log = format!("other line addr=127.0.0.1:1\n{coloured}\n");
    assert_eq!(
        announced_addr(&log, "Admin listener started."),
        Some(([127, 0, 0, 1], 34011).into())
    );
    assert_eq!(announced_addr(&log, "Webhook listener started."), None);
}
