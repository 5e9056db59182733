//! Loading: signatures, the compiled cache, hot swap, background preparation, inspection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use wedsync_plugin_host::policy::Adjustment;
use wedsync_plugin_host::signing;
use wedsync_plugin_host::{
    CacheError, CompiledCache, ExternalCompileError, ExternalCompiler, HostSettings, LoadError, PluginHost,
    PluginSource, RoundReport, Trust,
};
use wedsync_test_guests as guests;

fn raised_to(r: &RoundReport) -> u32 {
    match r.outcomes[0].result.as_ref().unwrap().adjustments[0] {
        Adjustment::RaiseTarget(u) => u.units,
        ref other => panic!("unexpected {other:?}"),
    }
}

fn hint(r: &RoundReport) -> String {
    r.outcomes[0].result.as_ref().unwrap().cache_hints[0].key.clone()
}

#[test]
fn signatures_are_checked_and_tampering_refused() {
    let key = signing::generate_keypair().unwrap();
    let other = signing::generate_keypair().unwrap();
    let strict = HostSettings { allow_unsigned: false, trusted_keys: vec![key.verifying_key()], ..settings() };
    let host = PluginHost::new(strict).unwrap();
    let sig = signing::encode_signature(&signing::sign(&key, guests::EMPTY)).into_bytes();
    let src = |bytes: &[u8], sig: Option<Vec<u8>>| PluginSource {
        bytes: bytes.to_vec(),
        signature: sig,
        origin: "p.wasm".into(),
    };

    // Good signature.
    let p = host.prepare(src(guests::EMPTY, Some(sig.clone())), "{}").unwrap();
    assert_eq!(p.trust(), &Trust::Signed { key_id: signing::key_id(&key.verifying_key()), identity: None });

    // Unsigned.
    assert!(matches!(host.prepare(src(guests::EMPTY, None), "{}"), Err(LoadError::Unsigned { .. })));
    // The component altered after signing.
    let mut tampered = guests::EMPTY.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = host.prepare(src(&tampered, Some(sig.clone())), "{}").unwrap_err();
    assert!(matches!(err, LoadError::BadSignature { .. }), "{err:?}");
    // The signature altered.
    let mut bad_sig = signing::sign(&key, guests::EMPTY).to_bytes();
    bad_sig[10] ^= 1;
    let err = host.prepare(src(guests::EMPTY, Some(bad_sig.to_vec())), "{}").unwrap_err();
    assert!(matches!(err, LoadError::BadSignature { .. }), "{err:?}");
    // Signed by an untrusted key.
    let foreign = signing::encode_signature(&signing::sign(&other, guests::EMPTY)).into_bytes();
    assert!(matches!(host.prepare(src(guests::EMPTY, Some(foreign)), "{}"), Err(LoadError::BadSignature { .. })));
    // Garbage signature file.
    assert!(matches!(
        host.prepare(src(guests::EMPTY, Some(b"nope".to_vec())), "{}"),
        Err(LoadError::BadSignature { .. })
    ));

    // allow_unsigned loads them, saying so.
    let lax = PluginHost::new(HostSettings { trusted_keys: vec![key.verifying_key()], ..settings() }).unwrap();
    assert_eq!(lax.prepare(src(guests::EMPTY, None), "{}").unwrap().trust(), &Trust::Unsigned);
    let p = lax.prepare(src(guests::EMPTY, Some(bad_sig.to_vec())), "{}").unwrap();
    assert!(matches!(p.trust(), Trust::BadSignature { .. }));
}

#[test]
fn hot_swap_replaces_atomically_and_a_failing_new_version_leaves_the_old_one() {
    let mut host = host();
    let s = setup(2, 1);
    assert_eq!(install(&mut host, guests::VERSION_A, "a.wasm", &s), "counter");
    let r = host.decide(at_secs(0), &round(&s, 0));
    assert_eq!(raised_to(&r), guests::VERSION_A_TARGET);
    assert_eq!(hint(&r), "counter-1.0.0:1");

    let b = prepare(&host, guests::VERSION_B, "b.wasm");
    let b_sha = b.sha256_hex();
    let installed = host.install(b, &s).unwrap();
    assert_eq!(installed.version, "2.0.0");
    assert_eq!(installed.replaced.as_ref().map(|r| r.0.as_str()), Some("1.0.0"));
    assert_eq!(host.names(), vec!["counter"]);
    let r = host.decide(at_secs(1), &round(&s, 1));
    assert_eq!(raised_to(&r), guests::VERSION_B_TARGET);
    assert_eq!(hint(&r), "counter-2.0.0:1");
    assert_eq!(&*r.outcomes[0].version, "2.0.0");
    assert_eq!(&*r.outcomes[0].sha256, b_sha);
}

