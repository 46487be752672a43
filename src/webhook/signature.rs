//! Standard Webhooks (v1, HMAC-SHA256) verification, and the optional bearer token.
//!
//! A signed delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` entries over
//! `"{id}.{timestamp}.{raw body}"`. The key is the base64 after `whsec_`. Several secrets may be
//! configured (rotation): a delivery is authentic when any entry matches any secret. Entries of
//! other schemes (`v1a,...`) are skipped, as the spec asks of receivers.
//!
//! Every comparison of secret-derived bytes is constant-time (`subtle`). Why a delivery failed is
//! returned as an [`AuthError`] for logs and counters only: the client just hears 401.

use axum::http::HeaderMap;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

const HEADER_ID: &str = "webhook-id";
const HEADER_TIMESTAMP: &str = "webhook-timestamp";
const HEADER_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";
/// The spec asks for 24-64 random bytes; shorter keys are refused at start-up.
const MIN_KEY_BYTES: usize = 24;
/// Ids are kept in the replay cache, so their size is bounded.
const MAX_ID_BYTES: usize = 256;
const HMAC_SHA256_BYTES: usize = 32;

/// Senders differ on base64 padding; both forms decode.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// A configured secret that cannot be used. Names its position, never its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The secret at this position does not start with `whsec_`, or the rest is not base64.
    #[error("webhook.secrets[{0}] is not whsec_<base64>")]
    NotBase64(usize),
    /// The key is shorter than the 24 random bytes Standard Webhooks asks for.
    #[error("webhook.secrets[{index}] decodes to {len} bytes; use at least {MIN_KEY_BYTES} random bytes")]
    TooShort {
        /// The secret's position in `webhook.secrets`.
        index: usize,
        /// How many bytes it decodes to.
        len: usize,
    },
}

/// Why a delivery was not authenticated. Never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A header the scheme needs is absent.
    #[error("a webhook header is missing")]
    Missing,
    /// A header is repeated, not text, or not of its format.
    #[error("a webhook header is malformed")]
    Malformed,
    /// The signed timestamp is further from now than the tolerance.
    #[error("webhook-timestamp is outside the tolerance")]
    Stale,
    /// No `v1` signature matches any configured secret.
    #[error("no signature matches a configured secret")]
    Mismatch,
    /// The bearer token is not the configured one.
    #[error("the bearer token does not match")]
    BadToken,
}

/// What an authenticated delivery says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `webhook-id`: the idempotency key (signed; optional for bearer deliveries).
    pub id: Option<String>,
    /// Unix seconds: the signed `webhook-timestamp`, or the receipt time for bearer deliveries
    /// (whose headers nobody signed).
    pub timestamp: i64,
    /// Whether a signature authenticated it. A bearer delivery is not tied to a time (no signed
    /// timestamp, replayable for as long as the token lives), so it may carry events, whose
    /// own dates say when they happened, but never computers, whose state would be taken as
    /// current.
    pub signed: bool,
}

