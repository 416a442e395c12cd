//! Append-only update log: the on-disk persistence of one document, byte-compatible with the
//! Python `wire-file` 0.7.1 format.
//!
//! A file is the header `b"0.0.1\0"` followed by records; each record is a lib0 var-length
//! buffer (lib0 varuint length, then that many bytes) holding one yrs v1 update.
//!
//! This module must never lose a record that was completely written: it only ever cuts a torn
//! or undecodable *tail*, never writes a record in more than one piece, never replaces the file
//! other than atomically (temp file + rename), and never panics on what it reads from disk.
//! Everything here is blocking `std::fs` code: run it on a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::Update;

pub const FILE_VERSION: &str = "0.0.1";
/// `FILE_VERSION` then NUL (checked against `FILE_VERSION` by a test).
const HEADER: &[u8] = b"0.0.1\0";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("File version mismatch (got \"{got}\", expected \"{expected}\")", expected = FILE_VERSION)]
    VersionMismatch { path: PathBuf, got: String },
    #[error("update #{index} given to append to {} is not a valid yrs v1 update", path.display())]
    InvalidUpdate { path: PathBuf, index: usize },
    #[error("cannot merge the updates of {}: {reason}", path.display())]
    Merge { path: PathBuf, reason: String },
}

/// What `FileLog::open` found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Complete records read (before any squash).
    pub records: usize,
    /// Bytes cut off the end of the file (torn tail or torn header).
    pub torn_bytes: u64,
}

/// An open update log. Not `Clone`: one value per open file handle.
#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    /// Opened read + O_APPEND, so every write lands at the current end of file.
    file: File,
    len: u64,
    /// `Some(merged update)` iff opened with squash: the whole content, kept in memory so that
    /// squashing on append does not re-read the file.
    squashed: Option<Vec<u8>>,
}