#[test]
fn a_new_version_that_cannot_start_leaves_the_old_one_running() {
    // One instance slot: the new version cannot be instantiated beside the old one.
    let mut host = PluginHost::new(HostSettings { max_instances: 1, ..settings() }).unwrap();
    let s = setup(2, 1);
    install(&mut host, guests::VERSION_A, "a.wasm", &s);
    assert_eq!(hint(&host.decide(at_secs(0), &round(&s, 0))), "counter-1.0.0:1");
    let b = prepare(&host, guests::VERSION_B, "b.wasm");
    let err = host.install(b, &s).unwrap_err();
    assert!(matches!(err, LoadError::Start { stage: "instantiate", .. }), "{err:?}");
    // The old version, same instance, goes on.
    let r = host.decide(at_secs(1), &round(&s, 1));
    assert_eq!(hint(&r), "counter-1.0.0:2");
    assert_eq!(host.plugins()[0].version, "1.0.0");
}

#[test]
fn reconfigure_is_atomic() {
    let mut host = host();
    let s = setup(2, 1);
    install(&mut host, wedsync_plugins::WEDDING_DAY_GUARD.wasm, "guard.wasm", &s);
    let mut bad = s.clone();
    bad.config = r#"{"reserve": 5}"#.into();
    let err = host.reconfigure("wedding-day-guard", &bad).unwrap_err();
    assert!(matches!(err, LoadError::Configure { .. }), "{err:?}");
    assert!(err.to_string().contains("reserve"), "{err}");
    assert_eq!(host.decide(at_secs(0), &round(&s, 0)).failures().count(), 0);
    let mut good = s.clone();
    good.config = r#"{"reserve": 0.5}"#.into();
    host.reconfigure("wedding-day-guard", &good).unwrap();
    assert!(matches!(host.reconfigure("nope", &good), Err(LoadError::NotFound(_))));
}

#[test]
fn prepare_runs_on_another_thread_while_the_host_decides() {
    let mut host = host();
    let s = setup(2, 1);
    install(&mut host, guests::VERSION_A, "a.wasm", &s);
    let loader = host.loader();
    let worker = std::thread::spawn(move || loader.prepare(source(guests::VERSION_B, "b.wasm"), "{}"));
    let mut rounds = 0u64;
    while !worker.is_finished() && rounds < 10_000 {
        assert_eq!(host.decide(at_secs(rounds), &round(&s, rounds)).failures().count(), 0);
        rounds += 1;
    }
    let prepared = worker.join().unwrap().unwrap();
    host.install(prepared, &s).unwrap();
    assert_eq!(raised_to(&host.decide(at_secs(rounds), &round(&s, rounds))), guests::VERSION_B_TARGET);
}

#[test]
fn the_compiled_cache_is_hit_and_a_tampered_artifact_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cached = || HostSettings { cache_dir: Some(dir.path().to_path_buf()), ..settings() };
    let host = PluginHost::new(cached()).unwrap();
    let p = prepare(&host, guests::LARGE, "large.wasm");
    assert!(!p.from_cache());
    assert!(prepare(&host, guests::LARGE, "large.wasm").from_cache());

    // A new host (a restart) uses the artifact: warm start.
    let mut host2 = PluginHost::new(cached()).unwrap();
    let t = Instant::now();
    let p = prepare(&host2, guests::LARGE, "large.wasm");
    let warm = t.elapsed();
    assert!(p.from_cache());
    let s = setup(3, 1);
    host2.install(p, &s).unwrap();
    assert_eq!(host2.decide(at_secs(0), &round(&s, 0)).failures().count(), 0);
    eprintln!("warm start of the ~200 KB component from the cache: {warm:?}");

    // Tamper with the artifact: it is refused, recompiled, and rewritten.
    let sha = signing::sha256(guests::LARGE);
    let cache = host2.loader().cache().unwrap().artifact_path(&sha);
    let mut bytes = std::fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&cache, &bytes).unwrap();
    let direct = CompiledCache::open(dir.path(), host2.engine()).unwrap();
    assert!(matches!(direct.load(host2.engine(), &sha), Err(CacheError::Tampered { .. })));
    let p = prepare(&host2, guests::LARGE, "large.wasm");
    assert!(!p.from_cache());
    assert_eq!(host2.loader().cache_refusals(), 1);
    assert!(prepare(&host2, guests::LARGE, "large.wasm").from_cache());

    // An artifact without its tag (e.g. planted in the directory) is refused too.
    let mut tag = cache.clone().into_os_string();
    tag.push(".tag");
    std::fs::remove_file(&tag).unwrap();
    assert!(matches!(direct.load(host2.engine(), &sha), Err(CacheError::Tampered { .. })));
    assert!(!prepare(&host2, guests::LARGE, "large.wasm").from_cache());
    assert_eq!(host2.loader().cache_refusals(), 2);
    assert!(prepare(&host2, guests::LARGE, "large.wasm").from_cache());

    // An artifact written under another cache's key is refused too.
    let other_dir = tempfile::tempdir().unwrap();
    let other =
        PluginHost::new(HostSettings { cache_dir: Some(other_dir.path().to_path_buf()), ..settings() }).unwrap();
    let foreign = other.loader().cache().unwrap().artifact_path(&sha);
    std::fs::copy(&cache, &foreign).unwrap();
    assert!(!prepare(&other, guests::LARGE, "large.wasm").from_cache());
    assert_eq!(other.loader().cache_refusals(), 1);
}

