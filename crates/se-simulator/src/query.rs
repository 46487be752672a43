//! Query strings as SE reads them: repeatable `name[]` parameters, paging, and a 400 for any
//! parameter the endpoint does not know (SE lists the offending fields).

use super::events::EventFilter;
use crate::pagination::PageRequest;
use crate::params::Pair;

/// A rejected query; the messages become the `details` of SE's 400 error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad query: {}", .0.join("; "))]
pub(crate) struct QueryError(pub(crate) Vec<String>);

fn parse_number<T: std::str::FromStr>(p: &Pair, errors: &mut Vec<String>) -> Option<T> {
    match p.value.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(format!("{} is invalid: {:?}", p.name, p.value));
            None
        }
    }
}

/// Reads `limit` and `offset`; returns false for any other name.
fn paging(p: &Pair, page: &mut PageRequest, errors: &mut Vec<String>) -> bool {
    match p.name.as_str() {
        "limit" => match parse_number::<usize>(p, errors) {
            Some(0) => errors.push("limit must be at least 1".to_string()),
            Some(l) => page.limit = l.min(super::pagination::MAX_LIMIT),
            None => {}
        },
        "offset" => {
            if let Some(o) = parse_number(p, errors) {
                page.offset = o;
            }
        }
        _ => return false,
    }
    true
}

/// `GET /v1/events` parameters.
pub(crate) fn events(pairs: &[Pair]) -> Result<(EventFilter, PageRequest), QueryError> {
    let mut filter = EventFilter::default();
    let mut page = PageRequest::default();
    let mut errors = Vec::new();
    for p in pairs {
        if paging(p, &mut page, &mut errors) {
            continue;
        }
        match p.name.as_str() {
            "start_date" => match chrono::DateTime::parse_from_rfc3339(&p.value) {
                Ok(t) => filter.start_secs = Some(t.timestamp()),
                Err(_) => errors.push(format!("start_date is not ISO 8601: {:?}", p.value)),
            },
            "event_type[]" => {
                if let Some(t) = parse_number(p, &mut errors) {
                    filter.event_types.push(t);
                }
            }
            "connector_guid[]" => filter.connector_guids.push(p.value.clone()),
            "group_guid[]" => filter.group_guids.push(p.value.clone()),
            "detection_sha256" => filter.detection_sha256 = Some(p.value.clone()),
            "application_sha256" => filter.application_sha256 = Some(p.value.clone()),
            other => errors.push(format!("unknown parameter: {other}")),
        }
    }
    if errors.is_empty() {
        Ok((filter, page))
    } else {
        Err(QueryError(errors))
    }
}

/// `GET /v1/computers` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ComputerFilter {
    pub(crate) hostnames: Vec<String>,
    pub(crate) group_guids: Vec<String>,
    pub(crate) internal_ip: Option<String>,
    pub(crate) external_ip: Option<String>,
}

impl ComputerFilter {
    pub(crate) fn matches(&self, c: &super::shapes::Computer) -> bool {
        (self.hostnames.is_empty()
            || self
                .hostnames
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&c.hostname)))
            && (self.group_guids.is_empty() || self.group_guids.contains(&c.group_guid))
            && self
                .internal_ip
                .as_ref()
                .is_none_or(|ip| c.internal_ips.contains(ip))
            && self
                .external_ip
                .as_ref()
                .is_none_or(|ip| *ip == c.external_ip)
    }
}

/// `GET /v1/computers` parameters.
pub(crate) fn computers(pairs: &[Pair]) -> Result<(ComputerFilter, PageRequest), QueryError> {
    let mut filter = ComputerFilter::default();
    let mut page = PageRequest::default();
    let mut errors = Vec::new();
    for p in pairs {
        if paging(p, &mut page, &mut errors) {
            continue;
        }
        match p.name.as_str() {
            "hostname[]" => filter.hostnames.push(p.value.clone()),
            "group_guid[]" => filter.group_guids.push(p.value.clone()),
            "internal_ip" => filter.internal_ip = Some(p.value.clone()),
            "external_ip" => filter.external_ip = Some(p.value.clone()),
            other => errors.push(format!("unknown parameter: {other}")),
        }
    }
    if errors.is_empty() {
        Ok((filter, page))
    } else {
        Err(QueryError(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs;
    use rstest::rstest;

    #[test]
    fn repeated_event_types_accumulate() {
        let q = pairs(Some("event_type[]=1&event_type%5B%5D=2&limit=10&offset=20"));
        let (f, page) = events(&q).unwrap();
        assert_eq!(f.event_types, [1, 2]);
        assert_eq!((page.limit, page.offset), (10, 20));
    }

    #[rstest]
    #[case("limit=501", 500)]
    #[case("limit=1", 1)]
    #[case("", 500)]
    fn limit_is_capped_at_500(#[case] q: &str, #[case] limit: usize) {
        assert_eq!(events(&pairs(Some(q))).unwrap().1.limit, limit);
    }

    #[rstest]
    #[case("event_type=1")]
    #[case("limit=0")]
    #[case("limit=ten")]
    #[case("offset=-1")]
    #[case("start_date=2021-01-14T10:33:46+00:00")] // unencoded `+` decodes to a space
    #[case("event_type[]=threat")]
    fn bad_event_queries_are_refused(#[case] q: &str) {
        assert!(events(&pairs(Some(q))).is_err(), "{q}");
    }

    #[test]
    fn start_date_accepts_offsets_and_z() {
        let q = pairs(Some("start_date=2021-01-14T11%3A33%3A46%2B01%3A00"));
        let z = pairs(Some("start_date=2021-01-14T10:33:46Z"));
        assert_eq!(events(&q).unwrap().0.start_secs, Some(1610620426));
        assert_eq!(events(&z).unwrap().0.start_secs, Some(1610620426));
    }

    #[test]
    fn computer_queries() {
        let (f, _) = computers(&pairs(Some("hostname[]=A&hostname[]=b"))).unwrap();
        assert_eq!(f.hostnames, ["A", "b"]);
        assert!(computers(&pairs(Some("start_date=x"))).is_err());
    }
}
