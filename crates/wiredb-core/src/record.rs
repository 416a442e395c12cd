//! How updates are framed in an update file, and how a file's body is split back into them.
//!
//! A record is a lib0 var-length buffer (varuint length, then that many bytes), as in
//! wire-file 0.7.1. The buffer holds one yrs v1 update; we follow it, inside the same buffer,
//! with a 5-byte trailer: [`TRAILER_MAGIC`], then the CRC32C of the update (little endian).
//! yrs and pycrdt stop reading an update at the end of its delete set and ignore what follows,
//! so the original reads our records as plain updates (tested against the real package), and
//! we read its records, which have no trailer, as *legacy* records.
//!
//! The trailer makes a torn or garbage tail detected exactly: a record whose trailer checks is
//! ours and whole; one without a trailer is accepted only if it decodes as an update, and, once
//! the file has shown a checksummed record, only if it decodes *exactly* (no byte left over: a
//! damaged record of ours always has its 5 trailer bytes left over). A bad record followed by
//! checksummed records is a hole in the middle (a writer killed mid-write while another one
//! appended): the records after it are found again by their checksums, never cut.
//!
//! Nothing here touches the disk, and nothing panics on any input.

use std::ops::Range;
use std::panic::catch_unwind;

use yrs::encoding::read::Read;
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::Update;

use crate::protocol::{varuint_len, write_varuint};
use crate::scan::{scan_update_v1, ScanLimits};

/// The first byte of a record's trailer.
pub const TRAILER_MAGIC: u8 = 0xC3;
/// Magic byte + CRC32C.
pub const TRAILER_LEN: usize = 5;

/// Encodes `updates` as records (the file header excluded), each with its trailer.
pub fn encode_records(updates: &[&[u8]]) -> Vec<u8> {
    let size = updates.iter().map(|u| u.len() + TRAILER_LEN + 4).sum();
    let mut buf = Vec::with_capacity(size);
    for update in updates {
        write_varuint(&mut buf, (update.len() + TRAILER_LEN) as u64);
        buf.extend_from_slice(update);
        buf.push(TRAILER_MAGIC);
        buf.extend_from_slice(&crc32c(update).to_le_bytes());
    }
    buf
}

/// Encodes `updates` as records without trailers, exactly as wire-file 0.7.1 writes them.
pub fn encode_legacy_records(updates: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::new();
    for update in updates {
        write_varuint(&mut buf, update.len() as u64);
        buf.extend_from_slice(update);
    }
    buf
}

/// The size of the record that [`encode_records`] makes of an update of `len` bytes.
pub fn record_len(len: usize) -> usize {
    let inner = len + TRAILER_LEN;
    varuint_len(inner as u64) + inner
}

/// Reads a lib0 varuint; `None` if torn or longer than 8 bytes (no real record is 2^56 long,
/// and capping it keeps the shifts from overflowing on garbage).
pub fn read_var_uint(data: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, &b) in data.iter().enumerate().take(8) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((n, i + 1));
        }
    }
    None
}

/// What [`parse_records`] found in a file's body (the bytes after the header).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The update of every good record, in file order (trailers removed).
    pub records: Vec<Vec<u8>>,
    /// How many of them had a valid checksum.
    pub checked: usize,
    /// Byte ranges of the body between good records that hold no good record (holes).
    pub holes: Vec<Range<usize>>,
    /// The end of the last good record: what follows is a torn or garbage tail.
    pub good_end: usize,
}

impl Parsed {
    /// Bytes of holes and tail that hold no good record.
    pub fn bad_bytes(&self, body_len: usize) -> usize {
        let holes: usize = self.holes.iter().map(|r| r.len()).sum();
        holes + body_len.saturating_sub(self.good_end)
    }
}

/// Splits a file's body into records (see the module doc for what is accepted).
pub fn parse_records(body: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut pos = 0;
    while pos < body.len() {
        match record_at(body, pos, parsed.checked > 0) {
            Some((update, end, checked)) => {
                parsed.records.push(update.to_vec());
                parsed.checked += usize::from(checked);
                pos = end;
                parsed.good_end = end;
            }
            None => match next_checked_record(body, pos + 1) {
                Some(next) => {
                    parsed.holes.push(pos..next);
                    pos = next;
                }
                None => break,
            },
        }
    }
    parsed
}

