//! Fleet behaviour in the simulator (virtual time): joining, failure detection, partitions,
//! restarts, loss, state dissemination, local health, viral content, region failover. Timing assertions are in virtual
//! seconds; the 1,000-node measurements are in `benches/benches/mesh_sim.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::time::Duration;
use wedsync_mesh::content::MEMBER_TOP_KEYS;
use wedsync_mesh::failover::failover_proposals;
use wedsync_mesh::measure::{
    Scenario, Workload, cold_start, coordinators, crash_detection, generation_top, hints_key, known_top,
    knows_generation_top, run_with_workload, set_key_generation, state_latency, time_until_all, viral_config,
};
use wedsync_mesh::sim::{Network, Simulator};
use wedsync_mesh::{MemberHealth, MeshConfig, Profile};

const STATES: Workload = Workload { every: Some(Duration::from_secs(1)), pools: 3 };

fn lan(nodes: usize, seed: u64) -> Scenario {
    Scenario {
        nodes,
        regions: 4,
        config: MeshConfig::new(Profile::Lan, u32::try_from(nodes).unwrap()),
        network: Network::LAN,
        seed,
        seeds: 3,
    }
}

fn converged_fleet(nodes: usize, seed: u64) -> Simulator {
    let (sim, took) = cold_start(&lan(nodes, seed), Duration::from_secs(30));
    assert!(took.is_some(), "{nodes} nodes did not converge; {} still missing members", sim.unconverged_nodes());
    sim
}

#[test]
fn a_fleet_joining_by_address_knows_every_member_within_ten_seconds() {
    let (sim, took) = cold_start(&lan(300, 1), Duration::from_secs(30));
    let took = took.expect("converges");
    assert!(took <= Duration::from_secs(10), "took {took:?}");
    assert!(sim.coordinators_agree());
    for i in [0, 150, 299] {
        let counts = sim.mesh(i).unwrap().member_counts();
        assert_eq!((counts.alive, counts.suspect, counts.down), (299, 0, 0));
        let view = sim.mesh(i).unwrap().fleet_view();
        assert_eq!(view.regions.len(), 4);
        assert_eq!(view.regions.values().map(|r| r.members).sum::<usize>(), 300);
    }
}

#[test]
fn a_crashed_node_is_declared_down_by_everyone_within_the_goal() {
    for (nodes, goal) in [(10, 2.0), (150, 3.0)] {
        let mut sim = converged_fleet(nodes, 2);
        let mut rng = SmallRng::seed_from_u64(2);
        run_with_workload(&mut sim, Duration::from_secs(10), STATES, &[], &mut rng);
        let since = sim.now();
        let detection =
            crash_detection(&mut sim, 6, Duration::from_secs(8), Duration::from_secs(30), 3, STATES, &mut rng);
        assert_eq!(detection.all.len(), 6);
        let worst = detection.all_p(100.0);
        assert!(worst <= goal, "{nodes} nodes: slowest detection {worst} s (all: {:?})", detection.all);
        assert_eq!(sim.false_downs(since), 0);
        assert!(sim.converged(), "the victims rejoined");
        assert!(sim.coordinators_agree());
    }
}

#[test]
fn a_wan_fleet_detects_a_crash_within_twenty_seconds() {
    let mut s = lan(60, 3);
    s.config = MeshConfig::new(Profile::Wan, 60);
    s.network = Network::WAN;
    let (mut sim, took) = cold_start(&s, Duration::from_secs(60));
    assert!(took.is_some());
    let mut rng = SmallRng::seed_from_u64(3);
    let detection = crash_detection(&mut sim, 3, Duration::from_secs(30), Duration::from_secs(60), 3, STATES, &mut rng);
    let worst = detection.all_p(100.0);
    assert!(worst <= 20.0, "slowest detection {worst} s");
}

#[test]
fn a_partitioned_region_is_declared_down_and_comes_back_after_healing() {
    let mut sim = converged_fleet(100, 4);
    sim.partition_region("region-1");
    sim.run_for(Duration::from_secs(15));
    // Each side declared the other down: node 0 (region 0) sees region 1 gone.
    let view = sim.mesh(0).unwrap().fleet_view();
    assert!(!view.regions.contains_key("region-1"), "{:?}", view.regions.keys().collect::<Vec<_>>());
    let down = sim.mesh(0).unwrap().member_counts().down;
    assert_eq!(down, 25);
    let cut_off = sim.mesh(1).unwrap().fleet_view();
    assert_eq!(cut_off.regions.keys().collect::<Vec<_>>(), ["region-1"]);
    sim.heal();
    let back = sim.run_until_converged(Duration::from_millis(500), Duration::from_secs(90));
    assert!(back.is_some(), "{} nodes still miss members after healing", sim.unconverged_nodes());
    assert!(sim.coordinators_agree());
    for i in [0, 1, 50] {
        let counts = sim.mesh(i).unwrap().member_counts();
        assert_eq!(counts.alive, 99, "node {i}: {counts:?}");
    }
}

