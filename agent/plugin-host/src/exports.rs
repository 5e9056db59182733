//! A plugin's three exports (`describe`, `configure`, `decide`), type-checked once per
//! component instead of once per instance.
//!
//! The generated `PolicyPre::new` checks the component's export types against the Rust types
//! of the contract; the generated `PolicyPre::instantiate` then checks them again for every
//! instance (`get_typed_func`), which cost about 1 µs of the ~6 µs an instantiation takes:
//! `Round`, `Setup` and `Verdict` are deep types. [`TypedPolicyPre`] keeps the check done by
//! `PolicyPre::new`, looks the exports up by index in each new instance, and types them with
//! `TypedFunc::new_unchecked`, which is what the generated call methods do on every call.

use crate::policy::{PluginInfo, PolicyPre, Round, Setup, Verdict};
use crate::sandbox::PluginCtx;
use wasmtime::component::{ComponentExportIndex, Func, InstancePre, TypedFunc};
use wasmtime::{AsContextMut, Engine, format_err};

/// A component's `InstancePre` and where its exports are. Only [`TypedPolicyPre::new`] makes
/// one, from a `PolicyPre` (whose construction type-checked the exports).
#[derive(Clone)]
pub(crate) struct TypedPolicyPre {
    pre: InstancePre<PluginCtx>,
    describe: ComponentExportIndex,
    configure: ComponentExportIndex,
    decide: ComponentExportIndex,
}

impl TypedPolicyPre {
    /// Type-checks the component's exports against the contract (`PolicyPre::new`) and notes
    /// their indices.
    pub(crate) fn new(pre: InstancePre<PluginCtx>) -> wasmtime::Result<Self> {
        let checked = PolicyPre::new(pre)?;
        let pre = checked.instance_pre().clone();
        let component = pre.component();
        let index =
            |name: &str| component.get_export_index(None, name).ok_or_else(|| format_err!("no export `{name}` found"));
        Ok(TypedPolicyPre {
            describe: index("describe")?,
            configure: index("configure")?,
            decide: index("decide")?,
            pre,
        })
    }

    /// The engine the component was compiled for.
    pub(crate) fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    /// A new instance in `store` and its exports.
    pub(crate) fn instantiate(&self, mut store: impl AsContextMut<Data = PluginCtx>) -> wasmtime::Result<Exports> {
        let instance = self.pre.instantiate(&mut store)?;
        let mut func = |index: &ComponentExportIndex, name: &str| {
            instance.get_func(&mut store, index).ok_or_else(|| format_err!("export `{name}` is not a function"))
        };
        Ok(Exports {
            describe: func(&self.describe, "describe")?,
            configure: func(&self.configure, "configure")?,
            decide: func(&self.decide, "decide")?,
        })
    }
}

/// One instance's exports.
pub(crate) struct Exports {
    describe: Func,
    configure: Func,
    decide: Func,
}

// SAFETY (for the three `new_unchecked` calls below): each `Func` was taken from an instance of
// the component a `TypedPolicyPre` was made for, at the index `TypedPolicyPre::new` found for
// that export name (`get_func` returns `None` for an index of another component), and
// `PolicyPre::new` had type-checked that export against exactly these parameter and result
// types. These are the types the generated `call_*` methods use with `new_unchecked` too.
impl Exports {
    /// Calls `describe`.
    pub(crate) fn call_describe(&self, store: impl AsContextMut<Data = PluginCtx>) -> wasmtime::Result<PluginInfo> {
        #[allow(unsafe_code)]
        let typed = unsafe { TypedFunc::<(), (PluginInfo,)>::new_unchecked(self.describe) };
        Ok(typed.call(store, ())?.0)
    }

    /// Calls `configure`.
    pub(crate) fn call_configure(
        &self,
        store: impl AsContextMut<Data = PluginCtx>,
        setup: &Setup,
    ) -> wasmtime::Result<Result<(), String>> {
        #[allow(unsafe_code)]
        let typed = unsafe { TypedFunc::<(&Setup,), (Result<(), String>,)>::new_unchecked(self.configure) };
        Ok(typed.call(store, (setup,))?.0)
    }

    /// Calls `decide`.
    pub(crate) fn call_decide(
        &self,
        store: impl AsContextMut<Data = PluginCtx>,
        round: &Round,
    ) -> wasmtime::Result<Verdict> {
        #[allow(unsafe_code)]
        let typed = unsafe { TypedFunc::<(&Round,), (Verdict,)>::new_unchecked(self.decide) };
        Ok(typed.call(store, (round,))?.0)
    }
}
