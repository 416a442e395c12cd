//! Append-only update log: the on-disk persistence of one document, byte-compatible with the
//! Python `wire-file` 0.7.1 format.
//!
//! A file is the header `b"0.0.1\0"` followed by records; each record is a lib0 var-length
//! buffer holding one yrs v1 update, followed inside the buffer by a checksum trailer that the
//! original ignores (see [`crate::record`]).
//!
//! This module must never lose a record that was completely written: it only ever cuts a torn
//! or garbage *tail*, skips (and rewrites away) a hole that checksummed records follow, never
//! writes a record in more than one piece, undoes a write that failed halfway, never replaces
//! the file other than atomically (temp file, fsync, rename, directory fsync), never fsyncs
//! again as if nothing happened after an fsync failed, and never panics on what it reads from
//! disk. Everything here is blocking `std::fs` code: run it on a blocking thread.
//!
//! A replacement is written in [`TEMP_DIR`], a directory beside the log that no room file can
//! be named (see [`TEMP_DIR`]), under a short name of its own (`<pid>-<n>.tmp`), so that it
//! neither depends on the log's name length nor can be mistaken for another file: the cleanup
//! of a killed replacement's file only ever looks in there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use yrs::updates::encoder::Encode;
use yrs::Update;

use crate::guard::{self, GuardLimits};
pub use crate::record::encode_records;
use crate::record::{is_valid_update, parse_records, record_len};

pub const FILE_VERSION: &str = "0.0.1";
/// `FILE_VERSION` then NUL (checked against `FILE_VERSION` by a test).
const HEADER: &[u8] = b"0.0.1\0";

/// The directory, beside a log, where its replacements are written before their rename. Its
/// name starts with `.`, which no room file's name does (`persist::room_file_name` escapes a
/// leading `.`), and a room file's name never holds `/`: no room file is ever in it or named
/// like it. It exists only while a replacement is being written (it is removed once empty, so
/// that a directory of logs holds nothing else between replacements, as with the original).
pub const TEMP_DIR: &str = ".wiredb-tmp";
/// The longest name of a temporary file in [`TEMP_DIR`]: `<pid>-<n>.tmp` (u32, u64).
const TEMP_NAME_MAX: usize = 10 + 1 + 20 + 4;
/// Linux's PATH_MAX, NUL included: the longest path a system call takes is one byte less.
const PATH_MAX: usize = 4096;
/// The file name limit assumed when the filesystem does not say (most allow 255 bytes).
const DEFAULT_NAME_MAX: usize = 255;

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
    #[error("an fsync of {} failed: the file must be rewritten before it is written or synced again", path.display())]
    NeedsRewrite { path: PathBuf },
    #[error("cannot store {}: its {what} is {len} bytes, longer than the {limit} bytes the filesystem allows", path.display())]
    NameTooLong {
        path: PathBuf,
        /// "file name" or "path" (or that of its temporary file).
        what: &'static str,
        len: usize,
        limit: usize,
    },
}

impl StoreError {
    /// The errno this error stands for, if one does (ENAMETOOLONG for a name too long).
    pub fn errno(&self) -> Option<i32> {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error(),
            StoreError::NameTooLong { .. } => Some(libc::ENAMETOOLONG),
            _ => None,
        }
    }
}

/// What `FileLog::open` found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Complete records read (before any squash).
    pub records: usize,
    /// Bytes that held no good record: a torn or garbage tail (cut off), holes (rewritten
    /// away), a torn header (rewritten).
    pub torn_bytes: u64,
    /// Records whose checksum trailer held (the others are legacy records, without one).
    pub checked: usize,
    /// Holes between good records (each a record torn while another writer appended).
    pub holes: usize,
}

/// An open update log. Not `Clone`: one value per open file handle.
#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    /// Opened read + O_APPEND, so every write lands at the current end of file. `None` while
    /// a log opened with [`FileLog::open_lazy`] has not written its first record.
    file: Option<File>,
    len: u64,
    /// `Some(merged update)` iff opened with squash: the whole content, kept in memory so that
    /// squashing on append does not re-read the file.
    squashed: Option<Vec<u8>>,
    /// An fsync failed (or a failed write could not be undone): what the file holds since the
    /// last good fsync is unknown (Linux may have dropped the dirty pages and will not report
    /// it again), so the log refuses to append or fsync until [`FileLog::rewrite`] succeeded.
    needs_rewrite: bool,
}

impl FileLog {
    /// Opens or creates the log and returns it with the update of every good record.
    ///
    /// A torn or garbage tail is truncated away (with a warning); a hole followed by
    /// checksummed records is skipped and the file rewritten without it; a torn header is
    /// rewritten; another version is `StoreError::VersionMismatch`. With `squash`, a log of
    /// more than one record is then replaced atomically by header + one record holding the
    /// state of a document that applied them (so is a single record that this makes smaller);
    /// the returned records are still the ones read.
    pub fn open(
        path: impl AsRef<Path>,
        squash: bool,
    ) -> Result<(FileLog, Vec<Vec<u8>>, LoadReport), StoreError> {
        Self::open_with(path.as_ref(), squash, true)
    }

    /// [`FileLog::open`], except that a missing file is not created until the first record
    /// is written: a log that never writes leaves nothing on disk. What opening can check
    /// without creating the file is checked now (the names' lengths, the directory exists and
    /// is writable), so a path that could never be written is refused here, not at the first
    /// write.
    pub fn open_lazy(
        path: impl AsRef<Path>,
        squash: bool,
    ) -> Result<(FileLog, Vec<Vec<u8>>, LoadReport), StoreError> {
        Self::open_with(path.as_ref(), squash, false)
    }

