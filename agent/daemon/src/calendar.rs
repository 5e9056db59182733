//! What survives restarts, in an embedded redb database: the wedding calendar and the learned
//! weekly demand profiles. Also the optional TOML file of weddings loaded at start.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use wedsync_core::engine::pool::Wedding;

/// Weddings by id, as JSON.
const WEDDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("weddings");
/// Learned weekly demand profiles by pool name (postcard, versioned by the core).
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");

/// Why the state database failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory could not be made.
    #[error("storage.dir: cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The database could not be opened, read or written.
    #[error("state database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb (or the encoder) said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database file is damaged: redb failed on it, or stored records cannot be decoded.
    #[error(
        "state database {path} is corrupt ({reason}); move it aside to start with an empty state (stored weddings and learned profiles are lost: re-add weddings from calendar.file or the API), or restore a backup"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
}

/// Runs `f`, turning a panic inside redb (which it raises on some damaged pages) into
/// [`StateError::Corrupt`]: a damaged file must stop the agent with a clear error, not a panic.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "redb panicked".into());
            Err(StateError::Corrupt { path: path.to_owned(), reason })
        }
    }
}

/// The agent's embedded database.
#[derive(Debug)]
pub struct StateDb {
    db: Database,
    path: PathBuf,
}

impl StateDb {
    /// Opens (or creates) `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<StateDb, StateError> {
        {
            use std::os::unix::fs::DirBuilderExt;
            // The state directory is the agent's alone (a directory that exists is left as it is).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StateError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let path = dir.join("state.redb");
        guarded(&path.clone(), move || {
            let db = Database::create(&path).map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
                    StateError::Corrupt { path: path.clone(), reason }
                }
                e => StateError::Database { path: path.clone(), source: e.into() },
            })?;
            {
                use std::os::unix::fs::PermissionsExt;
                // redb creates the file under the umask; the calendar is no one else's to read.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StateError::Database { path: path.clone(), source: e.into() })?;
            }
            let state = StateDb { db, path };
            // Make the tables exist so reads never fail on a fresh database.
            state.write(|_| Ok(()))?;
            let txn = state.db.begin_write().map_err(|e| state.fail(e))?;
            txn.open_table(PROFILES).map_err(|e| state.fail(e))?;
            txn.commit().map_err(|e| state.fail(e))?;
            Ok(state)
        })
    }

    fn fail(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StateError {
        StateError::Database { path: self.path.clone(), source: e.into() }
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(WEDDINGS).map_err(|e| self.fail(e))?;
            f(&mut table).map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Every stored wedding. A record that cannot be decoded is corruption: the error names
    /// every such id (a wedding must never vanish with a warning).
    pub fn weddings(&self) -> Result<Vec<Wedding>, StateError> {
        guarded(&self.path, || {
            let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
            let table = txn.open_table(WEDDINGS).map_err(|e| self.fail(e))?;
            let mut weddings = Vec::new();
            let mut broken = Vec::new();
            for entry in table.iter().map_err(|e| self.fail(e))? {
                let (id, value) = entry.map_err(|e| self.fail(e))?;
                match serde_json::from_slice::<Wedding>(value.value()) {
                    Ok(wedding) => weddings.push(wedding),
                    Err(e) => broken.push(format!("{:?}: {e}", String::from_utf8_lossy(id.value().as_bytes()))),
                }
            }
            if broken.is_empty() {
                Ok(weddings)
            } else {
                Err(StateError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("stored weddings cannot be decoded: {}", broken.join("; ")),
                })
            }
        })
    }

    /// Stores (or replaces) a wedding; durable when this returns.
    pub fn put_wedding(&self, wedding: &Wedding) -> Result<(), StateError> {
        let json = serde_json::to_vec(wedding).map_err(|e| self.fail(e))?;
        self.write(|table| table.insert(wedding.id.as_str(), json.as_slice()).map(drop).map_err(Into::into))
    }

    /// Removes a wedding; returns whether it was there.
    pub fn remove_wedding(&self, id: &str) -> Result<bool, StateError> {
        let mut found = false;
        self.write(|table| {
            found = table.remove(id)?.is_some();
            Ok(())
        })?;
        Ok(found)
    }
}

