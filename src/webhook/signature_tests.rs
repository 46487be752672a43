use super::*;
use axum::http::HeaderValue;
use rstest::rstest;

const NOW: i64 = 1_764_370_000;
const BODY: &[u8] = br#"{"event_type_id":1090519054,"connector_guid":"g-1"}"#;

fn secret(byte: u8) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

fn verifier(secrets: &[String], bearer: Option<&str>) -> Verifier {
    let secrets: Vec<SecretString> = secrets.iter().map(|s| s.as_str().into()).collect();
    let bearer = bearer.map(SecretString::from);
    Verifier::new(&secrets, bearer.as_ref(), Duration::from_secs(300)).unwrap()
}

fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HEADER_ID, HeaderValue::from_str(id).unwrap());
    h.insert(HEADER_TIMESTAMP, HeaderValue::from_str(ts).unwrap());
    h.insert(HEADER_SIGNATURE, HeaderValue::from_str(sig).unwrap());
    h
}

fn signed(secret: &str, ts: i64, body: &[u8]) -> HeaderMap {
    headers(
        "msg_1",
        &ts.to_string(),
        &sign(secret, "msg_1", ts, body).unwrap(),
    )
}

#[test]
fn a_correctly_signed_delivery_is_authentic() {
    let v = verifier(&[secret(1)], None);
    let d = v.verify(&signed(&secret(1), NOW, BODY), BODY, NOW).unwrap();
    assert_eq!(d.id.as_deref(), Some("msg_1"));
    assert_eq!(d.timestamp, NOW);
}

#[test]
fn the_spec_example_verifies() {
    // From the Standard Webhooks reference implementation's test vectors.
    let v = Verifier::new(
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
        None,
        Duration::from_secs(300),
    );
    // That example key is 24 bytes, the minimum.
    let v = v.unwrap();
    let body = br#"{"test": 2432232314}"#;
    let h = headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
    assert!(v.verify(&h, body, 1614265330).is_ok());
}

#[test]
fn a_second_secret_verifies_during_rotation() {
    let v = verifier(&[secret(1), secret(2)], None);
    assert!(v.verify(&signed(&secret(2), NOW, BODY), BODY, NOW).is_ok());
    // A sender signing with both keys lists two entries: either may match.
    let both = format!(
        "{} {}",
        sign(&secret(9), "msg_1", NOW, BODY).unwrap(),
        sign(&secret(2), "msg_1", NOW, BODY).unwrap()
    );
    let h = headers("msg_1", &NOW.to_string(), &both);
    assert!(v.verify(&h, BODY, NOW).is_ok());
}

#[test]
fn a_wrong_secret_or_a_changed_byte_is_a_mismatch() {
    let v = verifier(&[secret(1)], None);
    assert_eq!(
        v.verify(&signed(&secret(2), NOW, BODY), BODY, NOW),
        Err(AuthError::Mismatch)
    );
    let mut flipped = BODY.to_vec();
    flipped[10] ^= 0x01;
    assert_eq!(
        v.verify(&signed(&secret(1), NOW, BODY), &flipped, NOW),
        Err(AuthError::Mismatch)
    );
    // Whitespace changes the bytes, so a parse-and-reserialise would never verify.
    let spaced = br#"{"event_type_id": 1090519054, "connector_guid": "g-1"}"#;
    assert_eq!(
        v.verify(&signed(&secret(1), NOW, BODY), spaced, NOW),
        Err(AuthError::Mismatch)
    );
    // The id and the timestamp are signed too.
    let mut h = signed(&secret(1), NOW, BODY);
    h.insert(HEADER_ID, HeaderValue::from_static("msg_2"));
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Mismatch));
    let mut h = signed(&secret(1), NOW, BODY);
    h.insert(
        HEADER_TIMESTAMP,
        HeaderValue::from_str(&(NOW + 1).to_string()).unwrap(),
    );
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Mismatch));
}

#[rstest]
#[case::past_just_inside(-299, true)]
#[case::past_at_the_edge(-300, true)]
#[case::past_just_outside(-301, false)]
#[case::future_just_inside(299, true)]
#[case::future_just_outside(301, false)]
#[case::an_hour_old(-3600, false)]
fn the_timestamp_must_be_within_the_tolerance(#[case] offset: i64, #[case] ok: bool) {
    let v = verifier(&[secret(1)], None);
    let result = v.verify(&signed(&secret(1), NOW + offset, BODY), BODY, NOW);
    if ok {
        assert!(result.is_ok());
    } else {
        assert_eq!(result, Err(AuthError::Stale));
    }
}

