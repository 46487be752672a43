//! SE's `/v1/` endpoints, answered from the simulated tenant. Auth, the budget and faults are
//! applied before these run (see [`super::server`]).

use super::pagination::{self, PageRequest, RequestUrl};
use super::{catalog, params, query, Simulator};
use crate::envelope::{base_url, ok, se_error, self_only};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

pub(super) async fn not_found(uri: Uri) -> Response {
    se_error(
        StatusCode::NOT_FOUND,
        vec![format!("{} is not a simulated endpoint", uri.path())],
    )
}

pub(super) async fn version(headers: HeaderMap, uri: Uri) -> Response {
    ok(self_only(&base_url(&headers), &uri), json!({}))
}

pub(super) async fn events(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let pairs = params::pairs(uri.query());
    let (filter, page) = match query::events(&pairs) {
        Ok(q) => q,
        Err(e) => return se_error(StatusCode::BAD_REQUEST, e.0),
    };
    let base = base_url(&headers);
    let url = RequestUrl {
        base: &base,
        path: uri.path(),
        query: uri.query(),
    };
    sim.with_world(|w| {
        let matching: Vec<&RawValue> = w.events().query(&filter).map(|e| &*e.raw).collect();
        let data = &matching[page.range(matching.len())];
        ok(
            pagination::metadata(&url, &pairs, page, matching.len(), data.len()),
            data,
        )
    })
}

pub(super) async fn computers(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let pairs = params::pairs(uri.query());
    let (filter, page) = match query::computers(&pairs) {
        Ok(q) => q,
        Err(e) => return se_error(StatusCode::BAD_REQUEST, e.0),
    };
    let base = base_url(&headers);
    let url = RequestUrl {
        base: &base,
        path: uri.path(),
        query: uri.query(),
    };
    sim.with_world(|w| {
        let matching: Vec<_> = w.computers().iter().filter(|c| filter.matches(c)).collect();
        let data = &matching[page.range(matching.len())];
        ok(
            pagination::metadata(&url, &pairs, page, matching.len(), data.len()),
            data,
        )
    })
}

pub(super) async fn computer(
    State(sim): State<Simulator>,
    Path(guid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let meta = self_only(&base_url(&headers), &uri);
    sim.with_world(|w| match w.computer(&guid) {
        Some(c) => ok(meta, c),
        None => se_error(
            StatusCode::NOT_FOUND,
            vec![format!("connector_guid {guid} was not found")],
        ),
    })
}

#[derive(Serialize)]
struct EventType {
    id: u64,
    name: &'static str,
    description: &'static str,
}

pub(super) async fn event_types(headers: HeaderMap, uri: Uri) -> Response {
    let all: Vec<EventType> = catalog::EVENT_TYPES
        .iter()
        .map(|&(id, name)| EventType {
            id,
            name,
            description: catalog::description(id),
        })
        .collect();
    let base = base_url(&headers);
    let url = RequestUrl {
        base: &base,
        path: uri.path(),
        query: uri.query(),
    };
    let page = PageRequest::default();
    ok(
        pagination::metadata(&url, &[], page, all.len(), all.len()),
        all,
    )
}