/// The record starting at `pos`: its update, where it ends, and whether its checksum held.
/// `strict`: a record without a trailer must decode exactly.
fn record_at(body: &[u8], pos: usize, strict: bool) -> Option<(&[u8], usize, bool)> {
    let (len, n) = read_var_uint(&body[pos..])?;
    let start = pos + n;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .filter(|&e| e <= body.len())?;
    let payload = &body[start..end];
    if let Some(update) = checked_update(payload) {
        return is_valid_update(update).then_some((update, end, true));
    }
    let legacy = if strict {
        is_exact_update(payload)
    } else {
        is_valid_update(payload)
    };
    legacy.then_some((payload, end, false))
}

/// The update inside a payload whose trailer checks.
fn checked_update(payload: &[u8]) -> Option<&[u8]> {
    let split = payload.len().checked_sub(TRAILER_LEN)?;
    let (update, trailer) = payload.split_at(split);
    let valid = trailer[0] == TRAILER_MAGIC && trailer[1..] == crc32c(update).to_le_bytes();
    valid.then_some(update)
}

/// The first offset at or after `from` where a whole record with a valid checksum starts.
fn next_checked_record(body: &[u8], from: usize) -> Option<usize> {
    (from..body.len()).find(|&pos| {
        let Some((len, n)) = read_var_uint(&body[pos..]) else {
            return false;
        };
        let start = pos + n;
        let end = usize::try_from(len)
            .ok()
            .filter(|&l| l > TRAILER_LEN)
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= body.len());
        // The magic byte first: the CRC runs on about one offset in 256.
        end.is_some_and(|end| {
            body[end - TRAILER_LEN] == TRAILER_MAGIC
                && checked_update(&body[start..end]).is_some_and(is_valid_update)
        })
    })
}

/// A record's update must decode; an empty one also ends the log for the Python reader, so
/// it is never valid here. The guard's structural scan runs first: yrs decodes nested values
/// recursively, and a hostile file could otherwise overflow the stack (not catchable).
pub fn is_valid_update(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && scan_update_v1(bytes, &ScanLimits::default()).is_ok()
        && matches!(catch_unwind(|| Update::decode_v1(bytes).is_ok()), Ok(true))
}

/// Decodes as an update with no byte left over.
fn is_exact_update(bytes: &[u8]) -> bool {
    let exact = || {
        let mut decoder = DecoderV1::from(bytes);
        Update::decode(&mut decoder).is_ok() && decoder.read_u8().is_err()
    };
    !bytes.is_empty()
        && scan_update_v1(bytes, &ScanLimits::default()).is_ok()
        && matches!(catch_unwind(exact), Ok(true))
}