impl FileLog {
    /// Opens or creates the log and returns it with every complete record (each a v1 update).
    ///
    /// A torn or undecodable tail is truncated away (with a warning), a torn header is
    /// rewritten, another version is `StoreError::VersionMismatch`. With `squash`, a log of
    /// more than one record is then replaced atomically by header + one merged record
    /// (the returned records are still the ones read).
    pub fn open(
        path: impl AsRef<Path>,
        squash: bool,
    ) -> Result<(FileLog, Vec<Vec<u8>>, LoadReport), StoreError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let file = open_append(&path, true).map_err(io_err)?;
        let (records, len, torn_bytes) = {
            // Held while reading and cutting, so a concurrent appender's record is never
            // mistaken for a torn tail and a concurrent creator's header never doubled.
            let _lock = Flock::exclusive(&file);
            let mut data = Vec::new();
            (&file).read_to_end(&mut data).map_err(io_err)?;
            let mut torn_bytes = 0;
            if !data.starts_with(HEADER) {
                if data.len() < HEADER.len() && HEADER.starts_with(&data) {
                    // New file, or a crash while creating it: (re)write the header.
                    torn_bytes = data.len() as u64;
                    file.set_len(0).map_err(io_err)?;
                    (&file).write_all(HEADER).map_err(io_err)?;
                    file.sync_all().map_err(io_err)?;
                    sync_dir(&path).map_err(io_err)?;
                    data = HEADER.to_vec();
                } else {
                    let head = &data[..data.len().min(64)];
                    let version = head
                        .iter()
                        .position(|&b| b == 0)
                        .map_or(head, |i| &head[..i]);
                    let got = String::from_utf8_lossy(version).into_owned();
                    return Err(StoreError::VersionMismatch { path, got });
                }
            }
            let (records, good) = parse_records(&data[HEADER.len()..]);
            let good_len = (HEADER.len() + good) as u64;
            let cut = data.len() as u64 - good_len;
            if cut > 0 {
                file.set_len(good_len).map_err(io_err)?;
                file.sync_data().map_err(io_err)?;
                torn_bytes += cut;
            }
            (records, good_len, torn_bytes)
        };
        if torn_bytes > 0 {
            tracing::warn!(path = %path.display(), torn_bytes, "cut torn or undecodable tail of update log");
        }
        let report = LoadReport {
            records: records.len(),
            torn_bytes,
        };
        let mut log = FileLog {
            path,
            file,
            len,
            squashed: None,
        };
        if squash {
            let merged = match records.as_slice() {
                [] => Update::new().encode_v1(),
                [one] => one.clone(),
                many => {
                    let merged = merge(&log.path, many.iter().map(Vec::as_slice))?;
                    log.replace_with(&merged)?;
                    merged
                }
            };
            log.squashed = Some(merged);
        }
        Ok((log, records, report))
    }

    /// Appends `updates` as records in one write (or, for a squashing log, merges them into
    /// the content and replaces the file). Each update must be a valid v1 update: a bad
    /// record would make open cut it and every record after it, so it is refused up front.
    pub fn append(&mut self, updates: &[&[u8]]) -> Result<(), StoreError> {
        if let Some(index) = updates.iter().position(|u| !is_valid_update(u)) {
            return Err(StoreError::InvalidUpdate {
                path: self.path.clone(),
                index,
            });
        }
        if updates.is_empty() {
            return Ok(());
        }
        if self.squashed.is_some() {
            return self.append_squashed(updates);
        }
        let buf = encode_records(updates);
        loop {
            let lock = Flock::exclusive(&self.file);
            if !self.replaced_on_disk() {
                // One write of whole records, on O_APPEND, under the lock: no interleaving.
                (&self.file).write_all(&buf).map_err(|e| self.io(e))?;
                self.len = self
                    .file
                    .metadata()
                    .map_or(self.len + buf.len() as u64, |m| m.len());
                return Ok(());
            }
            // Another FileLog renamed a new file over the path: write to that one instead
            // of the unlinked inode.
            drop(lock);
            self.file = open_append(&self.path, false).map_err(|e| self.io(e))?;
        }
    }

    /// fsyncs the file's data.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|e| self.io(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current file size as known to this handle (header included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file holds no record, only the header.
    pub fn is_empty(&self) -> bool {
        self.len <= HEADER.len() as u64
    }

    fn io(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Atomically replaces the file by header + one record holding `update`: writes
    /// `<name>.tmp-<pid>-<n>`, fsyncs it, renames it over the path, fsyncs the directory,
    /// then reopens the append handle on the new file.
    pub fn replace_with(&mut self, update: &[u8]) -> Result<(), StoreError> {
        let new_file = {
            // Keeps other logs' appends from landing in the old inode during the swap.
            let _lock = Flock::exclusive(&self.file);
            self.write_replacement(update)?
        };
        self.install(new_file, update);
        Ok(())
    }

    /// Squashing append: the file's content merged with `updates` replaces the file. The
    /// content is re-read when another log changed the file since our last look, so that its
    /// records are merged in rather than dropped.
    fn append_squashed(&mut self, updates: &[&[u8]]) -> Result<(), StoreError> {
        loop {
            let new = {
                let _lock = Flock::exclusive(&self.file);
                if self.replaced_on_disk() {
                    None
                } else {
                    let disk_len = self.file.metadata().map_err(|e| self.io(e))?.len();
                    let reread;
                    let base: Vec<&[u8]> = match &self.squashed {
                        Some(merged) if disk_len == self.len => vec![merged.as_slice()],
                        _ => {
                            reread = self.read_records()?;
                            reread.iter().map(Vec::as_slice).collect()
                        }
                    };
                    let all = base.into_iter().chain(updates.iter().copied());
                    let merged = merge(&self.path, all)?;
                    let file = self.write_replacement(&merged)?;
                    Some((file, merged))
                }
            };
            match new {
                Some((file, merged)) => {
                    self.install(file, &merged);
                    return Ok(());
                }
                // Another log renamed a new file over the path: merge with that one.
                None => {
                    self.file = open_append(&self.path, false).map_err(|e| self.io(e))?;
                    // An unknown length forces a re-read under the new file's lock.
                    self.len = u64::MAX;
                }
            }
        }
    }

    /// Every complete record of the file our handle is open on (the caller holds the lock).
    fn read_records(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut data = Vec::new();
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        file.read_to_end(&mut data).map_err(|e| self.io(e))?;
        let body = data.get(HEADER.len()..).unwrap_or_default();
        Ok(parse_records(body).0)
    }

    /// Writes header + `update` to a temporary file and renames it over the path (the caller
    /// holds the lock); returns an append handle on the new file.
    fn write_replacement(&self, update: &[u8]) -> Result<File, StoreError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut buf = HEADER.to_vec();
        buf.extend_from_slice(&encode_records(&[update]));
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        name.push(format!(".tmp-{}-{n}", std::process::id()));
        let tmp = self.path.with_file_name(name);
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        sync_dir(&self.path).map_err(|e| self.io(e))?;
        open_append(&self.path, false).map_err(|e| self.io(e))
    }

    fn install(&mut self, file: File, update: &[u8]) {
        self.file = file;
        self.len = (HEADER.len() + varuint_len(update.len() as u64) + update.len()) as u64;
        if self.squashed.is_some() {
            self.squashed = Some(update.to_vec());
        }
    }

    /// True if the path now names another file than our handle (renamed over by a replace).
    fn replaced_on_disk(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let (Ok(a), Ok(b)) = (fs::metadata(&self.path), self.file.metadata()) {
                return (a.dev(), a.ino()) != (b.dev(), b.ino());
            }
        }
        false
    }
}

