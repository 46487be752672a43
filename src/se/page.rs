//! Slicing SE pages and pushed bodies into one raw JSON object per record.
//!
//! The events topic carries SE's bytes exactly as SE sent them, so records are cut out of a page
//! with [`RawValue`] and never re-serialised: number formatting, key order and unknown fields all
//! survive for any other consumer of the topic (a SIEM reads it as SE data).

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a body could not be split into records.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The body is not JSON at all.
    #[error("body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The body is JSON of another shape; says what it was.
    #[error("expected a JSON object, an array of objects or an envelope with `data`, got {0}")]
    Shape(&'static str),
}

/// The records of one body plus, for a `/v1/...` envelope, its `next` link.
#[derive(Debug)]
pub struct RawRecords<'a> {
    /// Each record's exact bytes, borrowed from the body.
    pub records: Vec<&'a RawValue>,
    pub(crate) next: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<String>,
}

/// Splits a body that is one record object, a JSON array of records, or a `{"data": ...}`
/// envelope (whose `data` is an array or a single object) into raw record slices.
pub fn split_records(body: &str) -> Result<RawRecords<'_>, PageError> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        let records: Vec<&RawValue> = serde_json::from_str(body)?;
        return check_objects(records, None);
    }
    if !trimmed.starts_with('{') {
        // Still parse, so invalid JSON is reported as such rather than as a shape error.
        let _: &RawValue = serde_json::from_str(body)?;
        return Err(PageError::Shape("a JSON scalar"));
    }
    let probe: serde_json::Map<String, serde_json::Value> = serde_json::from_str(body)?;
    if !probe.contains_key("data") {
        let one: &RawValue = serde_json::from_str(body)?;
        return Ok(RawRecords {
            records: vec![one],
            next: None,
        });
    }
    let envelope: Envelope<'_> = serde_json::from_str(body)?;
    let next = envelope.metadata.and_then(|m| m.links).and_then(|l| l.next);
    let data = envelope.data.get().trim_start();
    let records = if data.starts_with('[') {
        serde_json::from_str(envelope.data.get())?
    } else {
        vec![envelope.data]
    };
    check_objects(records, next)
}

fn check_objects(
    records: Vec<&RawValue>,
    next: Option<String>,
) -> Result<RawRecords<'_>, PageError> {
    if records
        .iter()
        .any(|r| !r.get().trim_start().starts_with('{'))
    {
        return Err(PageError::Shape("an array with a non-object item"));
    }
    Ok(RawRecords { records, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_records_keep_their_exact_bytes() {
        let body = include_str!("../../tests/fixtures/computers-page.json");
        let page = split_records(body).unwrap();
        assert_eq!(page.records.len(), 38);
        for r in &page.records {
            assert!(
                body.contains(r.get()),
                "record is a verbatim slice of the page"
            );
        }
        assert_eq!(page.next, None);
    }

    #[test]
    fn next_link_is_returned() {
        let page = split_records(include_str!(
            "../../tests/fixtures/events-query-detection-sha256.json"
        ))
        .unwrap();
        assert_eq!(page.records.len(), 1);
        assert!(page.next.unwrap().contains("offset=1"));
    }

    #[test]
    fn single_objects_and_arrays_are_accepted() {
        assert_eq!(
            split_records(r#"{"event_type_id": 1}"#)
                .unwrap()
                .records
                .len(),
            1
        );
        assert_eq!(
            split_records(r#" [{"a":1},{"b":2.50}]"#).unwrap().records[1].get(),
            r#"{"b":2.50}"#
        );
    }

    #[test]
    fn scalars_and_garbage_are_refused() {
        assert!(matches!(split_records("42"), Err(PageError::Shape(_))));
        assert!(matches!(split_records("{nope"), Err(PageError::Json(_))));
        assert!(matches!(split_records("[1,2]"), Err(PageError::Shape(_))));
    }
}
