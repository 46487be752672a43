//! Strict reading of untrusted JSON: the checks every events-topic record and every decision
//! request passes before it is read for meaning.
//!
//! serde_json on its own is lenient where a gate must not be:
//! - of two equal keys it keeps the last, so `{"is_compromised":true,"is_compromised":false}`
//!   reads as clean here and as compromised to a reader that keeps the first (a SIEM reading
//!   the same topic): a duplicate key is refused, at any depth, not guessed;
//! - it skips the strings of fields it ignores without checking their UTF-8 or escapes, so
//!   invalid text would pass to every other reader of the topic byte-for-byte;
//! - an integer past 64 bits becomes a rounded float;
//! - nothing bounds a document's size, and nesting only at serde_json's recursion limit.
//!
//! [`check`] walks the whole document once, keeping only the keys of one object at a time (to
//! find duplicates; on the stack for small objects), and says which rule a document broke. It never re-serialises anything:
//! records keep their exact bytes.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

/// The bounds a document is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest document accepted, in bytes.
    pub max_bytes: usize,
    /// The deepest nesting accepted: a top-level object is depth 1.
    pub max_depth: usize,
}

/// Why a document was refused. The text names the rule and where it broke (never a value, only
/// at most a key's first characters), so it can go into a dead-letter header or an
/// `invalid_request` error.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Larger than [`Limits::max_bytes`].
    #[error("document is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        /// The document's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8 (JSON text is UTF-8, RFC 8259 §8.1).
    #[error("document is not UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 {
        /// The length of the valid prefix.
        valid_up_to: usize,
    },
    /// Nested deeper than [`Limits::max_depth`].
    #[error("JSON nested deeper than {max} levels at line {line} column {column}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where, 1-based.
        line: usize,
        /// Where, 1-based.
        column: usize,
    },
    /// One object holds the same key twice.
    #[error(
        "duplicate key {key:?} at line {line} column {column}: which value counts is ambiguous"
    )]
    DuplicateKey {
        /// The key, cut to its first 64 characters.
        key: String,
        /// Where, 1-based.
        line: usize,
        /// Where, 1-based.
        column: usize,
    },
    /// A number outside the 64-bit integer range (-2^63 ..= 2^64-1), integer or not.
    #[error("number beyond the 64-bit integer range at line {line} column {column}")]
    NumberOutOfRange {
        /// Where, 1-based.
        line: usize,
        /// Where, 1-based.
        column: usize,
    },
    /// Not well-formed JSON (syntax, invalid escape or lone surrogate, trailing characters).
    #[error("not valid JSON: {0}")]
    Syntax(serde_json::Error),
}

/// Checks that `bytes` is one well-formed JSON document within `limits`, with no duplicate key
/// and no number beyond 64 bits. Its result says nothing about the document's shape.
pub fn check(bytes: &[u8], limits: Limits) -> Result<(), JsonError> {
    check_text(bytes, limits).map(|_| ())
}

