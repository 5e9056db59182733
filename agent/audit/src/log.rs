//! The writer: [`AuditLog`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::entry::{self, GENESIS_HEX};
use crate::error::{AuditError, Defect};
use crate::files::{self, LastEntry};
use crate::policy::FsyncPolicy;

/// Default for [`AuditConfig::max_file_bytes`]: 16 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

/// Configuration of an [`AuditLog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The current log file. Rotated files live next to it as `<path>.<N>`.
    pub path: PathBuf,
    /// When appends are fsynced (serde/string form: `"always"`, `"never"`, `"100ms"`, …). Default: always.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Rotate before an append would make the current file larger than this many bytes. A file always holds at
    /// least one entry, so a single oversized entry still gets written. `0` disables rotation.
    /// Default: [`DEFAULT_MAX_FILE_BYTES`].
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// How many rotated files to keep; older ones are deleted at rotation. `0` keeps all. Default: 0.
    #[serde(default)]
    pub keep_files: usize,
}

impl AuditConfig {
    /// A configuration for `path` with the defaults: fsync always, [`DEFAULT_MAX_FILE_BYTES`], keep all files.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), fsync: FsyncPolicy::Always, max_file_bytes: DEFAULT_MAX_FILE_BYTES, keep_files: 0 }
    }
}

/// Acknowledgement of one appended entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry's hash (64 lowercase hex digits).
    pub hash: String,
    /// Whether the entry was fsynced before `append` returned.
    pub durable: bool,
}

/// A torn tail that [`AuditLog::open`] truncated away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset where the torn data started (the file's length after truncation).
    pub offset: u64,
    /// How many bytes were removed.
    pub removed_bytes: u64,
    /// Why the tail was considered torn: [`Defect::TornFinalLine`] (no trailing newline).
    pub reason: Defect,
    /// Where the removed bytes were kept (`<path>.torn-<offset>`): nothing is deleted.
    pub saved_to: Option<PathBuf>,
}

/// A chain [`AuditLog::open_verified`] found broken and set aside before starting a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenChain {
    /// Where verification failed and why (the [`VerifyError`](crate::VerifyError), as text).
    pub error: String,
    /// The directory the chain's files were moved to, byte for byte.
    pub moved_to: PathBuf,
    /// The files moved, in chain order.
    pub files: Vec<PathBuf>,
}

/// What [`AuditLog::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The current file.
    pub path: PathBuf,
    /// The current file did not exist and was created.
    pub created: bool,
    /// Number of rotated files found next to the current file.
    pub rotated_files: usize,
    /// The recovered last sequence number (0 for a new chain).
    pub last_seq: u64,
    /// The recovered last hash (64 zeros for a new chain).
    pub last_hash: String,
    /// A torn last line that was truncated away, if any. Entries in it were never acknowledged as durable
    /// (at most the one being written when the process stopped).
    pub torn_tail: Option<TornTail>,
    /// What [`AuditLog::open_verified`] verified of the chain before opening it.
    pub verified: Option<crate::VerifySummary>,
    /// A broken chain [`AuditLog::open_verified`] set aside; the log then starts a new chain.
    pub broken: Option<BrokenChain>,
}

/// An open, append-only, hash-chained audit log. See the crate documentation.
///
/// One `AuditLog` per path: the log does not lock the file against other writers. Dropping the log does not
/// fsync; call [`AuditLog::sync`] first if pending entries must be durable.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    fsync: FsyncPolicy,
    max_file_bytes: u64,
    keep_files: usize,
    /// Bytes in the current file.
    file_len: u64,
    last_seq: u64,
    last_hash: [u8; 32],
    last_hash_hex: String,
    durable_seq: u64,
    /// When `sync_if_due` last fsynced.
    last_interval_sync: Option<Instant>,
    /// Index for the next rotated file.
    next_rotation: u64,
    poisoned: bool,
}

/// The audit trail is the agent's alone: files 0600 (an existing file is tightened), and a
/// directory it creates 0700.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

