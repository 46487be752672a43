//! The guard and the serve loop over real HTTP on loopback, around stand-in routes with the
//! admin listener's paths (the real handlers need a store, ingest and a decider; the guard does
//! not look at them).

use super::*;
use axum::routing::{get, post};
use std::io::Read;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "admin-t0ken-for-tests";

/// `/v1/decide` waits for `release` after telling `entered`, so a test can hold one decision.
fn routes(entered: Arc<Notify>, release: Arc<Notify>) -> Router {
    let ok = || async { Json(json!({"ok": true})) };
    Router::new()
        .route(
            "/v1/decide",
            post(move || async move {
                entered.notify_one();
                release.notified().await;
                Json(json!({"decision": "deny"}))
            }),
        )
        .route("/v1/devices/{id}", get(ok))
        .route("/metrics", get(ok))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
}

struct Served {
    addr: std::net::SocketAddr,
    entered: Arc<Notify>,
    release: Arc<Notify>,
    shutdown: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(token: Option<&str>, limits: AdminLimits) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let token = token.map(|t| SecretString::from(t.to_owned()));
    let access = AdminAccess::new(token.as_ref(), limits);
    let shutdown = CancellationToken::new();
    let router = routes(entered.clone(), release.clone());
    tokio::spawn(super::super::serve_router(
        listener,
        router,
        access,
        shutdown.clone(),
    ));
    Served {
        addr,
        entered,
        release,
        shutdown,
    }
}

async fn get_status(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn with_a_token_v1_and_metrics_need_it_and_probes_stay_open() {
    let s = serve(Some(TOKEN), AdminLimits::default()).await;
    let good = format!("Bearer {TOKEN}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get_status(s.addr, path, None).await.0, 200, "{path}");
    }
    for path in ["/v1/devices/x", "/metrics", "/v1/not-a-route"] {
        let (status, body) = get_status(s.addr, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!({"error": "unauthorized"})
        );
        for wrong in [
            "Bearer nope",
            "Bearer admin-t0ken-for-test",
            "Basic YWRtaW46eA==",
            TOKEN,
        ] {
            assert_eq!(
                get_status(s.addr, path, Some(wrong)).await.0,
                401,
                "{wrong}"
            );
        }
    }
    for path in ["/v1/devices/x", "/metrics"] {
        assert_eq!(get_status(s.addr, path, Some(&good)).await.0, 200, "{path}");
    }
    assert_eq!(
        get_status(s.addr, "/metrics", Some(&format!("bearer  {TOKEN} ")))
            .await
            .0,
        200,
        "the scheme is case-insensitive and blanks around the token do not matter"
    );
}

#[tokio::test]
async fn without_a_token_every_path_is_open() {
    let s = serve(None, AdminLimits::default()).await;
    for path in ["/v1/devices/x", "/metrics", "/healthz"] {
        assert_eq!(get_status(s.addr, path, None).await.0, 200, "{path}");
    }
}

#[tokio::test]
async fn decisions_beyond_the_bound_are_answered_503() {
    let limits = AdminLimits {
        max_decisions: 1,
        ..AdminLimits::default()
    };
    let s = serve(None, limits).await;
    let url = format!("http://{}/v1/decide", s.addr);
    let (tx, rx) = oneshot::channel();
    let first_url = url.clone();
    tokio::spawn(async move {
        let status = reqwest::Client::new()
            .post(first_url)
            .send()
            .await
            .map(|r| r.status().as_u16());
        let _ = tx.send(status);
    });
    s.entered.notified().await;
    // Bounded: without the bound the second request would wait in the handler for ever.
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        reqwest::Client::new().post(&url).send(),
    )
    .await
    .expect("the second decision was not refused")
    .unwrap();
    assert_eq!(second.status().as_u16(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    s.release.notify_one();
    assert_eq!(
        rx.await.unwrap().unwrap(),
        200,
        "the held decision is answered"
    );
    let third = tokio::spawn(reqwest::Client::new().post(&url).send());
    s.entered.notified().await;
    s.release.notify_one();
    assert_eq!(
        third.await.unwrap().unwrap().status().as_u16(),
        200,
        "the permit came back"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let limits = AdminLimits {
        header_timeout: Duration::from_millis(300),
        ..AdminLimits::default()
    };
    let s = serve(None, limits).await;
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // Bounded: a listener without a header timeout keeps the connection open and this fails.
    let closed = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection is still open 20 s after a 300 ms header timeout"
    );
}

#[tokio::test]
async fn past_the_connection_cap_a_client_waits_for_a_slot() {
    let limits = AdminLimits {
        header_timeout: Duration::from_millis(500),
        max_connections: 1,
        ..AdminLimits::default()
    };
    let s = serve(None, limits).await;
    // An idle connection takes the only slot (until its header timeout frees it).
    let mut idle = std::net::TcpStream::connect(s.addr).unwrap();
    // Give the listener the chance to accept it before the second client connects.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), second.read_to_end(&mut answer))
        .await
        .expect("answered once the idle connection's slot is free")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // Ordering, not speed: the second client was answered only after the first was closed.
    idle.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(idle.read(&mut byte), Ok(0)),
        "the second client was served while the first still held the only slot"
    );
}
