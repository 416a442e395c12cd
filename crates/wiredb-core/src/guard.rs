//! The one gate between untrusted bytes (a peer, a pipe, a file) and a yrs document.
//!
//! yrs 0.28 can panic on malformed updates, and allocates whatever a declared count asks for.
//! Everything that decodes or applies peer bytes goes through here: sizes are checked first,
//! declared counts are checked against the bytes that could hold them, and yrs runs under
//! `catch_unwind` so a panic becomes an error for that one sender.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use yrs::block::ClientID;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::protocol::Reader;
use crate::scan::{scan_update_v1, ScanError, ScanLimits, ScanReport};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("update of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed state vector: {0}")]
    BadStateVector(String),
    #[error("malformed update: {0}")]
    BadUpdate(String),
    #[error("update rejected: yrs panicked while {0}")]
    Panicked(&'static str),
    #[error("update rejected: {0}")]
    Scan(#[from] ScanError),
}

#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    pub max_update_bytes: usize,
    pub scan: ScanLimits,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            max_update_bytes: 64 << 20,
            scan: ScanLimits::default(),
        }
    }
}

/// Decodes a state vector whose declared entry count fits in its bytes (two bytes at least
/// per entry), so a few bytes cannot ask for a huge map.
pub fn decode_state_vector(bytes: &Bytes) -> Result<StateVector, GuardError> {
    let count = Reader::new(bytes)
        .read_varuint()
        .map_err(|e| GuardError::BadStateVector(e.to_string()))?;
    if count > (bytes.len() as u64) / 2 {
        return Err(GuardError::BadStateVector(format!(
            "declares {count} entries in {} bytes",
            bytes.len()
        )));
    }
    catch_unwind(|| StateVector::decode_v1(bytes))
        .map_err(|_| GuardError::Panicked("decoding a state vector"))?
        .map_err(|e| GuardError::BadStateVector(e.to_string()))
}

/// An update that passed the size check and the structural scan, with what the scan found.
#[derive(Debug, Clone)]
pub struct Checked<'a> {
    pub bytes: &'a [u8],
    pub report: ScanReport,
}

/// Whether a document at `sv` can integrate an update (scanned as `report`) without a gap in
/// any client's clocks. yrs 0.28 integrates structs that start beyond its clock behind a Skip,
/// and that path frees blocks it still points to (a use-after-free found by fuzzing): an
/// update that does not fit waits (see `RoomCore`) until the document has caught up.
pub fn fits(report: &ScanReport, sv: &StateVector) -> bool {
    // The scan refused client ids beyond 53 bits, which `ClientID::new` would not take.
    report
        .clients
        .iter()
        .all(|c| c.needs <= sv.get(&ClientID::new(c.client)))
}

/// Checks a v1 update's size and layout, without decoding it.
pub fn check_update<'a>(bytes: &'a [u8], limits: &GuardLimits) -> Result<Checked<'a>, GuardError> {
    if bytes.len() > limits.max_update_bytes {
        return Err(GuardError::TooLarge {
            size: bytes.len(),
            limit: limits.max_update_bytes,
        });
    }
    let report = scan_update_v1(bytes, &limits.scan)?;
    Ok(Checked { bytes, report })
}

/// Decodes a v1 update within the size limit, after the structural scan.
pub fn decode_update(bytes: &[u8], limits: &GuardLimits) -> Result<Update, GuardError> {
    decode_checked(&check_update(bytes, limits)?)
}

fn decode_checked(update: &Checked<'_>) -> Result<Update, GuardError> {
    catch_unwind(|| Update::decode_v1(update.bytes))
        .map_err(|_| GuardError::Panicked("decoding an update"))?
        .map_err(|e| GuardError::BadUpdate(e.to_string()))
}