    fn open_with(
        path: &Path,
        squash: bool,
        create: bool,
    ) -> Result<(FileLog, Vec<Vec<u8>>, LoadReport), StoreError> {
        let path = path.to_path_buf();
        check_names(&path)?;
        remove_stale_temp_files(&path);
        let found = match open_locked(&path, false)? {
            None if create => Some(create_and_open(&path)?),
            found => found,
        };
        let Some((file, loaded)) = found else {
            check_writable_dir(&path)?;
            let log = FileLog {
                path,
                file: None,
                len: 0,
                squashed: squash.then(|| Update::new().encode_v1()),
                needs_rewrite: false,
            };
            return Ok((log, Vec::new(), LoadReport::default()));
        };
        let Loaded {
            replacement,
            records,
            len,
            report,
        } = loaded;
        if report.torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = report.torn_bytes,
                holes = report.holes,
                "cut torn or garbage bytes from update log"
            );
        }
        let mut log = FileLog {
            path,
            file: Some(replacement.unwrap_or(file)),
            len,
            squashed: None,
            needs_rewrite: false,
        };
        if squash {
            let merged = match records.as_slice() {
                [] => Update::new().encode_v1(),
                many => {
                    let merged = squash_updates(&log.path, many.iter().map(Vec::as_slice))?;
                    match many {
                        // One record is rewritten only if that makes it smaller: a file this
                        // squashed is left alone by the next open.
                        [one] if merged.len() >= one.len() => one.clone(),
                        _ => {
                            log.replace_with(&merged)?;
                            merged
                        }
                    }
                }
            };
            log.squashed = Some(merged);
        }
        Ok((log, records, report))
    }

    /// Makes sure the file exists: a lazy log creates it now, as [`FileLog::open`] creates a
    /// new file (see [`create_log`]).
    fn ensure_file(&mut self) -> Result<(), StoreError> {
        if self.file.is_some() {
            return Ok(());
        }
        let (file, loaded) = create_and_open(&self.path)?;
        // Another log may have created it meanwhile and written records: a squashing log
        // then re-reads them (an unknown length), to merge them in.
        self.len = if self.squashed.is_some() && !loaded.records.is_empty() {
            u64::MAX
        } else {
            loaded.len
        };
        self.file = Some(loaded.replacement.unwrap_or(file));
        Ok(())
    }

    /// The append handle (the caller made sure the file exists).
    fn handle(&self) -> Result<&File, StoreError> {
        self.file
            .as_ref()
            .ok_or_else(|| self.io(io::Error::from(io::ErrorKind::NotFound)))
    }

    /// Appends `updates` as records in one write (or, for a squashing log, merges them into
    /// the content and replaces the file). Each update must be a valid v1 update: a bad
    /// record would make open cut it and every record after it, so it is refused up front.
    /// A write that fails halfway is undone (the file is cut back to where it was), so that
    /// later records never sit behind a torn one.
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
        if self.needs_rewrite {
            return Err(StoreError::NeedsRewrite {
                path: self.path.clone(),
            });
        }
        self.ensure_file()?;
        if self.squashed.is_some() {
            return self.replace_merged(updates);
        }
        let buf = encode_records(updates);
        loop {
            let file = self.handle()?;
            let lock = Flock::exclusive(file);
            if !self.replaced_on_disk() {
                let start = file.metadata().map_err(|e| self.io(e))?.len();
                // One write of whole records, on O_APPEND, under the lock: no interleaving.
                let written = write_all(file, &buf, &self.path);
                let undo = written
                    .as_ref()
                    .err()
                    .and_then(|_| file.set_len(start).err());
                drop(lock);
                if let Err(error) = written {
                    if let Some(undo) = undo {
                        tracing::error!(path = %self.path.display(), %undo, "cannot undo a failed write");
                        self.needs_rewrite = true;
                    }
                    return Err(self.io(error));
                }
                self.len = start + buf.len() as u64;
                return Ok(());
            }
            // Another FileLog renamed a new file over the path: write to that one instead
            // of the unlinked inode.
            drop(lock);
            self.file = Some(open_append(&self.path, false).map_err(|e| self.io(e))?);
        }
    }

    /// fsyncs the file's data. After a failure the log needs a [`FileLog::rewrite`]: a
    /// second fsync could succeed without the lost pages ever reaching the disk, so it is
    /// never tried.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.needs_rewrite {
            return Err(StoreError::NeedsRewrite {
                path: self.path.clone(),
            });
        }
        // A lazy log that wrote nothing has nothing to make durable.
        let Some(file) = &self.file else {
            return Ok(());
        };
        sync_file(file, &self.path, false).map_err(|e| {
            self.needs_rewrite = true;
            self.io(e)
        })
    }

    /// True after an fsync failed, until a [`FileLog::rewrite`] succeeds.
    pub fn needs_rewrite(&self) -> bool {
        self.needs_rewrite
    }

    /// Atomically replaces the file by one record merging `state` (the whole document, as
    /// the caller holds it in memory) with every good record the file holds now (so another
    /// log's appends are kept); the new file is fsynced before it is renamed over the path.
    /// Clears [`FileLog::needs_rewrite`] once it succeeded.
    pub fn rewrite(&mut self, state: &[u8]) -> Result<(), StoreError> {
        self.ensure_file()?;
        // An unknown length forces a re-read of the file under the lock.
        self.len = u64::MAX;
        self.replace_merged(&[state])?;
        self.needs_rewrite = false;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current file size as known to this handle (header included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True once the file exists (always, unless opened with [`FileLog::open_lazy`] and
    /// nothing was written yet).
    pub fn exists(&self) -> bool {
        self.file.is_some()
    }

    /// True when the file holds no record, only the header (or does not exist yet).
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
    /// `TEMP_DIR/<pid>-<n>.tmp` beside it, fsyncs it, renames it over the path, fsyncs the
    /// directory, then reopens the append handle on the new file.
    pub fn replace_with(&mut self, update: &[u8]) -> Result<(), StoreError> {
        self.ensure_file()?;
        let replaced = {
            // Keeps other logs' appends from landing in the old inode during the swap.
            let _lock = Flock::exclusive(self.handle()?);
            self.write_replacement(update)
        };
        let file = self.after_replace(replaced)?;
        self.install(file, update);
        Ok(())
    }

    /// The file's content merged with `updates` replaces the file. The content is re-read
    /// when another log changed the file since our last look, so that its records are merged
    /// in rather than dropped.
    fn replace_merged(&mut self, updates: &[&[u8]]) -> Result<(), StoreError> {
        loop {
            match self.replace_merged_locked(updates) {
                Ok(Some((file, merged))) => {
                    self.install(file, &merged);
                    return Ok(());
                }
                // Another log renamed a new file over the path: merge with that one.
                Ok(None) => {
                    self.file = Some(open_append(&self.path, false).map_err(|e| self.io(e))?);
                    self.len = u64::MAX;
                }
                Err(failed) => {
                    self.after_replace(Err(failed))?;
                }
            }
        }
    }

    /// One try of [`FileLog::replace_merged`] under the lock; `None` if the path was replaced.
    fn replace_merged_locked(
        &self,
        updates: &[&[u8]],
    ) -> Result<Option<(File, Vec<u8>)>, ReplaceError> {
        let file = self.handle().map_err(|e| (e, false))?;
        let _lock = Flock::exclusive(file);
        if self.replaced_on_disk() {
            return Ok(None);
        }
        let disk_len = file.metadata().map_err(|e| (self.io(e), false))?.len();
        let reread;
        let base: Vec<&[u8]> = match &self.squashed {
            Some(merged) if disk_len == self.len => vec![merged.as_slice()],
            _ => {
                reread = self.read_records().map_err(|e| (e, false))?;
                reread.iter().map(Vec::as_slice).collect()
            }
        };
        let all = base.into_iter().chain(updates.iter().copied());
        let merged = squash_updates(&self.path, all).map_err(|e| (e, false))?;
        let file = self.write_replacement(&merged)?;
        Ok(Some((file, merged)))
    }

    /// Every good record of the file our handle is open on (the caller holds the lock).
    fn read_records(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut data = Vec::new();
        let mut file = self.handle()?;
        file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        file.read_to_end(&mut data).map_err(|e| self.io(e))?;
        let body = data.get(HEADER.len()..).unwrap_or_default();
        Ok(parse_records(body).records)
    }

    /// Writes header + `update` to a temporary file and renames it over the path (the caller
    /// holds the lock); returns an append handle on the new file, or the error and whether
    /// the rename was done.
    fn write_replacement(&self, update: &[u8]) -> Result<File, ReplaceError> {
        replace_file(&self.path, &encode_records(&[update]))
            .map_err(|(error, renamed)| (self.io(error), renamed))
    }

    /// A failure after the rename leaves the log needing a rewrite: the new name may not be
    /// durable.
    fn after_replace(&mut self, replaced: Result<File, ReplaceError>) -> Result<File, StoreError> {
        replaced.map_err(|(error, renamed)| {
            self.needs_rewrite |= renamed;
            error
        })
    }

    fn install(&mut self, file: File, update: &[u8]) {
        self.file = Some(file);
        self.len = (HEADER.len() + record_len(update.len())) as u64;
        if self.squashed.is_some() {
            self.squashed = Some(update.to_vec());
        }
    }

    /// True if the path now names another file than our handle (renamed over by a replace).
    fn replaced_on_disk(&self) -> bool {
        self.file
            .as_ref()
            .is_some_and(|file| is_replaced(&self.path, file))
    }
}

/// A replacement that failed: the error, and whether the rename over the log was done.
type ReplaceError = (StoreError, bool);

/// What [`load_locked`] read.
struct Loaded {
    /// A handle on the new file, if holes were rewritten away.
    replacement: Option<File>,
    records: Vec<Vec<u8>>,
    len: u64,
    report: LoadReport,
}

/// Opens the log at `path` (creating it if `create`; else `None` if it does not exist), then
/// reads, checks and repairs it under its lock; retries if another log renamed a new file over
/// the path meanwhile.
fn open_locked(path: &Path, create: bool) -> Result<Option<(File, Loaded)>, StoreError> {
    loop {
        let file = match open_append(path, create) {
            Ok(file) => file,
            Err(error) if !create && error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let loaded = {
            // Held while reading and cutting, so a concurrent appender's record is never
            // mistaken for a torn tail and a concurrent creator's header never doubled.
            let _lock = Flock::exclusive(&file);
            if is_replaced(path, &file) {
                None
            } else {
                Some(load_locked(path, &file)?)
            }
        };
        if let Some(loaded) = loaded {
            return Ok(Some((file, loaded)));
        }
    }
}

/// Creates the log at `path` (unless another log just did) and opens it: see [`create_log`].
fn create_and_open(path: &Path) -> Result<(File, Loaded), StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    match create_log(path) {
        Ok(()) => {}
        // A filesystem without hard links: created by `open_locked` below instead, empty
        // for the moment its header takes to write.
        Err(error)
            if matches!(
                error.raw_os_error(),
                Some(libc::EPERM | libc::ENOTSUP | libc::EMLINK | libc::ENOSYS)
            ) => {}
        Err(error) => return Err(io_err(error)),
    }
    open_locked(path, true)?.ok_or_else(|| io_err(io::Error::from(io::ErrorKind::NotFound)))
}

/// Creates a log holding only the header, atomically, so that nobody (another process, the
/// original's reader, a backup) ever sees it empty: the header is written to a temporary file
/// in [`TEMP_DIR`], fsynced, and hard-linked to `path` (which fails if another log created
/// it meanwhile: theirs is kept), then the directory is fsynced.
fn create_log(path: &Path) -> io::Result<()> {
    let (dir, tmp) = temp_path(path);
    let created = (|| {
        let f = create_temp(&dir, &tmp)?;
        write_all(&f, HEADER, path)?;
        sync_file(&f, path, true)?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => sync_dir(path),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    })();
    // Linked or not, the temporary name goes (a killed process's goes at the next open: it
    // is at most a second link to the log).
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_dir(&dir);
    created
}

/// Refuses, before any I/O, a log whose file name, path, or temporary file's path is longer
/// than the filesystem takes: such a log could be read but never written, or never squashed.
fn check_names(path: &Path) -> Result<(), StoreError> {
    let too_long = |what, len, limit| StoreError::NameTooLong {
        path: path.to_path_buf(),
        what,
        len,
        limit,
    };
    let name = path.file_name().map_or(0, |n| n.len());
    let name_max = name_max(&parent_dir(path));
    if name > name_max {
        return Err(too_long("file name", name, name_max));
    }
    let longest = path.as_os_str().len();
    if longest >= PATH_MAX {
        return Err(too_long("path", longest, PATH_MAX - 1));
    }
    let temp = temp_dir(path).as_os_str().len() + 1 + TEMP_NAME_MAX;
    if temp >= PATH_MAX {
        return Err(too_long("temporary file's path", temp, PATH_MAX - 1));
    }
    Ok(())
}

/// The longest file name the filesystem of `dir` takes (`statvfs`'s `f_namemax`).
fn name_max(dir: &Path) -> usize {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(dir) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
            // SAFETY: a zeroed statvfs is a valid out-parameter; `dir` is NUL-terminated.
            let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(dir.as_ptr(), &mut stat) } == 0 && stat.f_namemax > 0 {
                return usize::try_from(stat.f_namemax).unwrap_or(DEFAULT_NAME_MAX);
            }
        }
    }
    let _ = dir;
    DEFAULT_NAME_MAX
}

