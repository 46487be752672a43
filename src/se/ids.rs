//! Canonical forms of device identifiers, so that indexes and requests agree whatever case or
//! separator each side used.

/// Connector GUIDs are compared case-insensitively; SE prints them lower case.
pub(crate) fn normalize_guid(guid: &str) -> Option<String> {
    let guid = guid.trim();
    usable(guid).then(|| guid.to_ascii_lowercase())
}

/// The longest identifier accepted: a DNS name is at most 253 bytes, a GUID 36, a processor id
/// 16. A longer one is no SE identifier, and would only grow index keys.
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 255;

/// No SE identifier holds a control character; one that does is not an identifier (a NUL would
/// also end an index value early in the store's key layout). Nor is one longer than
/// [`MAX_IDENTIFIER_BYTES`].
fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_IDENTIFIER_BYTES && !id.chars().any(char::is_control)
}

/// Hostnames are compared case-insensitively (DNS names are), without a trailing root dot.
pub(crate) fn normalize_hostname(hostname: &str) -> Option<String> {
    let host = hostname.trim().trim_end_matches('.');
    usable(host).then(|| host.to_ascii_lowercase())
}

/// A MAC address as 12 lower-case hex digits, accepting `:`, `-` or `.` separators (or none) in
/// any case. Anything that is not 6 bytes of hex is not a MAC and is ignored rather than indexed.
pub(crate) fn normalize_mac(mac: &str) -> Option<String> {
    // One allocation of the final size: this runs for every MAC of every decision request.
    let mut hex = String::with_capacity(12);
    for c in mac.trim().chars().filter(|c| !matches!(c, ':' | '-' | '.')) {
        if hex.len() == 12 || !c.is_ascii_hexdigit() {
            return None;
        }
        hex.push(c.to_ascii_lowercase());
    }
    (hex.len() == 12).then_some(hex)
}

/// `windows_processor_id` is a hex string; compare it case-insensitively.
pub(crate) fn normalize_processor_id(id: &str) -> Option<String> {
    let id = id.trim();
    usable(id).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("22:88:FE:2C:89:5C", Some("2288fe2c895c"))]
    #[case("22-88-fe-2c-89-5c", Some("2288fe2c895c"))]
    #[case("2288.fe2c.895c", Some("2288fe2c895c"))]
    #[case("2288fe2c895c", Some("2288fe2c895c"))]
    #[case("22:88:fe:2c:89", None)]
    #[case("zz:88:fe:2c:89:5c", None)]
    #[case("", None)]
    fn macs_normalize_to_twelve_hex_digits(#[case] input: &str, #[case] expected: Option<&str>) {
        assert_eq!(normalize_mac(input).as_deref(), expected);
    }

    #[test]
    fn hostnames_lose_case_and_root_dot() {
        assert_eq!(
            normalize_hostname("FIN-LT-0042.Corp.").as_deref(),
            Some("fin-lt-0042.corp")
        );
        assert_eq!(normalize_hostname("  "), None);
    }

    #[rstest]
    #[case("fin-lt-1\0g2")]
    #[case("fin\nlt")]
    #[case("\u{7f}")]
    fn an_identifier_with_a_control_character_is_none(#[case] id: &str) {
        assert_eq!(normalize_hostname(id), None);
        assert_eq!(normalize_processor_id(id), None);
        assert_eq!(normalize_guid(id), None);
    }

    #[test]
    fn an_overlong_identifier_is_none() {
        let long = "a".repeat(MAX_IDENTIFIER_BYTES);
        assert_eq!(normalize_hostname(&long).as_deref(), Some(long.as_str()));
        let longer = "a".repeat(MAX_IDENTIFIER_BYTES + 1);
        assert_eq!(normalize_hostname(&longer), None);
        assert_eq!(normalize_guid(&longer), None);
        assert_eq!(normalize_processor_id(&longer), None);
    }

    proptest::proptest! {
        /// Whatever the input, a normalised identifier is usable as an index key: non-empty,
        /// bounded, no control character (no NUL), lower case; a MAC is 12 hex digits.
        #[test]
        fn normalised_identifiers_are_index_safe(s in "\\PC{0,300}|[\\x00-\\x7f]{0,20}|.{0,300}") {
            for id in [normalize_guid(&s), normalize_hostname(&s), normalize_processor_id(&s)]
                .into_iter()
                .flatten()
            {
                proptest::prop_assert!(!id.is_empty() && id.len() <= MAX_IDENTIFIER_BYTES);
                proptest::prop_assert!(!id.chars().any(char::is_control));
                proptest::prop_assert_eq!(id.to_ascii_lowercase(), id.clone());
            }
            if let Some(mac) = normalize_mac(&s) {
                proptest::prop_assert!(mac.len() == 12 && mac.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            }
        }

        /// The one-allocation MAC normaliser answers as the collect-then-check one it replaced.
        #[test]
        fn macs_normalise_as_before(
            s in " ?([0-9a-fA-F]{2}[:.-]?){5,7} ?|[0-9a-fA-FgG:. -]{0,24}|\\PC{0,20}"
        ) {
            let before = |mac: &str| {
                let hex: String = mac
                    .trim()
                    .chars()
                    .filter(|c| !matches!(c, ':' | '-' | '.'))
                    .collect();
                (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| hex.to_ascii_lowercase())
            };
            proptest::prop_assert_eq!(normalize_mac(&s), before(&s));
        }
    }
}