#[test]
fn a_restarted_node_rejoins_under_its_new_incarnation_without_growing_the_member_list() {
    let mut sim = converged_fleet(50, 5);
    let before = sim.mesh(0).unwrap().member_states().count();
    let killed_at = sim.now();
    sim.kill(7);
    sim.run_for(Duration::from_secs(5));
    assert!(sim.down_by_all_at(7, killed_at).is_some());
    sim.restart(7, 0);
    let back = sim.run_until_converged(Duration::from_millis(200), Duration::from_secs(30));
    assert!(back.is_some());
    let id = sim.node_id(7).to_owned();
    for i in [0, 20, 49] {
        let mesh = sim.mesh(i).unwrap();
        assert_eq!(mesh.member_states().count(), before, "node {i} lists the old identity beside the new one");
        let (member, health) = mesh.member_states().find(|(m, _)| m.id == id).unwrap();
        assert_eq!(health, MemberHealth::Alive);
        assert_eq!(member.incarnation, sim.mesh(7).unwrap().identity().incarnation);
    }
    assert_eq!(sim.false_downs(killed_at), 0);
}

#[test]
fn no_live_node_is_declared_down_under_five_percent_loss() {
    let mut sim = converged_fleet(100, 6);
    sim.set_network(Network::LAN.with_loss(0.05));
    let since = sim.now();
    let mut rng = SmallRng::seed_from_u64(6);
    run_with_workload(&mut sim, Duration::from_secs(300), STATES, &[], &mut rng);
    assert_eq!(sim.false_downs(since), 0);
    let stats = sim.total_stats();
    assert!(stats.probes_rescued > 0, "loss made direct retries necessary");
    assert!(sim.converged());
}

#[test]
fn refuted_suspicions_under_heavy_loss_neither_kill_nor_restart_anyone() {
    let mut sim = converged_fleet(60, 9);
    sim.set_network(Network::LAN.with_loss(0.25));
    let since = sim.now();
    sim.run_for(Duration::from_secs(120));
    let stats = sim.total_stats();
    assert!(stats.suspicions_refuted > 0, "the loss should cause (refuted) suspicions: {stats:?}");
    // foca 2.0 tells a member it is down when a suspicion's timer fires even if it refuted;
    // the mesh drops that notice, so nobody renews its identity.
    assert_eq!(stats.rejoins, 0);
    assert_eq!(sim.false_downs(since), 0);
    sim.set_network(Network::LAN);
    assert!(sim.run_until_converged(Duration::from_millis(500), Duration::from_secs(30)).is_some());
}

#[test]
fn node_state_updates_reach_every_node_within_a_second() {
    let mut sim = converged_fleet(200, 7);
    let mut rng = SmallRng::seed_from_u64(7);
    run_with_workload(&mut sim, Duration::from_secs(10), STATES, &[], &mut rng);
    let latency = state_latency(&mut sim, Duration::from_secs(30), 30, Duration::from_secs(20), STATES, &mut rng);
    assert!(latency.reach_all.len() >= 10, "only {} updates followed", latency.reach_all.len());
    let worst = latency.reach_all.iter().copied().fold(0.0, f64::max);
    assert!(worst <= 1.0, "slowest update reached everyone after {worst} s");
    // Every node's view aggregates the pools of the members it believes alive.
    let view = sim.mesh(3).unwrap().fleet_view();
    let region = &view.regions["region-0"];
    assert!(region.pools.contains_key("checkout-api"));
    assert!(region.pools["checkout-api"].members > 0);
}

#[test]
fn a_node_with_a_bad_link_raises_its_local_health_and_recovers() {
    let mut sim = converged_fleet(40, 8);
    sim.set_node_loss(5, 0.5);
    sim.run_for(Duration::from_secs(60));
    let stats = sim.mesh(5).unwrap().stats();
    assert!(stats.local_health_max > 0, "{stats:?}");
    sim.set_node_loss(5, 0.0);
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.mesh(5).unwrap().stats().local_health, 0);
    assert!(sim.run_until_converged(Duration::from_millis(500), Duration::from_secs(60)).is_some());
}