fn open_current(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = OpenOptions::new().read(true).append(true).create(true).mode(FILE_MODE).open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Copies the bytes from `offset` to the end of `file` to `<path>.torn-<offset>` (fsynced), so a
/// torn tail is kept when it is cut from the chain. `None` when there is nothing to keep.
fn save_torn(file: &mut File, path: &Path, offset: u64) -> Result<Option<PathBuf>, AuditError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(offset)).map_err(AuditError::io(path))?;
    file.read_to_end(&mut bytes).map_err(AuditError::io(path))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let name = files::file_name(path)?.to_string_lossy().into_owned();
    let mut n = 0u32;
    loop {
        let suffix = if n == 0 { String::new() } else { format!(".{n}") };
        let target = path.with_file_name(format!("{name}.torn-{offset}{suffix}"));
        match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&target) {
            Ok(mut out) => {
                out.write_all(&bytes).and_then(|()| out.sync_all()).map_err(AuditError::io(&target))?;
                files::sync_dir(files::parent_dir(path))?;
                return Ok(Some(target));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(AuditError::Io { path: target, source: e }),
        }
    }
}

/// Moves a broken chain's files, unchanged, into a new directory `<path>.broken-<N>`.
fn set_aside(path: &Path, chain: &[PathBuf]) -> Result<PathBuf, AuditError> {
    use std::os::unix::fs::DirBuilderExt;
    let name = files::file_name(path)?.to_string_lossy().into_owned();
    let mut n = 1u32;
    let dir = loop {
        let dir = path.with_file_name(format!("{name}.broken-{n}"));
        match fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(e) => return Err(AuditError::Io { path: dir, source: e }),
        }
    };
    for file in chain {
        let target = dir.join(files::file_name(file)?);
        fs::rename(file, &target).map_err(AuditError::io(file))?;
    }
    files::sync_dir(&dir)?;
    files::sync_dir(files::parent_dir(path))?;
    Ok(dir)
}