/// Encodes records (header excluded) for the given updates.
pub fn encode_records(updates: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(updates.iter().map(|u| u.len() + 4).sum());
    for u in updates {
        let mut n = u.len() as u64;
        while n >= 0x80 {
            buf.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        buf.push(n as u8);
        buf.extend_from_slice(u);
    }
    buf
}

fn varuint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Reads a lib0 varuint; `None` if torn or longer than 8 bytes (no real record is 2^56 long,
/// and capping it keeps the shifts from overflowing on garbage).
fn read_var_uint(data: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, &b) in data.iter().enumerate().take(8) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((n, i + 1));
        }
    }
    None
}

/// Splits the body (after the header) into records up to the first torn or undecodable one;
/// returns them and the byte length of that good prefix.
fn parse_records(body: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let Some((len, n)) = read_var_uint(&body[pos..]) else {
            break;
        };
        let start = pos + n;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l));
        let Some(end) = end.filter(|&e| e <= body.len()) else {
            break;
        };
        if !is_valid_update(&body[start..end]) {
            break;
        }
        records.push(body[start..end].to_vec());
        pos = end;
    }
    (records, pos)
}

/// An empty record also ends the log for the Python reader, so it is never valid here.
fn is_valid_update(bytes: &[u8]) -> bool {
    !bytes.is_empty() && matches!(catch_unwind(|| Update::decode_v1(bytes).is_ok()), Ok(true))
}

fn merge<'a>(path: &Path, updates: impl Iterator<Item = &'a [u8]>) -> Result<Vec<u8>, StoreError> {
    let updates: Vec<&[u8]> = updates.collect();
    let reason = match catch_unwind(|| yrs::merge_updates_v1(updates.iter().copied())) {
        Ok(Ok(merged)) => return Ok(merged),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "yrs panicked while merging".to_owned(),
    };
    Err(StoreError::Merge {
        path: path.to_path_buf(),
        reason,
    })
}

fn open_append(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
}

/// Makes a create or rename durable: fsync the containing directory.
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        File::open(dir.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    let _ = path;
    Ok(())
}