#[rstest]
#[case::no_id(None, Some("1"), Some("v1,x"), AuthError::Missing)]
#[case::no_timestamp(Some("m"), None, Some("v1,x"), AuthError::Missing)]
#[case::no_signature(Some("m"), Some("1"), None, AuthError::Missing)]
#[case::timestamp_not_digits(Some("m"), Some("1e9"), Some("v1,x"), AuthError::Malformed)]
#[case::timestamp_negative(Some("m"), Some("-5"), Some("v1,x"), AuthError::Malformed)]
#[case::timestamp_huge(
    Some("m"),
    Some("99999999999999999999"),
    Some("v1,x"),
    AuthError::Malformed
)]
#[case::empty_id(Some(""), Some("1"), Some("v1,x"), AuthError::Malformed)]
fn missing_and_malformed_headers_are_refused(
    #[case] id: Option<&str>,
    #[case] ts: Option<&str>,
    #[case] sig: Option<&str>,
    #[case] expected: AuthError,
) {
    let v = verifier(&[secret(1)], None);
    let mut h = HeaderMap::new();
    for (name, value) in [
        (HEADER_ID, id),
        (HEADER_TIMESTAMP, ts),
        (HEADER_SIGNATURE, sig),
    ] {
        if let Some(value) = value {
            h.insert(name, HeaderValue::from_str(value).unwrap());
        }
    }
    assert_eq!(v.verify(&h, BODY, 1), Err(expected));
}

#[rstest]
#[case::empty("")]
#[case::no_comma("v1")]
#[case::not_base64("v1,!!!not-base64!!!")]
#[case::wrong_length("v1,AAAA")]
#[case::other_scheme_only("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")]
#[case::wrong_version_case("V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")]
fn signature_headers_without_a_usable_entry_are_malformed(#[case] sig: &str) {
    let v = verifier(&[secret(1)], None);
    let h = headers("msg_1", &NOW.to_string(), sig);
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Malformed));
}

#[test]
fn malformed_entries_next_to_a_good_one_are_skipped() {
    let v = verifier(&[secret(1)], None);
    let good = sign(&secret(1), "msg_1", NOW, BODY).unwrap();
    let h = headers(
        "msg_1",
        &NOW.to_string(),
        &format!("junk v1a,abc v1,@@ {good}"),
    );
    assert!(v.verify(&h, BODY, NOW).is_ok());
    assert_eq!(parse_signatures(&format!("  {good}\t{good} ")).len(), 2);
}

#[test]
fn a_repeated_header_is_ambiguous() {
    let v = verifier(&[secret(1)], None);
    let mut h = signed(&secret(1), NOW, BODY);
    h.append(
        HEADER_TIMESTAMP,
        HeaderValue::from_str(&NOW.to_string()).unwrap(),
    );
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Malformed));
}

#[test]
fn bad_secrets_are_refused_by_position_without_their_value() {
    let short = "whsec_c2hvcnQ=".to_owned();
    let err = Verifier::new(
        &[secret(1).into(), short.as_str().into()],
        None,
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert_eq!(err, KeyError::TooShort { index: 1, len: 5 });
    let err = Verifier::new(&["whsec_%%%".into()], None, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err, KeyError::NotBase64(0));
    assert!(!err.to_string().contains("%%%"));
}

#[test]
fn the_bearer_token_authenticates_unsigned_deliveries() {
    let v = verifier(&[], Some("tok-sentinel-123"));
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer tok-sentinel-123"),
    );
    h.insert(HEADER_ID, HeaderValue::from_static("msg_9"));
    let d = v.verify(&h, BODY, NOW).unwrap();
    assert_eq!((d.id.as_deref(), d.timestamp), (Some("msg_9"), NOW));
    assert!(!d.signed, "a bearer delivery is not a signed one");
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer tok-sentinel-12"),
    );
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::BadToken));
    h.insert(
        "authorization",
        HeaderValue::from_static("Basic tok-sentinel-123"),
    );
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Malformed));
    h.remove("authorization");
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Missing));
}

#[test]
fn without_a_configured_token_a_bearer_header_is_not_enough() {
    let v = verifier(&[secret(1)], None);
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static("Bearer anything"));
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Missing));
}

#[test]
fn with_both_configured_a_present_signature_must_verify() {
    let v = verifier(&[secret(1)], Some("tok"));
    let mut h = signed(&secret(2), NOW, BODY);
    h.insert("authorization", HeaderValue::from_static("Bearer tok"));
    assert_eq!(v.verify(&h, BODY, NOW), Err(AuthError::Mismatch));
}

#[test]
fn debug_output_never_shows_key_material() {
    let v = verifier(&[secret(7)], Some("tok-sentinel-123"));
    let shown = format!("{v:?}");
    assert!(!shown.contains("tok-sentinel-123"));
    assert!(!shown.contains(&secret(7)[6..]));
    assert!(shown.contains("REDACTED"));
}

proptest::proptest! {
    #[test]
    fn arbitrary_signature_headers_never_panic(header in ".{0,300}") {
        let _ = parse_signatures(&header);
    }

    #[test]
    fn arbitrary_bodies_verify_only_with_their_own_signature(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        flip in 0usize..200,
    ) {
        let v = verifier(&[secret(3)], None);
        let h = signed(&secret(3), NOW, &body);
        proptest::prop_assert!(v.verify(&h, &body, NOW).is_ok());
        if !body.is_empty() {
            let mut other = body.clone();
            other[flip % body.len()] ^= 0x80;
            proptest::prop_assert_eq!(v.verify(&h, &other, NOW), Err(AuthError::Mismatch));
        }
    }
}
