//! Build-script support for crates that embed WedSync policy components (`wedsync-plugins`,
//! `wedsync-test-guests`).
//!
//! [`build_components`] runs a nested `cargo build --target wasm32-wasip2 --profile wasm-guest
//! -p <guest>…` for guest crates of this workspace, in its own target directory
//! (`<workspace target>/wasm-guests`) so it is cached between builds and never contends with the
//! outer build's lock; then copies each component into `OUT_DIR` and checks it is one. The
//! `wasm-guest` profile is defined on the command line (release, `opt-level = "s"`, fat LTO, one
//! codegen unit, no debug info, stripped, `panic = "abort"`), so the workspace's profiles stay
//! untouched. `"s"` rather than `3`: `3` (or `1`, `2`) made the bundled plugins' `decide` 7–15%
//! faster, but each instance's first call then touched about 16 KiB more of its memory
//! (1,000 wedding-day-guard instances: +65 MiB resident instead of +49 MiB, past the 64 MiB
//! budget).
//!
//! The nested cargo gets a clean environment: the flags, wrappers (clippy-driver) and jobserver
//! the outer cargo hands to build scripts are removed, so `cargo build`, `cargo clippy` and
//! `cargo test` all share one cached guest build.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use std::{env, fs};

/// The Rust target WedSync components are built for (its output is a component already).
pub const TARGET: &str = "wasm32-wasip2";

/// The cargo profile the nested build uses (defined with `--config`).
pub const PROFILE: &str = "wasm-guest";

/// The first eight bytes of a component binary: `\0asm`, version 0x0d, layer 1.
pub const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// One guest crate to build.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// Its package name (`-p`).
    pub package: &'static str,
    /// Its directory, relative to the workspace root (watched for changes).
    pub dir: &'static str,
}

/// A component that was built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The package name.
    pub package: &'static str,
    /// Where it was copied: `OUT_DIR/<package>.wasm`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Builds `guests` for [`TARGET`] and copies them to `OUT_DIR/<package>.wasm`; prints the
/// `cargo:rerun-if-changed` lines for their sources, the SDK, the WIT contract and the lock file.
///
/// Call it from a build script. `Err` carries a message that says what to do.
pub fn build_components(guests: &[Guest]) -> Result<Vec<Built>, String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let root = workspace_root(&manifest_dir)?;

    for watched in ["sdk", "wit", "Cargo.lock", "Cargo.toml", "plugins/build-support"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for guest in guests {
        println!("cargo:rerun-if-changed={}", root.join(guest.dir).display());
    }
    println!("cargo:rerun-if-env-changed=WEDSYNC_GUEST_TARGET_DIR");
    println!("cargo:rerun-if-env-changed=WEDSYNC_GUEST_TOOLCHAIN");

    // A toolchain of its own for the guests (`rustup run <toolchain> cargo`): for an outer build
    // on a toolchain without the WASI target, such as the nightly that `cargo fuzz` needs.
    let toolchain = env::var("WEDSYNC_GUEST_TOOLCHAIN").ok().filter(|t| !t.is_empty());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    if toolchain.is_none() {
        check_target_installed(&rustc)?;
    }

    let target_dir = match env::var_os("WEDSYNC_GUEST_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => outer_target_dir(&out_dir).unwrap_or_else(|| root.join("target")).join("wasm-guests"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));

    let mut cmd = match &toolchain {
        Some(toolchain) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", toolchain, "cargo"]).env_remove("RUSTC").env_remove("RUSTUP_TOOLCHAIN");
            cmd
        }
        None => Command::new(&cargo),
    };
    cmd.current_dir(&root)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(&target_dir);
    for setting in [
        "profile.wasm-guest.inherits=\"release\"",
        "profile.wasm-guest.opt-level=\"s\"",
        "profile.wasm-guest.lto=true",
        "profile.wasm-guest.codegen-units=1",
        "profile.wasm-guest.debug=false",
        "profile.wasm-guest.strip=true",
        "profile.wasm-guest.panic=\"abort\"",
        "profile.wasm-guest.incremental=false",
    ] {
        cmd.arg("--config").arg(setting);
    }
    if let Ok(jobs) = env::var("NUM_JOBS") {
        cmd.arg("-j").arg(jobs);
    }
    for guest in guests {
        cmd.arg("-p").arg(guest.package);
    }
    clean_env(&mut cmd);

    let started = Instant::now();
    let output = cmd.output().map_err(|e| format!("could not run {cargo:?} for the WASM guests: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut msg = format!(
            "building the WASM policy components ({}) for {TARGET} failed ({}).\n",
            guests.iter().map(|g| g.package).collect::<Vec<_>>().join(", "),
            output.status
        );
        if stderr.contains("may not be installed") || stderr.contains("can't find crate for `core`") {
            let _ = writeln!(msg, "The {TARGET} target is missing: run `rustup target add {TARGET}`.");
        }
        let _ = write!(msg, "The nested cargo said:\n{stderr}");
        return Err(msg);
    }
    eprintln!("wasm guests built in {:.1}s", started.elapsed().as_secs_f64());

    let artifacts = target_dir.join(TARGET).join(PROFILE);
    let mut built = Vec::with_capacity(guests.len());
    for guest in guests {
        let file = format!("{}.wasm", guest.package.replace('-', "_"));
        let from = artifacts.join(&file);
        let bytes =
            fs::read(&from).map_err(|e| format!("the nested build finished but {} is missing: {e}", from.display()))?;
        if !bytes.starts_with(&COMPONENT_PREAMBLE) {
            return Err(format!(
                "{} is not a WebAssembly component (preamble {:02x?}); is the {TARGET} target's linker \
                 (wasm-component-ld, shipped with the target) in use?",
                from.display(),
                &bytes[..bytes.len().min(8)]
            ));
        }
        let path = out_dir.join(format!("{}.wasm", guest.package));
        write_if_changed(&path, &bytes)?;
        built.push(Built { package: guest.package, path, size: bytes.len() as u64 });
    }
    Ok(built)
}

