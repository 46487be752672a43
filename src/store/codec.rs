//! Value encodings. Device values carry a schema version byte so a future layout can be read
//! beside (or migrated from) this one.

use super::StoreError;
use crate::fold::DeviceState;

const DEVICE_V1: u8 = 1;

pub(crate) fn encode_device(state: &DeviceState) -> Vec<u8> {
    let mut out = vec![DEVICE_V1];
    // postcard cannot fail on these types: no maps with non-serialisable keys, no I/O.
    out.extend(postcard::to_stdvec(state).expect("device state serialises"));
    out
}

pub(crate) fn decode_device(key: &[u8], bytes: &[u8]) -> Result<DeviceState, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&DEVICE_V1, body)) => postcard::from_bytes(body).map_err(|e| corrupt(e.to_string())),
        Some((v, _)) => Err(corrupt(format!("unknown device schema version {v}"))),
        None => Err(corrupt("empty value".into())),
    }
}

pub(crate) fn decode_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

pub(crate) fn decode_offset(partition: &[u8], offset: &[u8]) -> Option<(i32, i64)> {
    Some((
        i32::from_be_bytes(partition.try_into().ok()?),
        decode_i64(offset)?,
    ))
}
