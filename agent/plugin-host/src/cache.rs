//! The compiled-artifact cache: native code of each component, on disk, so a restart or a
//! reload of an unchanged plugin skips compilation.
//!
//! Artifacts are keyed by the component's SHA-256 and the engine's
//! [precompile compatibility hash](wasmtime::Engine::precompile_compatibility_hash) (a new
//! wasmtime or different engine settings never reuse an old artifact). Loading native code is
//! only as safe as the file it comes from, so the host only loads artifacts it wrote itself:
//! each is authenticated with a MAC, keyed BLAKE3 (BLAKE3's keyed mode, a PRF; about 4x faster
//! than HMAC-SHA256 on these artifacts, which keeps a warm start short), under a secret key that
//! the cache creates on first use (`cache.key`, 32 random bytes in hex, mode 0600, refused if
//! others can read it). An artifact whose tag does not verify is never deserialized.
//!
//! File layout: `<dir>/<component sha256 hex>-<compat hash hex, 16 digits>-v3.cwasm` holds
//! wasmtime's serialized component as is (so it can be mapped rather than copied), and the
//! same name plus `.tag` holds `MAGIC` (8 bytes) then the MAC tag (32 bytes). The tag covers the
//! compat hash, the component's SHA-256 and the serialized bytes.

use crate::error::CacheError;
use sha2::{Digest as _, Sha256};
use std::hash::{Hash as _, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"WSPCWA3\n";
const KEY_FILE: &str = "cache.key";
const TAG_LEN: usize = 32;

/// An open compiled-artifact cache directory.
pub struct CompiledCache {
    dir: PathBuf,
    key: [u8; 32],
    compat: [u8; 32],
}

impl std::fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl CompiledCache {
    /// Opens (creating when missing) the cache in `dir` for artifacts of `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        create_private_dir(dir)?;
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        Ok(CompiledCache { dir: dir.to_path_buf(), key, compat: compat_hash(engine) })
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact of the component with this SHA-256 lives.
    pub fn artifact_path(&self, sha256: &[u8; 32]) -> PathBuf {
        // `v3`: the file layout (older layouts are simply never looked up).
        self.dir.join(format!("{}-{}-v3.cwasm", hex::encode(sha256), hex::encode(&self.compat[..8])))
    }

    /// Where the authentication tag of that artifact lives.
    fn tag_path(&self, sha256: &[u8; 32]) -> PathBuf {
        let mut path = self.artifact_path(sha256).into_os_string();
        path.push(".tag");
        PathBuf::from(path)
    }

    /// Loads the artifact of the component with this SHA-256: `Ok(None)` when there is none,
    /// [`CacheError::Tampered`] when its authentication tag is missing or does not verify (it is
    /// then not deserialized).
    ///
    /// The verified file is then mapped into memory rather than copied (a warm start saves the
    /// copy and the page faults of a fresh allocation); the file must be the same one (device,
    /// inode, size, modification time) before and after, or the load counts as tampered. Where
    /// the cache directory cannot be mapped executable (a `noexec` mount) the verified bytes are
    /// copied instead.
    pub fn load(&self, engine: &Engine, sha256: &[u8; 32]) -> Result<Option<Component>, CacheError> {
        let path = self.artifact_path(sha256);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        let before = file.metadata().map_err(io(&path))?;
        let tag_path = self.tag_path(sha256);
        let tag_file = match std::fs::read(&tag_path) {
            Ok(t) => t,
            // An artifact without a tag was not written by this cache.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheError::Tampered { path }),
            Err(source) => return Err(CacheError::Io { path: tag_path, source }),
        };
        if tag_file.len() != MAGIC.len() + TAG_LEN || &tag_file[..MAGIC.len()] != MAGIC {
            return Err(CacheError::Tampered { path });
        }
        let mut expected = [0u8; TAG_LEN];
        expected.copy_from_slice(&tag_file[MAGIC.len()..]);
        let mut artifact = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0));
        (&file).read_to_end(&mut artifact).map_err(io(&path))?;
        // `blake3::Hash`'s equality is constant-time.
        if self.mac(sha256, &artifact) != blake3::Hash::from_bytes(expected) {
            return Err(CacheError::Tampered { path });
        }
        // SAFETY (both calls): `Component::deserialize*` trusts its input to be native code that
        // wasmtime produced for this engine. These bytes carry a keyed-BLAKE3 MAC tag, checked
        // just above in constant time, under this cache's 32-byte secret key (created by this
        // host with mode 0600 and refused if others can read it). Only `store` below, after
        // `Component::serialize` of a component this host compiled itself, computes such tags,
        // so the bytes are exactly an artifact this host wrote for this component's SHA-256 and
        // this engine's compatibility hash (both also under the tag). The mapped file is the
        // file just verified: same device, inode, size and modification time before and after
        // the mapping (replacing it needs write access to this host's private directory).
        // wasmtime additionally checks the engine compatibility recorded in the artifact.
        #[allow(unsafe_code)]
        let mapped = unsafe { Component::deserialize_file(engine, &path) };
        let component = match mapped {
            Ok(component) => {
                let after = std::fs::metadata(&path).map_err(io(&path))?;
                if !same_file(&before, &after) {
                    return Err(CacheError::Tampered { path });
                }
                component
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot map the cached artifact; copying it");
                #[allow(unsafe_code)]
                let copied = unsafe { Component::deserialize(engine, &artifact) };
                copied.map_err(|e| CacheError::Artifact { path, reason: e.to_string() })?
            }
        };
        Ok(Some(component))
    }

    /// Writes the artifact of `component` (compiled by this host from the component whose
    /// SHA-256 is `sha256`), atomically (a temporary file renamed into place).
    pub fn store(&self, sha256: &[u8; 32], component: &Component) -> Result<(), CacheError> {
        let path = self.artifact_path(sha256);
        let artifact =
            component.serialize().map_err(|e| CacheError::Artifact { path: path.clone(), reason: e.to_string() })?;
        let tag = self.mac(sha256, &artifact);
        let mut tag_file = Vec::with_capacity(MAGIC.len() + TAG_LEN);
        tag_file.extend_from_slice(MAGIC);
        tag_file.extend_from_slice(tag.as_bytes());
        // The tag first: a reader that sees the new tag with an old artifact sees the same
        // bytes (compilation is deterministic) or a mismatch (refused, recompiled), never an
        // unverified artifact.
        self.write_atomically(&self.tag_path(sha256), &tag_file)?;
        self.write_atomically(&path, &artifact)
    }

    /// Writes `bytes` to a private temporary file, then renames it to `path`.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        let tmp = self.dir.join(format!(".{}.tmp", unique_suffix()));
        let write = || -> std::io::Result<()> {
            let mut f = private_file(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            CacheError::Io { path: path.to_path_buf(), source }
        })
    }

    /// The tag of an artifact: keyed BLAKE3 over the compat hash, the component's SHA-256 and
    /// the artifact.
    fn mac(&self, sha256: &[u8; 32], artifact: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(&self.compat);
        mac.update(sha256);
        mac.update(artifact);
        mac.finalize()
    }
}