/// Decodes and applies a v1 update to a document, in a transaction of its own: yrs can panic
/// while applying and again while committing (when the transaction is dropped), so both happen
/// under `catch_unwind`. Returns whether the document now holds pending content (content
/// waiting for missing predecessors), read in the same transaction.
pub fn apply_update(doc: &Doc, bytes: &[u8], limits: &GuardLimits) -> Result<bool, GuardError> {
    apply_checked(doc, &check_update(bytes, limits)?)
}

/// `apply_update` for an update already checked.
pub fn apply_checked(doc: &Doc, update: &Checked<'_>) -> Result<bool, GuardError> {
    let update = decode_checked(update)?;
    catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            txn.apply_update(update).map(|()| txn.has_missing_updates())
        }));
        drop(txn);
        applied
    }))
    .map_err(|_| GuardError::Panicked("committing an update"))?
    .map_err(|_| GuardError::Panicked("applying an update"))?
    .map_err(|e| GuardError::BadUpdate(e.to_string()))
}

/// The integrated content of the document that a peer at `sv` lacks (pending content left
/// out), or None if yrs panics encoding it.
pub fn encode_state(doc: &Doc, sv: &StateVector) -> Option<Vec<u8>> {
    catch_unwind(AssertUnwindSafe(|| doc.transact().encode_diff_v1(sv))).ok()
}

/// A fresh document with the integrated content of `doc` (and `pending`, an update saved while
/// it was still sound): what a room is rebuilt from when an update broke its document.
pub fn rebuild(doc: &Doc, pending: Option<&[u8]>, limits: &GuardLimits) -> Doc {
    let integrated = catch_unwind(AssertUnwindSafe(|| {
        doc.transact().encode_diff_v1(&StateVector::default())
    }));
    let fresh = Doc::new();
    for update in integrated.ok().iter().map(Vec::as_slice).chain(pending) {
        if let Err(error) = apply_update(&fresh, update, limits) {
            tracing::error!(%error, "content lost while rebuilding a document");
        }
    }
    fresh
}

/// The state of a fresh document that applied `updates`, as one v1 update: what a file is
/// squashed to. Unlike [`merge_updates`], which keeps every update's blocks as they came (200
/// one-character edits stay 200 blocks), integrating them merges neighbouring blocks and
/// collects deleted content, so the result is what a peer's `encode_state_as_update` gives.
///
/// Each update is checked as [`apply_update`] does; one that does not fit the document yet
/// (see [`fits`]) is applied once the document caught up, in later passes over what is left.
/// What never fits, and the document's own pending content, are not lost: the first is merged
/// in as it is, the second is part of yrs's encoding.
pub fn squash_updates<T: AsRef<[u8]>>(
    updates: &[T],
    limits: &GuardLimits,
) -> Result<Vec<u8>, GuardError> {
    let doc = Doc::new();
    let mut left: Vec<Checked<'_>> = updates
        .iter()
        .map(|u| check_update(u.as_ref(), limits))
        .collect::<Result<_, _>>()?;
    // Files hold their records in order, so the first pass applies them all; a few more
    // passes cover records that two writers interleaved, without a quadratic worst case.
    for _ in 0..SQUASH_PASSES {
        let before = left.len();
        let mut waiting = Vec::new();
        for update in left {
            let sv = doc.transact().state_vector();
            if fits(&update.report, &sv) {
                apply_checked(&doc, &update)?;
            } else {
                waiting.push(update);
            }
        }
        left = waiting;
        if left.is_empty() || left.len() == before {
            break;
        }
    }
    let state = catch_unwind(AssertUnwindSafe(|| {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }))
    .map_err(|_| GuardError::Panicked("encoding a document"))?;
    if left.is_empty() {
        return Ok(state);
    }
    let mut rest: Vec<&[u8]> = vec![&state];
    rest.extend(left.iter().map(|u| u.bytes));
    merge_some(&rest)
}

/// Passes over the updates a squash could not apply yet (see [`squash_updates`]).
const SQUASH_PASSES: usize = 8;

