//! Every adversarial guest is refused at load or stopped within its budget and counted; after a
//! failure the plugin is re-instantiated, and repeated failures quarantine it with backoff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};
use wedsync_plugin_host::policy::Adjustment;
use wedsync_plugin_host::{FailureKind, HostSettings, LoadError, PluginHost, PluginState, SkipReason};
use wedsync_test_guests as guests;

#[test]
fn empty_plugin_decides() {
    init_tracing();
    let mut host = host();
    let s = setup(3, 2);
    let name = install(&mut host, guests::EMPTY, "empty.wasm", &s);
    let report = host.decide(at_secs(1), &round(&s, 1));
    assert_eq!(report.outcomes.len(), 1);
    let o = &report.outcomes[0];
    assert_eq!(&*o.name, name);
    let v = o.result.as_ref().unwrap();
    assert!(v.adjustments.is_empty() && v.vetoes.is_empty() && v.cache_hints.is_empty());
    assert_eq!(o.sha256.len(), 64);
    let status = host.status(&name).unwrap();
    assert_eq!(status.state, PluginState::Active);
    assert_eq!(status.calls, 1);
    assert!(status.p50.is_some() && status.p99.is_some());
}

#[test]
fn infinite_loop_is_stopped_within_twice_its_budget() {
    let mut host = PluginHost::new(tight_settings()).unwrap();
    let s = setup(2, 1);
    let name = install(&mut host, guests::INFINITE_LOOP, "loop.wasm", &s);
    let budget = HostSettings::default().call_budget;
    for i in 0..2u64 {
        let t = Instant::now();
        let report = host.decide(at_secs(i), &round(&s, i));
        let took = t.elapsed();
        let o = &report.outcomes[0];
        assert_eq!(o.result.as_ref().unwrap_err().kind, FailureKind::Timeout, "{:?}", o.result);
        assert!(took <= stop_bound(budget), "stopped after {took:?}");
        assert!(o.elapsed >= budget, "{:?}", o.elapsed);
    }
    assert!(host.interruptions() >= 2);
    let status = host.status(&name).unwrap();
    assert_eq!(status.failures.get(FailureKind::Timeout), 2);
    assert_eq!(status.state, PluginState::Failed);
}

#[test]
fn a_short_budget_is_honoured_too() {
    let budget = Duration::from_millis(20);
    let mut host = PluginHost::new(HostSettings { call_budget: budget, ..settings() }).unwrap();
    let s = setup(2, 1);
    install(&mut host, guests::INFINITE_LOOP, "loop.wasm", &s);
    let t = Instant::now();
    let report = host.decide(at_secs(0), &round(&s, 0));
    let took = t.elapsed();
    assert_eq!(report.outcomes[0].result.as_ref().unwrap_err().kind, FailureKind::Timeout);
    assert!(took >= budget && took <= stop_bound(budget), "stopped after {took:?}");
}

#[test]
fn memory_bomb_is_stopped_at_its_cap() {
    let mut host = host();
    let s = setup(2, 1);
    let name = install(&mut host, guests::MEMORY_BOMB, "bomb.wasm", &s);
    let t = Instant::now();
    let report = host.decide(at_secs(0), &round(&s, 0));
    let f = report.outcomes[0].result.as_ref().unwrap_err();
    assert_eq!(f.kind, FailureKind::Memory, "{f:?}");
    assert!(f.message.contains("cap"), "{f:?}");
    assert!(t.elapsed() < settings().call_budget, "{:?}", t.elapsed());
    assert_eq!(host.status(&name).unwrap().failures.get(FailureKind::Memory), 1);
}

#[test]
fn trap_and_panic_are_counted_as_traps() {
    let mut host = host();
    let s = setup(2, 1);
    let trap = install(&mut host, guests::TRAP, "trap.wasm", &s);
    let panic = install(&mut host, guests::PANIC, "panic.wasm", &s);
    let empty = install(&mut host, guests::EMPTY, "empty.wasm", &s);
    for i in 0..2u64 {
        let report = host.decide(at_secs(i), &round(&s, i));
        assert_eq!(report.outcomes.len(), 3);
        let kinds: Vec<_> = report.outcomes.iter().map(|o| o.result.as_ref().err().map(|f| f.kind)).collect();
        // The round goes on past the failing plugins.
        assert_eq!(kinds, vec![Some(FailureKind::Trap), Some(FailureKind::Trap), None]);
        assert_eq!(report.failures().count(), 2);
        assert_eq!(report.verdicts().count(), 1);
    }
    for name in [&trap, &panic] {
        let st = host.status(name).unwrap();
        assert_eq!(st.failures.get(FailureKind::Trap), 2, "{name}");
        assert_eq!(st.calls, 2);
        assert!(st.last_failure.is_some());
    }
    assert_eq!(host.status(&empty).unwrap().failures.total(), 0);
    // The panic message went to stderr, hence to the agent's log under the plugin's name.
    assert!(host.status(&panic).unwrap().log_lines >= 1);
}

