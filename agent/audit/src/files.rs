//! File-level helpers: rotated-file naming and discovery, tail inspection, directory fsync.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::entry::{self, ParsedLine};
use crate::error::{AuditError, Defect};

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

pub(crate) fn file_name(path: &Path) -> Result<&std::ffi::OsStr, AuditError> {
    path.file_name().ok_or_else(|| AuditError::InvalidPath { path: path.to_path_buf() })
}

/// `<path>.<n>`.
pub(crate) fn rotated_path(path: &Path, n: u64) -> Result<PathBuf, AuditError> {
    let mut name: OsString = file_name(path)?.to_os_string();
    name.push(format!(".{n}"));
    Ok(path.with_file_name(name))
}

/// The rotated files of `path` (`<path>.<N>`, N a positive decimal without leading zeros), sorted by N.
pub(crate) fn list_rotated(path: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let base = file_name(path)?.as_encoded_bytes();
    let dir = parent_dir(path);
    let mut out = Vec::new();
    for dirent in fs::read_dir(dir).map_err(AuditError::io(dir))? {
        let dirent = dirent.map_err(AuditError::io(dir))?;
        let name = dirent.file_name();
        if let Some(n) = rotation_index(base, name.as_encoded_bytes()) {
            out.push((n, path.with_file_name(name)));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// `Some(N)` if `name` is `<base>.<N>`.
fn rotation_index(base: &[u8], name: &[u8]) -> Option<u64> {
    let rest = name.strip_prefix(base)?.strip_prefix(b".")?;
    if rest.is_empty() || rest[0] == b'0' || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Whether `path` is named like a rotated file with index > 1, i.e. what remains after the oldest rotated
/// files were pruned. Only such a file may start a chain at a non-genesis anchor.
pub(crate) fn is_pruned_rotation(path: &Path) -> bool {
    let Some(name) = path.file_name() else { return false };
    let name = name.as_encoded_bytes();
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else { return false };
    rotation_index(&name[..dot], name).is_some_and(|n| n > 1)
}

/// The rotated files of `current`, oldest first, followed by `current` itself if it exists.
///
/// Rotated files are named `<current>.<N>`; a larger `N` is newer. The result is the order
/// [`verify_files`](crate::verify_files) expects.
pub fn chain_files(current: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = list_rotated(current)?.into_iter().map(|(_, p)| p).collect();
    match fs::symlink_metadata(current) {
        Ok(_) => files.push(current.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(AuditError::Io { path: current.to_path_buf(), source: e }),
    }
    Ok(files)
}

/// fsyncs a directory so that a rename or file creation in it is durable (no-op off Unix).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(AuditError::io(dir))?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// 1-based number of the line starting at byte `offset` of `path` (best effort; 0 if unreadable).
pub(crate) fn line_number_at(path: &Path, offset: u64) -> u64 {
    let Ok(file) = File::open(path) else { return 0 };
    let mut reader = file.take(offset);
    let mut buf = [0u8; 64 * 1024];
    let mut newlines = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return newlines + 1,
            Ok(n) => newlines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return 0,
        }
    }
}

/// The last entry of an audit file as recovered from its tail.
#[derive(Debug, Clone)]
pub(crate) struct LastEntry {
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
    pub(crate) hash_hex: String,
}

/// A torn tail found by [`inspect_tail`] (and, if repair was allowed, to be truncated away).
#[derive(Debug, Clone)]
pub(crate) struct TornTailInfo {
    pub(crate) offset: u64,
    pub(crate) removed_bytes: u64,
    pub(crate) reason: Defect,
}

/// Result of [`inspect_tail`].
#[derive(Debug)]
pub(crate) struct Tail {
    /// Length the file should have (== current length unless `torn` is set).
    pub(crate) keep_len: u64,
    pub(crate) torn: Option<TornTailInfo>,
    /// The last complete entry, `None` if the file holds none.
    pub(crate) last: Option<LastEntry>,
}

/// Reads the end of `file` backwards until it holds at least `want_newlines` newlines or the whole file.
/// Returns the file offset of the first returned byte, and the bytes.
fn read_tail(file: &mut File, len: u64, want_newlines: usize) -> io::Result<(u64, Vec<u8>)> {
    const CHUNK: u64 = 16 * 1024;
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() < want_newlines {
        let step = CHUNK.min(start);
        start -= step;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(usize::MAX)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    Ok((start, buf))
}

/// Inspects the tail of an audit file without modifying it.
///
/// With `allow_repair`, one torn tail -- bytes after the last newline -- is
/// reported in [`Tail::torn`] for the caller to truncate. The last remaining entry must be well formed and
/// its hash must verify; if the line before it is also in view, the link between the two (seq and prev) must
/// verify too. Any other damage is [`AuditError::Corrupt`].
pub(crate) fn inspect_tail(file: &mut File, path: &Path, allow_repair: bool) -> Result<Tail, AuditError> {
    let len = file.metadata().map_err(AuditError::io(path))?.len();
    let (base, buf) = read_tail(file, len, 4).map_err(AuditError::io(path))?;
    let corrupt = |offset: u64, reason: Defect| AuditError::Corrupt {
        path: path.to_path_buf(),
        line: line_number_at(path, offset),
        reason,
    };

    // Bytes after the last newline are a torn write.
    let complete_end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let keep_len = base + complete_end as u64;
    let mut torn = None;
    if keep_len < len {
        if !allow_repair {
            return Err(corrupt(keep_len, Defect::TornFinalLine));
        }
        torn = Some(TornTailInfo { offset: keep_len, removed_bytes: len - keep_len, reason: Defect::TornFinalLine });
    }

    // Complete lines in view; when the view does not start at offset 0 its first segment may be partial.
    let mut lines: Vec<(u64, &[u8])> = Vec::new();
    let mut seg_start = 0usize;
    for (i, &b) in buf[..complete_end].iter().enumerate() {
        if b == b'\n' {
            if seg_start > 0 || base == 0 {
                lines.push((base + seg_start as u64, &buf[seg_start..i]));
            }
            seg_start = i + 1;
        }
    }

    // A complete line that does not parse is never cut: it may be an entry in a format this
    // build does not know, or damage an auditor must see.
    let mut parsed_last: Option<ParsedLine> = None;
    if let Some(&(offset, bytes)) = lines.last() {
        match entry::parse_line(bytes) {
            Ok(p) => parsed_last = Some(p),
            Err(detail) => return Err(corrupt(offset, Defect::Unparsable { detail })),
        }
    }

    let Some(&(offset, bytes)) = lines.last() else {
        return Ok(Tail { keep_len, torn, last: None });
    };
    let last = match parsed_last {
        Some(p) => p,
        None => entry::parse_line(bytes).map_err(|detail| corrupt(offset, Defect::Unparsable { detail }))?,
    };
    check_hash(&last).map_err(|d| corrupt(offset, d))?;
    if lines.len() >= 2 {
        let (prev_offset, prev_bytes) = lines[lines.len() - 2];
        let before =
            entry::parse_line(prev_bytes).map_err(|detail| corrupt(prev_offset, Defect::Unparsable { detail }))?;
        check_hash(&before).map_err(|d| corrupt(prev_offset, d))?;
        check_link(&last, before.seq.checked_add(1), &before.hash).map_err(|d| corrupt(offset, d))?;
    }
    Ok(Tail { keep_len, torn, last: Some(LastEntry { seq: last.seq, hash: last.hash, hash_hex: last.hash_hex }) })
}

/// The entry's own hash must verify.
pub(crate) fn check_hash(p: &ParsedLine) -> Result<(), Defect> {
    if p.hash_ok() {
        Ok(())
    } else {
        Err(Defect::HashMismatch { stored: p.hash_hex.clone(), computed: hex::encode(p.computed) })
    }
}

/// The entry must carry the expected seq (`None`: the expected seq overflowed) and link to `prev`.
pub(crate) fn check_link(p: &ParsedLine, expected_seq: Option<u64>, prev: &[u8; 32]) -> Result<(), Defect> {
    match expected_seq {
        Some(expected) if p.seq > expected => return Err(Defect::SeqGap { expected, found: p.seq }),
        Some(expected) if p.seq < expected => return Err(Defect::SeqRepeat { expected, found: p.seq }),
        Some(_) => {}
        None => return Err(Defect::SeqRepeat { expected: u64::MAX, found: p.seq }),
    }
    if &p.prev != prev {
        return Err(Defect::PrevMismatch { expected: hex::encode(prev), found: p.prev_hex.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_names() {
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonl.1"), Some(1));
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonl.12"), Some(12));
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonl"), None);
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonl."), None);
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonl.01"), None);
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonl.0"), None);
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonl.1.tmp"), None);
        assert_eq!(rotation_index(b"audit.jsonl", b"audit.jsonlx.1"), None);
        assert_eq!(rotated_path(Path::new("/x/a.log"), 3).unwrap(), PathBuf::from("/x/a.log.3"));
        assert_eq!(rotated_path(Path::new("a.log"), 1).unwrap(), PathBuf::from("a.log.1"));
        assert!(rotated_path(Path::new("/"), 1).is_err());
        assert!(is_pruned_rotation(Path::new("/x/a.log.2")));
        assert!(!is_pruned_rotation(Path::new("/x/a.log.1")));
        assert!(!is_pruned_rotation(Path::new("/x/a.log")));
        assert!(!is_pruned_rotation(Path::new("/x/a.log.02")));
        assert_eq!(parent_dir(Path::new("a.log")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/x/a.log")), Path::new("/x"));
    }
}