#[test]
fn the_fleet_top_and_a_viral_key_reach_every_node_within_two_seconds() {
    let mut sim = converged_fleet(200, 11);
    sim.enable_content(viral_config());
    set_key_generation(&mut sim, "a", 5);
    // The detector needs its baseline intervals before it hints anything.
    sim.run_for(Duration::from_millis(12_300));
    let coordinators = coordinators(&sim, 0);
    assert_eq!(coordinators.len(), 4);
    assert!(coordinators.iter().all(|i| known_top(&sim, *i) == generation_top("a")), "coordinators know the top 100");
    assert!(
        sim.running().all(|i| knows_generation_top(&sim, i, "a", &coordinators)),
        "members know the heaviest {MEMBER_TOP_KEYS}"
    );
    assert!(sim.running().all(|i| sim.content(i).unwrap().hints().is_empty()), "steady traffic is not viral");

    // A post goes viral in one region: 20 of its nodes see 20 requests/s each.
    let region_0: Vec<usize> = (0..200).filter(|i| sim.region_of(*i) == "region-0").take(20).collect();
    for i in &region_0 {
        sim.set_content_rate(*i, "post-8812", 20);
    }
    let took = time_until_all(&mut sim, Duration::from_secs(10), |sim, i| hints_key(sim, i, "post-8812"))
        .expect("every node hints the viral key");
    assert!(took <= Duration::from_secs(2), "viral key hinted everywhere after {took:?}");
    for i in sim.running() {
        let hints = sim.content(i).unwrap().hints();
        assert_eq!(hints.len(), 1, "only the viral key is hinted on node {i}: {hints:?}");
        assert!((50.0..=400.0).contains(&hints[0].rate_per_s), "{hints:?}");
    }

    // The whole distribution moves to new keys mid-interval.
    sim.run_for(Duration::from_millis(2_300));
    set_key_generation(&mut sim, "a", 0);
    set_key_generation(&mut sim, "b", 5);
    let took =
        time_until_all(&mut sim, Duration::from_secs(10), |sim, i| knows_generation_top(sim, i, "b", &coordinators))
            .expect("every node learns the new top");
    assert!(took <= Duration::from_secs(2), "new top everywhere after {took:?}");
    assert!(coordinators.iter().all(|i| known_top(&sim, *i) == generation_top("b")));
    let refused: u64 = (0..200).filter_map(|i| sim.content(i)).map(|c| c.stats().refused).sum();
    assert_eq!(refused, 0);
}

#[test]
fn the_content_exchange_survives_a_coordinator_crash() {
    let mut sim = converged_fleet(60, 12);
    sim.enable_content(viral_config());
    set_key_generation(&mut sim, "a", 5);
    sim.run_for(Duration::from_secs(12));
    let coordinator = sim.mesh(0).unwrap().fleet_view().regions["region-1"].coordinator.clone();
    let victim = (0..60).find(|i| sim.node_id(*i) == coordinator).unwrap();
    sim.kill(victim);
    sim.run_for(Duration::from_secs(5));
    for i in 0..60 {
        if sim.region_of(i) == "region-1" && i != victim {
            sim.set_content_rate(i, "post-77", 30);
        }
    }
    let took = time_until_all(&mut sim, Duration::from_secs(10), |sim, i| hints_key(sim, i, "post-77"))
        .expect("hinted after the coordinator died");
    assert!(took <= Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_dead_region_gets_one_failover_that_every_node_derives_the_same() {
    let mut sim = converged_fleet(120, 13);
    let mut rng = SmallRng::seed_from_u64(13);
    run_with_workload(&mut sim, Duration::from_secs(5), STATES, &[], &mut rng);
    let region_2: Vec<usize> = (0..120).filter(|i| sim.region_of(*i) == "region-2").collect();
    assert!(sim.running().all(|i| failover_proposals(sim.mesh(i).unwrap()).is_empty()));
    for i in &region_2 {
        sim.kill(*i);
    }
    let survivors: Vec<usize> = sim.running().collect();
    let agreed = |sim: &Simulator| {
        let first = failover_proposals(sim.mesh(survivors[0]).unwrap());
        first.len() == 1
            && survivors.iter().all(|i| {
                let p = failover_proposals(sim.mesh(*i).unwrap());
                p.len() == 1 && p[0].id == first[0].id && p[0].target_region == first[0].target_region
            })
    };
    let start = sim.now();
    let mut took = None;
    for _ in 0..200 {
        run_with_workload(&mut sim, Duration::from_millis(50), STATES, &region_2, &mut rng);
        if agreed(&sim) {
            took = Some(sim.now().saturating_since(start));
            break;
        }
    }
    let took = took.expect("every survivor derives the same failover");
    // A quarter of the fleet dying at once slows SWIM down (probes and indirect probes through
    // dead members fail, local health stretches timeouts): measured 7.5 s with this seed.
    assert!(took <= Duration::from_secs(10), "took {took:?}");
    let proposals: Vec<_> = survivors.iter().map(|i| failover_proposals(sim.mesh(*i).unwrap())).collect();
    let p = &proposals[0][0];
    assert_eq!(p.failed_region, "region-2");
    assert_eq!(p.failed_members, region_2.len());
    assert_ne!(p.target_region, "region-2");
    assert!(p.load_to_move > 0.0, "the dead region's last load is known: {p:?}");
    let issuers: Vec<usize> =
        survivors.iter().zip(&proposals).filter(|(_, p)| p[0].issued_here).map(|(i, _)| *i).collect();
    assert_eq!(issuers.len(), 1, "exactly one coordinator issues it");
    assert_eq!(sim.node_id(issuers[0]), p.proposer);
    assert_eq!(sim.region_of(issuers[0]), p.target_region);

    // One member of the region comes back: the failover is withdrawn everywhere.
    sim.restart(region_2[0], survivors[0]);
    run_with_workload(&mut sim, Duration::from_secs(5), STATES, &region_2[1..], &mut rng);
    assert!(sim.running().all(|i| failover_proposals(sim.mesh(i).unwrap()).is_empty()));
}