/// Stands in for the agent's child process: compiles into the cache with `compile_into_cache`
/// (or, `unavailable`, fails as a child that cannot start does).
#[derive(Debug)]
struct FakeChild {
    settings: HostSettings,
    unavailable: bool,
    calls: AtomicU32,
}

impl ExternalCompiler for FakeChild {
    fn compile(&self, component: &[u8]) -> Result<(), ExternalCompileError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.unavailable {
            return Err(ExternalCompileError::Unavailable("cannot start".into()));
        }
        wedsync_plugin_host::compile_into_cache(&self.settings, component)
    }
}

#[test]
fn an_external_compiler_fills_the_cache_and_the_host_loads_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = HostSettings { cache_dir: Some(dir.path().to_path_buf()), ..settings() };
    let child = Arc::new(FakeChild { settings: base.clone(), unavailable: false, calls: AtomicU32::new(0) });
    let mut host = PluginHost::new(HostSettings { external_compiler: Some(child.clone()), ..base.clone() }).unwrap();
    let p = prepare(&host, guests::LARGE, "large.wasm");
    assert!(p.compiled_externally() && !p.from_cache(), "{p:?}");
    assert_eq!(child.calls.load(Ordering::Relaxed), 1);
    assert!(host.loader().cache().unwrap().artifact_path(&signing::sha256(guests::LARGE)).exists());
    let s = setup(3, 1);
    host.install(p, &s).unwrap();
    assert_eq!(host.decide(at_secs(0), &round(&s, 0)).failures().count(), 0);
    // Now cached: no compilation anywhere.
    let p = prepare(&host, guests::LARGE, "large.wasm");
    assert!(p.from_cache() && !p.compiled_externally());
    assert_eq!(child.calls.load(Ordering::Relaxed), 1);

    // What does not compile is refused with the message an in-process compilation gives.
    let bad = || source(b"\0asm not really", "bad.wasm");
    let outside = host.prepare(bad(), "{}").unwrap_err();
    let inside = PluginHost::new(base.clone()).unwrap().prepare(bad(), "{}").unwrap_err();
    assert!(matches!(outside, LoadError::Compile { .. }), "{outside:?}");
    assert_eq!(outside.to_string(), inside.to_string());
    assert_eq!(child.calls.load(Ordering::Relaxed), 2);

    // A compiler that cannot run: the host compiles in its own process, and caches it.
    let broken = Arc::new(FakeChild { settings: base.clone(), unavailable: true, calls: AtomicU32::new(0) });
    let other_dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostSettings {
        cache_dir: Some(other_dir.path().to_path_buf()),
        external_compiler: Some(broken.clone()),
        ..settings()
    })
    .unwrap();
    let p = prepare(&host, guests::LARGE, "large.wasm");
    assert!(!p.compiled_externally() && !p.from_cache());
    assert!(prepare(&host, guests::LARGE, "large.wasm").from_cache());
    assert_eq!(broken.calls.load(Ordering::Relaxed), 1);
}

#[test]
fn inspect_tells_what_a_component_is() {
    let i = wedsync_plugin_host::inspect(guests::EMPTY).unwrap();
    assert_eq!(i.size, guests::EMPTY.len());
    assert_eq!(i.sha256, hex_sha(guests::EMPTY));
    assert!(i.world.is_ok(), "{:?}", i.world);
    assert!(i.forbidden_imports.is_empty());
    for e in ["describe", "configure", "decide"] {
        assert!(i.exports.iter().any(|x| x == e), "{:?}", i.exports);
    }
    assert!(i.imports.iter().any(|x| x.starts_with("wedsync:policy/")), "{:?}", i.imports);
    assert_eq!(i.info.unwrap().name, "empty");

    let i = wedsync_plugin_host::inspect(guests::EXTRA_IMPORT).unwrap();
    assert!(i.forbidden_imports.iter().any(|x| x.starts_with("wedsync:evil/net")), "{:?}", i.forbidden_imports);
    assert!(i.world.is_err());
    assert!(i.info.is_none());
}

