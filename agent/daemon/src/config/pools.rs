//! `[[pools]]`: the pools the engine decides for, checked into the core's [`PoolSpec`]s (the
//! engine's), [`DemandSource`]s (where the decision thread, [`crate::decisions`], reads each
//! pool's demand) and [`ActuatorSpec`]s (how [`crate::actuators`] carry decisions out).

use super::actuators::{ActuatorConfig, ActuatorSpec};
use super::errors::Checker;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use wedsync_core::TrafficClass;
use wedsync_core::engine::forecast::time_zone;
use wedsync_core::engine::pool::{Placement, PoolSpec, UnitCost};

/// Most units a pool's `assume_size` may name.
const MAX_UNITS: u32 = 1_000_000;

/// `[[pools]]`: one pool of interchangeable capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Unique name.
    pub name: String,
    /// Region it runs in; empty means `agent.region`.
    pub region: String,
    /// Fewest units.
    pub min: u32,
    /// Most units.
    pub max: u32,
    /// Requests/s one unit serves at full utilization.
    pub capacity_per_unit: f64,
    /// Requests/s of a class one unit serves, where it differs (`{ media = 20.0 }`).
    pub class_capacity: BTreeMap<String, f64>,
    /// Utilization to aim for, in (0, 1].
    pub target_utilization: f64,
    /// Traffic classes the pool serves (all by default).
    pub classes: Vec<String>,
    /// Time from asking for a unit to its serving traffic.
    pub provisioning_delay: String,
    /// Fewest units while a wedding is active in the region (at least `min`).
    pub protected_floor: u32,
    /// IANA time zone of the pool's region, e.g. `Europe/Dublin` (seasons are local).
    pub time_zone: String,
    /// Unit prices per hour.
    pub cost: UnitCost,
    /// Other regions the pool may run in (`[[pools.placements]]`), with their prices.
    pub placements: Vec<Placement>,
    /// `requests`: `demand_metric` is a StatsD counter whose rate, split by its `class:` tag, is
    /// the demand. `cpu`: `demand_metric` is a gauge of the pool's mean CPU utilization (0–1;
    /// `host.cpu.busy` is this host's), and the pool is sized to hold it at
    /// `target_utilization`, as `desired = ceil(current × utilization / target)`.
    pub demand_kind: String,
    /// The metric the demand is read from (see `demand_kind`).
    pub demand_metric: String,
    /// Tags a series must carry to count toward this pool (e.g. `["service:checkout"]`).
    pub demand_tags: Vec<String>,
    /// Class of demand that carries no (valid) `class:` tag.
    pub untagged_class: String,
    /// Where the pool's decisions go (`[pools.actuator]`); the `log` actuator by default.
    pub actuator: ActuatorConfig,
    /// Units to assume the pool runs until its size is observed. Unset: the engine decides
    /// nothing for the pool until a size is observed (`size_metric`, the actuator's `observe`
    /// command or a webhook's answer).
    pub assume_size: Option<u32>,
    /// A StatsD gauge the platform pushes with the pool's real size (e.g. ready replicas); empty:
    /// none.
    pub size_metric: String,
    /// Tags the size gauge must carry (e.g. `["deployment:checkout"]`).
    pub size_tags: Vec<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: String::new(),
            region: String::new(),
            min: 1,
            max: 100,
            capacity_per_unit: 100.0,
            class_capacity: BTreeMap::new(),
            target_utilization: 0.7,
            classes: TrafficClass::ALL.iter().map(|c| c.as_str().to_owned()).collect(),
            provisioning_delay: "60s".into(),
            protected_floor: 0,
            time_zone: "UTC".into(),
            cost: UnitCost::default(),
            placements: Vec::new(),
            demand_kind: "requests".into(),
            demand_metric: "requests".into(),
            demand_tags: Vec::new(),
            untagged_class: TrafficClass::WeddingPlanning.as_str().into(),
            actuator: ActuatorConfig::Log,
            assume_size: None,
            size_metric: String::new(),
            size_tags: Vec::new(),
        }
    }
}

/// What the decision thread reads for a pool from the metric store: its demand, and its size
/// when the platform pushes it as a gauge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemandSource {
    /// Counter name.
    pub metric: String,
    /// Tags a series must carry.
    pub tags: Vec<String>,
    /// Class of untagged demand (all CPU demand is of this class).
    pub untagged_class: TrafficClass,
    /// Whether the metric is a CPU-utilization gauge rather than a request counter.
    pub cpu: bool,
    /// The gauge holding the pool's real size, and the tags it must carry.
    pub size: Option<(String, Vec<String>)>,
}