/// Fails the build script with `message` (cargo prints it).
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set: call build_components from a build script"))
}

/// The nearest ancestor of `start` with a `Cargo.lock` (the workspace root).
fn workspace_root(start: &Path) -> Result<PathBuf, String> {
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no Cargo.lock above {}: the guests build inside the workspace", start.display()))
}

/// The outer build's target directory, from `OUT_DIR` (`<target>[/<triple>]/<profile>/build/<pkg>/out`):
/// the ancestor that holds cargo's `CACHEDIR.TAG`.
fn outer_target_dir(out_dir: &Path) -> Option<PathBuf> {
    out_dir.ancestors().skip(4).take(2).find(|dir| dir.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf)
}

fn check_target_installed(rustc: &OsString) -> Result<(), String> {
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .map_err(|e| format!("could not run {rustc:?} --print sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || sysroot.is_empty() {
        // Not fatal: the nested build says what is wrong.
        return Ok(());
    }
    if Path::new(&sysroot).join("lib/rustlib").join(TARGET).is_dir() {
        Ok(())
    } else {
        Err(format!(
            "the {TARGET} target is not installed for the toolchain at {sysroot}; the bundled policy plugins \
             are WASI 0.2 components built during the normal build. Run `rustup target add {TARGET}` (CI: \
             `.ci/run` does), then build again."
        ))
    }
}

/// Removes what the outer cargo hands a build script that would change or break the nested build.
fn clean_env(cmd: &mut Command) {
    const KEEP: [&str; 8] = [
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_SOURCE_",
        "CARGO_TERM_",
        "CARGO_BUILD_DEP_INFO_BASEDIR",
    ];
    const REMOVE: [&str; 11] = [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "MAKEFLAGS",
        "MFLAGS",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "DEBUG",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_var = key.starts_with("CARGO_") && !KEEP.iter().any(|k| key.starts_with(k));
        if cargo_var || key.starts_with("__CARGO") || REMOVE.contains(&key) || key.starts_with("DEP_") {
            cmd.env_remove(key);
        }
    }
    // A wrapper that is clippy would lint the guests on every outer `cargo clippy`.
    if env::var("RUSTC_WRAPPER").is_ok_and(|w| w.contains("clippy")) {
        cmd.env_remove("RUSTC_WRAPPER");
    }
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("could not write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_outer_target_dir() {
        let tmp = env::temp_dir().join(format!("wedsync-guest-build-{}", std::process::id()));
        let out = tmp.join("target/x86_64-unknown-linux-gnu/debug/build/pkg-123/out");
        fs::create_dir_all(&out).unwrap_or_default();
        fs::write(tmp.join("target/CACHEDIR.TAG"), b"Signature: 8a477f597d28d172789f06886806bc55").unwrap_or_default();
        assert_eq!(outer_target_dir(&out), Some(tmp.join("target")));
        let out = tmp.join("target/debug/build/pkg-123/out");
        fs::create_dir_all(&out).unwrap_or_default();
        assert_eq!(outer_target_dir(&out), Some(tmp.join("target")));
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn a_missing_target_says_what_to_do() {
        let tmp = env::temp_dir().join(format!("wedsync-guest-build-rustc-{}", std::process::id()));
        let sysroot = tmp.join("sysroot");
        fs::create_dir_all(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu")).unwrap_or_default();
        let fake = tmp.join("rustc");
        fs::write(&fake, format!("#!/bin/sh\necho {}\n", sysroot.display())).unwrap_or_default();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap_or_default();
        }
        let err = check_target_installed(&fake.clone().into_os_string()).err().unwrap_or_default();
        assert!(err.contains("rustup target add wasm32-wasip2"), "{err}");
        fs::create_dir_all(sysroot.join("lib/rustlib/wasm32-wasip2")).unwrap_or_default();
        assert_eq!(check_target_installed(&fake.into_os_string()), Ok(()));
        let _ = fs::remove_dir_all(&tmp);
    }
}
