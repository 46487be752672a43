//! A real RabbitMQ (Debian's `rabbitmq-server`) for the AMQP tests, started like tansu: on
//! loopback ports of its own, with its node name, data and logs in a temporary directory, under
//! a watchdog that stops it (and its own `epmd`) when the test process is gone.
//!
//! Nothing is skipped silently: without RabbitMQ installed the AMQP tests fail and say how to
//! install it (`.ci/run` does). One broker is shared by the test binary ([`shared`]); a test
//! that stops and restarts RabbitMQ starts its own ([`RabbitMq::start`]).
//!
//! Every broker has a plain listener and a TLS listener whose certificate is made here with the
//! `openssl` CLI (a CA and a server certificate for `localhost` / `127.0.0.1`), and one user
//! whose password is a sentinel the secret tests look for in logs.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian's package puts the server script that runs in the foreground (the one in
/// `/usr/sbin` switches to the `rabbitmq` user and its system paths).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// RabbitMQ boots in about 10 s on an idle machine; much longer on 2 busy cores.
const BOOT_WITHIN: Duration = Duration::from_secs(120);
/// The test user; its password holds this sentinel.
pub const USER: &str = "trustgate";
pub const PASSWORD_SENTINEL: &str = "AMQP-SENTINEL";

/// A RabbitMQ node of the tests'.
pub struct RabbitMq {
    /// The plain AMQP listener.
    pub port: u16,
    /// The TLS listener (certificate signed by [`RabbitMq::ca_path`]).
    pub tls_port: u16,
    dist_port: u16,
    epmd_port: u16,
    pub password: String,
    dir: tempfile::TempDir,
    watchdog: Option<Child>,
}

/// A loopback port free a moment ago: RabbitMQ must be told its ports in advance.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The broker shared by the tests that do not stop it.
pub fn shared() -> &'static RabbitMq {
    static SHARED: OnceLock<RabbitMq> = OnceLock::new();
    SHARED.get_or_init(RabbitMq::start)
}

fn installed() -> &'static Path {
    let server = Path::new(SERVER);
    assert!(
        server.is_file(),
        "RabbitMQ is not installed ({SERVER} is missing): the AMQP tests need Debian's \
         rabbitmq-server; install it with `apt-get install -y rabbitmq-server` (.ci/run does)"
    );
    server
}