/// Checks every pool into `c`: the engine's pools, where each one's demand comes from, and its
/// actuator (three lists in configuration order). A pool without a region is in `agent_region`.
pub(super) fn validate(
    configs: &[PoolConfig],
    agent_region: &str,
    c: &mut Checker,
) -> (Vec<PoolSpec>, Vec<DemandSource>, Vec<ActuatorSpec>) {
    let mut pools = Vec::new();
    let mut demand = Vec::new();
    let mut actuators = Vec::new();
    for (i, p) in configs.iter().enumerate() {
        let at = |field: &str| format!("pools[{i}].{field}");
        c.identifier(&at("name"), &p.name, 64);
        if configs[..i].iter().any(|q| q.name == p.name) {
            c.fail(at("name"), format!("{:?} is used by another pool", p.name));
        }
        let region = if p.region.is_empty() { agent_region.to_owned() } else { p.region.clone() };
        c.identifier(&at("region"), &region, 32);
        if p.max == 0 || p.min > p.max {
            c.fail(at("max"), format!("{} must be at least 1 and at least min ({})", p.max, p.min));
        }
        if !(p.capacity_per_unit.is_finite() && p.capacity_per_unit > 0.0) {
            c.fail(at("capacity_per_unit"), format!("{} must be a positive number", p.capacity_per_unit));
        }
        if !(p.target_utilization > 0.0 && p.target_utilization <= 1.0) {
            c.fail(at("target_utilization"), format!("{} must be in (0, 1]", p.target_utilization));
        }
        let mut classes = Vec::new();
        for (j, name) in p.classes.iter().enumerate() {
            match name.parse::<TrafficClass>() {
                Ok(class) if !classes.contains(&class) => classes.push(class),
                Ok(_) => c.fail(format!("pools[{i}].classes[{j}]"), format!("{name:?} is listed twice")),
                Err(err) => c.fail(format!("pools[{i}].classes[{j}]"), err.to_string()),
            }
        }
        if p.classes.is_empty() {
            c.fail(at("classes"), "is empty: a pool serves at least one class".into());
        }
        let mut class_capacity = [p.capacity_per_unit; 5];
        for (name, rps) in &p.class_capacity {
            match name.parse::<TrafficClass>() {
                Ok(class) if rps.is_finite() && *rps > 0.0 => {
                    if let Some(i) = TrafficClass::ALL.iter().position(|c| *c == class) {
                        class_capacity[i] = *rps;
                    }
                }
                Ok(_) => {
                    c.fail(format!("pools[{i}].class_capacity.{name}"), format!("{rps} must be a positive number"))
                }
                Err(err) => c.fail(format!("pools[{i}].class_capacity.{name}"), err.to_string()),
            }
        }
        let provisioning_delay =
            c.duration(&at("provisioning_delay"), &p.provisioning_delay, Duration::ZERO, Duration::from_secs(3600));
        if p.protected_floor > p.max {
            c.fail(at("protected_floor"), format!("{} is above max ({})", p.protected_floor, p.max));
        }
        for (name, price) in [("reserved", p.cost.reserved), ("on_demand", p.cost.on_demand), ("spot", p.cost.spot)] {
            if !(price.is_finite() && price >= 0.0) {
                c.fail(format!("pools[{i}].cost.{name}"), format!("{price} must be a non-negative number"));
            }
        }
        for (j, placement) in p.placements.iter().enumerate() {
            c.identifier(&format!("pools[{i}].placements[{j}].region"), &placement.region, 32);
            let cost = &placement.cost;
            if [cost.reserved, cost.on_demand, cost.spot].iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                c.fail(format!("pools[{i}].placements[{j}].cost"), "prices must be non-negative numbers".into());
            }
        }
        if let Err(err) = time_zone(&p.time_zone) {
            c.fail(at("time_zone"), err.to_string());
        }
        if p.demand_metric.is_empty() {
            c.fail(at("demand_metric"), "is empty".into());
        }
        let untagged_class = match p.untagged_class.parse::<TrafficClass>() {
            Ok(class) => class,
            Err(err) => {
                c.fail(at("untagged_class"), err.to_string());
                TrafficClass::WeddingPlanning
            }
        };
        pools.push(PoolSpec {
            name: p.name.clone(),
            region,
            min: p.min,
            max: p.max.max(p.min),
            capacity_per_unit: p.capacity_per_unit,
            class_capacity,
            target_utilization: p.target_utilization,
            classes,
            provisioning_delay,
            protected_floor: p.protected_floor.max(p.min),
            time_zone: p.time_zone.clone(),
            cost: p.cost,
            placements: p.placements.clone(),
            assume_size: p.assume_size,
        });
        if p.assume_size.is_some_and(|units| units > MAX_UNITS) {
            c.fail(at("assume_size"), format!("must be at most {MAX_UNITS}"));
        }
        if !p.size_metric.is_empty() && !p.size_metric.bytes().all(|b| b.is_ascii_graphic() && b != b'|' && b != b':') {
            c.fail(at("size_metric"), format!("{:?} is not a StatsD metric name", p.size_metric));
        }
        let size = (!p.size_metric.is_empty()).then(|| (p.size_metric.clone(), p.size_tags.clone()));
        let cpu = match p.demand_kind.as_str() {
            "requests" => false,
            "cpu" => true,
            other => {
                c.fail(at("demand_kind"), format!("{other:?} is not a demand kind (expected \"requests\" or \"cpu\")"));
                false
            }
        };
        demand.push(DemandSource {
            metric: p.demand_metric.clone(),
            tags: p.demand_tags.clone(),
            untagged_class,
            cpu,
            size,
        });
        actuators.push(p.actuator.validate(c, i));
    }
    (pools, demand, actuators)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::valid;

    #[test]
    fn pools_validate_and_name_bad_fields_by_index() {
        let mut config = valid();
        config.agent.region = "eu-west".into();
        config.pools.push(PoolConfig {
            name: "checkout".into(),
            min: 2,
            max: 50,
            protected_floor: 10,
            ..PoolConfig::default()
        });
        let settings = config.validate().expect("a valid pool");
        assert_eq!(settings.pools[0].region, "eu-west", "region defaults to the agent's");
        assert_eq!(settings.pools[0].protected_floor, 10);
        assert_eq!(settings.demand[0].untagged_class, TrafficClass::WeddingPlanning);

        config.pools.push(PoolConfig {
            name: "checkout".into(),
            min: 5,
            max: 3,
            capacity_per_unit: 0.0,
            class_capacity: [("vip".to_owned(), 1.0), ("media".to_owned(), -2.0)].into_iter().collect(),
            target_utilization: 1.5,
            classes: vec!["vip".into()],
            provisioning_delay: "later".into(),
            protected_floor: 9,
            time_zone: "Mars/Olympus".into(),
            cost: UnitCost { reserved: -1.0, on_demand: 0.1, spot: f64::NAN },
            placements: vec![Placement { region: "bad region".into(), cost: UnitCost::default() }],
            demand_metric: String::new(),
            demand_tags: vec![],
            demand_kind: "bytes".into(),
            untagged_class: "gold".into(),
            region: String::new(),
            actuator: ActuatorConfig::Webhook {
                url: "ftp://x".into(),
                allow_http: false,
                secret: "short".into(),
                timeout: "0s".into(),
                retries: 1000,
                backoff: "soon".into(),
            },
            assume_size: Some(2_000_000),
            size_metric: "bad|name".into(),
            size_tags: vec![],
        });
        config.engine.degrade_order = vec!["wedding-critical".into(), "media".into()];
        config.engine.tolerance = 0.9;
        let errors = config.validate().unwrap_err();
        for field in [
            "pools[1].name",
            "pools[1].max",
            "pools[1].capacity_per_unit",
            "pools[1].target_utilization",
            "pools[1].classes[0]",
            "pools[1].provisioning_delay",
            "pools[1].protected_floor",
            "pools[1].cost.reserved",
            "pools[1].cost.spot",
            "pools[1].demand_metric",
            "pools[1].untagged_class",
            "engine.degrade_order[0]",
            "engine.tolerance",
            "pools[1].placements[0].region",
            "pools[1].time_zone",
            "pools[1].class_capacity.vip",
            "pools[1].demand_kind",
            "pools[1].class_capacity.media",
            "pools[1].actuator.url",
            "pools[1].actuator.secret",
            "pools[1].actuator.timeout",
            "pools[1].actuator.retries",
            "pools[1].actuator.backoff",
            "pools[1].assume_size",
            "pools[1].size_metric",
        ] {
            assert!(errors.names(field), "{field} not named in:\n{errors}");
        }
        assert!(errors.to_string().contains("pools[1].name: \"checkout\" is used by another pool"), "{errors}");
    }
}