/// What creating the file at the first write needs: its directory exists and we may create
/// files in it (checked at open, so that a lazy log fails where an eager one would).
fn check_writable_dir(path: &Path) -> Result<(), StoreError> {
    let dir = parent_dir(path);
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(&dir).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(io_err(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: `c_dir` is NUL-terminated; faccessat only reads it.
        let allowed = unsafe {
            libc::faccessat(
                libc::AT_FDCWD,
                c_dir.as_ptr(),
                libc::W_OK | libc::X_OK,
                libc::AT_EACCESS,
            )
        } == 0;
        if !allowed {
            let error = io::Error::last_os_error();
            // A libc or kernel without AT_EACCESS cannot tell: the first write will.
            if !matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
                return Err(io_err(error));
            }
        }
    }
    Ok(())
}

/// The directory of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where the replacements of the log at `path` are written (see [`TEMP_DIR`]).
fn temp_dir(path: &Path) -> PathBuf {
    parent_dir(path).join(TEMP_DIR)
}

/// Reads, checks and repairs a log under its lock.
fn load_locked(path: &Path, file: &File) -> Result<Loaded, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut data = Vec::new();
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(io_err)?;
    reader.read_to_end(&mut data).map_err(io_err)?;
    let mut report = LoadReport::default();
    if !data.starts_with(HEADER) {
        if data.len() < HEADER.len() && HEADER.starts_with(&data) {
            // New file, or a crash while creating it: (re)write the header.
            report.torn_bytes = data.len() as u64;
            file.set_len(0).map_err(io_err)?;
            write_all(file, HEADER, path).map_err(io_err)?;
            sync_file(file, path, true).map_err(io_err)?;
            sync_dir(path).map_err(io_err)?;
            data = HEADER.to_vec();
        } else {
            let head = &data[..data.len().min(64)];
            let version = head
                .iter()
                .position(|&b| b == 0)
                .map_or(head, |i| &head[..i]);
            let got = String::from_utf8_lossy(version).into_owned();
            return Err(StoreError::VersionMismatch {
                path: path.to_path_buf(),
                got,
            });
        }
    }
    let body = &data[HEADER.len()..];
    let parsed = parse_records(body);
    report.records = parsed.records.len();
    report.checked = parsed.checked;
    report.holes = parsed.holes.len();
    report.torn_bytes += parsed.bad_bytes(body.len()) as u64;
    if !parsed.holes.is_empty() {
        // Rewrite the good records without the holes, so that the original (which stops at
        // the first bad record) reads them all too.
        let refs: Vec<&[u8]> = parsed.records.iter().map(Vec::as_slice).collect();
        let records = encode_records(&refs);
        match replace_file(path, &records) {
            Ok(new_file) => {
                let len = (HEADER.len() + records.len()) as u64;
                return Ok(Loaded {
                    replacement: Some(new_file),
                    records: parsed.records,
                    len,
                    report,
                });
            }
            // We read around the holes anyway: go on with the file as it is.
            Err((error, _)) => {
                tracing::warn!(path = %path.display(), %error, "cannot rewrite an update log without its holes");
            }
        }
    }
    let good_len = (HEADER.len() + parsed.good_end) as u64;
    if good_len < data.len() as u64 {
        file.set_len(good_len).map_err(io_err)?;
        sync_file(file, path, false).map_err(io_err)?;
    }
    Ok(Loaded {
        replacement: None,
        records: parsed.records,
        len: good_len,
        report,
    })
}

