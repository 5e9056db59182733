//! `wedsync-agent plugin keygen|sign|verify|inspect`: the plugin author's and operator's tools
//! around [`wedsync_plugin_host::signing`] and [`wedsync_plugin_host::inspect`]. Each prints
//! what it did on standard output (a refusal on standard error) and says whether it succeeded.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wedsync_plugin_host::{SignError, signing};

/// Why a plugin tool could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum PluginToolError {
    /// A file or directory could not be created.
    #[error("cannot create {}", path.display())]
    Create {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `sign` or `verify` could not learn the plugin's name and version from its `describe`.
    #[error("{}: cannot tell which plugin and version it is: {why}", path.display())]
    NoIdentity {
        /// The component.
        path: PathBuf,
        /// Why `describe` gave nothing.
        why: String,
    },
    /// `keygen` found a secret key where it would write one.
    #[error("{} exists; refusing to overwrite a signing key", path.display())]
    KeyExists {
        /// The existing secret key.
        path: PathBuf,
    },
    /// A key file does not hold a key.
    #[error("{}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why it does not decode.
        source: SignError,
    },
    /// A key pair could not be made.
    #[error(transparent)]
    Keygen(SignError),
    /// The component could not be inspected.
    #[error(transparent)]
    Inspect(#[from] wedsync_plugin_host::LoadError),
    /// The inspection could not be rendered.
    #[error(transparent)]
    Render(#[from] serde_json::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, PluginToolError> {
    std::fs::read(path).map_err(|source| PluginToolError::Read { path: path.to_owned(), source })
}

fn read_text(path: &Path) -> Result<String, PluginToolError> {
    std::fs::read_to_string(path).map_err(|source| PluginToolError::Read { path: path.to_owned(), source })
}

/// Where a component's signature is kept unless told otherwise: `FILE.sig`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    PathBuf::from(sig)
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(signing::sha256(bytes))
}

