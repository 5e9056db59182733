//! Compiling outside the host's process.
//!
//! Cranelift keeps what it compiled with for as long as the process lives: the engine pools
//! its per-thread compiler contexts, the allocator keeps the memory the compiling threads
//! freed (fragmented, in arenas of their own), and Cranelift's code pages stay resident. A host
//! that only loads artifacts from its [compiled cache](crate::cache) pays for none of that.
//!
//! With an [`ExternalCompiler`] ([`HostSettings::external_compiler`]),
//! [`Loader::prepare`](crate::Loader::prepare) hands every component its cache does not hold
//! (after the size and signature checks) to that compiler, which writes the artifact into the
//! cache: in the agent, a short-lived child process of its own binary that runs
//! [`compile_into_cache`]. The host then loads the artifact like any other (authenticated by
//! its MAC, mapped). When the compiler cannot do its work, the host compiles in its own
//! process, as it does without one.

use crate::host::{HostSettings, engine_config, error_text};
use crate::{CompiledCache, signing};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiles components outside the host's process, into the host's compiled cache.
pub trait ExternalCompiler: Send + Sync + std::fmt::Debug {
    /// Compiles `component` (already checked for size and trust) with an engine configured
    /// as the host's and writes its artifact into the host's cache (see
    /// [`compile_into_cache`]). Blocks until done.
    fn compile(&self, component: &[u8]) -> Result<(), ExternalCompileError>;
}

/// Why an [`ExternalCompiler`] wrote no artifact.
#[derive(Debug, thiserror::Error)]
pub enum ExternalCompileError {
    /// The component does not compile: wasmtime's message. The host refuses the component
    /// ([`LoadError::Compile`](crate::LoadError::Compile)) without compiling it itself.
    #[error("{0}")]
    Invalid(String),
    /// The compiler could not do its work (it did not start, failed or was stopped): the
    /// host compiles the component in its own process.
    #[error("{0}")]
    Unavailable(String),
}

/// Compiles `component` with the engine a [`PluginHost`](crate::PluginHost) made from
/// `settings` would have, and writes its artifact into `settings.cache_dir` (where that host
/// looks for it): what an [`ExternalCompiler`]'s child process runs.
pub fn compile_into_cache(settings: &HostSettings, component: &[u8]) -> Result<(), ExternalCompileError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| ExternalCompileError::Unavailable(format!("{what}: {e}"));
    let Some(dir) = &settings.cache_dir else {
        return Err(ExternalCompileError::Unavailable("no compiled cache directory".into()));
    };
    let engine = Engine::new(&engine_config(settings))
        .map_err(|e| unavailable("cannot create the WebAssembly engine", &error_text(&e)))?;
    let cache = CompiledCache::open(dir, &engine).map_err(|e| unavailable("compiled cache", &e))?;
    let compiled =
        Component::from_binary(&engine, component).map_err(|e| ExternalCompileError::Invalid(error_text(&e)))?;
    cache.store(&signing::sha256(component), &compiled).map_err(|e| unavailable("compiled cache", &e))
}
