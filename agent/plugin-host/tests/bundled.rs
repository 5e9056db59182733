//! Each bundled plugin's behaviour through the real host: a round in, the expected adjustments
//! and vetoes out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use wedsync_plugin_host::policy::*;
use wedsync_plugin_host::{PluginHost, RoundReport};
use wedsync_plugins::{BUNDLED, COST_GUARD, DATA_RESIDENCY, REGIONAL_SEASONS, WEDDING_DAY_GUARD};

fn one(host: &mut PluginHost, wasm: &[u8], setup: &Setup, round: &Round) -> Verdict {
    install(host, wasm, "bundled", setup);
    let report = host.decide(at_secs(1), round);
    assert_eq!(report.outcomes.len(), 1, "{report:?}");
    report.outcomes[0].result.clone().unwrap()
}

fn units(v: &Verdict, f: impl Fn(&Adjustment) -> Option<PoolUnits>) -> Vec<(u32, u32)> {
    v.adjustments.iter().filter_map(f).map(|u| (u.pool, u.units)).collect()
}

#[test]
fn wedding_day_guard_vetoes_scale_down_keeps_the_reserve_and_raises_the_floor() {
    let mut host = host();
    let s = setup(2, 1);
    let mut r = round(&s, 1);
    // Pool 0: a wedding is active in its region; the engine proposes to scale it down.
    r.pools.status[0] = PoolStatus::PROTECTED;
    r.pools.load[0] = 280.0;
    r.pools.demand[3] = 600.0; // pool 0's media: 840 rps in all, 60 of it wedding-critical
    r.pools.proposed[0] = 3;
    r.weddings.push(Wedding {
        guests: 400,
        start_unix_ms: SATURDAY_MS - 3_600_000,
        end_unix_ms: SATURDAY_MS + 3_600_000,
    });
    let v = one(&mut host, WEDDING_DAY_GUARD.wasm, &s, &r);

    assert!(v.vetoes.iter().any(|veto| veto.target == VetoTarget::ScaleDown(0) && !veto.reason.is_empty()), "{v:?}");
    // The wedding-critical reserve: the other classes' 780 rps within 80% of 100 per unit → 10
    // units (the whole 840 fits in 9).
    assert_eq!(units(&v, |a| if let Adjustment::RaiseTarget(u) = a { Some(*u) } else { None }), vec![(0, 10)]);
    // A large wedding: protected floor 6 + 2 + ceil(6 × 0.5) = 11.
    assert_eq!(units(&v, |a| if let Adjustment::PrescaleFloor(u) = a { Some(*u) } else { None }), vec![(0, 11)]);
    // Pool 1 is not protected: untouched.
    assert!(v.vetoes.iter().all(|veto| veto.target != VetoTarget::ScaleDown(1)));
    // It logged (through the log import) at configure and when protection began.
    let st = host.status("wedding-day-guard").unwrap();
    assert!(st.log_lines >= 2 && st.log_dropped == 0, "{st:?}");

    // No wedding anywhere: nothing to say.
    let v = host.decide(at_secs(2), &round(&s, 2)).outcomes[0].result.clone().unwrap();
    assert_eq!(v, Verdict { adjustments: vec![], vetoes: vec![], cache_hints: vec![] });
}

#[test]
fn regional_seasons_raises_floors_in_season_on_saturdays() {
    let mut host = host();
    let s = setup(1, 1); // pool 0 in eu-west (northern hemisphere: April–October)
    // A Wednesday in January, no holiday: off season, no floor; the plugin learns the usual load.
    let mut winter = round(&s, 1);
    winter.unix_ms = WINTER_WEDNESDAY_MS;
    winter.utc_offset_minutes = 0;
    winter.pools.utc_offset_minutes[0] = 0;
    winter.pools.load[0] = 280.0;
    let v = one(&mut host, REGIONAL_SEASONS.wasm, &s, &winter);
    assert!(v.adjustments.is_empty(), "{v:?}");

    // A Saturday in June: season × Saturday surge on the usual 280 rps pushes the floor above
    // the proposal of 5 (280 × 2.1 / 70 → 9).
    let mut r = round(&s, 2);
    r.pools.load[0] = 280.0;
    r.pools.demand[..5].fill(56.0);
    let v = host.decide(at_secs(2), &r).outcomes[0].result.clone().unwrap();
    let floors = units(&v, |a| if let Adjustment::PrescaleFloor(u) = a { Some(*u) } else { None });
    assert_eq!(floors, vec![(0, 9)], "{v:?}");
}