/// `plugin keygen`: writes `out/plugin.key` (secret, mode 0600, never overwritten) and
/// `out/plugin.pub` (the line for `plugins.trusted_keys`).
pub fn keygen(out: &Path) -> Result<ExitCode, PluginToolError> {
    std::fs::create_dir_all(out).map_err(|source| PluginToolError::Create { path: out.to_owned(), source })?;
    let (secret_path, public_path) = (out.join("plugin.key"), out.join("plugin.pub"));
    if secret_path.exists() {
        return Err(PluginToolError::KeyExists { path: secret_path });
    }
    let key = signing::generate_keypair().map_err(PluginToolError::Keygen)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(&secret_path).map_err(|source| PluginToolError::Create { path: secret_path.clone(), source })?;
    // The encodings are whole lines (newline included).
    std::io::Write::write_all(&mut file, signing::encode_secret_key(&key).as_bytes())
        .map_err(|source| PluginToolError::Write { path: secret_path.clone(), source })?;
    let public = signing::encode_public_key(&key.verifying_key());
    std::fs::write(&public_path, &public)
        .map_err(|source| PluginToolError::Write { path: public_path.clone(), source })?;
    println!("secret key: {} (keep it off the agents)", secret_path.display());
    println!("public key: {} (key id {})", public_path.display(), signing::key_id(&key.verifying_key()));
    println!("trust it:   plugins.trusted_keys = [\"{}\"]", public.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `plugin sign`: writes `FILE.sig`, an ed25519 signature that binds the component's SHA-256
/// to the name and version its `describe` returns (a v2 signature).
pub fn sign(key: &Path, file: &Path) -> Result<ExitCode, PluginToolError> {
    let text = read_text(key)?;
    let secret =
        signing::decode_secret_key(&text).map_err(|source| PluginToolError::BadKey { path: key.to_owned(), source })?;
    let bytes = read(file)?;
    let identity = identity_of(&bytes, file)?;
    let signature = signing::sign_bound(&secret, &identity, &bytes);
    let sig_path = signature_path(file);
    std::fs::write(&sig_path, signing::encode_bound_signature(&identity, &signature))
        .map_err(|source| PluginToolError::Write { path: sig_path.clone(), source })?;
    println!(
        "{}: signed as {} {} (sha256 {}) -> {}",
        file.display(),
        identity.name,
        identity.version,
        hex_digest(&bytes),
        sig_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The name and version a component's `describe` returns.
fn identity_of(bytes: &[u8], file: &Path) -> Result<signing::SignedIdentity, PluginToolError> {
    let inspection = wedsync_plugin_host::inspect(bytes)?;
    match inspection.info {
        Some(info) => Ok(signing::SignedIdentity { name: info.name, version: info.version }),
        None => Err(PluginToolError::NoIdentity {
            path: file.to_owned(),
            why: inspection.describe_error.unwrap_or_else(|| "it does not fit the plugin world".into()),
        }),
    }
}

/// `plugin verify`: checks a component's signature (`sig`, else `FILE.sig`) against a public
/// key, and that the component is the plugin and version a v2 signature names; a signature
/// that does not hold is a failure, reported on standard error.
pub fn verify(key: &Path, sig: Option<&Path>, file: &Path) -> Result<ExitCode, PluginToolError> {
    let text = read_text(key)?;
    let public =
        signing::decode_public_key(&text).map_err(|source| PluginToolError::BadKey { path: key.to_owned(), source })?;
    let bytes = read(file)?;
    let sig_path = sig.map_or_else(|| signature_path(file), Path::to_path_buf);
    let sig_bytes = read(&sig_path)?;
    let verified = signing::decode_signature_file(&sig_bytes).and_then(|signed| {
        signing::verify_file_digest(&[public], &signing::sha256(&bytes), &signed).map(|_| signed.identity)
    });
    match verified {
        Ok(Some(signed)) => {
            let actual = identity_of(&bytes, file)?;
            if actual != signed {
                eprintln!(
                    "{}: signed as {} {}, but it says it is {} {}: does NOT hold",
                    file.display(),
                    signed.name,
                    signed.version,
                    actual.name,
                    actual.version
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{}: signature OK for {} {} (key id {})",
                file.display(),
                signed.name,
                signed.version,
                signing::key_id(&public)
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            println!(
                "{}: signature OK (key id {}); an old v1 signature: it does not bind the name and version, re-sign it",
                file.display(),
                signing::key_id(&public)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: signature does NOT verify: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `plugin inspect`: prints what a component is (world, name, version, hooks, imports,
/// exports, size, SHA-256) as JSON; a component that does not fit the plugin world, or imports
/// what plugins may not, is a failure.
pub fn inspect(file: &Path) -> Result<ExitCode, PluginToolError> {
    let bytes = read(file)?;
    let inspection = wedsync_plugin_host::inspect(&bytes)?;
    let info = inspection.info.as_ref().map(|info| {
        serde_json::json!({
            "name": info.name,
            "version": info.version,
            "description": info.description,
            "hooks": {
                "decide": info.hooks.contains(wedsync_plugin_host::policy::Hooks::DECIDE),
                "failover": info.hooks.contains(wedsync_plugin_host::policy::Hooks::FAILOVER),
            },
        })
    });
    let report = serde_json::json!({
        "file": file.display().to_string(),
        "size": inspection.size,
        "sha256": inspection.sha256,
        "world": match &inspection.world {
            Ok(()) => "wedsync:policy/policy@0.1.0".to_owned(),
            Err(why) => format!("does not fit wedsync:policy/policy@0.1.0: {why}"),
        },
        "plugin": info,
        "describe_error": inspection.describe_error,
        "imports": inspection.imports,
        "forbidden_imports": inspection.forbidden_imports,
        "exports": inspection.exports,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let fits = inspection.world.is_ok() && inspection.forbidden_imports.is_empty();
    Ok(if fits { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_sits_beside_the_component() {
        assert_eq!(signature_path(Path::new("/plugins/guard.wasm")), PathBuf::from("/plugins/guard.wasm.sig"));
    }
}
