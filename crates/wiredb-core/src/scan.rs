//! A structural pre-scan of lib0 v1 updates, run before yrs sees the bytes.
//!
//! yrs decodes nested `Any` values recursively (10,000 nested arrays, 20 KB, overflow an 8 MiB
//! stack and abort the process) and trusts declared counts. This scan walks the same layout
//! iteratively, allocates one entry per client of the update, and rejects what yrs would choke
//! on: nesting deeper than a limit, counts larger than the bytes that could hold them, content
//! kinds yrs does not know, client ids yrs folds together. It must never recurse and never
//! panic. It also reports, per client, the clock a document needs to integrate the update in
//! order (see `guard::fits`).

use crate::protocol::DecodeError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("malformed update: {0}")]
    Malformed(#[from] DecodeError),
    #[error("nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("declared count {count} exceeds the {left} bytes left")]
    CountTooLarge { count: u64, left: usize },
    #[error("unknown {what} {value}")]
    Unknown { what: &'static str, value: u64 },
    /// yrs 0.28 keeps pointers to blocks it frees when one update holds the same id twice (a
    /// use-after-free, found by fuzzing): Yjs never writes a client twice in one update.
    #[error("client {client} appears twice in one update")]
    DuplicateClient { client: u64 },
    #[error("a block of client {client} is empty")]
    EmptyBlock { client: u64 },
    #[error("the clocks of client {client} overflow")]
    ClockOverflow { client: u64 },
    /// yrs keeps client ids in 53 bits (as JavaScript numbers do) and folds larger ones onto
    /// smaller, so two clients of one update could become one.
    #[error("client id {client} does not fit in 53 bits")]
    ClientTooLarge { client: u64 },
}

/// The largest client id yrs represents.
pub const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

fn client_id(c: &mut Cursor<'_>) -> Result<u64, ScanError> {
    let client = c.var64()?;
    if client > MAX_CLIENT_ID {
        return Err(ScanError::ClientTooLarge { client });
    }
    Ok(client)
}

/// What a scan measured (useful for quotas), and what the update needs to integrate in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub structs: u64,
    pub deletes: u64,
    /// The most items of the update inserted at one position (sharing a left origin, or having
    /// none), items that follow on from the one before them (typing) not counted. Integrating
    /// k items at a position that already has m costs yrs (and Yjs) k x m comparisons: YATA's
    /// worst case, which a room refuses up front (`GuardLimits::max_siblings`).
    pub siblings: u64,
    pub max_depth: usize,
    /// The clocks of each client of the update, in the update's order.
    pub clients: Vec<ClientClocks>,
}

/// Where one client's structs in an update start and end, and what they build on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientClocks {
    pub client: u64,
    /// The clock of the first struct.
    pub start: u32,
    /// The clock after the last struct.
    pub end: u32,
    /// The clock a document must have reached for these structs to integrate without a gap:
    /// the start of the first struct that does not follow on from the one before it (the
    /// first struct, or one after a Skip).
    pub needs: u32,
    /// Whether a Skip (a gap) is among the structs: without one, the update holds every clock
    /// of `start..end`.
    pub skips: bool,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
            offset: self.pos,
            needed: 1,
        })?;
        self.pos += 1;
        Ok(byte)
    }

    fn skip(&mut self, n: u64) -> Result<(), DecodeError> {
        if n > self.left() as u64 {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: usize::try_from(n).unwrap_or(usize::MAX) - self.left(),
            });
        }
        self.pos += n as usize;
        Ok(())
    }

    /// A varint read exactly as yrs reads one into an integer of `bits` bits: up to 11 bytes,
    /// each group shifted by a wrapping shift. Matching yrs here keeps the scan walking the very
    /// layout yrs will decode.
    fn var(&mut self, bits: u32) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut len = 0u32;
        loop {
            let byte = self.u8()?;
            let group = u64::from(byte & 0x7f);
            value |= if bits == 32 {
                u64::from((group as u32).wrapping_shl(len))
            } else {
                group.wrapping_shl(len)
            };
            len += 7;
            if byte < 0x80 {
                return Ok(value);
            }
            if len > 70 {
                return Err(DecodeError::VarintOverflow { offset: start });
            }
        }
    }

    fn var32(&mut self) -> Result<u64, DecodeError> {
        self.var(32)
    }

    fn var64(&mut self) -> Result<u64, DecodeError> {
        self.var(64)
    }

    /// A lib0 signed varint: only its length matters here.
    fn varint(&mut self) -> Result<(), DecodeError> {
        let start = self.pos;
        for _ in 0..10 {
            if self.u8()? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(DecodeError::VarintOverflow { offset: start })
    }

    /// A var-length buffer or string.
    fn buf(&mut self) -> Result<(), DecodeError> {
        self.bytes().map(|_| ())
    }

    fn bytes(&mut self) -> Result<&[u8], DecodeError> {
        let len = self.var32()?;
        let start = self.pos;
        self.skip(len)?;
        Ok(&self.buf[start..self.pos])
    }

    /// A count of elements that each take at least one byte.
    fn count(&mut self, bits: u32) -> Result<u64, ScanError> {
        let count = self.var(bits)?;
        if count > self.left() as u64 {
            return Err(ScanError::CountTooLarge {
                count,
                left: self.left(),
            });
        }
        Ok(count)
    }
}