impl AuditLog {
    /// Opens (creating directories and the file as needed) the log at `config.path`.
    ///
    /// Recovers the last seq and hash from the tail of the current file (or, if it holds no entry, from the
    /// newest rotated file). A torn last line -- no trailing newline, as left by a crash mid-write -- is kept in
    /// `<path>.torn-<offset>`, truncated away and reported in [`OpenReport::torn_tail`]. A complete line that does
    /// not parse is never removed: open fails with [`AuditError::Corrupt`]. If the last complete
    /// entry does not verify (its own hash, and its link to the entry before it), open fails with
    /// [`AuditError::Corrupt`] and modifies nothing: the log never silently continues a broken chain.
    /// The current file is fsynced, so everything recovered counts as durable.
    pub fn open(config: AuditConfig) -> Result<(AuditLog, OpenReport), AuditError> {
        let AuditConfig { path, fsync, max_file_bytes, keep_files } = config;
        let dir = files::parent_dir(&path).to_path_buf();
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(&dir).map_err(AuditError::io(&dir))?;
        }
        let rotated = files::list_rotated(&path)?;
        let created = match fs::symlink_metadata(&path) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(AuditError::Io { path, source: e }),
        };
        let mut file = open_current(&path).map_err(AuditError::io(&path))?;
        if created {
            files::sync_dir(&dir)?;
        }

        let tail = files::inspect_tail(&mut file, &path, true)?;
        let mut last = tail.last;
        if last.is_none() {
            // The current file holds no entry (new, or just rotated): continue from the newest rotated file.
            for (_, older) in rotated.iter().rev() {
                let mut f = File::open(older).map_err(AuditError::io(older))?;
                if let Some(entry) = files::inspect_tail(&mut f, older, false)?.last {
                    last = Some(entry);
                    break;
                }
            }
        }
        let torn_tail = match tail.torn {
            Some(t) => {
                let saved_to = save_torn(&mut file, &path, t.offset)?;
                file.set_len(tail.keep_len).map_err(AuditError::io(&path))?;
                Some(TornTail { offset: t.offset, removed_bytes: t.removed_bytes, reason: t.reason, saved_to })
            }
            None => None,
        };
        file.sync_all().map_err(AuditError::io(&path))?;

        let LastEntry { seq, hash, hash_hex } =
            last.unwrap_or(LastEntry { seq: 0, hash: [0u8; 32], hash_hex: GENESIS_HEX.to_owned() });
        let report = OpenReport {
            path: path.clone(),
            created,
            rotated_files: rotated.len(),
            last_seq: seq,
            last_hash: hash_hex.clone(),
            torn_tail,
            verified: None,
            broken: None,
        };
        let log = AuditLog {
            next_rotation: rotated.last().map_or(1, |(n, _)| n.saturating_add(1)),
            path,
            file,
            fsync,
            max_file_bytes,
            keep_files,
            file_len: tail.keep_len,
            last_seq: seq,
            last_hash: hash,
            last_hash_hex: hash_hex,
            durable_seq: seq,
            last_interval_sync: None,
            poisoned: false,
        };
        Ok((log, report))
    }

    /// Verifies the whole chain ([`verify_files_with`](crate::verify_files_with)), then opens it.
    ///
    /// A torn last line of the current file (a crash mid-write) is repaired as [`AuditLog::open`]
    /// does. Any other break is never repaired and never extended: the chain's files are moved,
    /// unchanged, into `<path>.broken-<N>/` (the first free `N`), the break is reported in
    /// [`OpenReport::broken`], and a new chain starts at genesis. Record the break as the new
    /// chain's first entry. An unreadable file is an error, and nothing is moved.
    pub fn open_verified(
        config: AuditConfig,
        options: &crate::VerifyOptions,
    ) -> Result<(AuditLog, OpenReport), AuditError> {
        // A first start: nothing to verify (open creates the directory).
        if !files::parent_dir(&config.path).exists() {
            return AuditLog::open(config);
        }
        let files = files::chain_files(&config.path)?;
        if files.is_empty() {
            return AuditLog::open(config);
        }
        let summary = match crate::verify_files_with(&files, options) {
            Ok(summary) => Some(summary),
            Err(crate::VerifyError::Broken { ref file, reason: Defect::TornFinalLine, .. })
                if files.last() == Some(file) =>
            {
                None
            }
            Err(crate::VerifyError::Io { path, source }) => return Err(AuditError::Io { path, source }),
            Err(broken) => {
                let moved_to = set_aside(&config.path, &files)?;
                let (log, mut report) = AuditLog::open(config)?;
                report.broken = Some(BrokenChain { error: broken.to_string(), moved_to, files });
                return Ok((log, report));
            }
        };
        let (log, mut report) = AuditLog::open(config)?;
        report.verified = summary;
        Ok((log, report))
    }

    /// Appends a signed checkpoint of the last entry (see [`Checkpoint`](crate::Checkpoint)) and
    /// returns its receipt and the checkpoint (to ship off the host).
    pub fn checkpoint(
        &mut self,
        wall_time_ms: u64,
        key: &crate::SigningKey,
    ) -> Result<(Receipt, crate::Checkpoint), AuditError> {
        let checkpoint = crate::Checkpoint::sign(key, self.last_seq, &self.last_hash);
        let payload = serde_json::to_value(&checkpoint)?;
        let receipt = self.append_entry(wall_time_ms, crate::CHECKPOINT_KIND, &payload)?;
        Ok((receipt, checkpoint))
    }

    /// Appends one entry and returns its receipt.
    ///
    /// `wall_time_ms` is the Unix time in milliseconds supplied by the caller (the library reads no clock).
    /// The line is built in memory and written with a single `write_all` on the unbuffered file, so no partial
    /// line is ever left in a user-space buffer. With [`FsyncPolicy::Always`] it is fsynced before returning
    /// (`durable: true`). Rotates first if the line would push the current file past `max_file_bytes`.
    ///
    /// On a failed write the partial line is truncated away; if that is impossible, or an fsync or rotation
    /// fails, the log becomes [`AuditError::Poisoned`] and must be reopened. An entry whose append returned an
    /// error was not acknowledged, though it may still be found in the file after reopening.
    ///
    /// The kind [`CHECKPOINT_KIND`](crate::CHECKPOINT_KIND) is refused
    /// ([`AuditError::ReservedKind`]): checkpoints come only from [`AuditLog::checkpoint`].
    pub fn append(
        &mut self,
        wall_time_ms: u64,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<Receipt, AuditError> {
        if kind == crate::CHECKPOINT_KIND {
            return Err(AuditError::ReservedKind { kind: kind.to_owned() });
        }
        self.append_entry(wall_time_ms, kind, payload)
    }

    fn append_entry(
        &mut self,
        wall_time_ms: u64,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<Receipt, AuditError> {
        self.check_usable()?;
        let seq = self.last_seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;
        let line = entry::build_line(seq, wall_time_ms, kind, payload, &self.last_hash_hex, &self.last_hash)?;
        let line_len = line.bytes.len() as u64;
        if self.max_file_bytes > 0 && self.file_len > 0 && self.file_len.saturating_add(line_len) > self.max_file_bytes
        {
            self.rotate()?;
        }
        if let Err(source) = self.file.write_all(&line.bytes) {
            // Remove whatever part of the line made it, so the next append starts on a line boundary.
            if self.file.set_len(self.file_len).is_err() {
                self.poisoned = true;
            }
            return Err(AuditError::Io { path: self.path.clone(), source });
        }
        self.file_len += line_len;
        self.last_seq = seq;
        self.last_hash = line.hash;
        self.last_hash_hex = line.hash_hex;
        let durable = match self.fsync {
            FsyncPolicy::Always => {
                self.fsync_now()?;
                true
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => false,
        };
        Ok(Receipt { seq, hash: self.last_hash_hex.clone(), durable })
    }

    /// fsyncs now (if anything is pending) and returns the highest durable seq.
    pub fn sync(&mut self) -> Result<u64, AuditError> {
        self.check_usable()?;
        if self.durable_seq < self.last_seq {
            self.fsync_now()?;
        }
        Ok(self.durable_seq)
    }

    /// For [`FsyncPolicy::Interval`]: fsyncs if entries are pending and the interval has passed since this
    /// method last fsynced (the first call with pending entries fsyncs at once). `now` is supplied by the
    /// caller. Returns `Some(durable_seq)` if it fsynced, `None` otherwise (always `None` for other policies).
    pub fn sync_if_due(&mut self, now: Instant) -> Result<Option<u64>, AuditError> {
        self.check_usable()?;
        let FsyncPolicy::Interval(interval) = self.fsync else { return Ok(None) };
        if self.durable_seq == self.last_seq {
            return Ok(None);
        }
        if self.last_interval_sync.is_some_and(|t| now.saturating_duration_since(t) < interval) {
            return Ok(None);
        }
        self.fsync_now()?;
        self.last_interval_sync = Some(now);
        Ok(Some(self.durable_seq))
    }

    /// Sequence number of the last appended entry (0 if the chain is empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Highest sequence number known to be fsynced.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Hash of the last appended entry as 64 lowercase hex digits (64 zeros if the chain is empty).
    pub fn last_hash(&self) -> &str {
        &self.last_hash_hex
    }

    /// The current file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_usable(&self) -> Result<(), AuditError> {
        if self.poisoned { Err(AuditError::Poisoned { path: self.path.clone() }) } else { Ok(()) }
    }

    /// fsync the current file; a failure poisons the log (after a failed fsync the kernel may have dropped
    /// the dirty pages, so what is on disk is unknown).
    fn fsync_now(&mut self) -> Result<(), AuditError> {
        match self.file.sync_data() {
            Ok(()) => {
                self.durable_seq = self.last_seq;
                Ok(())
            }
            Err(source) => {
                self.poisoned = true;
                Err(AuditError::Io { path: self.path.clone(), source })
            }
        }
    }

    /// Retires the current file as `<path>.<N>` and starts a new one, then prunes old rotated files.
    fn rotate(&mut self) -> Result<(), AuditError> {
        if let Err(e) = self.start_new_file() {
            self.poisoned = true;
            return Err(e);
        }
        // The log is consistent again; a pruning failure is reported but does not poison it.
        self.prune()
    }

    fn start_new_file(&mut self) -> Result<(), AuditError> {
        // The retired file must be complete on disk before it is renamed: rotated files are never repaired.
        self.file.sync_all().map_err(AuditError::io(&self.path))?;
        self.durable_seq = self.last_seq;
        let existing = files::list_rotated(&self.path)?;
        let n = existing.last().map_or(self.next_rotation, |(n, _)| self.next_rotation.max(n.saturating_add(1)));
        let target = files::rotated_path(&self.path, n)?;
        fs::rename(&self.path, &target).map_err(AuditError::io(&target))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&self.path)
            .map_err(AuditError::io(&self.path))?;
        files::sync_dir(files::parent_dir(&self.path))?;
        self.file = file;
        self.file_len = 0;
        self.next_rotation = n.saturating_add(1);
        Ok(())
    }

    fn prune(&self) -> Result<(), AuditError> {
        if self.keep_files == 0 {
            return Ok(());
        }
        let rotated = files::list_rotated(&self.path)?;
        let excess = rotated.len().saturating_sub(self.keep_files);
        for (_, old) in rotated.iter().take(excess) {
            fs::remove_file(old).map_err(AuditError::io(old))?;
        }
        if excess > 0 {
            files::sync_dir(files::parent_dir(&self.path))?;
        }
        Ok(())
    }
}