impl RabbitMq {
    /// Starts a node of its own and returns once its AMQP listener accepts connections.
    pub fn start() -> RabbitMq {
        installed();
        let mut node = RabbitMq {
            port: free_port(),
            tls_port: free_port(),
            dist_port: free_port(),
            epmd_port: free_port(),
            password: format!("{PASSWORD_SENTINEL}-{:016x}", rand::random::<u64>()),
            dir: tempfile::tempdir().unwrap(),
            watchdog: None,
        };
        node.write_files();
        node.restart();
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The CA certificate (PEM) the TLS listener's certificate is signed by.
    pub fn ca_path(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// `amqp://user:password@127.0.0.1:port/%2f`.
    pub fn url(&self) -> String {
        format!(
            "amqp://{USER}:{}@127.0.0.1:{}/%2f",
            self.password, self.port
        )
    }

    /// The TLS listener, by the address its certificate carries.
    pub fn tls_url(&self) -> String {
        format!(
            "amqps://{USER}:{}@127.0.0.1:{}/%2f",
            self.password, self.tls_port
        )
    }

    /// The broker's own log (for failure messages).
    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(self.path("server.log")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.path("log")) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// The configuration, enabled plugins (none) and the TLS certificates.
    fn write_files(&self) {
        make_certificates(self.dir.path());
        let conf = format!(
            "listeners.tcp.1 = 127.0.0.1:{port}\n\
             listeners.ssl.1 = 127.0.0.1:{tls}\n\
             ssl_options.cacertfile = {dir}/ca.pem\n\
             ssl_options.certfile = {dir}/server.pem\n\
             ssl_options.keyfile = {dir}/server.key\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false\n\
             loopback_users = none\n\
             default_user = {USER}\n\
             default_pass = {password}\n\
             log.console = false\n\
             log.file.level = info\n",
            port = self.port,
            tls = self.tls_port,
            dir = self.dir.path().display(),
            password = self.password,
        );
        std::fs::write(self.path("rabbitmq.conf"), conf).unwrap();
        std::fs::write(self.path("enabled_plugins"), "[].\n").unwrap();
    }

    /// Starts (again) on the same ports, node name and data; returns once it accepts
    /// connections.
    pub fn restart(&mut self) {
        assert!(self.watchdog.is_none(), "RabbitMQ is running");
        let stop = self.path("stop");
        let _ = std::fs::remove_file(&stop);
        let dir = self.dir.path().display().to_string();
        // The watchdog starts the server script, then stops it once the test process is gone
        // or `stop` appears: SIGTERM, which the script turns into a clean stop of the Erlang VM
        // (SIGKILL to both after 20 s), then the node's epmd (each node has its own port).
        let script = format!(
            "cd {dir}; {server} >>{dir}/server.log 2>&1 & w=$!; \
             while kill -0 {me} 2>/dev/null && [ ! -e {stop} ] && kill -0 $w 2>/dev/null; do sleep 0.2; done; \
             vm=$(ps -o pid= --ppid $w | tr -d ' '); kill -TERM $w 2>/dev/null; \
             i=0; while kill -0 $w 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
             [ -n \"$vm\" ] && kill -KILL $vm 2>/dev/null; kill -KILL $w 2>/dev/null; wait $w; \
             epmd -port {epmd} -kill >/dev/null 2>&1; true",
            server = installed().display(),
            me = std::process::id(),
            stop = stop.display(),
            epmd = self.epmd_port,
        );
        let erl_args = format!(
            "-kernel inet_dist_use_interface {{127,0,0,1}} -kernel inet_dist_listen_min {p} \
             -kernel inet_dist_listen_max {p}",
            p = self.dist_port
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HOME", &dir)
            .env(
                "RABBITMQ_NODENAME",
                format!("trustgate-test-{}@localhost", self.port),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", format!("{dir}/mnesia"))
            .env("RABBITMQ_LOG_BASE", format!("{dir}/log"))
            .env("RABBITMQ_CONFIG_FILE", format!("{dir}/rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                format!("{dir}/advanced.config"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", format!("{dir}/rabbitmq-env.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{dir}/enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", format!("{dir}/rabbitmq.pid"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", erl_args)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting RabbitMQ");
        self.watchdog = Some(child);
        let deadline = Instant::now() + BOOT_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.watchdog.as_mut().unwrap().try_wait().unwrap() {
                panic!("RabbitMQ exited ({status}) while starting:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ did not listen on {} within {BOOT_WITHIN:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node cleanly (its durable queues and persistent messages survive) and waits
    /// until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.watchdog.take() {
            std::fs::write(self.path("stop"), b"").unwrap();
            child.wait().unwrap();
        }
    }

    /// A connection as the test user.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url(), ConnectionProperties::default())
            .await
            .expect("connecting to the test RabbitMQ")
    }

    /// Declares a durable queue `name` (the stream's queue, which SE creates and trustgate only
    /// declares passively).
    pub async fn declare_queue(&self, name: &str) {
        let conn = self.connect().await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
    }

    /// Publishes each body to `queue` as a persistent message and waits for the broker's
    /// confirms, as SE's stream would hold them.
    pub async fn publish(&self, queue: &str, bodies: &[Vec<u8>]) {
        let conn = self.connect().await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for body in bodies {
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into()),
                    )
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(
                confirm.await.unwrap().is_ack(),
                "RabbitMQ refused a message"
            );
        }
        let _ = conn.close(200, "done".into()).await;
    }

    /// Messages in `queue` that are ready (not delivered, or delivered and returned because the
    /// consumer went away without acknowledging them).
    pub async fn ready(&self, queue: &str) -> u32 {
        let conn = self.connect().await;
        let channel = conn.create_channel().await.unwrap();
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
        q.message_count()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`, made with the `openssl` CLI
/// (RabbitMQ's own dependency, so present wherever it is).
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=trustgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

/// The harness itself: a node of its own starts on loopback only, keeps a durable queue's
/// persistent messages across a clean restart, and is gone (with its epmd) once stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_restarts_with_its_messages_and_stops_completely() {
    let mut node = RabbitMq::start();
    node.declare_queue("harness").await;
    node.publish("harness", &[b"one".to_vec(), b"two".to_vec()])
        .await;
    assert_eq!(node.ready("harness").await, 2);
    node.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err(),
        "stopped"
    );
    node.restart();
    assert_eq!(
        node.ready("harness").await,
        2,
        "persistent messages survive"
    );
    for port in [node.port, node.tls_port, node.dist_port, node.epmd_port] {
        let bound = listening_addresses(port);
        assert!(!bound.is_empty(), "nothing listens on {port}");
        assert!(
            bound.iter().all(|a| a == "0100007F"),
            "port {port} listens beyond 127.0.0.1: {bound:?}"
        );
    }
    node.stop();
    let epmd = Command::new("epmd")
        .args(["-port", &node.epmd_port.to_string(), "-names"])
        .output()
        .unwrap();
    assert!(!epmd.status.success(), "the node's epmd is gone");
}

/// The IPv4 addresses (as `/proc/net/tcp` writes them, `0100007F` for 127.0.0.1) listening on
/// `port`.
fn listening_addresses(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, p) = fields.get(1)?.split_once(':')?;
            // State 0A is LISTEN.
            (fields.get(3) == Some(&"0A") && u16::from_str_radix(p, 16).ok() == Some(port))
                .then(|| addr.to_owned())
        })
        .collect()
}