#[test]
fn huge_output_is_refused() {
    let mut host = host();
    let s = setup(2, 1);
    let name = install(&mut host, guests::HUGE_OUTPUT, "huge.wasm", &s);
    let report = host.decide(at_secs(0), &round(&s, 0));
    let f = report.outcomes[0].result.as_ref().unwrap_err();
    assert_eq!(f.kind, FailureKind::OutputTooLarge, "{f:?}");
    assert_eq!(host.status(&name).unwrap().failures.get(FailureKind::OutputTooLarge), 1);
}

#[test]
fn extra_import_is_refused_at_load_naming_it() {
    let host = host();
    let err = host.prepare(source(guests::EXTRA_IMPORT, "extra.wasm"), "{}").unwrap_err();
    match &err {
        LoadError::ForbiddenImport { import, origin } => {
            assert!(import.starts_with("wedsync:evil/net"), "{import}");
            assert_eq!(origin, "extra.wasm");
        }
        other => panic!("expected ForbiddenImport, got {other:?}"),
    }
    assert!(err.to_string().contains("wedsync:evil/net"), "{err}");
}

/// The host calls exports through types checked once per component, so a component whose
/// exports have other types must never get past load.
#[test]
fn exports_of_the_wrong_types_are_refused_at_load_naming_the_export() {
    let host = host();
    let wrong = wat::parse_str(
        r#"(component
          (core module $m (func (export "f") (result i32) i32.const 1))
          (core instance $i (instantiate $m))
          (func (export "describe") (result u32) (canon lift (core func $i "f")))
          (func (export "configure") (result u32) (canon lift (core func $i "f")))
          (func (export "decide") (result u32) (canon lift (core func $i "f"))))"#,
    )
    .unwrap();
    let err = host.prepare(source(&wrong, "wrong.wasm"), "{}").unwrap_err();
    match &err {
        LoadError::World { origin, reason } => {
            assert_eq!(origin, "wrong.wasm");
            assert!(reason.contains("type-checking export func `"), "{reason}");
        }
        other => panic!("expected World, got {other:?}"),
    }
}

#[test]
fn configure_error_is_reported_at_load() {
    let mut host = host();
    let s = setup(2, 1);
    let p = prepare(&host, guests::FAILS_CONFIGURE, "fails.wasm");
    let err = host.install(p, &s).unwrap_err();
    match &err {
        LoadError::Configure { message, .. } => assert_eq!(message, guests::FAILS_CONFIGURE_MESSAGE),
        other => panic!("expected Configure, got {other:?}"),
    }
    assert!(err.to_string().contains(guests::FAILS_CONFIGURE_MESSAGE));
    assert!(host.plugins().is_empty());
}

#[test]
fn not_a_component_is_refused() {
    let host = host();
    let err = host.prepare(source(b"\0asm\x01\0\0\0", "core.wasm"), "{}").unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
    let err = host.prepare(source(b"garbage", "garbage.wasm"), "{}").unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
    let small = PluginHost::new(HostSettings { max_component_size: 1000, ..settings() }).unwrap();
    let err = small.prepare(source(guests::EMPTY, "big.wasm"), "{}").unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err:?}");
}

#[test]
fn the_next_call_after_a_failure_works_on_a_fresh_instance() {
    let mut host = host();
    let s = setup(2, 1);
    let name = install(&mut host, guests::VERSION_A, "counter.wasm", &s);
    let hint = |r: &wedsync_plugin_host::RoundReport| r.outcomes[0].result.as_ref().unwrap().cache_hints[0].key.clone();
    let r1 = host.decide(at_secs(0), &round(&s, 0));
    assert_eq!(hint(&r1), "counter-1.0.0:1");
    let r2 = host.decide(at_secs(1), &round(&s, 1));
    assert_eq!(hint(&r2), "counter-1.0.0:2");
    // A round naming a pool the setup does not have: the counter raises it, which is bad output.
    let bad = round(&setup(3, 1), 2);
    let r3 = host.decide(at_secs(2), &bad);
    assert_eq!(r3.outcomes[0].result.as_ref().unwrap_err().kind, FailureKind::BadOutput);
    assert_eq!(host.status(&name).unwrap().state, PluginState::Failed);
    // The instance was discarded: a fresh one starts counting again.
    let r4 = host.decide(at_secs(3), &round(&s, 3));
    assert_eq!(hint(&r4), "counter-1.0.0:1");
    assert!(
        matches!(r4.outcomes[0].result.as_ref().unwrap().adjustments[0], Adjustment::RaiseTarget(u) if u.units == guests::VERSION_A_TARGET)
    );
    let st = host.status(&name).unwrap();
    assert_eq!(st.state, PluginState::Active);
    assert_eq!(st.failures.get(FailureKind::BadOutput), 1);
    assert_eq!(st.calls, 4);
}