/// Writes header + `body` to `TEMP_DIR/<pid>-<n>.tmp` beside `path`, fsyncs it, renames it
/// over `path`, fsyncs the directory, and opens the new file for appending. On error, also
/// tells whether the rename was done. The temporary directory is removed once empty.
fn replace_file(path: &Path, body: &[u8]) -> Result<File, (io::Error, bool)> {
    let (dir, tmp) = temp_path(path);
    let written = (|| {
        let f = create_temp(&dir, &tmp)?;
        let mut buf = Vec::with_capacity(HEADER.len() + body.len());
        buf.extend_from_slice(HEADER);
        buf.extend_from_slice(body);
        // Faults are planned by the log's path (see `faults`).
        write_all(&f, &buf, path)?;
        sync_file(&f, path, true)?;
        rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_dir(&dir);
        return Err((e, false));
    }
    // The temporary name need not be durable: if a power loss brings it back, it is a second
    // link to the log's inode, and removing it (the next open does) leaves the log whole.
    let synced = sync_dir(path).map_err(|e| (e, true));
    let _ = fs::remove_dir(&dir);
    synced?;
    open_append(path, false).map_err(|e| (e, true))
}

/// A new temporary file's name beside `path`: [`TEMP_DIR`] and `<pid>-<n>.tmp` in it.
fn temp_path(path: &Path) -> (PathBuf, PathBuf) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = temp_dir(path);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{}-{n}.tmp", std::process::id()));
    (dir, tmp)
}

