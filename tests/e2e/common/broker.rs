//! A real Kafka-protocol broker for the end-to-end tests.
//!
//! `TRUSTGATE_TEST_BROKERS` points the tests at a running broker. Otherwise the harness starts
//! tansu on a free loopback port with in-memory storage, once per test binary, under a watchdog
//! that stops it when the tests exit. Where tansu comes from, and its installation on a machine
//! that has none, is [`super::tansu`]'s.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static BROKERS: OnceLock<String> = OnceLock::new();

/// The bootstrap address of the test broker.
pub fn brokers() -> &'static str {
    BROKERS.get_or_init(|| match std::env::var("TRUSTGATE_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => b,
        _ => start_tansu(),
    })
}

/// A loopback port free a moment ago. Only for tansu, which must be told its port in advance (it
/// advertises it to clients); every other listener in the harness binds port 0.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_tansu() -> String {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let tansu = super::tansu::binary();
    let log = std::env::temp_dir().join(format!("trustgate-test-tansu-{port}.log"));
    // The watchdog shell outlives nothing: it kills the broker once this test process is gone.
    let script = format!(
        "{tansu} broker --listener-url {url} --advertised-listener-url {url} --storage-engine memory://tansu/ >{log} 2>&1 & b=$!; \
         while kill -0 {me} 2>/dev/null; do sleep 1; done; kill $b",
        tansu = tansu.display(),
        log = log.display(),
        me = std::process::id()
    );
    // Deliberately not waited on: the watchdog must outlive this process to stop the broker.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting tansu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {port}; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("127.0.0.1:{port}")
}

/// A broker of one test's own, for tests that stop and restart it: tansu on a fixed loopback
/// port with sqlite storage, so topics and records survive a restart. Stopped on drop; a
/// watchdog also stops it if the test process dies first.
pub struct OwnBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    watchdog: Option<std::process::Child>,
    /// Length of the log when the broker was last (re)started: what it wrote since is after it.
    log_mark: usize,
    /// The port it tells clients to connect to, when not its own (a proxy in front of it).
    advertised: Option<u16>,
    /// tansu's `--storage-engine`.
    storage: &'static str,
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        let mut broker = OwnBroker::unstarted();
        broker.restart();
        broker
    }

    /// A broker with its port chosen but not started yet (`restart` starts it): for a client
    /// that must be told the address before the broker exists.
    pub fn unstarted() -> OwnBroker {
        OwnBroker {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            watchdog: None,
            log_mark: 0,
            advertised: None,
            storage: "sqlite://broker.db",
        }
    }

    /// Keeps topics and records in memory instead of sqlite, for a test that never restarts the
    /// broker: tansu 0.6's sqlite storage panics on a produce whose producer epoch it does not
    /// hold (an idempotent producer bumps its own after records time out in flight), its memory
    /// storage answers `PRODUCER_FENCED` (see `PauseProxy`).
    pub fn in_memory(&mut self) {
        self.storage = "memory://tansu/";
    }

    /// Has the broker (started after this) advertise loopback port `port` instead of its own,
    /// so that clients reach it only through whatever listens there (`PauseProxy`).
    pub fn advertise(&mut self, port: u16) {
        self.advertised = Some(port);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and storage; returns once it listens. (tansu 0.6 reads a
    /// `sqlite://` path relative to its working directory, even an absolute one.)
    pub fn restart(&mut self) {
        assert!(self.watchdog.is_none(), "the broker is running");
        self.log_mark = self.log().len();
        let stop = self.dir.path().join("stop");
        let _ = std::fs::remove_file(&stop);
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let script = format!(
            "cd {dir} && {tansu} broker --listener-url {url} --advertised-listener-url {advertised} \
             --storage-engine {storage} >>{log} 2>&1 & b=$!; \
             while kill -0 {me} 2>/dev/null && [ ! -e {stop} ] && kill -0 $b 2>/dev/null; do sleep 0.2; done; \
             kill $b 2>/dev/null; wait $b",
            tansu = super::tansu::binary().display(),
            dir = self.dir.path().display(),
            log = self.dir.path().join("tansu.log").display(),
            me = std::process::id(),
            stop = stop.display(),
            storage = self.storage,
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting tansu");
        self.watchdog = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the broker and waits until it no longer listens.
    pub fn stop(&mut self) {
        let Some(mut watchdog) = self.watchdog.take() else {
            return;
        };
        std::fs::write(self.dir.path().join("stop"), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while watchdog.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = watchdog.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "tansu still listens on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts a broker whose storage died since it was last started, and says whether it did.
    ///
    /// tansu 0.6 serves every storage request through one channel whose serving loop ends at the
    /// first error (tansu-storage 0.6.0 `service.rs`, `ChannelRequestService::serve`), including
    /// a reply that cannot be handed back because the client gave up on the request (a time-out
    /// on a loaded machine). From then on it answers every produce, fetch and metadata request
    /// with an error (`UnableToSend` in its log) until it is restarted: no client can recover
    /// that broker, so a test that restarts it on purpose restarts it again when it broke.
    pub fn restart_if_storage_died(&mut self) -> bool {
        let died = self
            .log()
            .get(self.log_mark..)
            .is_some_and(|since| since.contains("UnableToSend"));
        if died {
            self.stop();
            self.restart();
        }
        died
    }

    /// The last `lines` lines of the log, leaving out the storage-channel errors a broken tansu
    /// repeats for every request: enough to tell why it stopped answering.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let kept: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("UnableToSend") && !l.contains("SendError"))
            .collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
