//! The SE API simulator over real HTTP: envelope, paging, filters, auth, the hourly limit and
//! every injected fault, as a poller would see them.

use reqwest::{Client, Response, StatusCode};
use se_simulator::{self as simulator, Credentials, ScenarioConfig, SimConfig, Simulator};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ID: &str = "client-1";
const KEY: &str = "key-1";

struct Running {
    base: String,
    sim: Simulator,
    http: Client,
    _stop: tokio_util::sync::DropGuard,
}

/// A quiet tenant (nothing happens on its own, no detections in its history) with credentials,
/// on 127.0.0.1:0.
async fn start(devices: usize, hourly_limit: u32) -> Running {
    let config = SimConfig {
        scenario: ScenarioConfig {
            devices,
            initially_compromised: 0.0,
            compromise_every: None,
            resolve_after: None,
            noise_every: None,
            ..ScenarioConfig::default()
        },
        credentials: Some(Credentials {
            client_id: ID.to_string(),
            api_key: SecretString::from(KEY),
        }),
        hourly_limit,
    };
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(simulator::serve(listener, sim.clone(), stop.clone()));
    Running {
        base,
        sim,
        http: Client::new(),
        _stop: stop.drop_guard(),
    }
}

impl Running {
    async fn get(&self, path_and_query: &str) -> Response {
        self.http
            .get(format!("{}{path_and_query}", self.base))
            .basic_auth(ID, Some(KEY))
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path_and_query: &str) -> Value {
        let resp = self.get(path_and_query).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path_and_query}");
        resp.json().await.unwrap()
    }

    async fn hook(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Every event id, newest first, from the `/_sim/events` hook.
    async fn all_event_ids(&self) -> Vec<u64> {
        let url = format!("{}/_sim/events", self.base);
        let all: Vec<Value> = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.iter().map(|e| e["id"].as_u64().unwrap()).collect()
    }

    async fn stats(&self) -> Value {
        let url = format!("{}/_sim/stats", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn ids(page: &Value) -> Vec<u64> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

fn header<'a>(resp: &'a Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn pagination_walks_every_event_once_newest_first() {
    let s = start(20, 3000).await;
    s.hook("/_sim/burst", json!({"count": 1100})).await;
    let expected = s.all_event_ids().await;
    assert!(expected.len() > 1100);

    let mut url = format!("{}/v1/events?limit=500", s.base);
    let (mut seen, mut pages, mut last_date) = (Vec::new(), 0, String::from("~"));
    loop {
        let resp = s
            .http
            .get(&url)
            .basic_auth(ID, Some(KEY))
            .send()
            .await
            .unwrap();
        let page: Value = resp.json().await.unwrap();
        let results = &page["metadata"]["results"];
        assert_eq!(results["total"], expected.len());
        assert_eq!(results["index"], pages * 500);
        assert_eq!(results["items_per_page"], 500);
        assert_eq!(
            results["current_item_count"],
            page["data"].as_array().unwrap().len()
        );
        assert_eq!(page["metadata"]["links"]["self"], url.as_str());
        let prev = page["metadata"]["links"].get("prev");
        if pages == 0 {
            assert!(prev.is_none());
        } else {
            let want = format!(
                "{}/v1/events?limit=500&offset={}",
                s.base,
                (pages - 1) * 500
            );
            assert_eq!(prev.unwrap(), want.as_str());
        }
        for e in page["data"].as_array().unwrap() {
            let date = e["date"].as_str().unwrap().to_string();
            assert!(date <= last_date, "newest first across pages");
            last_date = date;
        }
        seen.extend(ids(&page));
        pages += 1;
        match page["metadata"]["links"]["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, expected.len().div_ceil(500));
    assert_eq!(
        seen, expected,
        "every event exactly once, in the listing's order"
    );
}

#[tokio::test]
async fn events_sharing_a_timestamp_split_cleanly_across_pages() {
    let s = start(5, 3000).await;
    let burst = s.hook("/_sim/burst", json!({"count": 7})).await;
    let date = burst["date"].as_str().unwrap();
    let first = s.get_json("/v1/events?limit=4").await;
    let second = s.get_json("/v1/events?limit=4&offset=4").await;
    let on_date: Vec<u64> = [&first, &second]
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap().clone())
        .filter(|e| e["date"] == date)
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(on_date.len(), 7);
    assert_eq!(on_date.iter().collect::<HashSet<_>>().len(), 7);
}

fn raw_event(id: u64, date: &str, type_id: u64) -> Value {
    let t = chrono::DateTime::parse_from_rfc3339(date).unwrap();
    json!({"id": id, "timestamp": t.timestamp(), "timestamp_nanoseconds": 0, "date": date,
           "event_type": "Test", "event_type_id": type_id, "connector_guid": "g-1"})
}

#[tokio::test]
async fn start_date_is_inclusive_and_must_be_encoded() {
    let s = start(3, 3000).await;
    let events = json!([
        raw_event(9_000_000_000_000_000_001, "2030-01-01T00:00:00+00:00", 1),
        raw_event(9_000_000_000_000_000_002, "2030-01-01T00:00:01+00:00", 1),
        raw_event(9_000_000_000_000_000_003, "2030-01-01T00:00:02+00:00", 1),
    ]);
    s.hook("/_sim/events", events).await;
    let resp = s
        .http
        .get(format!("{}/v1/events", s.base))
        .query(&[("start_date", "2030-01-01T00:00:01+00:00")])
        .basic_auth(ID, Some(KEY))
        .send()
        .await
        .unwrap();
    let page: Value = resp.json().await.unwrap();
    assert_eq!(
        ids(&page),
        [9_000_000_000_000_000_003, 9_000_000_000_000_000_002]
    );
    // A raw `+` is a space once decoded: SE would not read that date either.
    let bad = s
        .get("/v1/events?start_date=2030-01-01T00:00:01+00:00")
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn event_type_filter_is_repeatable_and_ors() {
    let s = start(10, 3000).await;
    let guid = s.sim.computers()[0].connector_guid.clone();
    s.hook(&format!("/_sim/compromise/{guid}"), json!({})).await;
    let page = s
        .get_json("/v1/events?event_type[]=1090519054&event_type%5B%5D=1003")
        .await;
    let all: Vec<Value> = serde_json::from_str(&s.sim.events_json()).unwrap();
    let wanted: Vec<u64> = all
        .iter()
        .filter(|e| e["event_type_id"] == 1090519054u64 || e["event_type_id"] == 1003u64)
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(wanted.len() >= 2);
    assert_eq!(ids(&page), wanted);
    assert_eq!(page["metadata"]["results"]["total"], wanted.len());
    let unknown = s.get("/v1/events?event_type=1090519054").await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn ids_above_2_pow_53_are_exact_json_integers() {
    let s = start(1, 3000).await;
    let body = r#"{"id":6533241145273614339,"timestamp":1893456000,"date":"2030-01-01T00:00:00+00:00","event_type_id":1090519054}"#;
    let resp = s
        .http
        .post(format!("{}/_sim/events", s.base))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let text = s.get("/v1/events?limit=1").await.text().await.unwrap();
    assert!(text.contains(body), "served byte for byte: {text}");
}

#[tokio::test]
async fn bad_credentials_get_se_401_with_rate_limit_headers() {
    let s = start(1, 3000).await;
    let expected = r#"{"version":"v1.0.0","data":{},"errors":[{"error_code":401,"description":"Unauthorized","details":["Unknown API key or Client ID"]}]}"#;
    let url = format!("{}/v1/version", s.base);
    for req in [
        s.http.get(&url),
        s.http.get(&url).basic_auth(ID, Some("wrong")),
        s.http.get(&url).basic_auth("someone", Some(KEY)),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&resp, "x-ratelimit-limit"), "3000");
        assert_eq!(resp.text().await.unwrap(), expected);
    }
    assert_eq!(s.get("/v1/version").await.status(), StatusCode::OK);
    let stats = s.sim.stats();
    assert_eq!(
        (stats.stats.unauthorized, stats.ratelimit_remaining),
        (3, 2999)
    );
}

#[tokio::test]
async fn the_hourly_limit_answers_429_until_the_reset() {
    let s = start(1, 3).await;
    for remaining in ["2", "1", "0"] {
        let resp = s.get("/v1/computers").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "x-ratelimit-remaining"), remaining);
        assert_eq!(header(&resp, "x-ratelimit-limit"), "3");
    }
    let refused = s.get("/v1/events").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    let reset: i64 = header(&refused, "x-ratelimit-reset").parse().unwrap();
    assert!((3500..=3600).contains(&reset), "{reset}");
    let reset_date =
        chrono::DateTime::parse_from_rfc3339(header(&refused, "x-ratelimit-resetdate"));
    assert!(reset_date.is_ok());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["error_code"], 429);
    let stats = s.stats().await;
    assert_eq!(
        (stats["rate_limited"].as_u64(), stats["requests"].as_u64()),
        (Some(1), Some(4))
    );
    assert_eq!(stats["responses"]["429"], 1);

    s.hook("/_sim/advance", json!({"seconds": 3600})).await;
    let again = s.get("/v1/events").await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(header(&again, "x-ratelimit-remaining"), "2");
}

#[tokio::test]
async fn status_fault_answers_se_errors_then_recovers() {
    let s = start(1, 3000).await;
    s.hook(
        "/_sim/faults",
        json!({"kind": "status", "status": 503, "count": 2, "path": "/v1/events"}),
    )
    .await;
    assert_eq!(
        s.get("/v1/computers").await.status(),
        StatusCode::OK,
        "path-restricted"
    );
    for _ in 0..2 {
        let resp = s.get("/v1/events").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key("x-ratelimit-remaining"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["error_code"], 503);
    }
    assert_eq!(s.get("/v1/events").await.status(), StatusCode::OK);
    assert_eq!(s.sim.stats().stats.faults_injected, 2);
}

#[tokio::test]
async fn latency_fault_delays_a_normal_answer() {
    let s = start(1, 3000).await;
    s.hook("/_sim/faults", json!({"kind": "latency", "ms": 400}))
        .await;
    let started = Instant::now();
    assert_eq!(s.get("/v1/version").await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let started = Instant::now();
    s.get("/v1/version").await;
    assert!(started.elapsed() < Duration::from_millis(400), "only once");
}

#[tokio::test]
async fn rate_limited_fault_sends_429_with_its_reset() {
    let s = start(1, 3000).await;
    s.hook(
        "/_sim/faults",
        json!({"kind": "rate_limited", "reset": 5, "retry_after": 5}),
    )
    .await;
    let resp = s.get("/v1/events").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&resp, "x-ratelimit-reset"), "5");
    assert_eq!(header(&resp, "retry-after"), "5");
    assert_eq!(s.get("/v1/events").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_fault_sends_200_with_broken_json() {
    let s = start(3, 3000).await;
    s.hook("/_sim/faults", json!({"kind": "malformed"})).await;
    let resp = s.get("/v1/computers").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with(r#"{"version":"v1.2.0""#));
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn drop_fault_closes_the_connection_without_a_response() {
    let s = start(1, 3000).await;
    s.hook("/_sim/faults", json!({"kind": "drop"})).await;
    let err = s
        .http
        .get(format!("{}/v1/events", s.base))
        .basic_auth(ID, Some(KEY))
        .send()
        .await
        .expect_err("the connection closes before a response head arrives");
    assert!(err.is_request(), "{err:?}");
    assert_eq!(s.get("/v1/events").await.status(), StatusCode::OK);
    let stats = s.sim.stats().stats;
    assert_eq!(
        (stats.requests, stats.responses.values().sum::<u64>()),
        (2, 1)
    );
}

#[tokio::test]
async fn computers_and_scripted_compromise_and_resolution() {
    let s = start(12, 3000).await;
    let list = s.get_json("/v1/computers?limit=5&offset=10").await;
    assert_eq!(list["metadata"]["results"]["total"], 12);
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let guid = s.sim.computers()[3].connector_guid.clone();
    let before = s.get_json(&format!("/v1/computers/{guid}")).await;
    assert_eq!(before["data"]["is_compromised"], false);
    assert!(before["metadata"].get("results").is_none());

    let hook = s.hook(&format!("/_sim/compromise/{guid}"), json!({})).await;
    let after = s.get_json(&format!("/v1/computers/{guid}")).await;
    assert_eq!(after["data"]["is_compromised"], true);
    let detections = s
        .get_json(&format!(
            "/v1/events?event_type[]=1090519054&connector_guid[]={guid}"
        ))
        .await;
    assert_eq!(detections["data"][0]["detection_id"], hook["detection_id"]);

    s.hook(&format!("/_sim/resolve/{guid}"), json!({})).await;
    let resolved = s.get_json(&format!("/v1/computers/{guid}")).await;
    assert_eq!(resolved["data"]["is_compromised"], false);

    let typo = s
        .http
        .post(format!("{}/_sim/compromize/{guid}", s.base))
        .send()
        .await;
    assert_eq!(
        typo.unwrap().status(),
        StatusCode::NOT_FOUND,
        "not SE's 401"
    );
    let missing = s.get("/v1/computers/not-a-guid").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["errors"][0]["error_code"], 404);
}

#[tokio::test]
async fn a_backdated_compromise_is_missed_without_enough_overlap() {
    let s = start(2, 3000).await;
    let guid = s.sim.computers()[0].connector_guid.clone();
    s.hook(
        &format!("/_sim/compromise/{guid}"),
        json!({"backdate_seconds": 3600}),
    )
    .await;
    let since = |ago: i64| {
        let t = s.sim.now() - chrono::Duration::seconds(ago);
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let detections = |start: String| {
        let url = format!("{}/v1/events", s.base);
        let req = s.http.get(url).basic_auth(ID, Some(KEY));
        req.query(&[
            ("event_type[]", "1090519054"),
            ("start_date", start.as_str()),
        ])
        .send()
    };
    let recent: Value = detections(since(600)).await.unwrap().json().await.unwrap();
    assert_eq!(recent["metadata"]["results"]["total"], 0);
    let wide: Value = detections(since(7200)).await.unwrap().json().await.unwrap();
    assert_eq!(wide["data"][0]["connector_guid"], guid.as_str());
    let computer = s.get_json(&format!("/v1/computers/{guid}")).await;
    assert_eq!(computer["data"]["is_compromised"], true);
}

#[tokio::test]
async fn version_and_event_types_use_the_envelope() {
    let s = start(1, 3000).await;
    let version = s.get_json("/v1/version").await;
    assert_eq!(version["version"], "v1.2.0");
    assert_eq!(
        version["metadata"]["links"]["self"],
        format!("{}/v1/version", s.base)
    );
    let types = s.get_json("/v1/event_types").await;
    assert_eq!(types["metadata"]["results"]["total"], 102);
    let detected = types["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == 1090519054u64)
        .unwrap();
    assert_eq!(detected["name"], "Threat Detected");
    assert_eq!(
        detected["description"],
        "A threat was found on this system."
    );
}

/// Event streams without a broker: SE's shapes, the password only at creation, the limit of 5.
#[tokio::test]
async fn event_streams_are_created_listed_limited_and_deleted() {
    let r = start(2, 3000).await;
    let url = format!("{}/v1/event_streams", r.base);
    let post = |name: String| {
        r.http
            .post(&url)
            .basic_auth(ID, Some(KEY))
            .json(&json!({"name": name, "event_type": [1090519054]}))
            .send()
    };
    for i in 1..=5 {
        let created = post(format!("s{i}")).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let body: Value = created.json().await.unwrap();
        assert_eq!(body["data"]["id"], i);
        let creds = &body["data"]["amqp_credentials"];
        for field in [
            "user_name",
            "password",
            "queue_name",
            "host",
            "port",
            "proto",
        ] {
            assert!(creds[field].is_string(), "{field}: {body}");
        }
        assert_eq!(creds["queue_name"], format!("event_stream_{i}"));
    }
    let refused = post("s6".into()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    assert!(body["errors"][0]["details"][0]
        .as_str()
        .unwrap()
        .contains("at most 5"));

    let listed: Value = r.get("/v1/event_streams").await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 5);
    assert!(!listed.to_string().contains("password"), "{listed}");
    assert_eq!(listed["data"][0]["event_type"][0], 1090519054);

    let delete = |id: u64| {
        r.http
            .delete(format!("{url}/{id}"))
            .basic_auth(ID, Some(KEY))
            .send()
    };
    assert_eq!(delete(3).await.unwrap().status(), StatusCode::OK);
    assert_eq!(delete(3).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(
        post("again".into()).await.unwrap().status(),
        StatusCode::CREATED
    );
    let unauthorized = r.http.get(&url).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_page_fault_sends_200_with_json_that_holds_no_record() {
    let s = start(3, 3000).await;
    s.hook("/_sim/faults", json!({"kind": "invalid_page"}))
        .await;
    let page = s.get_json("/v1/events").await;
    assert!(
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !d.is_object()),
        "{page}"
    );
    let again = s.get_json("/v1/events").await;
    assert!(
        again["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_object),
        "only once"
    );
}

/// A `shift` between two page requests moves the newest-first listing down: the second page
/// starts with items the first one already held, and nothing is skipped.
#[tokio::test]
async fn shift_fault_adds_events_before_answering_so_the_next_page_moves_down() {
    let s = start(4, 3000).await;
    let first = s.get_json("/v1/events?limit=5").await;
    let total = first["metadata"]["results"]["total"].as_u64().unwrap();
    s.hook(
        "/_sim/faults",
        json!({"kind": "shift", "events": 3, "path": "/v1/events"}),
    )
    .await;
    let second = s.get_json("/v1/events?limit=5&offset=5").await;
    assert_eq!(second["metadata"]["results"]["total"], total + 3);
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].to_string())
            .collect()
    };
    // The three new events went on top: the old items 2..5 are now at offsets 5..8.
    assert_eq!(ids(&second)[..3], ids(&first)[2..5]);
    assert_eq!(s.sim.stats().stats.faults_injected, 1);
    assert_eq!(s.sim.stats().events as u64, total + 3);
}