/// Creates `tmp` in `dir`, creating `dir` if needed (again if another log removed it, empty,
/// between our mkdir and our create).
fn create_temp(dir: &Path, tmp: &Path) -> io::Result<File> {
    let mut tries = 0;
    loop {
        match fs::create_dir(dir) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
        match OpenOptions::new().write(true).create_new(true).open(tmp) {
            Err(error) if error.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
            created => return created,
        }
    }
}

/// Removes the temporary files that a replacement killed before its rename left behind: the
/// entries of `TEMP_DIR` (beside `path`) named `<pid>-<n>.tmp` whose process is gone (a live
/// process's are left alone, and nothing else is touched), then the directory if empty.
fn remove_stale_temp_files(path: &Path) {
    let dir = temp_dir(path);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(temp_file_pid) else {
            continue;
        };
        if !process_alive(pid) {
            let stale = entry.path();
            match fs::remove_file(&stale) {
                Ok(()) => tracing::info!(path = %stale.display(), "removed a stale temporary file"),
                Err(error) => {
                    tracing::debug!(path = %stale.display(), %error, "cannot remove a stale temporary file")
                }
            }
        }
    }
    let _ = fs::remove_dir(&dir);
}

/// The process id in a temporary file's name `<pid>-<n>.tmp`, if `name` is exactly one.
fn temp_file_pid(name: &str) -> Option<i32> {
    let (pid, n) = name.strip_suffix(".tmp")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(pid) && digits(n)) {
        return None;
    }
    pid.parse::<i32>().ok().filter(|pid| *pid > 0)
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// What a squash writes: the state of a fresh document that applied `updates` (through
/// [`guard::squash_updates`]), so that every edit's block merges with its neighbours and
/// deleted content is collected, as the original (which applies them to a pycrdt `Doc`)
/// does. Should the guard refuse them (a panic in yrs), the updates are merged as they are
/// instead: nothing is lost, only less compacted.
fn squash_updates<'a>(
    path: &Path,
    updates: impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, StoreError> {
    let updates: Vec<&[u8]> = updates.collect();
    // Records passed the structural scan when read (or written): no size limit on top, a
    // document may be as large as its file.
    let limits = GuardLimits {
        max_update_bytes: usize::MAX,
        ..GuardLimits::default()
    };
    match guard::squash_updates(&updates, &limits) {
        Ok(state) => return Ok(state),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot squash through a document: merging the records instead");
        }
    }
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

/// True if `path` now names another file than `file` (renamed over by a replace).
fn is_replaced(path: &Path, file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (fs::metadata(path), file.metadata()) {
            return (a.dev(), a.ino()) != (b.dev(), b.ino());
        }
    }
    let _ = (path, file);
    false
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

// The three operations whose failures matter, in one place each so that tests can make them
// fail (see `faults`).

fn write_all(file: &File, buf: &[u8], path: &Path) -> io::Result<()> {
    #[cfg(test)]
    if let Some(error) = faults::take(path, faults::Op::Write) {
        // A write that fails halfway, as ENOSPC does.
        (&*file).write_all(&buf[..buf.len() / 2])?;
        return Err(error);
    }
    let _ = path;
    (&*file).write_all(buf)
}

/// fdatasync (`all`: fsync, for a new file whose size and name must be durable too).
fn sync_file(file: &File, path: &Path, all: bool) -> io::Result<()> {
    #[cfg(test)]
    if let Some(error) = faults::take(path, faults::Op::Sync) {
        return Err(error);
    }
    let _ = path;
    if all {
        file.sync_all()
    } else {
        file.sync_data()
    }
}

fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(test)]
    if let Some(error) = faults::take(to, faults::Op::Rename) {
        return Err(error);
    }
    fs::rename(from, to)
}

/// Failures that tests inject into the log's writes, fsyncs and renames, by path prefix (a
/// replacement's temporary file is written and fsynced under its log's path), so that
/// concurrent tests do not meet.
#[cfg(test)]
pub(crate) mod faults {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Op {
        Write,
        Sync,
        Rename,
    }

    struct Fault {
        prefix: PathBuf,
        op: Op,
        times: u32,
        errno: i32,
    }

    static PLAN: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

    /// The next `times` `op`s on files whose path starts with `prefix` fail with `errno`.
    pub fn inject(prefix: &Path, op: Op, times: u32, errno: i32) {
        let mut plan = PLAN.lock().unwrap_or_else(|e| e.into_inner());
        plan.push(Fault {
            prefix: prefix.to_path_buf(),
            op,
            times,
            errno,
        });
    }

    /// Forgets the faults planned under `prefix`.
    pub fn clear(prefix: &Path) {
        let mut plan = PLAN.lock().unwrap_or_else(|e| e.into_inner());
        plan.retain(|f| f.prefix != prefix);
    }

