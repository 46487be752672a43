//! Where a reply goes, following Spring Kafka's request/reply convention.
//!
//! `kafka_replyTopic` names the reply topic (else the configured responses topic),
//! `kafka_replyPartition` pins the partition (Spring sends a 4-byte big-endian int; a decimal
//! string is accepted too), and `kafka_correlationId` is copied back byte-for-byte (Spring sends
//! 16 raw bytes). A reply topic that is one of trustgate's own topics is refused.

use crate::config::TopicSettings;

/// Request header naming the reply topic.
pub const HEADER_REPLY_TOPIC: &str = "kafka_replyTopic";
/// Request header pinning the reply partition.
pub const HEADER_REPLY_PARTITION: &str = "kafka_replyPartition";
/// Request header copied onto the reply, so the requester can pair them.
pub const HEADER_CORRELATION_ID: &str = "kafka_correlationId";

/// The destination of one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRoute {
    pub(crate) topic: String,
    pub(crate) partition: Option<i32>,
    pub(crate) correlation_id: Option<Vec<u8>>,
    /// Set when the requested destination was refused; the reply is then `invalid_request` on
    /// the responses topic.
    pub(crate) refused: Option<String>,
}

/// Routes a reply from the request's headers (`(name, value)` pairs as on the wire).
pub(crate) fn route<'a>(
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    topics: &TopicSettings,
) -> ReplyRoute {
    let mut reply_topic = None;
    let mut partition = None;
    let mut correlation_id = None;
    for (name, value) in headers {
        match name {
            HEADER_REPLY_TOPIC => reply_topic = value,
            HEADER_REPLY_PARTITION => partition = value,
            HEADER_CORRELATION_ID => correlation_id = value.map(<[u8]>::to_vec),
            _ => {}
        }
    }
    let fallback = |reason: String| ReplyRoute {
        topic: topics.responses.clone(),
        partition: None,
        correlation_id: correlation_id.clone(),
        refused: Some(reason),
    };
    let topic = match reply_topic {
        None => topics.responses.clone(),
        Some(raw) => match std::str::from_utf8(raw).map(str::trim) {
            Ok("") => return fallback("kafka_replyTopic is empty".into()),
            Ok(t) if topics.is_own(t) => {
                return fallback(format!(
                    "kafka_replyTopic {t:?} is one of trustgate's own topics"
                ))
            }
            Ok(t) => t.to_owned(),
            Err(_) => return fallback("kafka_replyTopic is not UTF-8".into()),
        },
    };
    let partition = match partition.map(parse_partition) {
        None => None,
        Some(Some(p)) => Some(p),
        Some(None) => return fallback("kafka_replyPartition is not a partition number".into()),
    };
    ReplyRoute {
        topic,
        partition,
        correlation_id,
        refused: None,
    }
}

fn parse_partition(raw: &[u8]) -> Option<i32> {
    let parsed = match <[u8; 4]>::try_from(raw) {
        Ok(bytes) => i32::from_be_bytes(bytes),
        Err(_) => std::str::from_utf8(raw).ok()?.trim().parse().ok()?,
    };
    (parsed >= 0).then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> TopicSettings {
        TopicSettings {
            events: "ev".into(),
            requests: "req".into(),
            responses: "resp".into(),
            dlq: "dlq".into(),
            audit: "audit".into(),
            partitions: 1,
            replication_factor: 1,
            create: true,
        }
    }

    #[test]
    fn spring_headers_are_honoured() {
        let corr = [7u8; 16];
        let part = 3i32.to_be_bytes();
        let h = [
            (HEADER_REPLY_TOPIC, Some(&b"replies-1"[..])),
            (HEADER_REPLY_PARTITION, Some(&part[..])),
            (HEADER_CORRELATION_ID, Some(&corr[..])),
        ];
        let r = route(h.into_iter(), &topics());
        assert_eq!(
            r,
            ReplyRoute {
                topic: "replies-1".into(),
                partition: Some(3),
                correlation_id: Some(corr.to_vec()),
                refused: None
            }
        );
    }

    #[test]
    fn defaults_to_the_responses_topic() {
        let r = route(std::iter::empty(), &topics());
        assert_eq!(r.topic, "resp");
        assert_eq!(r.refused, None);
    }

    #[test]
    fn own_topics_are_refused() {
        for own in ["ev", "req", "dlq", "audit"] {
            let r = route(
                [(HEADER_REPLY_TOPIC, Some(own.as_bytes()))].into_iter(),
                &topics(),
            );
            assert_eq!(r.topic, "resp");
            assert!(r.refused.is_some());
        }
    }

    #[test]
    fn decimal_partitions_are_accepted() {
        let r = route(
            [(HEADER_REPLY_PARTITION, Some(&b"12"[..]))].into_iter(),
            &topics(),
        );
        assert_eq!(r.partition, Some(12));
    }
}