fn residency_setup() -> Setup {
    let mut s = setup(2, 3);
    s.regions = vec![
        RegionInfo { name: "eu-west".into(), time_zone: "Europe/London".into() },
        RegionInfo { name: "eu-central".into(), time_zone: "Europe/Berlin".into() },
        RegionInfo { name: "us-east".into(), time_zone: "America/New_York".into() },
    ];
    s.pools[0].region = 0;
    s.pools[0].placements = vec![2];
    s.pools[1].region = 0;
    s.pools[1].placements = vec![1];
    s
}

#[test]
fn data_residency_vetoes_moves_out_of_the_eu() {
    let mut host = host();
    let s = residency_setup();
    let mut r = round(&s, 1);
    r.pools.placement[0] = 2; // eu-west → us-east: outside GDPR's EU
    r.pools.placement[1] = 1; // eu-west → eu-central: fine
    let failover = |id: &str, to: &str| Failover {
        id: id.into(),
        failed_region: "eu-west".into(),
        target_region: to.into(),
        load: 500.0,
        pool: None,
    };
    r.failovers = vec![failover("f-us", "us-east"), failover("f-eu", "eu-central")];
    let v = one(&mut host, DATA_RESIDENCY.wasm, &s, &r);
    let targets: Vec<&VetoTarget> = v.vetoes.iter().map(|v| &v.target).collect();
    assert!(targets.contains(&&VetoTarget::Placement(0)), "{v:?}");
    assert!(!targets.contains(&&VetoTarget::Placement(1)), "{v:?}");
    assert!(targets.contains(&&VetoTarget::Failover("f-us".into())), "{v:?}");
    assert!(!targets.contains(&&VetoTarget::Failover("f-eu".into())), "{v:?}");
    assert!(v.vetoes.iter().all(|v| !v.reason.is_empty()));
    let st = host.plugins();
    assert!(st[0].hooks.contains(Hooks::FAILOVER));
}

#[test]
fn cost_guard_caps_spot_and_trims_past_its_budget_but_never_critical() {
    let mut host = host();
    let mut s = setup(2, 1);
    s.config = r#"{"budget_per_hour": 0.5}"#.into();
    let mut r = round(&s, 1);
    r.pools.proposed.fill(9);
    r.pools.spot_units.fill(9); // all of it on spot, more than spot_max_fraction 0.5 allows
    let v = one(&mut host, COST_GUARD.wasm, &s, &r);
    let caps = units(&v, |a| if let Adjustment::SpotCap(u) = a { Some(*u) } else { None });
    assert_eq!(caps.len(), 2, "{v:?}");
    assert!(caps.iter().all(|(_, n)| *n <= 4), "{caps:?}");
    let lowered = units(&v, |a| if let Adjustment::LowerTarget(u) = a { Some(*u) } else { None });
    assert!(!lowered.is_empty(), "{v:?}");
    // Never below the current target (4), never above the proposal.
    assert!(lowered.iter().all(|(_, n)| (4..9).contains(n)), "{lowered:?}");
    for a in &v.adjustments {
        if let Adjustment::Admit(c) = a {
            assert_ne!(c.class, TrafficClass::WeddingCritical, "{v:?}");
        }
    }
}

#[test]
fn the_four_bundled_plugins_decide_a_round_in_order() {
    let mut host = host();
    let s = residency_setup();
    for p in BUNDLED {
        assert_eq!(install(&mut host, p.wasm, p.name, &s), p.name);
    }
    assert_eq!(host.names(), BUNDLED.iter().map(|p| p.name).collect::<Vec<_>>());
    let report: RoundReport = host.decide(at_secs(1), &round(&s, 1));
    let names: Vec<&str> = report.outcomes.iter().map(|o| &*o.name).collect();
    assert_eq!(names, BUNDLED.iter().map(|p| p.name).collect::<Vec<_>>());
    assert_eq!(report.failures().count(), 0, "{report:?}");
    for st in host.plugins() {
        assert_eq!(st.calls, 1);
        assert!(!st.version.is_empty() && st.sha256.len() == 64);
    }
    // Reordering: cost-guard first.
    host.set_order(&["cost-guard"]);
    assert_eq!(host.names()[0], "cost-guard");
    assert!(host.remove("cost-guard"));
    assert!(!host.remove("cost-guard"));
    assert_eq!(host.decide(at_secs(2), &round(&s, 2)).outcomes.len(), 3);
}