#[test]
fn three_failures_in_a_minute_quarantine_with_doubling_backoff() {
    let mut host = host();
    let s = setup(2, 1);
    let name = install(&mut host, guests::TRAP, "trap.wasm", &s);
    let r = |host: &mut PluginHost, t: u64| host.decide(at_secs(t), &round(&s, t));

    // Failures spread wider than the window do not quarantine.
    for t in [0, 40, 80, 120] {
        let rep = r(&mut host, t);
        assert_eq!(rep.outcomes.len(), 1);
        assert_eq!(rep.outcomes[0].quarantined_until, None, "t={t}");
    }
    // Three within 60 s do (two are already in the window: 80 and 120).
    let rep = r(&mut host, 130);
    assert_eq!(rep.outcomes[0].quarantined_until, Some(at_secs(160)));
    let st = host.status(&name).unwrap();
    assert_eq!(st.state, PluginState::Quarantined);
    assert_eq!(st.quarantined_until, Some(at_secs(160)));
    assert_eq!(st.quarantines, 1);

    // Skipped while quarantined.
    let rep = r(&mut host, 159);
    assert!(rep.outcomes.is_empty());
    assert_eq!(rep.skipped[0].reason, SkipReason::Quarantined { until: at_secs(160) });

    // Released at the end of the backoff, tried again; three more failures: 60 s this time.
    for t in [160, 161] {
        let rep = r(&mut host, t);
        assert_eq!(rep.outcomes.len(), 1, "t={t}");
        assert_eq!(rep.outcomes[0].quarantined_until, None);
    }
    let rep = r(&mut host, 162);
    assert_eq!(rep.outcomes[0].quarantined_until, Some(at_secs(222)));
    assert!(r(&mut host, 221).outcomes.is_empty());
    assert_eq!(r(&mut host, 222).outcomes.len(), 1);
    let st = host.status(&name).unwrap();
    assert_eq!(st.quarantines, 2);
    assert_eq!(st.failures.get(FailureKind::Trap), 9);
    assert_eq!(st.calls, 9);
}

#[test]
fn quarantine_backoff_is_capped() {
    let mut host = host();
    let s = setup(1, 1);
    install(&mut host, guests::TRAP, "trap.wasm", &s);
    let mut t = 0u64;
    let mut last_backoff = 0;
    // Each cycle: three failures one second apart, then wait out the quarantine.
    for cycle in 0..8 {
        let mut until = None;
        for _ in 0..3 {
            until = host.decide(at_secs(t), &round(&s, t)).outcomes[0].quarantined_until;
            t += 1;
        }
        let until = until.expect("quarantined after three failures").as_nanos() / 1_000_000_000;
        let backoff = until - (t - 1);
        let expected = (30u64 << cycle).min(600);
        assert_eq!(backoff, expected, "cycle {cycle}");
        assert!(backoff >= last_backoff);
        last_backoff = backoff;
        t = until;
    }
}

#[test]
fn a_failed_reinstantiation_is_counted_and_retried() {
    // Two instance slots: the trap plugin's and the empty plugin's.
    let mut host = PluginHost::new(HostSettings { max_instances: 2, ..settings() }).unwrap();
    let s = setup(1, 1);
    let trap = install(&mut host, guests::TRAP, "trap.wasm", &s);
    install(&mut host, guests::EMPTY, "empty.wasm", &s);
    assert_eq!(host.decide(at_secs(0), &round(&s, 0)).failures().count(), 1);
    // The trap plugin's slot is free again; take it, so its re-instantiation cannot happen.
    let p = prepare(&host, guests::EMPTY, "squatter.wasm");
    let squatter = host.instantiate_detached(&p, &s).unwrap();
    let report = host.decide(at_secs(1), &round(&s, 1));
    let f = report.outcomes[0].result.as_ref().unwrap_err();
    assert_eq!(f.kind, FailureKind::Instantiate, "{f:?}");
    assert!(report.outcomes[1].result.is_ok());
    drop(squatter);
    // With the slot back, it is re-instantiated (and traps again, as it always does).
    let report = host.decide(at_secs(2), &round(&s, 2));
    assert_eq!(report.outcomes[0].result.as_ref().unwrap_err().kind, FailureKind::Trap);
    let st = host.status(&trap).unwrap();
    assert_eq!((st.failures.get(FailureKind::Trap), st.failures.get(FailureKind::Instantiate)), (2, 1));
    assert_eq!(st.state, PluginState::Quarantined);
}