    pub(super) fn take(path: &Path, op: Op) -> Option<io::Error> {
        use std::os::unix::ffi::OsStrExt;
        let mut plan = PLAN.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = path.as_os_str().as_bytes();
        let fault = plan.iter_mut().find(|f| {
            f.op == op && f.times > 0 && bytes.starts_with(f.prefix.as_os_str().as_bytes())
        })?;
        fault.times -= 1;
        Some(io::Error::from_raw_os_error(fault.errno))
    }
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
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact};

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

    fn counts(report: &LoadReport) -> (usize, u64) {
        (report.records, report.torn_bytes)
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
        assert_eq!(counts(&report), (0, 0));
        log.append(&refs(&updates[..2])).unwrap();
        log.append(&refs(&updates[2..])).unwrap();
        log.sync().unwrap();
        assert_eq!(log.len(), fs::metadata(&path).unwrap().len());
        drop(log);
        let (_, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(records, updates);
        assert_eq!(counts(&report), (5, 0));
        assert_eq!(apply(&records), expected);
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(HEADER, format!("{FILE_VERSION}\0").as_bytes());
        let (_dir, path) = tmp();
        let (mut log, _, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"0.0.1\x00");
        let empty = Update::new().encode_v1(); // [0, 0]: the empty update
                                               // A bad update is refused whole, as open would cut it and all after it.
        let err = log.append(&[&empty, b"\x03\x05"]).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUpdate { index: 1, .. }));
        assert_eq!(fs::read(&path).unwrap(), HEADER);
        log.append(&[&empty, &empty]).unwrap();
        let crc = crate::record::crc32c(&empty).to_le_bytes();
        let record = [&[7u8, 0, 0, crate::record::TRAILER_MAGIC][..], &crc[..]].concat();
        assert_eq!(
            fs::read(&path).unwrap(),
            [HEADER, &record[..], &record[..]].concat()
        );
        let long = vec![7u8; 300];
        let enc = encode_records(&[&long]);
        assert_eq!(&enc[..2], &[0xb1, 0x02]); // 305 = 0x31 | 0x02 << 7
        assert_eq!(&enc[2..302], &long[..]);
        assert_eq!(crate::record::read_var_uint(&enc), Some((305, 2)));
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
            assert_eq!(counts(&report), (3, 0));
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
            assert_eq!(counts(&report), (2, g.len() as u64));
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
        assert_eq!(counts(&report), (0, 3));
        assert!(records.is_empty());
        assert_eq!(fs::read(&path).unwrap(), HEADER);
    }

    fn assert_one_record(path: &Path) {
        let data = fs::read(path).unwrap();
        let parsed = parse_records(&data[HEADER.len()..]);
        assert_eq!(
            (parsed.records.len(), parsed.good_end, parsed.checked),
            (1, data.len() - HEADER.len(), 1)
        );
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
        assert_eq!(counts(&report), (400, 0));
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
    }

    #[test]
    fn a_write_that_fails_halfway_is_undone() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(30, 3, &"w".repeat(100));
        let (mut log, _, _) = FileLog::open(&path, false).unwrap();
        log.append(&[&updates[0]]).unwrap();
        let before = fs::read(&path).unwrap();
        faults::inject(&path, faults::Op::Write, 1, libc::ENOSPC);
        let err = log.append(&[&updates[1]]).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
        );
        assert_eq!(fs::read(&path).unwrap(), before, "the half record was cut");
        assert!(
            !log.needs_rewrite(),
            "a failed write does not taint what was written"
        );
        log.append(&refs(&updates[1..])).unwrap();
        log.sync().unwrap();
        let (_, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(counts(&report), (3, 0));
        assert_eq!(apply(&records), expected);
    }

    #[test]
    fn after_a_failed_fsync_the_log_is_rewritten_never_fsynced_again() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(31, 4, "f");
        let (mut log, _, _) = FileLog::open(&path, false).unwrap();
        let (mut other, _, _) = FileLog::open(&path, false).unwrap();
        let (theirs, their_text) = text_updates(32, 1, "other");
        log.append(&refs(&updates[..2])).unwrap();
        other.append(&[&theirs[0]]).unwrap();
        faults::inject(&path, faults::Op::Sync, 1, libc::EIO);
        assert!(log.sync().is_err());
        assert!(log.needs_rewrite());
        // Neither another fsync nor an append is tried, even though the fault is gone.
        assert!(matches!(log.sync(), Err(StoreError::NeedsRewrite { .. })));
        assert!(matches!(
            log.append(&[&updates[2]]),
            Err(StoreError::NeedsRewrite { .. })
        ));
        // A rewrite whose own fsync fails leaves the old file and the need.
        faults::inject(&path, faults::Op::Sync, 1, libc::EIO);
        let inode = fs::metadata(&path).unwrap();
        assert!(log
            .rewrite(&yrs::merge_updates_v1(&updates[..3]).unwrap())
            .is_err());
        assert!(log.needs_rewrite());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode.ino());
        // The document as held in memory: everything, the update the failed append refused too.
        log.rewrite(&yrs::merge_updates_v1(&updates[..3]).unwrap())
            .unwrap();
        assert!(!log.needs_rewrite());
        assert_one_record(&path);
        log.append(&[&updates[3]]).unwrap();
        log.sync().unwrap();
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        let text = apply(&records);
        assert!(text.contains(&expected), "{text}");
        assert!(
            text.contains(&their_text),
            "another log's record is kept: {text}"
        );
        faults::clear(&path);
    }

    #[test]
    fn a_failed_rename_leaves_the_old_file() {
        let (dir, path) = tmp();
        let (updates, expected) = text_updates(33, 3, "n");
        let (mut log, _, _) = FileLog::open(&path, true).unwrap();
        log.append(&refs(&updates[..2])).unwrap();
        let before = fs::read(&path).unwrap();
        faults::inject(&path, faults::Op::Rename, 1, libc::EIO);
        assert!(log.append(&[&updates[2]]).is_err());
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(!log.needs_rewrite(), "nothing was renamed");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temporary file is removed");
        log.append(&[&updates[2]]).unwrap();
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(apply(&records), expected);
    }

    #[test]
    fn a_hole_is_skipped_and_rewritten_away() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(34, 4, "h");
        let torn = encode_records(&[&updates[1]]);
        let mut data = HEADER.to_vec();
        data.extend(encode_records(&[&updates[0]]));
        data.extend_from_slice(&torn[..torn.len() - 3]);
        data.extend(encode_records(&refs(&updates[2..])));
        fs::write(&path, &data).unwrap();
        let (_, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(
            records,
            [updates[0].clone(), updates[2].clone(), updates[3].clone()]
        );
        assert_eq!(report.holes, 1);
        assert_eq!(report.torn_bytes, torn.len() as u64 - 3);
        let mut want = HEADER.to_vec();
        want.extend(encode_records(&[&updates[0], &updates[2], &updates[3]]));
        assert_eq!(fs::read(&path).unwrap(), want, "rewritten without the hole");
        let (_, again, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(
            (&again, report.torn_bytes, report.checked),
            (&records, 0, 3)
        );
        // (Updates 2 and 3 build on the torn one, so yrs keeps them pending: only h0 shows.)
        assert_eq!(apply(&again), "h0,");
        assert!(expected.starts_with("h0,h1,"));
    }

    #[test]
    fn legacy_files_load_and_get_checksummed_records_appended() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(35, 4, "l");
        let mut data = HEADER.to_vec();
        data.extend(crate::record::encode_legacy_records(&refs(&updates[..2])));
        fs::write(&path, &data).unwrap();
        let (mut log, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(records, updates[..2]);
        assert_eq!((report.checked, report.torn_bytes), (0, 0));
        log.append(&[&updates[2]]).unwrap();
        drop(log);
        // What the original appends next has no trailer: still read.
        let mut data = fs::read(&path).unwrap();
        data.extend(crate::record::encode_legacy_records(&[&updates[3]]));
        fs::write(&path, &data).unwrap();
        let (_, records, report) = FileLog::open(&path, false).unwrap();
        assert_eq!(
            (report.records, report.checked, report.torn_bytes),
            (4, 1, 0)
        );
        assert_eq!(apply(&records), expected);
    }

    #[test]
    fn a_log_opened_while_another_replaces_the_file_reads_the_new_one() {
        let (_dir, path) = tmp();
        let (updates, expected) = text_updates(36, 3, "o");
        let (mut squashing, _, _) = FileLog::open(&path, true).unwrap();
        squashing.append(&refs(&updates)).unwrap();
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(apply(&records), expected);
    }

    /// A log file holding `updates` (header, then one checksummed record each).
    fn write_log(path: &Path, updates: &[Vec<u8>]) -> Vec<u8> {
        let data = [HEADER, &encode_records(&refs(updates))[..]].concat();
        fs::write(path, &data).unwrap();
        data
    }

    #[test]
    fn opening_a_log_touches_no_other_file() {
        let dir = tempfile::tempdir().unwrap();
        let dead = i32::MAX;
        assert!(!process_alive(dead));
        let live = std::process::id();
        // Every name 0.8.0's cleanup took for a killed squash's file of room `notes`, when
        // run by any open of `notes`: room files, and names no room has.
        let others = [
            crate::persist::room_file_name(&format!("notes_updates.y.tmp-{dead}-0")).unwrap(),
            crate::persist::room_file_name(&format!("notes_updates.y.tmp-{dead}-0-1")).unwrap(),
            format!("notes_updates.y.tmp-{dead}-0"),
            format!("{dead}-0.tmp"),
        ];
        let (updates, _) = text_updates(40, 2, "other");
        let mut kept = Vec::new();
        for name in &others {
            kept.push((
                dir.path().join(name),
                write_log(&dir.path().join(name), &updates),
            ));
        }
        // In the temporary directory, only a dead process's `<pid>-<n>.tmp` goes.
        let temp = dir.path().join(TEMP_DIR);
        fs::create_dir(&temp).unwrap();
        let stale = format!("{dead}-7.tmp");
        let left = [
            format!("{live}-7.tmp"),
            format!("{dead}-7.tmp.keep"),
            format!("{dead}-x.tmp"),
            "notes".to_owned(),
        ];
        for name in left.iter().chain([&stale]) {
            fs::write(temp.join(name), b"?").unwrap();
        }
        let path = dir
            .path()
            .join(crate::persist::room_file_name("notes").unwrap());
        let (mine, _) = text_updates(41, 3, "mine");
        for squash in [false, true] {
            let (mut log, _, _) = FileLog::open(&path, squash).unwrap();
            log.append(&[&mine[0]]).unwrap();
            let (mut lazy, _, _) = FileLog::open_lazy(&path, squash).unwrap();
            lazy.append(&[&mine[1]]).unwrap();
        }
        FileLog::open(&path, true).unwrap();
        for (other, bytes) in &kept {
            assert_eq!(&fs::read(other).unwrap(), bytes, "{}", other.display());
        }
        let mut found: Vec<String> = fs::read_dir(&temp)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        found.sort();
        let mut want = left.to_vec();
        want.sort();
        assert_eq!(found, want, "only the stale temporary file is removed");
    }

    /// Ids whose file names are 240 to 255 bytes: 0.8.0 named a squash's temporary file
    /// `<name>.tmp-<pid>-<n>`, too long for any name over about 240 bytes.
    #[test]
    fn every_name_up_to_the_limit_is_written_squashed_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let suffix = crate::persist::ROOM_FILE_SUFFIX.len();
        for len in [240, 241, 250, 254, 255] {
            let name = crate::persist::room_file_name(&"r".repeat(len - suffix)).unwrap();
            assert_eq!(name.len(), len);
            let path = dir.path().join(&name);
            let (updates, expected) = text_updates(42, 4, "n");
            // Squashed on every write.
            let (mut log, _, _) = FileLog::open(&path, true).unwrap();
            log.append(&[&updates[0]]).unwrap();
            log.append(&refs(&updates[1..])).unwrap();
            drop(log);
            let (_, records, _) = FileLog::open(&path, false).unwrap();
            assert_eq!(
                (records.len(), apply(&records)),
                (1, expected.clone()),
                "{len}"
            );
            // Rewritten after a failed fsync.
            let (mut log, _, _) = FileLog::open(&path, false).unwrap();
            faults::inject(&path, faults::Op::Sync, 1, libc::EIO);
            log.append(&[&updates[0]]).unwrap();
            assert!(log.sync().is_err());
            log.rewrite(&yrs::merge_updates_v1(&updates).unwrap())
                .unwrap();
            faults::clear(&path);
            drop(log);
            // Repaired: a hole rewritten away.
            let torn = encode_records(&[&updates[1]]);
            let mut data = [HEADER, &encode_records(&[&updates[0]])[..]].concat();
            data.extend_from_slice(&torn[..torn.len() - 2]);
            data.extend(encode_records(&refs(&updates[1..])));
            fs::write(&path, &data).unwrap();
            let (_, _, report) = FileLog::open(&path, false).unwrap();
            assert_eq!(report.holes, 1);
            let body = fs::read(&path).unwrap();
            let parsed = parse_records(&body[HEADER.len()..]);
            assert!(parsed.holes.is_empty(), "{len}: the hole is rewritten away");
            assert_eq!(apply(&parsed.records), expected);
        }
        assert!(fs::read_dir(dir.path()).unwrap().all(|e| e
            .unwrap()
            .file_type()
            .unwrap()
            .is_file()));
        // One byte more is refused before anything is created, naming the limit.
        let id = "r".repeat(256 - suffix);
        let error = crate::persist::room_file_name(&id).unwrap_err().to_string();
        assert!(
            error.contains("256 bytes") && error.contains("255"),
            "{error}"
        );
        assert!(error.len() < 200, "the id is not copied whole: {error}");
        let path = dir.path().join("r".repeat(256));
        for lazy in [false, true] {
            let opened = if lazy {
                FileLog::open_lazy(&path, true)
            } else {
                FileLog::open(&path, true)
            };
            let error = opened.unwrap_err();
            assert!(
                matches!(
                    error,
                    StoreError::NameTooLong {
                        len: 256,
                        limit: 255,
                        ..
                    }
                ),
                "{error}"
            );
            assert_eq!(error.errno(), Some(libc::ENAMETOOLONG));
        }
    }

    /// 200 one-character edits, each its own update, as a client sends them.
    fn one_char_edits(n: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
        let doc = Doc::with_client_id(43);
        let text = doc.get_or_insert_text("t");
        let updates = (0..n)
            .map(|i| {
                let mut txn = doc.transact_mut();
                let end = text.len(&txn);
                text.insert(&mut txn, end, if i % 2 == 0 { "a" } else { "b" });
                txn.encode_update_v1()
            })
            .collect();
        let state = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        (updates, state)
    }

    #[test]
    fn a_squash_writes_the_state_of_a_document_that_applied_the_records() {
        let (dir, path) = tmp();
        let (updates, state) = one_char_edits(200);
        let (_, expected) = (0, apply(&updates));
        // What another document re-encodes them to: one block, not 200.
        let fresh = Doc::new();
        fresh
            .transact_mut()
            .apply_update(Update::decode_v1(&yrs::merge_updates_v1(&updates).unwrap()).unwrap())
            .unwrap();
        let reencoded = fresh
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        assert_eq!(reencoded.len(), state.len());
        let want = [HEADER, &encode_records(&[&reencoded])[..]].concat();
        // On open: 200 records.
        write_log(&path, &updates);
        let (_, records, _) = FileLog::open(&path, true).unwrap();
        assert_eq!(records.len(), 200);
        assert_eq!(fs::read(&path).unwrap(), want);
        // One merged record (what 0.8.0 squashed to) shrinks too.
        let merged = yrs::merge_updates_v1(&updates).unwrap();
        assert!(
            merged.len() > 4 * state.len(),
            "{} vs {}",
            merged.len(),
            state.len()
        );
        write_log(&path, &[merged]);
        FileLog::open(&path, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), want);
        // A squashed file is left alone by the next open.
        use std::os::unix::fs::MetadataExt;
        let inode = fs::metadata(&path).unwrap().ino();
        FileLog::open(&path, true).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        // On append: one edit at a time.
        fs::remove_file(&path).unwrap();
        let (mut log, _, _) = FileLog::open(&path, true).unwrap();
        for update in &updates {
            log.append(&[update]).unwrap();
        }
        drop(log);
        assert_eq!(fs::read(&path).unwrap(), want);
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(apply(&records), expected);
        assert!(
            fs::read_dir(dir.path()).unwrap().count() == 1,
            "no temporary left"
        );
    }

    #[test]
    fn a_squash_keeps_records_that_build_on_missing_ones() {
        // Records 2 and 3 build on record 1, which is lost (a hole): a document keeps them
        // pending, and the squash must keep them too.
        let (_dir, path) = tmp();
        let (updates, _) = text_updates(44, 4, "p");
        write_log(
            &path,
            &[updates[0].clone(), updates[2].clone(), updates[3].clone()],
        );
        FileLog::open(&path, true).unwrap();
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(records.len(), 1);
        let mut all = records;
        all.push(updates[1].clone());
        let (_, expected) = text_updates(44, 4, "p");
        assert_eq!(
            apply(&all),
            expected,
            "nothing of records 2 and 3 was dropped"
        );
    }

    #[test]
    fn a_lazy_log_creates_its_file_at_the_first_write_only() {
        let (dir, path) = tmp();
        for squash in [false, true] {
            let (mut log, records, _) = FileLog::open_lazy(&path, squash).unwrap();
            assert!(records.is_empty() && !log.exists() && log.is_empty());
            log.sync().unwrap();
            drop(log);
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "no file");
        }
        let (updates, expected) = text_updates(45, 2, "z");
        let (mut squashing, _, _) = FileLog::open_lazy(&path, true).unwrap();
        let (mut plain, _, _) = FileLog::open_lazy(&path, false).unwrap();
        plain.append(&[&updates[0]]).unwrap();
        // The other log created the file meanwhile: its record is merged in, not dropped.
        squashing.append(&[&updates[1]]).unwrap();
        assert_one_record(&path);
        let (_, records, _) = FileLog::open(&path, false).unwrap();
        assert_eq!(apply(&records), expected);
        // What opening can check without creating anything, it checks.
        let missing = dir.path().join("no/such/dir/doc.y");
        assert!(matches!(
            FileLog::open_lazy(&missing, false),
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound
        ));
    }
}
