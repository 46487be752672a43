//! A pausing TCP proxy in front of a broker, for the broker-pause fault (toxiproxy-style).
//!
//! It models a frozen broker: a process in a long GC pause or on a stalled disk, whose TCP
//! connections stay open and whose kernel still accepts connections and bytes, but which answers
//! nothing. While paused, no byte is forwarded in either direction on any connection, and new
//! connections are accepted and held unforwarded; on resume every connection carries on from
//! where it stopped, nothing dropped. The broker itself keeps running throughout.
//!
//! The first version of the broker-pause test sent tansu `SIGSTOP`/`SIGCONT` instead, which
//! models the same fault from inside the broker. It found tansu 0.6 panicking once thawed
//! (`tansu-storage-0.6.0/src/lite.rs:503: more or less than one row`) and answering nothing
//! after. Through this proxy the sqlite storage panics the same way, with the broker never
//! stopped: the cause is not the signal but the records that time out in flight, after which
//! librdkafka's idempotent producer bumps its own epoch, and the sqlite storage panics on a
//! produce with an epoch it does not hold (`idempotent_message_check`). So the pause test runs
//! tansu on its memory storage (`OwnBroker::in_memory`), which answers `PRODUCER_FENCED`
//! instead. The proxy stays the harness's way to freeze a broker: it needs no signal sent to a
//! process found by its command line, it freezes exactly the clients' traffic, and a test can
//! check that the traffic went through it. The broker must advertise the proxy's address
//! (`OwnBroker::advertise`) so that every client connection, the bootstrap and every one made
//! after metadata, goes through the proxy.
//!
//! The proxy runs on a thread and runtime of its own, so a test that blocks its own runtime's
//! threads (librdkafka calls, `std::thread::sleep`) never stalls the forwarding.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// One forwarding read, at most.
const CHUNK: usize = 64 * 1024;

/// A proxy listening on a loopback port, forwarding to `upstream` (see the module header).
/// Stopped, with every connection it holds, on drop.
pub struct PauseProxy {
    addr: SocketAddr,
    paused: watch::Sender<bool>,
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What went through the proxy, for a test to check that its traffic did.
#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    bytes: AtomicU64,
}

impl PauseProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`, which is
    /// connected to only when a client connects (the broker may start after the proxy).
    pub fn start(upstream: SocketAddr) -> PauseProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (paused, paused_rx) = watch::channel(false);
        let counts = Arc::new(Counts::default());
        let (stop, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("pause-proxy".into())
            .spawn({
                let counts = counts.clone();
                move || {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("the proxy's runtime");
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(std_listener).unwrap();
                        tokio::select! {
                            _ = stop_rx => {}
                            _ = accept_loop(listener, upstream, paused_rx, counts) => {}
                        }
                    });
                    // Dropping the runtime here, on its own thread, ends every connection task.
                }
            })
            .expect("starting the proxy thread");
        PauseProxy {
            addr,
            paused,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address clients bootstrap from (the one the broker advertises).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stops forwarding, in both directions, on every connection, current and new.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Forwards again whatever the connections held, then carries on.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counts.connections.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.counts.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for PauseProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    paused: watch::Receiver<bool>,
    counts: Arc<Counts>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let (paused, counts) = (paused.clone(), counts.clone());
        tokio::spawn(async move {
            // Held unforwarded while paused, as a frozen broker's kernel holds a new connection.
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                forward(client_read, server_write, paused.clone(), counts.clone()),
                forward(server_read, client_write, paused, counts),
            );
        });
    }
}

/// Copies `from` to `to` while not paused: nothing is read while paused (the sender's bytes wait
/// in the kernel, as they would for a frozen process), and bytes read just before a pause are
/// held until it ends. At the end of `from` the write side is shut down, so a close is passed on.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    counts: Arc<Counts>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if paused.wait_for(|p| !p).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !p).await.is_err() {
            return;
        }
        // Counted before the write: a peer that has read the bytes must find them counted (the
        // unit test reads its echo, then the count).
        counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// An echo server on a loopback port; each connection echoes until closed.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn read_exactly(stream: &mut std::net::TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Paused: an open connection and a new one get nothing back, though both are accepted and
    /// sent to; resumed: both get every byte they sent, in order.
    #[test]
    fn a_pause_holds_every_byte_of_old_and_new_connections_and_a_resume_delivers_them() {
        let proxy = PauseProxy::start(echo_server());
        let mut old = std::net::TcpStream::connect(proxy.addr()).unwrap();
        old.write_all(b"before").unwrap();
        assert_eq!(read_exactly(&mut old, 6).unwrap(), b"before");

        proxy.pause();
        old.write_all(b"during").unwrap();
        let mut new = std::net::TcpStream::connect(proxy.addr()).unwrap();
        new.write_all(b"new").unwrap();
        for stream in [&old, &new] {
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let mut byte = [0u8; 1];
        assert!(old.read(&mut byte).is_err(), "the paused proxy forwarded");
        assert!(new.read(&mut byte).is_err(), "the paused proxy forwarded");

        proxy.resume();
        for stream in [&old, &new] {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
        }
        assert_eq!(read_exactly(&mut old, 6).unwrap(), b"during");
        assert_eq!(read_exactly(&mut new, 3).unwrap(), b"new");
        assert_eq!(proxy.connections(), 2);
        assert_eq!(proxy.bytes(), 2 * (6 + 6 + 3));
    }
}