/// Limits of the scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Deepest nesting of `Any` values (arrays and maps) accepted.
    pub max_depth: usize,
    /// `ScanReport::siblings` is exact above this (below it, it may report less): the count
    /// sorts the origins only when the result could matter.
    pub siblings_floor: u64,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_depth: 64,
            siblings_floor: 1_000,
        }
    }
}

/// Checks that `update` has the layout of a lib0 v1 update within the limits.
/// `text.encode_utf16().count()`, without decoding each char: ASCII is its byte length;
/// otherwise one unit per char (every byte but continuation bytes), two for a 4-byte char.
/// On a 4 KiB paste the char-by-char count was half the guard's cost.
fn utf16_len(text: &str) -> u64 {
    let bytes = text.as_bytes();
    if bytes.is_ascii() {
        return bytes.len() as u64;
    }
    bytes
        .iter()
        .map(|&b| u64::from(b & 0xC0 != 0x80) + u64::from(b >= 0xF0))
        .sum()
}

/// The client part of an origin key that stands for "no origin, in this parent": client ids
/// are 53 bits at most, so no origin has it.
const PARENT: u64 = u64::MAX;

/// FNV-1a: a parent's bytes as a key (a collision only merges two counts).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Left origins of the items that do not follow on from the one before them. Typing (every
/// item's origin its predecessor's last character) records nothing, and a single insertion
/// elsewhere allocates nothing.
#[derive(Default)]
struct Origins {
    none: u64,
    first: Option<(u64, u64)>,
    rest: Vec<(u64, u64)>,
}

impl Origins {
    fn add(&mut self, origin: Option<(u64, u64)>) {
        match origin {
            None => self.none += 1,
            Some(id) if self.first.is_none() => self.first = Some(id),
            Some(id) => self.rest.push(id),
        }
    }

    /// The most that share one origin; sorts only when that could pass `floor`.
    fn most_shared(mut self, floor: u64) -> u64 {
        let some = self.rest.len() as u64 + u64::from(self.first.is_some());
        if some <= floor.max(self.none) {
            return self.none.max(u64::from(some > 0));
        }
        self.rest.extend(self.first);
        self.rest.sort_unstable();
        let mut most = self.none;
        let mut run = 0;
        for (i, id) in self.rest.iter().enumerate() {
            run = if i > 0 && self.rest[i - 1] == *id {
                run + 1
            } else {
                1
            };
            most = most.max(run);
        }
        most
    }
}

pub fn scan_update_v1(update: &[u8], limits: &ScanLimits) -> Result<ScanReport, ScanError> {
    let mut c = Cursor {
        buf: update,
        pos: 0,
    };
    let mut report = ScanReport::default();
    let mut origins = Origins::default();
    let clients = c.count(32)?;
    for _ in 0..clients {
        let structs = c.count(32)?;
        let client = client_id(&mut c)?;
        if report.clients.iter().any(|seen| seen.client == client) {
            return Err(ScanError::DuplicateClient { client });
        }
        let mut clock = c.var32()?;
        let start = clock;
        let mut needs = 0;
        let mut skips = false;
        // Where the last struct that is not a Skip ended.
        let mut follows_on = None;
        for _ in 0..structs {
            report.structs += 1;
            let (len, is_skip) =
                scan_struct(&mut c, limits, &mut report, (client, clock), &mut origins)?;
            if len == 0 {
                return Err(ScanError::EmptyBlock { client });
            }
            if !is_skip && follows_on != Some(clock) {
                needs = needs.max(clock);
            }
            clock += len;
            if clock > u64::from(u32::MAX) {
                return Err(ScanError::ClockOverflow { client });
            }
            if is_skip {
                skips = true;
            } else {
                follows_on = Some(clock);
            }
        }
        // Below u32::MAX: checked on every struct, and the start clock is a var32.
        report.clients.push(ClientClocks {
            client,
            start: start as u32,
            end: clock as u32,
            needs: needs as u32,
            skips,
        });
    }
    let delete_clients = c.count(32)?;
    for _ in 0..delete_clients {
        client_id(&mut c)?;
        let ranges = c.count(32)?;
        for _ in 0..ranges {
            c.var32()?; // clock
            c.var32()?; // len
            report.deletes += 1;
        }
    }
    report.siblings = origins.most_shared(limits.siblings_floor);
    Ok(report)
}

