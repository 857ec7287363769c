//! Key layout and record encoding of the sled trees: composite and
//! time-ordered keys, JSON records, and the errors decoding reports.

use super::*;

/// Tokens from a version bump are refused below it; `u32::MAX` is reserved
/// for deleted users, so the version stops one short.
pub(super) fn next_version(version: u32) -> u32 {
    version.saturating_add(1).min(u32::MAX - 1)
}

/// Ids are joined with a 0 byte in index keys, so they must not contain one.
pub(super) fn check_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.as_bytes().contains(&SEP) {
        return Err(StoreError::Invalid("ids must be non-empty and free of NUL"));
    }
    Ok(())
}

pub(super) fn composite(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(first.len() + 1 + second.len());
    key.extend_from_slice(first);
    key.push(SEP);
    key.extend_from_slice(second);
    key
}

/// A key that sorts by time: `at` big-endian, then `kind`, then `id`.
pub(super) fn expiry_key(at: u64, kind: &[u8], id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + kind.len() + id.len());
    key.extend_from_slice(&at.to_be_bytes());
    key.extend_from_slice(kind);
    key.extend_from_slice(id);
    key
}

pub(super) fn split_timed_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (at, rest) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), rest))
}

pub(super) fn encode(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|_| StoreError::Invalid("record cannot be encoded"))
}

pub(super) fn encode_tx(value: &impl Serialize) -> TxResult<Vec<u8>> {
    encode(value).map_err(ConflictableTransactionError::Abort)
}

pub(super) fn decode<T: DeserializeOwned>(
    what: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| {
        let key = match std::str::from_utf8(key) {
            Ok(text) => text.to_owned(),
            Err(_) => hex(key),
        };
        StoreError::Corrupt(format!("{what} {key}: {error}"))
    })
}

pub(super) fn decode_tx<T: DeserializeOwned>(what: &str, key: &[u8], bytes: &[u8]) -> TxResult<T> {
    decode(what, key, bytes).map_err(ConflictableTransactionError::Abort)
}

pub(super) fn utf8(what: &str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}