/// Merges v1 updates into one (what a consumer applies once instead of many times).
pub fn merge_updates(updates: &[Bytes], limits: &GuardLimits) -> Result<Vec<u8>, GuardError> {
    if let [single] = updates {
        return Ok(single.to_vec());
    }
    let total: usize = updates.iter().map(Bytes::len).sum();
    if total > limits.max_update_bytes {
        return Err(GuardError::TooLarge {
            size: total,
            limit: limits.max_update_bytes,
        });
    }
    // yrs re-sorts all of its inputs for every block it writes out, so one call costs the
    // square of the number of updates (a burst of 4096 small updates took about 100 ms).
    // Merging at most MERGE_FAN_IN at a time, then merging the results the same way, makes
    // the same single update in time linear in the input.
    let mut level: Vec<Vec<u8>> = updates
        .chunks(MERGE_FAN_IN)
        .map(merge_some)
        .collect::<Result<_, _>>()?;
    while level.len() > 1 {
        level = level
            .chunks(MERGE_FAN_IN)
            .map(merge_some)
            .collect::<Result<_, _>>()?;
    }
    match level.pop() {
        Some(merged) => Ok(merged),
        None => merge_some::<Bytes>(&[]),
    }
}

/// Updates merged by one call to yrs: few enough that its quadratic cost stays small.
const MERGE_FAN_IN: usize = 16;

fn merge_some<T: AsRef<[u8]> + std::panic::RefUnwindSafe>(
    updates: &[T],
) -> Result<Vec<u8>, GuardError> {
    if let [single] = updates {
        return Ok(single.as_ref().to_vec());
    }
    catch_unwind(|| yrs::merge_updates_v1(updates))
        .map_err(|_| GuardError::Panicked("merging updates"))?
        .map_err(|e| GuardError::BadUpdate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    #[test]
    fn many_updates_merge_into_one_that_holds_them_all() {
        let source = Doc::new();
        let text = source.get_or_insert_text("t");
        let updates: Vec<Bytes> = (0..1000)
            .map(|i| {
                let mut txn = source.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, if i % 3 == 0 { 0 } else { len }, &format!("{i},"));
                Bytes::from(txn.encode_update_v1())
            })
            .collect();
        let merged = merge_updates(&updates, &GuardLimits::default()).unwrap();
        let target = Doc::new();
        let t = target.get_or_insert_text("t");
        apply_update(&target, &merged, &GuardLimits::default()).unwrap();
        assert_eq!(
            t.get_string(&target.transact()),
            text.get_string(&source.transact())
        );
    }

    fn update_inserting(text: &str) -> Bytes {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        Bytes::from(txn.encode_update_v1())
    }

    #[test]
    fn a_huge_declared_state_vector_count_is_refused_cheaply() {
        let sv = Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(matches!(
            decode_state_vector(&sv),
            Err(GuardError::BadStateVector(_))
        ));
    }

    #[test]
    fn oversized_updates_are_refused() {
        let limits = GuardLimits {
            max_update_bytes: 4,
            ..GuardLimits::default()
        };
        let update = update_inserting("hello");
        assert!(matches!(
            decode_update(&update, &limits),
            Err(GuardError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_update_that_panics_yrs_is_an_error() {
        let bad = [
            0x01, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xbf, 0x03, 0x01, 0x01, 0x01, 0x01, 0x32,
            0x01, 0x01, 0x03, 0x01, 0x81, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x18, 0x00, 0xc4,
            0xff,
        ];
        let doc = Doc::new();
        assert!(apply_update(&doc, &bad, &GuardLimits::default()).is_err());
    }

    #[test]
    fn merged_updates_carry_every_edit() {
        let merged = merge_updates(
            &[update_inserting("a"), update_inserting("b")],
            &GuardLimits::default(),
        )
        .unwrap();
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        apply_update(&doc, &merged, &GuardLimits::default()).unwrap();
        assert_eq!(t.get_string(&doc.transact()).len(), 2);
    }
}
