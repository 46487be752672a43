//! Which configuration values are secrets, decided by what a key *is* rather than by a short
//! list of trustgate's own names: `[kafka.properties]` passes any librdkafka property through,
//! so a private key in `ssl.key.pem` must be redacted as surely as `sasl_password`.
//!
//! Also owns scrubbing values out of deserialisation messages: serde quotes the offending value
//! in a type error (`invalid type: string "…", expected a sequence`), and that value may be a
//! secret written under the wrong type.

/// trustgate's own secret keys.
const OWN_SECRET_KEYS: &[&str] = &[
    "sasl_password",
    "ssl_key_password",
    "api_key",
    "secrets",
    "bearer_token",
    "token",
    // `[amqp] url`: `amqps://user:password@host…`.
    "url",
];

/// librdkafka's properties flagged `_RK_SENSITIVE` (librdkafka 2.12, `rdkafka_conf.c`), plus
/// `ssl_engine_callback_data`, which carries whatever the engine needs (often a PIN).
const LIBRDKAFKA_SENSITIVE: &[&str] = &[
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl_engine_callback_data",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.client.credentials.client.id",
    "sasl.oauthbearer.client.credentials.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
];

/// Name fragments that mark a secret in any key, for properties newer than the list above.
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "secret",
    "key.pem",
    ".pem",
    "token",
    "oauthbearer.config",
    "passphrase",
];

/// Whether the value under `key` (a trustgate key or a librdkafka property name) is a secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    OWN_SECRET_KEYS.contains(&key.as_str())
        || LIBRDKAFKA_SENSITIVE.contains(&key.as_str())
        || SECRET_FRAGMENTS.iter().any(|f| key.contains(f))
}

/// Replaces every double-quoted value in a serde or toml message (`string "…"`, serde's `Debug`
/// of the value) with `[REDACTED]`. Backticks, which name keys and expected values, stay.
/// The message keeps what the operator needs (the key, the expected type), never the value,
/// since the value under a wrong type may be a secret.
pub(crate) fn scrub_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                skip_quoted(&mut chars, '"');
                out.push_str("\"[REDACTED]\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Consumes up to and including the closing `quote`, honouring backslash escapes.
fn skip_quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, quote: char) {
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            c if c == quote => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_secrets_are_secret_by_name_or_by_fragment() {
        for key in [
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "ssl.keystore.password",
            "sasl.password",
            "ssl.key.password",
            "ssl_engine_callback_data",
            "sasl.oauthbearer.client.secret",
            "some.future.token.property",
            "SSL.KEY.PEM",
            "token",
            "bearer_token",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "brokers",
            "client.id",
            "linger.ms",
            "listen",
            "enable.idempotence",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn quoted_values_are_scrubbed() {
        let m = r#"invalid type: string "SENTINEL \"x\" y", expected a sequence"#;
        let scrubbed = scrub_values(m);
        assert!(!scrubbed.contains("SENTINEL"), "{scrubbed}");
        assert!(scrubbed.contains("expected a sequence"), "{scrubbed}");
        assert_eq!(
            scrub_values("unknown field `brokerz`, expected `brokers`"),
            "unknown field `brokerz`, expected `brokers`"
        );
    }
}