const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;

/// Scans one block; returns its length in clock ticks and whether it is a Skip (a gap).
fn scan_struct(
    c: &mut Cursor<'_>,
    limits: &ScanLimits,
    report: &mut ScanReport,
    (client, clock): (u64, u64),
    origins: &mut Origins,
) -> Result<(u64, bool), ScanError> {
    let info = c.u8()?;
    if info == 0 || info == 10 {
        // GC and Skip: a length.
        return Ok((c.var32()?, info == 10));
    }
    if info & HAS_ORIGIN != 0 {
        let origin = (client_id(c)?, c.var32()?);
        // Typing: the item goes right after its own client's previous character.
        if clock == 0 || origin != (client, clock - 1) {
            origins.add(Some(origin));
        }
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        client_id(c)?;
        c.var32()?;
        if info & HAS_ORIGIN == 0 {
            // At the start of its parent (which only the right origin tells).
            origins.add(None);
        }
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        let parent_start = c.pos;
        if c.var32()? == 1 {
            c.buf()?; // root type name
        } else {
            client_id(c)?; // parent id
            c.var32()?;
        }
        if info & HAS_PARENT_SUB != 0 {
            c.buf()?;
        }
        // Alone in its parent (or its map key): it meets only others alone in the same one.
        origins.add(Some((PARENT, fnv1a(&c.buf[parent_start..c.pos]))));
    }
    // yrs reads the content kind from the low four bits.
    let len = match info & 0b1111 {
        1 => c.var32()?, // deleted length
        2 => {
            // JSON strings (parsed later by serde_json, which limits its own recursion). yrs
            // reads the declared count as an i32 and then one string more than it says.
            let count = c.count(32)? as u32 as i32;
            if count < 0 {
                return Err(ScanError::CountTooLarge {
                    count: count as u32 as u64,
                    left: c.left(),
                });
            }
            for _ in 0..=count {
                c.buf()?;
            }
            count as u64 + 1
        }
        4 => {
            // A string's length is counted in UTF-16 code units, as Yjs does.
            let bytes = c.bytes()?;
            match std::str::from_utf8(bytes) {
                Ok(text) => utf16_len(text),
                Err(_) => bytes.len() as u64,
            }
        }
        3 | 5 => {
            c.buf()?; // binary, embed (JSON string)
            1
        }
        6 => {
            c.buf()?; // format key
            c.buf()?; // format value (JSON string)
            1
        }
        7 => {
            match c.u8()? {
                3 => c.buf()?, // XML element: its name
                0..=2 | 4..=6 | 9 | 15 => {}
                other => {
                    return Err(ScanError::Unknown {
                        what: "type ref",
                        value: other.into(),
                    })
                }
            }
            1
        }
        8 => {
            let count = c.count(32)?;
            for _ in 0..count {
                scan_any(c, limits, report)?;
            }
            count
        }
        9 => {
            c.buf()?; // guid
            scan_any(c, limits, report)?; // options
            1
        }
        other => {
            return Err(ScanError::Unknown {
                what: "content kind",
                value: other.into(),
            })
        }
    };
    Ok((len, false))
}

