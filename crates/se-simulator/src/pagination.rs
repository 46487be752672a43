//! SE's list envelope: `limit`/`offset` paging and `metadata` (`links.self/next/prev`,
//! `results`). `next` exists only while items remain; `prev` whenever `offset > 0`. Both repeat
//! the request's other parameters verbatim and put `limit` and `offset` last, as SE's links do.

use crate::params::Pair;
use serde::Serialize;

/// SE serves at most 500 items per page; larger limits are capped.
pub(crate) const MAX_LIMIT: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRequest {
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: MAX_LIMIT,
            offset: 0,
        }
    }
}

impl PageRequest {
    /// The index range of this page within `total` items.
    pub(crate) fn range(&self, total: usize) -> std::ops::Range<usize> {
        let start = self.offset.min(total);
        start..start.saturating_add(self.limit).min(total)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Links {
    #[serde(rename = "self")]
    pub(crate) self_: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prev: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Results {
    pub(crate) total: usize,
    pub(crate) current_item_count: usize,
    pub(crate) index: usize,
    pub(crate) items_per_page: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Metadata {
    pub(crate) links: Links,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) results: Option<Results>,
}

/// Where a request was sent: `http://host:port`, the path and the raw query.
#[derive(Debug, Clone)]
pub(crate) struct RequestUrl<'a> {
    pub(crate) base: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
}

impl RequestUrl<'_> {
    /// The request as sent, for `links.self`.
    pub(crate) fn self_link(&self) -> String {
        match self.query.filter(|q| !q.is_empty()) {
            Some(q) => format!("{}{}?{q}", self.base, self.path),
            None => format!("{}{}", self.base, self.path),
        }
    }

    fn with_page(&self, pairs: &[Pair], limit: usize, offset: usize) -> String {
        let mut parts: Vec<&str> = pairs
            .iter()
            .filter(|p| p.name != "limit" && p.name != "offset")
            .map(|p| p.raw.as_str())
            .collect();
        let paging = format!("limit={limit}&offset={offset}");
        parts.push(&paging);
        format!("{}{}?{}", self.base, self.path, parts.join("&"))
    }
}

/// The metadata of a page of `count` items out of `total`.
pub(crate) fn metadata(
    url: &RequestUrl<'_>,
    pairs: &[Pair],
    page: PageRequest,
    total: usize,
    count: usize,
) -> Metadata {
    let next_offset = page.offset.saturating_add(count);
    let next =
        (count > 0 && next_offset < total).then(|| url.with_page(pairs, page.limit, next_offset));
    let prev = (page.offset > 0)
        .then(|| url.with_page(pairs, page.limit, page.offset.saturating_sub(page.limit)));
    Metadata {
        links: Links {
            self_: url.self_link(),
            next,
            prev,
        },
        results: Some(Results {
            total,
            current_item_count: count,
            index: page.offset,
            items_per_page: page.limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs;
    use rstest::rstest;

    const URL: RequestUrl<'static> = RequestUrl {
        base: "http://h",
        path: "/v1/events",
        query: None,
    };

    #[rstest]
    // (limit, offset, total) -> (count, next offset, prev offset)
    #[case(500, 0, 972, 500, Some(500), None)]
    #[case(500, 500, 972, 472, None, Some(0))]
    #[case(3, 2, 10, 3, Some(5), Some(0))]
    #[case(3, 9, 10, 1, None, Some(6))]
    #[case(3, 12, 10, 0, None, Some(9))]
    #[case(10, 0, 0, 0, None, None)]
    #[case(10, 0, 10, 10, None, None)]
    fn pages_and_links(
        #[case] limit: usize,
        #[case] offset: usize,
        #[case] total: usize,
        #[case] count: usize,
        #[case] next: Option<usize>,
        #[case] prev: Option<usize>,
    ) {
        let page = PageRequest { limit, offset };
        assert_eq!(page.range(total).len(), count);
        let m = metadata(&URL, &[], page, total, count);
        let at = |o: usize| format!("http://h/v1/events?limit={limit}&offset={o}");
        assert_eq!(m.links.next, next.map(at));
        assert_eq!(m.links.prev, prev.map(at));
        let r = m.results.unwrap();
        assert_eq!(
            (r.total, r.current_item_count, r.index, r.items_per_page),
            (total, count, offset, limit)
        );
    }

    #[test]
    fn links_keep_filters_verbatim_and_page_last() {
        let query = "start_date=2021-01-14T10%3A33%3A46%2B00%3A00&limit=2&event_type%5B%5D=1&event_type%5B%5D=2";
        let url = RequestUrl {
            query: Some(query),
            ..URL
        };
        let q = pairs(Some(query));
        let m = metadata(
            &url,
            &q,
            PageRequest {
                limit: 2,
                offset: 0,
            },
            5,
            2,
        );
        assert_eq!(m.links.self_, format!("http://h/v1/events?{query}"));
        assert_eq!(
            m.links.next.unwrap(),
            "http://h/v1/events?start_date=2021-01-14T10%3A33%3A46%2B00%3A00&event_type%5B%5D=1&event_type%5B%5D=2&limit=2&offset=2"
        );
    }
}