/// [`check`], answering the document as text: a reader that goes on to deserialise it can read
/// from the `&str` (serde_json then does not check each string's UTF-8 again).
pub(crate) fn check_text(bytes: &[u8], limits: Limits) -> Result<&str, JsonError> {
    if bytes.len() > limits.max_bytes {
        return Err(JsonError::TooLarge {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let cause = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let node = Node {
        depth: 1,
        max_depth: limits.max_depth,
        cause: &cause,
    };
    let result = node.deserialize(&mut de).and_then(|()| de.end());
    result.map(|()| text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        match cause.take() {
            Some(Cause::Deep) => JsonError::TooDeep {
                max: limits.max_depth,
                line,
                column,
            },
            Some(Cause::Duplicate(key)) => JsonError::DuplicateKey { key, line, column },
            Some(Cause::Number) => JsonError::NumberOutOfRange { line, column },
            None => JsonError::Syntax(e),
        }
    })
}

/// What the walk found, carried out beside serde's stringly error so [`check`] can say it in
/// a typed [`JsonError`].
enum Cause {
    Deep,
    Duplicate(String),
    Number,
}

/// One value of the document, at `depth`.
#[derive(Clone, Copy)]
struct Node<'c> {
    depth: usize,
    max_depth: usize,
    cause: &'c Cell<Option<Cause>>,
}

impl Node<'_> {
    fn fail<E: de::Error>(&self, cause: Cause) -> E {
        self.cause.set(Some(cause));
        E::custom("refused")
    }

    /// Entering this node's array or object: the node for its items, or the refusal when the
    /// container itself is deeper than allowed (scalars add no depth).
    fn child<E: de::Error>(&self) -> Result<Self, E> {
        if self.depth > self.max_depth {
            return Err(self.fail(Cause::Deep));
        }
        Ok(Node {
            depth: self.depth + 1,
            ..*self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// 2^64: the first value above `u64::MAX`, exactly representable as an `f64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// -2^63 = `i64::MIN`, exactly representable as an `f64`.
const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    /// serde_json hands every integer that fits `u64` or `i64` to the visitors above; an integer
    /// past them arrives here rounded, as does any float. A value that rounds to exactly -2^63
    /// is such an integer (the exact -2^63 arrives as `i64`), so it is refused too.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() && v < TWO_POW_64 && v > MINUS_TWO_POW_63 {
            Ok(())
        } else {
            Err(self.fail(Cause::Number))
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let child = self.child::<A::Error>()?;
        while seq.next_element_seed(child)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let child = self.child::<A::Error>()?;
        let mut seen = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if seen.contains(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(self.fail(Cause::Duplicate(shown)));
            }
            seen.insert(key);
            map.next_value_seed(child)?;
        }
        Ok(())
    }
}

/// Keys an object holds up to which [`SeenKeys`] compares them one by one.
const INLINE_KEYS: usize = 16;

/// The keys of one object read so far. Most objects are small (a decision request's hold at
/// most six keys), and a hash set per object cost an allocation or two and a SipHash per key
/// on every request; so the first [`INLINE_KEYS`] keys are kept on the stack and compared
/// directly. Past that they move into a hash set (SipHash with a random key), so that a
/// crafted object with many keys cannot make the walk quadratic.
// The inline variant is the point: it lives on the stack of the one object being walked.
#[allow(clippy::large_enum_variant)]
enum SeenKeys<'de> {
    Inline {
        keys: [Option<Cow<'de, str>>; INLINE_KEYS],
        len: usize,
    },
    Hashed(HashSet<Cow<'de, str>>),
}

impl Default for SeenKeys<'_> {
    fn default() -> Self {
        SeenKeys::Inline {
            keys: [const { None }; INLINE_KEYS],
            len: 0,
        }
    }
}

impl<'de> SeenKeys<'de> {
    fn contains(&self, key: &str) -> bool {
        match self {
            SeenKeys::Inline { keys, len } => keys[..*len].iter().flatten().any(|k| k == key),
            SeenKeys::Hashed(set) => set.contains(key),
        }
    }

    fn insert(&mut self, key: Cow<'de, str>) {
        match self {
            SeenKeys::Inline { keys, len } if *len < INLINE_KEYS => {
                keys[*len] = Some(key);
                *len += 1;
            }
            SeenKeys::Inline { keys, .. } => {
                let mut set: HashSet<Cow<'de, str>> =
                    keys.iter_mut().flat_map(Option::take).collect();
                set.insert(key);
                *self = SeenKeys::Hashed(set);
            }
            SeenKeys::Hashed(set) => {
                set.insert(key);
            }
        }
    }
}

/// An object key, borrowed from the document when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const LIMITS: Limits = Limits {
        max_bytes: 4096,
        max_depth: 8,
    };

    #[rstest]
    #[case(r#"{"a":1,"b":[true,null,"x",-5,2.5,18446744073709551615,-9223372036854775808]}"#)]
    #[case(r#"{"a":{"k":1},"b":{"k":2}}"#)]
    #[case(r#"[{"k":1},{"k":1}]"#)]
    #[case(r#"{"\u0041":1,"B":2}"#)]
    #[case(r#"{"emoji":"\ud83d\ude00"}"#)]
    #[case("  42  ")]
    fn well_formed_documents_pass(#[case] doc: &str) {
        check(doc.as_bytes(), LIMITS).unwrap();
    }

    #[rstest]
    #[case(r#"{"is_compromised":true,"is_compromised":false}"#, "is_compromised")]
    #[case(
        r#"{"computer":{"connector_guid":"a","connector_guid":"b"}}"#,
        "connector_guid"
    )]
    #[case(r#"{"id":1,"\u0069d":2}"#, "id")]
    #[case(r#"[{"x":1,"y":{"z":1,"z":1}}]"#, "z")]
    fn a_duplicate_key_is_refused_at_any_depth(#[case] doc: &str, #[case] key: &str) {
        match check(doc.as_bytes(), LIMITS) {
            Err(JsonError::DuplicateKey { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{other:?}"),
        }
    }

    /// Small objects' keys are compared on the stack, larger ones' in a hash set: a duplicate
    /// is found either way, wherever it is.
    #[rstest]
    #[case(1)]
    #[case(INLINE_KEYS)]
    #[case(INLINE_KEYS + 1)]
    #[case(3 * INLINE_KEYS)]
    fn a_duplicate_is_found_in_an_object_of_any_size(#[case] keys: usize) {
        let members: Vec<String> = (0..keys).map(|i| format!(r#""k{i}":{i}"#)).collect();
        check(format!("{{{}}}", members.join(",")).as_bytes(), LIMITS).unwrap();
        for dup in [0, keys / 2, keys - 1] {
            let doc = format!(r#"{{{},"k{dup}":0,"after":1}}"#, members.join(","));
            match check(doc.as_bytes(), LIMITS) {
                Err(JsonError::DuplicateKey { key, .. }) => assert_eq!(key, format!("k{dup}")),
                other => panic!("{keys} keys, k{dup} twice: {other:?}"),
            }
        }
    }

    #[rstest]
    #[case(r#"{"id":18446744073709551616}"#)]
    #[case(r#"{"id":-9223372036854775809}"#)]
    #[case(r#"{"x":1e19999}"#)]
    #[case(r#"{"x":[1.9e19]}"#)]
    #[case("123456789012345678901234567890")]
    fn numbers_past_64_bits_are_refused(#[case] doc: &str) {
        let err = check(doc.as_bytes(), LIMITS).unwrap_err();
        assert!(
            matches!(
                err,
                JsonError::NumberOutOfRange { .. } | JsonError::Syntax(_)
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(8), "]".repeat(8));
        check(ok.as_bytes(), LIMITS).unwrap();
        let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
        assert!(matches!(
            check(deep.as_bytes(), LIMITS),
            Err(JsonError::TooDeep { max: 8, .. })
        ));
        // Far past serde_json's own recursion limit: still the typed refusal, no stack overflow.
        let very = format!(r#"{{"a":{}}}"#, "[".repeat(100_000));
        let limits = Limits {
            max_bytes: 1 << 20,
            ..LIMITS
        };
        assert!(matches!(
            check(very.as_bytes(), limits),
            Err(JsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn size_and_encoding_are_checked_first() {
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(5000));
        assert!(matches!(
            check(big.as_bytes(), LIMITS),
            Err(JsonError::TooLarge {
                bytes: 5008,
                max: 4096
            })
        ));
        // Invalid UTF-8 inside a string no reader looks at is still refused.
        let bad = b"{\"ignored\":\"\xff\xfe\",\"a\":1}";
        assert!(matches!(
            check(bad, LIMITS),
            Err(JsonError::NotUtf8 { valid_up_to: 12 })
        ));
    }

    #[rstest]
    #[case(r#"{"a":"\ud800"}"#)]
    #[case(r#"{"a":"\x"}"#)]
    #[case(r#"{"a":1} {"b":2}"#)]
    #[case(r#"{"a":1,}"#)]
    #[case("")]
    fn malformed_json_is_a_syntax_error(#[case] doc: &str) {
        assert!(matches!(
            check(doc.as_bytes(), LIMITS),
            Err(JsonError::Syntax(_))
        ));
    }
}