/// One `Any` value, walked with an explicit stack of "values still to read" per open container.
fn scan_any(
    c: &mut Cursor<'_>,
    limits: &ScanLimits,
    report: &mut ScanReport,
) -> Result<(), ScanError> {
    // Each entry: (values left in this container, whether each is preceded by a map key).
    let mut stack: Vec<(u64, bool)> = vec![(1, false)];
    while let Some(top) = stack.last_mut() {
        if top.0 == 0 {
            stack.pop();
            continue;
        }
        top.0 -= 1;
        if top.1 {
            c.buf()?; // map key
        }
        match c.u8()? {
            127 | 126 | 121 | 120 => {}
            125 => c.varint()?,
            124 => c.skip(4)?,
            123 | 122 => c.skip(8)?,
            119 | 116 => c.buf()?,
            tag @ (118 | 117) => {
                let len = c.count(64)?;
                if stack.len() >= limits.max_depth {
                    return Err(ScanError::TooDeep {
                        limit: limits.max_depth,
                    });
                }
                stack.push((len, tag == 118));
                report.max_depth = report.max_depth.max(stack.len() - 1);
            }
            other => {
                return Err(ScanError::Unknown {
                    what: "value tag",
                    value: other.into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Any, Array, Doc, Map, ReadTxn, StateVector, Text, Transact, XmlFragment};

    fn siblings_of(edit: impl Fn(&Doc)) -> u64 {
        let doc = Doc::with_client_id(1);
        edit(&doc);
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        scan_update_v1(&update, &ScanLimits::default())
            .unwrap()
            .siblings
    }

    #[test]
    fn items_inserted_at_one_position_are_counted() {
        // 5,000 prepends: all at the start.
        let prepends = siblings_of(|doc| {
            let text = doc.get_or_insert_text("t");
            for _ in 0..5_000 {
                text.insert(&mut doc.transact_mut(), 0, "a");
            }
        });
        // (The first, alone in an empty text, has no origin at all.)
        assert_eq!(prepends, 4_999);
        // 5,000 keystrokes, each after the last: typing, nothing shared.
        let typing = siblings_of(|doc| {
            let text = doc.get_or_insert_text("t");
            for i in 0..5_000 {
                text.insert(&mut doc.transact_mut(), i, "a");
            }
        });
        assert!(typing <= 1, "{typing}");
        // 5,000 map keys and 5,000 arrays of their own: each alone where it is.
        let keys = siblings_of(|doc| {
            let map = doc.get_or_insert_map("m");
            let mut txn = doc.transact_mut();
            for i in 0..5_000 {
                map.insert(&mut txn, i.to_string(), i as i64);
            }
        });
        assert!(keys <= 1, "{keys}");
        let arrays = siblings_of(|doc| {
            for i in 0..2_000 {
                let array = doc.get_or_insert_array(format!("a{i}").as_str());
                array.push_back(&mut doc.transact_mut(), 1);
            }
        });
        assert!(arrays <= 1, "{arrays}");
    }

    fn nested(depth: usize) -> Any {
        let mut any = Any::Null;
        for _ in 0..depth {
            any = Any::Array(vec![any].into());
        }
        any
    }

    #[test]
    fn real_updates_of_every_kind_pass() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        let array = doc.get_or_insert_array("array");
        let map = doc.get_or_insert_map("map");
        let xml = doc.get_or_insert_xml_fragment("xml");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "hello world");
            text.format(
                &mut txn,
                0,
                5,
                [("bold".into(), Any::Bool(true))].into_iter().collect(),
            );
            text.remove_range(&mut txn, 2, 3);
            array.push_back(&mut txn, nested(10));
            array.push_back(&mut txn, Any::Buffer(vec![1u8, 2, 3].into()));
            array.push_back(&mut txn, 3.5);
            array.push_back(&mut txn, -7i64);
            map.insert(
                &mut txn,
                "k",
                Any::from(
                    vec![("a", Any::from("b"))]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<std::collections::HashMap<_, _>>(),
                ),
            );
            map.insert(&mut txn, "nested", yrs::MapPrelim::default());
            xml.push_back(&mut txn, yrs::XmlElementPrelim::empty("p"));
        }
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let report = scan_update_v1(&update, &ScanLimits::default()).unwrap();
        assert!(report.structs > 5);
        assert!(report.deletes >= 1);
        assert_eq!(report.max_depth, 10);
        assert!(yrs::Update::decode_v1(&update).is_ok());
    }

    #[test]
    fn utf16_len_counts_like_encode_utf16() {
        for text in [
            "",
            "ascii",
            "héllo",
            "日本語",
            "a😀b𝄞c",
            &"x😀é".repeat(1000),
        ] {
            assert_eq!(
                utf16_len(text),
                text.encode_utf16().count() as u64,
                "{text:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        let doc = Doc::new();
        let array = doc.get_or_insert_array("a");
        array.push_back(&mut doc.transact_mut(), nested(10));
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
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
    }

    #[test]
    fn lying_counts_and_garbage_are_refused() {
        for bytes in [
            &[0xff, 0xff, 0xff, 0xff, 0x0f][..],
            &[1, 0xff, 0xff, 0xff, 0x0f, 1, 0][..],
            &[1, 1, 1, 0, 0x1f][..],
            &[][..],
        ] {
            assert!(
                scan_update_v1(bytes, &ScanLimits::default()).is_err(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn needs_is_where_each_client_stops_following_on() {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("t");
        let updates: Vec<Vec<u8>> = ["ab", "cde", "f"]
            .iter()
            .map(|s| {
                let mut txn = doc.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, s);
                txn.encode_update_v1()
            })
            .collect();
        let clocks = |update: &[u8]| {
            let report = scan_update_v1(update, &ScanLimits::default()).unwrap();
            let c = report.clients[0];
            (
                report.clients.len(),
                c.client,
                c.start,
                c.end,
                c.needs,
                c.skips,
            )
        };
        assert_eq!(clocks(&updates[0]), (1, 7, 0, 2, 0, false));
        assert_eq!(clocks(&updates[1]), (1, 7, 2, 5, 2, false));
        // Clocks 0..2 and 5..6 with a Skip between: the struct after the gap needs clock 5.
        let merged = yrs::merge_updates_v1([&updates[0], &updates[2]]).unwrap();
        assert_eq!(clocks(&merged), (1, 7, 0, 6, 5, true));
    }

    #[test]
    fn client_ids_beyond_53_bits_are_refused() {
        // One client, one struct, client 2^53, clock 0, a GC of length 1, no deletes.
        let update = [
            1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 1, 0,
        ];
        assert_eq!(
            scan_update_v1(&update, &ScanLimits::default()),
            Err(ScanError::ClientTooLarge { client: 1 << 53 })
        );
    }

    #[test]
    fn every_truncation_of_a_real_update_is_handled() {
        let doc = Doc::new();
        let map = doc.get_or_insert_map("m");
        map.insert(&mut doc.transact_mut(), "k", nested(5));
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        for cut in 0..update.len() {
            // Never panics; a cut inside the structs is an error.
            let _ = scan_update_v1(&update[..cut], &ScanLimits::default());
        }
        assert!(scan_update_v1(&update[..update.len() / 2], &ScanLimits::default()).is_err());
    }

    /// Differential check against yrs on mutated real updates: whatever yrs decodes, the scan
    /// walks the same way and accepts, but for what it refuses on purpose (too deep, a client
    /// twice, empty blocks, overflowing clocks).
    #[test]
    fn accepts_whatever_yrs_decodes() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let map = doc.get_or_insert_map("m");
        let xml = doc.get_or_insert_xml_fragment("x");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "abcdef");
            text.format(
                &mut txn,
                0,
                2,
                [("b".into(), Any::Bool(true))].into_iter().collect(),
            );
            text.insert_embed(&mut txn, 1, Any::from(vec![Any::from(1.5)]));
            text.remove_range(&mut txn, 1, 2);
            map.insert(&mut txn, "x", nested(3));
            map.insert(&mut txn, "y", Any::Buffer(vec![9u8; 4].into()));
            xml.push_back(&mut txn, yrs::XmlElementPrelim::empty("p"));
        }
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        std::panic::set_hook(Box::new(|_| {}));
        let mut decoded = 0;
        let mut refused = Vec::new();
        for _ in 0..20_000 {
            let mut bytes = update.clone();
            for _ in 0..(next() % 3 + 1) {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            let yrs_ok = std::panic::catch_unwind(|| yrs::Update::decode_v1(&bytes).is_ok())
                .unwrap_or(false);
            if yrs_ok {
                decoded += 1;
                match scan_update_v1(&bytes, &ScanLimits::default()) {
                    // Refused on purpose: yrs mishandles these (see ScanError).
                    Ok(_)
                    | Err(ScanError::DuplicateClient { .. })
                    | Err(ScanError::EmptyBlock { .. })
                    | Err(ScanError::ClockOverflow { .. }) => {}
                    Err(error) => refused.push((bytes, error)),
                }
            }
        }
        let _ = std::panic::take_hook();
        assert!(
            refused.is_empty(),
            "yrs decodes what the scan refuses: {:02x?}",
            &refused[..refused.len().min(3)]
        );
        assert!(decoded > 100, "too few mutations decoded: {decoded}");
    }
}