/// The engine's precompile compatibility hash, folded into SHA-256.
fn compat_hash(engine: &Engine) -> [u8; 32] {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.0.finalize());
    out
}

/// The same file, unchanged: device, inode, size and modification time.
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        a.dev() == b.dev()
            && a.ino() == b.ino()
            && a.len() == b.len()
            && a.mtime_nsec() == b.mtime_nsec()
            && a.mtime() == b.mtime()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len() && a.modified().ok() == b.modified().ok()
    }
}

/// A name part no other writer (thread or process) uses at the same time.
fn unique_suffix() -> String {
    let mut r = [0u8; 8];
    if getrandom::fill(&mut r).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        r = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes();
    }
    format!("{}-{}", std::process::id(), hex::encode(r))
}

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| CacheError::Io { path: dir.to_path_buf(), source })
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn load_or_create_key(path: &Path) -> Result<[u8; 32], CacheError> {
    let bad = |reason: String| CacheError::Key { path: path.to_path_buf(), reason };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt as _;
                let meta =
                    std::fs::metadata(path).map_err(|source| CacheError::Io { path: path.to_path_buf(), source })?;
                if meta.mode() & 0o077 != 0 {
                    return Err(bad(format!("mode {:o} lets others read it; expected 0600", meta.mode() & 0o777)));
                }
            }
            let mut key = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut key).map_err(|e| bad(format!("expected 64 hex digits: {e}")))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| bad(format!("cannot get random bytes: {e}")))?;
            // Written in full to a private temporary file, then linked into place: another
            // host opening the cache at the same time sees either no key or a complete one.
            let tmp = path.with_extension(format!("{}.tmp", unique_suffix()));
            let io = |source| CacheError::Io { path: path.to_path_buf(), source };
            let written = (|| {
                let mut f = private_file(&tmp)?;
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
                f.sync_all()?;
                std::fs::hard_link(&tmp, path)
            })();
            let _ = std::fs::remove_file(&tmp);
            match written {
                Ok(()) => Ok(key),
                // Another host created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(io(e)),
            }
        }
        Err(source) => Err(CacheError::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = load_or_create_key(&path).unwrap();
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(load_or_create_key(&path), Err(CacheError::Key { .. })));
        }
    }

    #[test]
    fn malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "not hex").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(load_or_create_key(&path), Err(CacheError::Key { .. })));
    }
}