/// Exclusive advisory lock (flock) on one open file description, released on drop; it
/// serialises FileLogs on the same path, in this process or others. Best effort: if the
/// filesystem refuses locks we go on, as O_APPEND single writes already keep records whole.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: the fd stays open for the borrow's lifetime.
            while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
        }
        Flock(file)
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: the fd is still open (borrowed); unlocking an unlocked fd is harmless.
            unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, Text, Transact};

    /// `n` real text updates from one doc, and the text they build.
    fn text_updates(client: u64, n: usize, chunk: &str) -> (Vec<Vec<u8>>, String) {
        let doc = Doc::with_client_id(client);
        let text = doc.get_or_insert_text("t");
        let mut updates = Vec::new();
        for i in 0..n {
            let mut txn = doc.transact_mut();
            let end = text.len(&txn);
            text.insert(&mut txn, end, &format!("{chunk}{i},"));
            updates.push(txn.encode_update_v1());
        }
        let s = text.get_string(&doc.transact());
        (updates, s)
    }

    fn apply(records: &[Vec<u8>]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        for r in records {
            txn.apply_update(Update::decode_v1(r).unwrap()).unwrap();
        }
        text.get_string(&txn)
    }

    fn tmp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.y");
        (dir, path)
    }

    fn rep(records: usize, torn_bytes: u64) -> LoadReport {
        LoadReport {
            records,
            torn_bytes,
        }
    }

    fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn round_trip() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(1, 5, "hello");
        let (mut log, records, report) = FileLog::open(&path, false).unwrap();
        assert!(records.is_empty() && log.is_empty());
        assert_eq!(report, rep(0, 0));
        log.append(&refs(&updates[..2])).unwrap();
        log.append(&refs(&updates[2..])).unwrap();
        log.sync().unwrap();
        assert_eq!(log.len(), fs::metadata(&path).unwrap().len());
        drop(log);
        let (_, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(records, updates);
        assert_eq!(report, rep(5, 0));
        assert_eq!(apply(&records), expected);
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(HEADER, format!("{FILE_VERSION}\0").as_bytes());
        let (_dir, path) = tmp();
        let (mut log, _, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"0.0.1\x00");
        let big = Update::new().encode_v1(); // [0, 0]: the empty update
                                             // A bad update is refused whole, as open would cut it and all after it.
        let err = log.append(&[&big, b"\x03\x05"]).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUpdate { index: 1, .. }));
        assert_eq!(fs::read(&path).unwrap(), HEADER);
        log.append(&[&big, &big]).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"0.0.1\x00\x02\x00\x00\x02\x00\x00"
        );
        let long = vec![7u8; 300];
        let enc = encode_records(&[&long]);
        assert_eq!(&enc[..2], &[0xac, 0x02]); // 300 = 0x2c | 0x02 << 7
        assert_eq!(&enc[2..], &long[..]);
        assert_eq!(read_var_uint(&enc), Some((300, 2)));
    }

    #[test]
    fn torn_tail_at_every_offset() {
        let (_dir, path) = tmp();
        // A 300+ byte last update so its length varuint is 2 bytes and can tear too.
        let (updates, expected) = text_updates(3, 3, &"x".repeat(300));
        let mut full = HEADER.to_vec();
        full.extend(encode_records(&refs(&updates)));
        let good = HEADER.len() + encode_records(&refs(&updates[..2])).len();
        assert!(full.len() - good > 300);
        for cut in good..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (mut log, records, report) = FileLog::open(&path, false).unwrap();
            assert_eq!(records, updates[..2], "cut at {cut}");
            assert_eq!(report.torn_bytes, (cut - good) as u64);
            assert_eq!(fs::metadata(&path).unwrap().len(), good as u64);
            assert_eq!(log.len(), good as u64);
            log.append(&[&updates[2]]).unwrap();
            drop(log);
            let (_, records, report) = FileLog::open(&path, false).unwrap();
            assert_eq!(report, rep(3, 0));
            assert_eq!(apply(&records), expected);
        }
    }

    #[test]
    fn garbage_tail_is_cut() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(4, 2, "g");
        let mut valid = HEADER.to_vec();
        valid.extend(encode_records(&refs(&updates)));
        let garbage: [&[u8]; 5] = [
            b"\xff",                                     // torn varuint
            b"\x05\x01\x02",                             // length beyond EOF
            b"\x03\x05\x01\x01",                         // fits, but not a v1 update
            b"\x00\x02\x00\x00", // empty record (ends the log in Python too)
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", // overlong varuint
        ];
        for g in garbage {
            let mut data = valid.clone();
            data.extend_from_slice(g);
            fs::write(&path, &data).unwrap();
            let (_, records, report) = FileLog::open(&path, false).unwrap();
            assert_eq!(apply(&records), expected);
            assert_eq!(report, rep(2, g.len() as u64));
            assert_eq!(fs::read(&path).unwrap(), valid);
        }
    }

    #[test]
    fn header_mismatch_and_torn_header() {
        let (_dir, path) = tmp();
        fs::write(&path, b"0.0.2\x00\x02\x00\x00").unwrap();
        let err = FileLog::open(&path, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"File version mismatch (got "0.0.2", expected "0.0.1")"#
        );
        assert!(matches!(err, StoreError::VersionMismatch { got, .. } if got == "0.0.2"));
        assert_eq!(fs::read(&path).unwrap(), b"0.0.2\x00\x02\x00\x00"); // left untouched
        fs::write(&path, b"0.0").unwrap();
        let (_, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(report, rep(0, 3));
        assert!(records.is_empty());
        assert_eq!(fs::read(&path).unwrap(), HEADER);
    }

    fn assert_one_record(path: &Path) {
        let data = fs::read(path).unwrap();
        let (records, good) = parse_records(&data[HEADER.len()..]);
        assert_eq!((records.len(), good), (1, data.len() - HEADER.len()));
    }

    #[test]
    fn squash() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(5, 8, "s");
        let (mut log, _, _) = FileLog::open(&path, false).unwrap();
        log.append(&refs(&updates[..5])).unwrap();
        drop(log);
        let (mut log, records, report) = FileLog::open(&path, true).unwrap();
        assert_eq!((report.records, records.len()), (5, 5));
        assert_one_record(&path);
        assert_eq!(log.len(), fs::metadata(&path).unwrap().len());
        log.append(&refs(&updates[5..7])).unwrap();
        log.append(&[&updates[7]]).unwrap();
        assert_one_record(&path);
        drop(log);
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(apply(&records), expected);
    }

    #[test]
    fn replace_with_leaves_no_temp_file() {
        let (dir, path) = tmp();
        let (updates, expected) = text_updates(6, 3, "r");
        let (mut log, _, _) = FileLog::open(&path, false).unwrap();
        let (mut other, _, _) = FileLog::open(&path, false).unwrap();
        log.append(&refs(&updates)).unwrap();
        let merged = yrs::merge_updates_v1(&updates).unwrap();
        log.replace_with(&merged).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["doc.y"]);
        let mut want = HEADER.to_vec();
        want.extend(encode_records(&[&merged]));
        assert_eq!(fs::read(&path).unwrap(), want);
        // Both append handles, ours and another log's, follow the new file.
        let (more, _) = text_updates(7, 2, "z");
        log.append(&[&more[0]]).unwrap();
        other.append(&[&more[1]]).unwrap();
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(records.len(), 3);
        assert!(apply(&records).contains(&expected));
    }

    #[test]
    fn two_logs_two_threads() {
        let (_dir, path) = tmp();
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let (mut log, _, _) = FileLog::open(&path, false).unwrap();
                let (updates, s) = text_updates(10 + t, 200, &format!("t{t}-"));
                std::thread::spawn(move || {
                    for u in &updates {
                        log.append(&[u]).unwrap();
                    }
                    s.len()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let (_, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(report, rep(400, 0));
        assert_eq!(apply(&records).len(), total);
    }

    #[test]
    fn squashing_keeps_what_another_log_appended() {
        let (_dir, path) = tmp();
        let (a, _) = text_updates(20, 3, "a");
        let (b, _) = text_updates(21, 3, "b");
        let (mut squashing, _, _) = FileLog::open(&path, true).unwrap();
        let (mut plain, _, _) = FileLog::open(&path, false).unwrap();
        squashing.append(&[&a[0]]).unwrap();
        plain.append(&[&b[0]]).unwrap();
        squashing.append(&[&a[1]]).unwrap();
        plain.append(&[&b[1]]).unwrap();
        let (mut other, _, _) = FileLog::open(&path, true).unwrap();
        other.append(&[&b[2]]).unwrap();
        squashing.append(&[&a[2]]).unwrap();
        assert_one_record(&path);
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        let text = apply(&records);
        for i in 0..3 {
            assert!(text.contains(&format!("a{i},")), "{text}");
            assert!(text.contains(&format!("b{i},")), "{text}");
        }
        assert_eq!(varuint_len(300), 2);
        assert_eq!(varuint_len(127), 1);
    }
}
