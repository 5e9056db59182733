//! Compiling plugins in a short-lived child process of the agent's own binary.
//!
//! Cranelift keeps what a compilation used for as long as the process lives: the engine pools
//! its compiler contexts, the allocator keeps the memory the compiling threads freed, and
//! Cranelift's code pages stay resident. Compiling the four bundled plugins at a first start
//! (empty compiled cache) left the agent at about 40 MiB resident for good, against 25 MiB after
//! a restart from the cache; compiling serially, with a throwaway engine and one allocator arena
//! still left it about 10 MiB above a restart. So the `wedsync-agent` binary, when it runs the
//! agent, compiles each component its compiled cache does not hold in a child process of
//! itself: the hidden `wedsync-agent compile-plugin` reads the component on stdin, compiles it
//! with the agent's engine settings, writes the artifact into the cache (under the cache's own
//! key) and exits. The agent then loads the artifact from the cache exactly as after a restart
//! (see [`wedsync_plugin_host::external`]). This holds at start and for every hot reload. If
//! the child cannot run, the agent compiles in its own process, with a warning.
//!
//! Without [`compile_in_child_processes`] (tests, benches, `sim`), plugins compile in the
//! calling process.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, OnceLock};
use wedsync_plugin_host::{ExternalCompileError, ExternalCompiler, HostSettings};

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "compile-plugin";

/// The child's exit status when the component does not compile (its reason on stderr).
const EXIT_INVALID: u8 = 3;

/// The most of the child's stderr kept in a message, in bytes.
const MAX_MESSAGE: usize = 1024;

/// The program each compilation runs, once set.
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// From now on, plugin hosts this process starts compile in child processes running
/// `program compile-plugin …`; `program` must be this very `wedsync-agent` binary (on Linux,
/// `/proc/self/exe`, which stays the running binary even after an upgrade replaced its file).
/// The `wedsync-agent run` command sets it before the agent starts. Returns false if it was
/// already set (the first program stays).
pub fn compile_in_child_processes(program: PathBuf) -> bool {
    PROGRAM.set(program).is_ok()
}

/// The host settings the engine is made from: the agent and its child must make the same
/// engine, or the child's artifacts would be filed under another engine's name.
pub(super) fn engine_settings(memory_limit: usize, cache_dir: PathBuf) -> HostSettings {
    HostSettings { memory_limit, cache_dir: Some(cache_dir), ..HostSettings::default() }
}

/// The child-process compiler for a host with these settings, when enabled.
pub(super) fn external_compiler(memory_limit: usize, cache_dir: &Path) -> Option<Arc<dyn ExternalCompiler>> {
    let program = PROGRAM.get()?;
    Some(Arc::new(ChildCompiler { program: program.clone(), cache_dir: cache_dir.to_path_buf(), memory_limit }))
}

/// Compiles each component in a `wedsync-agent compile-plugin` child process.
#[derive(Debug)]
struct ChildCompiler {
    program: PathBuf,
    cache_dir: PathBuf,
    memory_limit: usize,
}

impl ExternalCompiler for ChildCompiler {
    fn compile(&self, component: &[u8]) -> Result<(), ExternalCompileError> {
        let mut command = Command::new(&self.program);
        command
            .arg(SUBCOMMAND)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .arg("--memory-limit")
            .arg(self.memory_limit.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A process group of its own: a Ctrl-C meant for the agent does not cut a compilation
        // short (the agent finishes what it is loading, then stops, as when it compiled itself).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(|e| {
            ExternalCompileError::Unavailable(format!("cannot start {} {SUBCOMMAND}: {e}", self.program.display()))
        })?;
        // The child reads all of its input before it writes anything but a usage error, so
        // writing it all first cannot deadlock on a full stderr pipe. A write error (the child
        // ended early) shows in its exit status and stderr.
        let written = child.stdin.take().map(|mut stdin| stdin.write_all(component));
        let output = child
            .wait_with_output()
            .map_err(|e| ExternalCompileError::Unavailable(format!("cannot wait for the {SUBCOMMAND} process: {e}")))?;
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        truncate(&mut message, MAX_MESSAGE);
        match output.status.code() {
            Some(0) => Ok(()),
            Some(code) if code == i32::from(EXIT_INVALID) => Err(ExternalCompileError::Invalid(message)),
            _ => {
                let input = match written {
                    Some(Err(e)) => format!(" (writing its input: {e})"),
                    _ => String::new(),
                };
                Err(ExternalCompileError::Unavailable(format!(
                    "the {SUBCOMMAND} process ended with {}{input}: {message}",
                    output.status
                )))
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary, and marks the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        wedsync_plugin_host::truncate_utf8(s, max);
        s.push('…');
    }
}

/// The child's side, `wedsync-agent compile-plugin --cache-dir DIR --memory-limit BYTES`:
/// compiles the component read on stdin into the compiled cache in `cache_dir`. Exits 0 when
/// the artifact is written, 3 when the component does not compile, 1 otherwise; the reason
/// goes to stderr, one line.
pub fn child_main(cache_dir: &Path, memory_limit: usize) -> ExitCode {
    let settings = engine_settings(memory_limit, cache_dir.to_path_buf());
    let mut component = Vec::new();
    let limit = u64::try_from(settings.max_component_size).unwrap_or(u64::MAX).saturating_add(1);
    if let Err(e) = std::io::stdin().lock().take(limit).read_to_end(&mut component) {
        eprintln!("cannot read the component on stdin: {e}");
        return ExitCode::FAILURE;
    }
    if component.len() > settings.max_component_size {
        eprintln!("the component is more than {} bytes", settings.max_component_size);
        return ExitCode::FAILURE;
    }
    match wedsync_plugin_host::compile_into_cache(&settings, &component) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ExternalCompileError::Invalid(reason)) => {
            eprintln!("{reason}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(ExternalCompileError::Unavailable(reason)) => {
            eprintln!("{reason}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let mut s = "ééé".to_owned();
        truncate(&mut s, 3);
        assert_eq!(s, "é…");
        let mut short = "ok".to_owned();
        truncate(&mut short, 3);
        assert_eq!(short, "ok");
    }

    #[test]
    fn a_program_that_cannot_start_is_unavailable_so_the_host_compiles_itself() {
        let compiler = ChildCompiler {
            program: PathBuf::from("/nonexistent/wedsync-agent"),
            cache_dir: std::env::temp_dir(),
            memory_limit: 16 << 20,
        };
        assert!(matches!(compiler.compile(b"\0asm"), Err(ExternalCompileError::Unavailable(_))));
    }
}
