//! The WedSync Edge plugin SDK: write a policy plugin in Rust, test it with plain `cargo test`, and
//! build it into a WASI 0.2 component that the agent loads.
//!
//! A plugin implements [`Policy`] and names its type in [`export!`]:
//!
//! ```
//! use wedsync_sdk::{Hooks, PluginInfo, Policy, Round, Setup, Verdict};
//!
//! struct KeepTwo;
//!
//! impl Policy for KeepTwo {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::builder("keep-two", env!("CARGO_PKG_VERSION"))
//!             .description("every pool keeps at least two units")
//!             .hooks(Hooks::DECIDE)
//!             .build()
//!     }
//!
//!     fn configure(_setup: &Setup) -> Result<Self, String> {
//!         Ok(KeepTwo)
//!     }
//!
//!     fn decide(&mut self, round: &Round) -> Verdict {
//!         let mut verdict = Verdict::builder();
//!         for pool in &round.pools {
//!             verdict.raise_target(pool.pool, 2);
//!         }
//!         verdict.build()
//!     }
//! }
//!
//! wedsync_sdk::export!(KeepTwo);
//! ```
//!
//! Built with `cargo build --release --target wasm32-wasip2`, the crate's `cdylib` is a component
//! exporting the `wedsync:policy/policy@0.1.0` world. On a native target the same code runs under
//! the [`testing`] harness.
//!
//! What is here:
//! - the WIT types at stable paths ([`Verdict`], [`PoolUnits`], [`TrafficClass`], …; also under
//!   [`types`]), and the round as one record per pool ([`Round`], [`PoolState`], [`Proposal`],
//!   [`LocalTime`]) although it crosses the component boundary as columns ([`Round::from_wire`]);
//! - builders for verdicts ([`VerdictBuilder`]) and plugin descriptions ([`PluginInfoBuilder`]);
//! - calendar helpers for region-local time and seasons ([`calendar`]);
//! - look-ups on the setup and the round (pools and regions by id or name, per-class figures);
//! - logging ([`log`]) that reaches the agent's log in a component and a buffer natively;
//! - the native test harness ([`testing`]).

#![warn(missing_docs)]

// Lets the generated export macro name this crate as `wedsync_sdk` from inside it too (doc tests).
extern crate self as wedsync_sdk;

pub mod calendar;
mod ext;
pub mod log;
mod round;
pub mod testing;
mod verdict;

/// The bindings wit-bindgen generates for the `wedsync:policy/policy@0.1.0` world (`../wit`).
///
/// Plugin authors use the re-exports at the crate root instead; this module is public because
/// the [`export!`] macro expands to code that names it.
#[allow(unsafe_code, missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wedsync:policy/policy",
        pub_export_macro: true,
        export_macro_name: "__wedsync_export_policy_world",
        default_bindings_module: "wedsync_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

/// The WIT types of `wedsync:policy/types`, re-exported from the generated bindings.
pub mod types {
    pub use crate::bindings::wedsync::policy::types::{
        Adjustment, CacheHint, ClassAdmission, ClassFigures, Failover, Hooks, MetricsSummary, PluginInfo, PoolId,
        PoolInfo, PoolUnits, RegionId, RegionInfo, RegionView, Setup, TrafficClass, Verdict, Veto, VetoTarget, Wedding,
    };
    pub use crate::round::{LocalTime, PoolState, Proposal, Round, Weekday};

    /// The round as it crosses the component boundary (pools as columns); see
    /// [`Round::from_wire`](crate::Round::from_wire).
    pub mod wire {
        pub use crate::bindings::wedsync::policy::types::{PoolStatus, PoolTable, Round};
    }
}

pub use calendar::{MonthDay, MonthRange, Season};
pub use ext::ALL_CLASSES;
pub use types::*;
pub use verdict::{PluginInfoBuilder, VerdictBuilder};

/// A policy plugin.
///
/// The agent calls [`Policy::describe`] once at load, [`Policy::configure`] with its regions,
/// pools and the plugin's own config (again after a reload of the agent's configuration), then
/// [`Policy::decide`] on every round the plugin's hooks ask for. A plugin must be a pure function
/// of its input: no clock, no randomness, no I/O (the host grants none anyway).
pub trait Policy: Sized + 'static {
    /// Who the plugin is and which rounds it wants.
    fn describe() -> PluginInfo;

    /// Builds the plugin's state from the agent's setup; `setup.config` is the plugin's own
    /// config section as a JSON object (`{}` when there is none). An `Err` is reported by the
    /// agent at load and the plugin is not used.
    fn configure(setup: &Setup) -> Result<Self, String>;

    /// One decision round: adjustments, vetoes and cache hints.
    fn decide(&mut self, round: &Round) -> Verdict;
}

/// Exports a [`Policy`] implementation as the component's `policy` world.
///
/// Use it once per plugin crate, at the top level: `wedsync_sdk::export!(MyPolicy);`. The crate
/// must have `crate-type = ["cdylib"]` (add `"rlib"` to unit-test it with [`testing`]).
#[macro_export]
macro_rules! export {
    ($policy:ty) => {
        const _: () = {
            ::std::thread_local! {
                static __WEDSYNC_POLICY_STATE: ::core::cell::RefCell<::core::option::Option<$policy>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
                static __WEDSYNC_ROUND: ::core::cell::RefCell<::core::option::Option<$crate::Round>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __WedsyncPolicyExport;

            impl $crate::__private::Guest for __WedsyncPolicyExport {
                fn describe() -> $crate::PluginInfo {
                    <$policy as $crate::Policy>::describe()
                }

                fn configure(setup: $crate::Setup) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::configure::<$policy>(&__WEDSYNC_POLICY_STATE, &setup)
                }

                fn decide(round: $crate::types::wire::Round) -> $crate::Verdict {
                    $crate::__private::decide::<$policy>(&__WEDSYNC_POLICY_STATE, &__WEDSYNC_ROUND, round)
                }
            }

    $crate::bindings::__wedsync_export_policy_world!(__WedsyncPolicyExport with_types_in $crate::bindings);
        };
    };
}

/// Support for the [`export!`] macro; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use crate::bindings::Guest;
    use crate::{Policy, Round, Setup, Verdict};

    /// Replaces the plugin's state with one built from `setup`; on error the old state is dropped
    /// too, so a plugin whose configuration failed decides nothing.
    pub fn configure<P: Policy>(state: &'static LocalKey<RefCell<Option<P>>>, setup: &Setup) -> Result<(), String> {
        let configured = P::configure(setup);
        state.with(|cell| {
            let mut slot = cell.borrow_mut();
            match configured {
                Ok(policy) => {
                    *slot = Some(policy);
                    Ok(())
                }
                Err(message) => {
                    *slot = None;
                    Err(message)
                }
            }
        })
    }

    /// Runs one round; an unconfigured plugin returns an empty verdict and logs why. `scratch`
    /// keeps the previous round's buffers, refilled from `wire`.
    pub fn decide<P: Policy>(
        state: &'static LocalKey<RefCell<Option<P>>>,
        scratch: &'static LocalKey<RefCell<Option<Round>>>,
        wire: crate::types::wire::Round,
    ) -> Verdict {
        scratch.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let round = match scratch.as_mut() {
                Some(round) => {
                    round.refill_from_wire(wire);
                    round
                }
                None => scratch.insert(Round::from_wire(wire)),
            };
            state.with(|cell| match cell.borrow_mut().as_mut() {
                Some(policy) => policy.decide(round),
                None => {
                    crate::log::warn("decide called before a successful configure: no changes");
                    Verdict::default()
                }
            })
        })
    }
}
