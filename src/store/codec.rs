//! Value encodings. Device values carry a schema version byte so a future layout can be read
//! beside (or migrated from) this one.

use super::StoreError;
use crate::fold::DeviceState;

/// postcard `DeviceState` (its serde form, which leaves out `recent_refs`).
const DEVICE_V1: u8 = 1;
/// postcard `DeviceState`, then postcard `recent_refs` (#11: a device's newest record
/// references in its own value). Version 1 values read as having none.
const DEVICE_V2: u8 = 2;

pub(crate) fn encode_device(state: &DeviceState) -> Vec<u8> {
    let mut out = vec![DEVICE_V2];
    // postcard cannot fail on these types: no maps with non-serialisable keys, no I/O.
    out.extend(postcard::to_stdvec(state).expect("device state serialises"));
    out.extend(postcard::to_stdvec(&state.recent_refs).expect("record references serialise"));
    out
}

/// A device value, with the record references it carries. The decision index decodes the whole
/// value too, references included: a value ingest could not read (and so could not fold into)
/// must deny `store_unavailable`, not answer from a state that no longer moves.
pub(crate) fn decode_device(key: &[u8], bytes: &[u8]) -> Result<DeviceState, StoreError> {
    let (mut state, rest) = decode_state(key, bytes)?;
    if let Some(refs) = rest {
        state.recent_refs = postcard::from_bytes(refs).map_err(|e| corrupt(key, e))?;
    }
    Ok(state)
}

/// The state, and what follows it (version 2's references).
fn decode_state<'a>(
    key: &[u8],
    bytes: &'a [u8],
) -> Result<(DeviceState, Option<&'a [u8]>), StoreError> {
    match bytes.split_first() {
        Some((&DEVICE_V1, body)) => postcard::from_bytes(body)
            .map(|state| (state, None))
            .map_err(|e| corrupt(key, e)),
        Some((&DEVICE_V2, body)) => postcard::take_from_bytes(body)
            .map(|(state, rest)| (state, Some(rest)))
            .map_err(|e| corrupt(key, e)),
        Some((v, _)) => Err(corrupt(key, format!("unknown device schema version {v}"))),
        None => Err(corrupt(key, "empty value")),
    }
}

fn corrupt(key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
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
