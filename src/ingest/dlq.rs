//! Dead-letter records: the original key, value and headers, plus where it came from and why.

use crate::topic::{HEADER_DLQ_ERROR, HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION, HEADER_DLQ_TOPIC};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;

/// Builds the dead-letter record for `msg`. The caller sends it to the DLQ topic.
pub fn dead_letter_record<'a>(
    dlq_topic: &'a str,
    msg: &'a BorrowedMessage<'a>,
    error: &str,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    headers = headers
        .insert(Header {
            key: HEADER_DLQ_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: HEADER_DLQ_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: HEADER_DLQ_OFFSET,
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: HEADER_DLQ_ERROR,
            value: Some(error),
        });
    let mut record = FutureRecord::to(dlq_topic).headers(headers);
    if let Some(key) = msg.key() {
        record = record.key(key);
    }
    if let Some(value) = msg.payload() {
        record = record.payload(value);
    }
    record
}