impl StateDb {
    /// Stores the learned profiles (pool name, encoded profile) in one transaction.
    pub fn put_profiles(&self, profiles: &[(String, Vec<u8>)]) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(PROFILES).map_err(|e| self.fail(e))?;
            for (pool, bytes) in profiles {
                table.insert(pool.as_str(), bytes.as_slice()).map_err(|e| self.fail(e))?;
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// The stored profile of a pool.
    pub fn profile(&self, pool: &str) -> Result<Option<Vec<u8>>, StateError> {
        guarded(&self.path, || {
            let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
            let table = txn.open_table(PROFILES).map_err(|e| self.fail(e))?;
            Ok(table.get(pool).map_err(|e| self.fail(e))?.map(|v| v.value().to_vec()))
        })
    }
}

/// A wedding as written by people (API bodies and the calendar file): times either as RFC 3339
/// UTC (`"2027-06-12T13:00:00Z"`) or as Unix milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeddingInput {
    /// Unique id.
    pub id: String,
    /// Region whose pools it protects.
    pub region: String,
    /// IANA time zone of the venue (default `UTC`).
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Start, RFC 3339 UTC.
    #[serde(default)]
    pub start: Option<String>,
    /// End, RFC 3339 UTC.
    #[serde(default)]
    pub end: Option<String>,
    /// Start, Unix ms.
    #[serde(default)]
    pub start_unix_ms: Option<i64>,
    /// End, Unix ms.
    #[serde(default)]
    pub end_unix_ms: Option<i64>,
    /// Guests and vendors expected.
    #[serde(default)]
    pub guests: u32,
}

fn utc() -> String {
    "UTC".into()
}

fn instant(field: &str, text: Option<&str>, millis: Option<i64>) -> Result<i64, String> {
    match (text, millis) {
        (Some(_), Some(_)) => Err(format!("give {field} or {field}_unix_ms, not both")),
        (None, Some(ms)) => Ok(ms),
        (Some(text), None) => humantime::parse_rfc3339(text)
            .map_err(|e| format!("{field}: {text:?} is not an RFC 3339 UTC time ({e}; e.g. \"2027-06-12T13:00:00Z\")"))
            .and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| format!("{field}: {text:?} is before 1970"))
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }),
        (None, None) => Err(format!("{field} is missing")),
    }
}

impl WeddingInput {
    /// The checked wedding, or what is wrong with it.
    pub fn into_wedding(self) -> Result<Wedding, String> {
        let wedding = Wedding {
            start_unix_ms: instant("start", self.start.as_deref(), self.start_unix_ms)?,
            end_unix_ms: instant("end", self.end.as_deref(), self.end_unix_ms)?,
            id: self.id,
            region: self.region,
            time_zone: self.time_zone,
            guests: self.guests,
        };
        wedding.validate().map_err(|e| e.to_string())?;
        Ok(wedding)
    }
}

/// Why the calendar file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CalendarFileError {
    /// The file cannot be read.
    #[error("calendar.file {path}: cannot be read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("calendar.file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// One wedding in it is invalid.
    #[error("calendar.file {path}: weddings[{index}]: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which entry.
        index: usize,
        /// What was wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    #[serde(default)]
    weddings: Vec<WeddingInput>,
}