/// CRC-32C (Castagnoli), as in iSCSI, ext4 and RocksDB: polynomial 0x1EDC6F41, reflected.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, GetString, Text, Transact};

    fn updates(n: usize) -> Vec<Vec<u8>> {
        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("t");
        (0..n)
            .map(|i| {
                let mut txn = doc.transact_mut();
                text.insert(&mut txn, 0, &format!("{i}-"));
                txn.encode_update_v1()
            })
            .collect()
    }

    fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn crc32c_check_values() {
        // The standard check value, and RFC 3720's 32 zero bytes.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn a_record_is_the_update_then_its_trailer() {
        let update = Update::new().encode_v1(); // [0, 0]
        let record = encode_records(&[&update]);
        let crc = crc32c(&update).to_le_bytes();
        assert_eq!(
            record,
            [&[7u8, 0, 0, TRAILER_MAGIC][..], &crc[..]].concat(),
            "varuint 7, the update, the magic byte, the CRC"
        );
        assert_eq!(record.len(), record_len(update.len()));
        // yrs reads the payload as the update alone.
        let payload = &record[1..];
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(payload).unwrap())
            .unwrap();
    }

    #[test]
    fn checked_legacy_and_mixed_files_parse() {
        let all = updates(6);
        let mut body = encode_legacy_records(&refs(&all[..2]));
        body.extend(encode_records(&refs(&all[2..4])));
        body.extend(encode_legacy_records(&refs(&all[4..])));
        let parsed = parse_records(&body);
        assert_eq!(parsed.records, all);
        assert_eq!(parsed.checked, 2);
        assert!(parsed.holes.is_empty());
        assert_eq!(parsed.good_end, body.len());
    }

    #[test]
    fn a_damaged_checked_record_is_never_taken_for_a_legacy_one() {
        let all = updates(3);
        let body = encode_records(&refs(&all));
        let last = body.len() - record_len(all[2].len());
        // Every single-bit flip in the last record's update or trailer is detected.
        for byte in last..body.len() {
            for bit in 0..8 {
                let mut bad = body.clone();
                bad[byte] ^= 1 << bit;
                let parsed = parse_records(&bad);
                assert_eq!(parsed.records, all[..2], "flip at {byte}.{bit}");
                assert_eq!(parsed.good_end, last);
            }
        }
        // Before any checksummed record, a legacy record may carry bytes after its update.
        let mut lenient = encode_legacy_records(&[&[&all[0][..], b"junk"].concat()]);
        assert_eq!(parse_records(&lenient).records.len(), 1);
        lenient.extend(encode_records(&[&all[1]]));
        lenient.extend(encode_legacy_records(&[&[&all[2][..], b"junk"].concat()]));
        let parsed = parse_records(&lenient);
        assert_eq!(parsed.records.len(), 2, "not after one");
    }

    #[test]
    fn a_hole_before_checked_records_is_skipped_not_cut() {
        let all = updates(4);
        let mut body = encode_records(&refs(&all[..2]));
        let hole_start = body.len();
        // A torn record: a length that runs into the next record, and half its bytes.
        let torn = encode_records(&[b"a torn record whose writer was killed".as_slice()]);
        body.extend_from_slice(&torn[..torn.len() / 2]);
        let hole_end = body.len();
        body.extend(encode_records(&refs(&all[2..])));
        let parsed = parse_records(&body);
        assert_eq!(parsed.records, all);
        assert_eq!(parsed.holes, vec![hole_start..hole_end]);
        assert_eq!(parsed.good_end, body.len());
        assert_eq!(parsed.bad_bytes(body.len()), hole_end - hole_start);
    }

    #[test]
    fn garbage_tails_are_cut_exactly() {
        let all = updates(2);
        let good = encode_records(&refs(&all));
        let tails: [&[u8]; 6] = [
            b"\xff",
            b"\x05\x01\x02",
            b"\x03\x05\x01\x01",
            b"\x00",
            &[0u8; 64],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ];
        for tail in tails {
            let body = [&good[..], tail].concat();
            let parsed = parse_records(&body);
            assert_eq!(parsed.records, all, "{tail:?}");
            assert_eq!(parsed.good_end, good.len());
            assert_eq!(parsed.bad_bytes(body.len()), tail.len());
        }
        // A zero-filled record (a crash after the size grew but before the data landed)
        // decodes as an empty update with bytes left over: not accepted after our records.
        let zeros = [&good[..], &[20u8][..], &[0u8; 20]].concat();
        assert_eq!(parse_records(&zeros).records, all);
    }

    #[test]
    fn texts_survive_the_round_trip() {
        let all = updates(5);
        let parsed = parse_records(&encode_records(&refs(&all)));
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        for r in &parsed.records {
            txn.apply_update(Update::decode_v1(r).unwrap()).unwrap();
        }
        assert_eq!(text.get_string(&txn), "4-3-2-1-0-");
    }
}

#[cfg(test)]
mod hostile {
    use super::*;
    use crate::scan::ScanError;
    use yrs::{Any, Array, Doc, ReadTxn, StateVector, Transact};

    #[test]
    fn deeply_nested_content_in_a_file_is_refused_without_decoding_it() {
        // `Any` arrays nested 100,000 deep: yrs would recurse through all of them and overflow
        // the stack (an abort, not a panic); the scan refuses them first.
        let doc = Doc::new();
        let array = doc.get_or_insert_array("a");
        let mut nested = Any::Null;
        for _ in 0..10 {
            nested = Any::Array(vec![nested].into());
        }
        array.push_back(&mut doc.transact_mut(), nested);
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(is_valid_update(&update));
        let pos = update.windows(2).position(|w| w == [0x75, 0x01]).unwrap();
        let mut bomb = update[..pos].to_vec();
        for _ in 0..100_000 {
            bomb.extend_from_slice(&[0x75, 0x01]);
        }
        bomb.extend_from_slice(&update[pos + 20..]);
        assert!(matches!(
            scan_update_v1(&bomb, &ScanLimits::default()),
            Err(ScanError::TooDeep { .. })
        ));
        assert!(!is_valid_update(&bomb) && !is_exact_update(&bomb));
        let body = encode_records(&[&update, &bomb]);
        assert_eq!(parse_records(&body).records, vec![update]);
    }
}
