//! Query strings split into decoded `name=value` pairs, each keeping its encoded text so that
//! `next`/`prev` links repeat the request's own parameters byte for byte.

/// One `name=value` pair, decoded, with its original encoded text (kept for `next`/`prev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) raw: String,
}

/// Splits and percent-decodes a raw query string (`+` is a space, as in forms).
pub(crate) fn pairs(raw: Option<&str>) -> Vec<Pair> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            Pair {
                name: decode(n),
                value: decode(v),
                raw: p.to_string(),
            }
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("event_type%5B%5D=1090519054", "event_type[]", "1090519054")]
    #[case(
        "start_date=2021-01-14T10%3A33%3A46%2B00%3A00",
        "start_date",
        "2021-01-14T10:33:46+00:00"
    )]
    #[case("a=b+c", "a", "b c")]
    #[case("a=100%", "a", "100%")]
    #[case("a=%zz", "a", "%zz")]
    fn decodes_pairs(#[case] raw: &str, #[case] name: &str, #[case] value: &str) {
        let p = &pairs(Some(raw))[0];
        assert_eq!((p.name.as_str(), p.value.as_str()), (name, value));
        assert_eq!(p.raw, raw);
    }

    #[test]
    fn splits_on_ampersands_and_skips_empty_pairs() {
        let names: Vec<String> = pairs(Some("a=1&&b&c="))
            .into_iter()
            .map(|p| format!("{}={}", p.name, p.value))
            .collect();
        assert_eq!(names, ["a=1", "b=", "c="]);
        assert!(pairs(None).is_empty() && pairs(Some("")).is_empty());
    }
}