/// Reads a TOML calendar file (`[[weddings]]` entries).
pub fn load_file(path: &Path) -> Result<Vec<Wedding>, CalendarFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| CalendarFileError::Read { path: path.to_path_buf(), source })?;
    let file: CalendarFile = toml::from_str(&text).map_err(|e| CalendarFileError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string().trim_end().to_owned(),
    })?;
    file.weddings
        .into_iter()
        .enumerate()
        .map(|(index, input)| {
            input.into_wedding().map_err(|reason| CalendarFileError::Invalid {
                path: path.to_path_buf(),
                index,
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wedsync-calendar-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn wedding(id: &str) -> Wedding {
        Wedding {
            id: id.into(),
            region: "eu-west".into(),
            time_zone: "Europe/Dublin".into(),
            start_unix_ms: 1_000,
            end_unix_ms: 2_000,
            guests: 120,
        }
    }

    #[test]
    fn weddings_survive_reopening() {
        let dir = temp_dir("reopen");
        {
            let db = StateDb::open(&dir).unwrap();
            db.put_wedding(&wedding("w-1")).unwrap();
            db.put_wedding(&wedding("w-2")).unwrap();
            assert!(db.remove_wedding("w-2").unwrap());
            assert!(!db.remove_wedding("w-9").unwrap());
        }
        let db = StateDb::open(&dir).unwrap();
        assert_eq!(db.weddings().unwrap(), vec![wedding("w-1")]);
    }

    #[test]
    fn a_corrupt_database_is_a_clear_error_never_a_panic_or_a_silent_loss() {
        use std::io::{Seek, SeekFrom, Write};
        let wedding = |id: &str| Wedding {
            id: id.into(),
            region: "eu-west".into(),
            time_zone: "UTC".into(),
            start_unix_ms: 1_800_000_000_000,
            end_unix_ms: 1_800_003_600_000,
            guests: 10,
        };
        for (name, offset, len) in [("head", 0u64, 4096usize), ("page", 4096, 4096), ("flip", 0, 0)] {
            let dir = temp_dir(&format!("corrupt-{name}"));
            {
                let db = StateDb::open(&dir).unwrap();
                for n in 0..20 {
                    db.put_wedding(&wedding(&format!("w-{n}"))).unwrap();
                }
            }
            let path = dir.join("state.redb");
            let bytes = std::fs::read(&path).unwrap();
            let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            if len > 0 {
                file.seek(SeekFrom::Start(offset)).unwrap();
                file.write_all(&vec![0xA5; len]).unwrap();
            } else {
                // Flip 32 bytes inside one stored wedding's JSON.
                let at = bytes.windows(6).position(|w| w == b"\"w-13\"").expect("a wedding in the file");
                file.seek(SeekFrom::Start(at as u64)).unwrap();
                file.write_all(&[0xFF; 32]).unwrap();
            }
            drop(file);
            match StateDb::open(&dir).and_then(|db| db.weddings()) {
                Err(e) => {
                    let text = e.to_string();
                    assert!(matches!(e, StateError::Corrupt { .. } | StateError::Database { .. }), "{name}: {text}");
                    assert!(text.contains("state.redb"), "{name}: {text}");
                    if name == "flip" {
                        assert!(text.contains("is corrupt") && text.contains("w-13"), "{name}: {text}");
                    }
                }
                Ok(weddings) => assert_eq!(weddings.len(), 20, "{name}: a wedding vanished silently"),
            }
        }
    }

    #[test]
    fn profiles_survive_reopening() {
        let dir = temp_dir("profiles");
        {
            let db = StateDb::open(&dir).unwrap();
            db.put_profiles(&[("checkout".into(), vec![1, 2, 3]), ("search".into(), vec![4])]).unwrap();
        }
        let db = StateDb::open(&dir).unwrap();
        assert_eq!(db.profile("checkout").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(db.profile("nope").unwrap(), None);
    }

    #[test]
    fn inputs_take_rfc3339_or_millis_and_say_what_is_wrong() {
        let input = |start: Option<&str>, start_ms: Option<i64>| WeddingInput {
            id: "w".into(),
            region: "eu-west".into(),
            time_zone: "UTC".into(),
            start: start.map(str::to_owned),
            end: Some("2027-06-12T23:00:00Z".into()),
            start_unix_ms: start_ms,
            end_unix_ms: None,
            guests: 10,
        };
        let w = input(Some("2027-06-12T13:00:00Z"), None).into_wedding().unwrap();
        assert_eq!(w.end_unix_ms - w.start_unix_ms, 10 * 3_600_000);
        assert!(
            input(Some("noon"), None).into_wedding().unwrap_err().starts_with("start: \"noon\" is not an RFC 3339")
        );
        assert!(input(Some("2027-06-12T13:00:00Z"), Some(5)).into_wedding().unwrap_err().contains("not both"));
        assert_eq!(input(None, None).into_wedding().unwrap_err(), "start is missing");
        assert!(input(Some("2027-06-13T13:00:00Z"), None).into_wedding().unwrap_err().contains("is not after start"));
    }

    #[test]
    fn calendar_file_loads_and_names_the_bad_entry() {
        let dir = temp_dir("file");
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[[weddings]]\nid = \"w-1\"\nregion = \"eu-west\"\ntime_zone = \"Europe/Dublin\"\nstart = \"2027-06-12T13:00:00Z\"\nend = \"2027-06-12T23:00:00Z\"\nguests = 150\n",
        )
        .unwrap();
        let weddings = load_file(&good).unwrap();
        assert_eq!(weddings.len(), 1);
        assert_eq!(weddings[0].guests, 150);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[weddings]]\nid = \"w-1\"\nregion = \"eu-west\"\nstart_unix_ms = 5\nend_unix_ms = 1\n")
            .unwrap();
        let err = load_file(&bad).unwrap_err().to_string();
        assert!(err.contains("weddings[0]: end (1) is not after start (5)"), "{err}");
        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "[[wedding]]\nid = \"x\"\n").unwrap();
        assert!(load_file(&typo).unwrap_err().to_string().contains("wedding"));
    }
}