/// Verifies deliveries against the configured secrets and bearer token. Public for the
/// hostile-input fuzz targets (`tests/fuzz/`) and for bridges that want to check their signing.
pub struct Verifier {
    keys: Vec<SecretSlice<u8>>,
    /// SHA-256 of the token: comparing digests keeps the comparison constant-time whatever the
    /// presented token's length.
    bearer_digest: Option<SecretSlice<u8>>,
    tolerance_secs: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &format_args!("[{} REDACTED]", self.keys.len()))
            .field("bearer", &self.bearer_digest.as_ref().map(|_| "[REDACTED]"))
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl Verifier {
    /// A verifier for `secrets` (`whsec_<base64>`, several for rotation), an optional bearer
    /// token, and the allowed clock difference of a signed timestamp.
    pub fn new(
        secrets: &[SecretString],
        bearer: Option<&SecretString>,
        tolerance: Duration,
    ) -> Result<Verifier, KeyError> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, s)| decode_secret(index, s.expose_secret()))
            .collect::<Result<_, _>>()?;
        let bearer_digest =
            bearer.map(|t| SecretSlice::from(Sha256::digest(t.expose_secret()).to_vec()));
        Ok(Verifier {
            keys,
            bearer_digest,
            tolerance_secs: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
        })
    }

    /// Authenticates a delivery at `now` (unix seconds). A delivery carrying a signature is
    /// judged by it when secrets are configured; otherwise, with a bearer token configured, by the
    /// token.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Delivery, AuthError> {
        let signed = headers.contains_key(HEADER_SIGNATURE) && !self.keys.is_empty();
        match &self.bearer_digest {
            Some(digest) if !signed => verify_bearer(digest, headers, now),
            _ => self.verify_signature(headers, body, now),
        }
    }

    fn verify_signature(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Delivery, AuthError> {
        let id = header(headers, HEADER_ID)?;
        let timestamp_text = header(headers, HEADER_TIMESTAMP)?;
        let signature = header(headers, HEADER_SIGNATURE)?;
        check_id(id)?;
        let timestamp = parse_timestamp(timestamp_text)?;
        if now.abs_diff(timestamp) > self.tolerance_secs.unsigned_abs() {
            return Err(AuthError::Stale);
        }
        let presented = parse_signatures(signature);
        if presented.is_empty() {
            return Err(AuthError::Malformed);
        }
        let matched = self.keys.iter().any(|key| {
            let expected = mac(key.expose_secret(), id, timestamp_text, body);
            // No early exit inside one key's list: each entry is compared in full.
            presented
                .iter()
                .fold(subtle::Choice::from(0), |acc, sig| {
                    acc | expected.as_slice().ct_eq(sig)
                })
                .into()
        });
        if !matched {
            return Err(AuthError::Mismatch);
        }
        Ok(Delivery {
            id: Some(id.to_owned()),
            timestamp,
            signed: true,
        })
    }
}

fn verify_bearer(
    digest: &SecretSlice<u8>,
    headers: &HeaderMap,
    now: i64,
) -> Result<Delivery, AuthError> {
    let value = header(headers, "authorization")?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(AuthError::Malformed),
    };
    let presented = Sha256::digest(token.as_bytes());
    if !bool::from(presented.as_slice().ct_eq(digest.expose_secret())) {
        return Err(AuthError::BadToken);
    }
    // The id is optional here, but when present it still deduplicates retries.
    let id = header(headers, HEADER_ID)
        .ok()
        .filter(|id| check_id(id).is_ok());
    Ok(Delivery {
        id: id.map(str::to_owned),
        timestamp: now,
        signed: false,
    })
}

fn decode_secret(index: usize, secret: &str) -> Result<SecretSlice<u8>, KeyError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(KeyError::NotBase64(index))?;
    let key = BASE64
        .decode(encoded.trim())
        .map_err(|_| KeyError::NotBase64(index))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(KeyError::TooShort {
            index,
            len: key.len(),
        });
    }
    Ok(SecretSlice::from(key))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, AuthError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        // Two ids or two timestamps: which one was signed is ambiguous.
        return Err(AuthError::Malformed);
    }
    value.to_str().map_err(|_| AuthError::Malformed)
}

fn check_id(id: &str) -> Result<(), AuthError> {
    let ok = !id.is_empty() && id.len() <= MAX_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(()).ok_or(AuthError::Malformed)
}

fn parse_timestamp(text: &str) -> Result<i64, AuthError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed);
    }
    text.parse().map_err(|_| AuthError::Malformed)
}

/// The decoded `v1` signatures of a `webhook-signature` header; malformed entries and other
/// schemes are skipped.
fn parse_signatures(header: &str) -> Vec<Vec<u8>> {
    header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| BASE64.decode(sig).ok())
        .filter(|sig| sig.len() == HMAC_SHA256_BYTES)
        .collect()
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; decode_secret already refused short ones.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Signs a delivery the way a Standard Webhooks sender does: the `webhook-signature` value
/// (`v1,<base64>`) for `secret` (`whsec_<base64>`). For bridges written against trustgate,
/// tests and benchmarks.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, KeyError> {
    let key = decode_secret(0, secret)?;
    let sig = mac(key.expose_secret(), id, &timestamp.to_string(), body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    ))
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