fn hex_sha(bytes: &[u8]) -> String {
    signing::sha256(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_plugin_prepared_by_another_host_is_refused() {
    let a = host();
    let mut b = host();
    let p = prepare(&a, guests::EMPTY, "empty.wasm");
    let s = setup(1, 1);
    assert!(matches!(b.instantiate_detached(&p, &s), Err(LoadError::ForeignPrepared { .. })));
    assert!(matches!(b.install(p, &s), Err(LoadError::ForeignPrepared { .. })));
    let p = prepare(&a, guests::EMPTY, "empty.wasm");
    let mut d = a.instantiate_detached(&p, &s).unwrap();
    assert!(b.call_detached(&mut d, &round(&s, 0), 1).is_err());
    assert!(a.call_detached(&mut d, &round(&s, 0), 1).is_ok());
}

#[test]
fn a_v2_signature_binds_name_and_version() {
    let key = signing::generate_keypair().unwrap();
    let strict = HostSettings { allow_unsigned: false, trusted_keys: vec![key.verifying_key()], ..settings() };
    let mut host = PluginHost::new(strict).unwrap();
    let s = setup(2, 1);
    let signed_as = |name: &str, version: &str, bytes: &[u8]| {
        let identity = signing::SignedIdentity { name: name.into(), version: version.into() };
        signing::encode_bound_signature(&identity, &signing::sign_bound(&key, &identity, bytes)).into_bytes()
    };
    let src = |bytes: &[u8], sig: Vec<u8>| PluginSource {
        bytes: bytes.to_vec(),
        signature: Some(sig),
        origin: "c.wasm".into(),
    };

    // Signed as what it is: loads, and the trust names what was signed.
    let p = host.prepare(src(guests::VERSION_B, signed_as("counter", "2.0.0", guests::VERSION_B)), "{}").unwrap();
    match p.trust() {
        Trust::Signed { identity: Some(id), .. } => {
            assert_eq!((id.name.as_str(), id.version.as_str()), ("counter", "2.0.0"))
        }
        other => panic!("{other:?}"),
    }
    host.install(p, &s).unwrap();

    // The same signature moved to another build: its digest is in the statement.
    let err = host.prepare(src(guests::VERSION_A, signed_as("counter", "2.0.0", guests::VERSION_B)), "{}").unwrap_err();
    assert!(matches!(err, LoadError::BadSignature { .. }), "{err:?}");
    // A genuine signature whose statement names another version: refused at install.
    let lying = host.prepare(src(guests::VERSION_A, signed_as("counter", "3.0.0", guests::VERSION_A)), "{}").unwrap();
    let err = host.install(lying, &s).unwrap_err();
    assert!(matches!(err, LoadError::NotAsSigned { .. }), "{err:?}");
    assert!(err.to_string().contains("signed as counter 3.0.0"), "{err}");
    // The name and version cannot be edited in the file: the signature no longer verifies.
    let edited = String::from_utf8(signed_as("counter", "1.0.0", guests::VERSION_A)).unwrap().replace("1.0.0", "9.0.0");
    let err = host.prepare(src(guests::VERSION_A, edited.into_bytes()), "{}").unwrap_err();
    assert!(matches!(err, LoadError::BadSignature { .. }), "{err:?}");

    // An older genuinely signed build put back: refused while 2.0.0 runs.
    let older = host.prepare(src(guests::VERSION_A, signed_as("counter", "1.0.0", guests::VERSION_A)), "{}").unwrap();
    let err = host.install(older, &s).unwrap_err();
    assert!(matches!(err, LoadError::Rollback { .. }), "{err:?}");
    assert_eq!(host.plugins()[0].version, "2.0.0");
}

#[test]
fn a_rollback_allowed_is_reported() {
    let mut host = PluginHost::new(HostSettings { allow_rollback: true, ..settings() }).unwrap();
    let s = setup(2, 1);
    install(&mut host, guests::VERSION_B, "b.wasm", &s);
    let installed = host.install(prepare(&host, guests::VERSION_A, "a.wasm"), &s).unwrap();
    assert!(installed.rolled_back);
    assert_eq!(installed.replaced.as_ref().map(|r| r.0.as_str()), Some("2.0.0"));
    assert_eq!(wedsync_plugin_host::version_order("1.10.0", "1.9.2"), std::cmp::Ordering::Greater);
    assert_eq!(wedsync_plugin_host::version_order("v2.0.0-rc1", "2.0.0"), std::cmp::Ordering::Equal);
}
