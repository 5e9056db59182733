//! Builders for verdicts and plugin descriptions, and read helpers on a verdict.

use crate::{
    Adjustment, CacheHint, ClassAdmission, Hooks, PluginInfo, PoolId, PoolUnits, TrafficClass, Verdict, Veto,
    VetoTarget,
};

impl Default for Verdict {
    /// An empty verdict: no adjustments, vetoes or hints.
    fn default() -> Self {
        Verdict { adjustments: Vec::new(), vetoes: Vec::new(), cache_hints: Vec::new() }
    }
}

impl Verdict {
    /// An empty verdict: the plugin changes nothing this round.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Starts a verdict.
    pub fn builder() -> VerdictBuilder {
        VerdictBuilder::default()
    }

    /// Nothing in it.
    pub fn is_empty(&self) -> bool {
        self.adjustments.is_empty() && self.vetoes.is_empty() && self.cache_hints.is_empty()
    }

    /// The highest `raise-target` for `pool`, if any.
    pub fn raised_target(&self, pool: PoolId) -> Option<u32> {
        self.max_units(pool, |a| match a {
            Adjustment::RaiseTarget(u) => Some(*u),
            _ => None,
        })
    }

    /// The lowest `lower-target` for `pool`, if any.
    pub fn lowered_target(&self, pool: PoolId) -> Option<u32> {
        self.adjustments
            .iter()
            .filter_map(|a| match a {
                Adjustment::LowerTarget(u) if u.pool == pool => Some(u.units),
                _ => None,
            })
            .min()
    }

    /// The highest `prescale-floor` for `pool`, if any.
    pub fn prescale_floor(&self, pool: PoolId) -> Option<u32> {
        self.max_units(pool, |a| match a {
            Adjustment::PrescaleFloor(u) => Some(*u),
            _ => None,
        })
    }

    /// The lowest `spot-cap` for `pool`, if any.
    pub fn spot_cap(&self, pool: PoolId) -> Option<u32> {
        self.adjustments
            .iter()
            .filter_map(|a| match a {
                Adjustment::SpotCap(u) if u.pool == pool => Some(u.units),
                _ => None,
            })
            .min()
    }

    /// The lowest admission share set for `class` of `pool`, if any.
    pub fn admission(&self, pool: PoolId, class: TrafficClass) -> Option<f64> {
        self.adjustments
            .iter()
            .filter_map(|a| match a {
                Adjustment::Admit(c) if c.pool == pool && c.class == class => Some(c.admit),
                _ => None,
            })
            .reduce(f64::min)
    }

    /// A veto of a scale-down of `pool`.
    pub fn vetoes_scale_down(&self, pool: PoolId) -> bool {
        self.vetoes.iter().any(|v| v.target == VetoTarget::ScaleDown(pool))
    }

    /// A veto of a scale-up of `pool`.
    pub fn vetoes_scale_up(&self, pool: PoolId) -> bool {
        self.vetoes.iter().any(|v| v.target == VetoTarget::ScaleUp(pool))
    }

    /// A veto of moving `pool`'s capacity out of its home region.
    pub fn vetoes_placement(&self, pool: PoolId) -> bool {
        self.vetoes.iter().any(|v| v.target == VetoTarget::Placement(pool))
    }

    /// A veto of the failover with this id.
    pub fn vetoes_failover(&self, id: &str) -> bool {
        self.vetoes.iter().any(|v| matches!(&v.target, VetoTarget::Failover(f) if f == id))
    }

    fn max_units(&self, pool: PoolId, pick: impl Fn(&Adjustment) -> Option<PoolUnits>) -> Option<u32> {
        self.adjustments.iter().filter_map(pick).filter(|u| u.pool == pool).map(|u| u.units).max()
    }
}

/// Builds a [`Verdict`]; each method appends one adjustment, veto or hint, in call order.
///
/// ```
/// use wedsync_sdk::{TrafficClass, Verdict};
///
/// let verdict = Verdict::builder()
///     .raise_target(0, 12)
///     .admit(1, TrafficClass::Background, 0.5)
///     .veto_failover("failover:eu-west:eu-central:1a2b", "EU data stays in the EU")
///     .build();
/// assert_eq!(verdict.raised_target(0), Some(12));
/// assert!(verdict.vetoes_failover("failover:eu-west:eu-central:1a2b"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerdictBuilder {
    verdict: Verdict,
}

impl VerdictBuilder {
    /// Starts an empty verdict.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool gets at least `units`.
    pub fn raise_target(&mut self, pool: PoolId, units: u32) -> &mut Self {
        self.adjustment(Adjustment::RaiseTarget(PoolUnits { pool, units }))
    }

    /// The pool gets at most `units` (the host never goes below its floor or minimum).
    pub fn lower_target(&mut self, pool: PoolId, units: u32) -> &mut Self {
        self.adjustment(Adjustment::LowerTarget(PoolUnits { pool, units }))
    }

    /// The pool keeps at least `units` this round, recorded as the plugin's pre-scale.
    pub fn prescale_floor(&mut self, pool: PoolId, units: u32) -> &mut Self {
        self.adjustment(Adjustment::PrescaleFloor(PoolUnits { pool, units }))
    }

    /// Admits at most `share` (clamped to [0, 1]; NaN counts as 1) of `class` on the pool.
    pub fn admit(&mut self, pool: PoolId, class: TrafficClass, share: f64) -> &mut Self {
        let admit = if share.is_nan() { 1.0 } else { share.clamp(0.0, 1.0) };
        self.adjustment(Adjustment::Admit(ClassAdmission { pool, class, admit }))
    }

    /// Buys at most `units` of the pool's units on spot (`0`: none).
    pub fn spot_cap(&mut self, pool: PoolId, units: u32) -> &mut Self {
        self.adjustment(Adjustment::SpotCap(PoolUnits { pool, units }))
    }

    /// Vetoes a scale-down of the pool this round.
    pub fn veto_scale_down(&mut self, pool: PoolId, reason: impl Into<String>) -> &mut Self {
        self.veto(VetoTarget::ScaleDown(pool), reason)
    }

    /// Vetoes a scale-up of the pool this round (the host ignores it for wedding-critical
    /// capacity a protected pool needs).
    pub fn veto_scale_up(&mut self, pool: PoolId, reason: impl Into<String>) -> &mut Self {
        self.veto(VetoTarget::ScaleUp(pool), reason)
    }

    /// Vetoes moving the pool's capacity out of its home region.
    pub fn veto_placement(&mut self, pool: PoolId, reason: impl Into<String>) -> &mut Self {
        self.veto(VetoTarget::Placement(pool), reason)
    }

    /// Vetoes the failover with this id.
    pub fn veto_failover(&mut self, id: impl Into<String>, reason: impl Into<String>) -> &mut Self {
        self.veto(VetoTarget::Failover(id.into()), reason)
    }

    /// Asks the edge caches to warm `key` for `ttl_seconds`.
    pub fn cache_hint(&mut self, key: impl Into<String>, ttl_seconds: u32) -> &mut Self {
        self.verdict.cache_hints.push(CacheHint { key: key.into(), ttl_seconds });
        self
    }

    /// Appends any adjustment.
    pub fn adjustment(&mut self, adjustment: Adjustment) -> &mut Self {
        self.verdict.adjustments.push(adjustment);
        self
    }

    /// Appends any veto.
    pub fn veto(&mut self, target: VetoTarget, reason: impl Into<String>) -> &mut Self {
        self.verdict.vetoes.push(Veto { target, reason: reason.into() });
        self
    }

    /// Nothing added yet.
    pub fn is_empty(&self) -> bool {
        self.verdict.is_empty()
    }

    /// The verdict; the builder is left empty.
    pub fn build(&mut self) -> Verdict {
        std::mem::take(&mut self.verdict)
    }
}

impl PluginInfo {
    /// Starts a description: `name` is `[a-z0-9-]` and unique among the agent's plugins;
    /// `version` is typically `env!("CARGO_PKG_VERSION")`. The hooks default to `decide`.
    pub fn builder(name: impl Into<String>, version: impl Into<String>) -> PluginInfoBuilder {
        PluginInfoBuilder {
            info: PluginInfo {
                name: name.into(),
                version: version.into(),
                description: String::new(),
                hooks: Hooks::DECIDE,
            },
        }
    }
}

/// Builds a [`PluginInfo`].
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfoBuilder {
    info: PluginInfo,
}

impl PluginInfoBuilder {
    /// One line on what the plugin does.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.info.description = description.into();
        self
    }

    /// The rounds it wants (replaces the default `decide`).
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.info.hooks = hooks;
        self
    }

    /// Also wants rounds that carry failovers.
    pub fn on_failover(mut self) -> Self {
        self.info.hooks |= Hooks::FAILOVER;
        self
    }

    /// Only rounds that carry failovers (drops `decide`).
    pub fn only_failover(mut self) -> Self {
        self.info.hooks = Hooks::FAILOVER;
        self
    }

    /// The description.
    pub fn build(self) -> PluginInfo {
        self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_order_and_reads_back() {
        let mut b = Verdict::builder();
        b.raise_target(0, 5).raise_target(0, 7).lower_target(1, 3).prescale_floor(2, 9).spot_cap(1, 0);
        b.admit(1, TrafficClass::Media, 1.7).admit(1, TrafficClass::Media, f64::NAN);
        b.veto_scale_down(0, "wedding").veto_placement(1, "gdpr").veto_failover("f-1", "gdpr").veto_scale_up(3, "x");
        b.cache_hint("album-42", 60);
        let v = b.build();
        assert!(b.is_empty());
        assert_eq!(v.adjustments.len(), 7);
        assert_eq!(v.adjustments[0], Adjustment::RaiseTarget(PoolUnits { pool: 0, units: 5 }));
        assert_eq!(v.raised_target(0), Some(7));
        assert_eq!(v.raised_target(1), None);
        assert_eq!(v.lowered_target(1), Some(3));
        assert_eq!(v.prescale_floor(2), Some(9));
        assert_eq!(v.spot_cap(1), Some(0));
        assert_eq!(v.admission(1, TrafficClass::Media), Some(1.0));
        assert!(v.vetoes_scale_down(0) && !v.vetoes_scale_down(1));
        assert!(v.vetoes_placement(1) && v.vetoes_failover("f-1") && !v.vetoes_failover("f-2"));
        assert!(v.vetoes_scale_up(3));
        assert_eq!(v.cache_hints[0].key, "album-42");
        assert!(!v.is_empty() && Verdict::empty().is_empty());
    }

    #[test]
    fn plugin_info_builder() {
        let info = PluginInfo::builder("x", "1.2.3").description("d").on_failover().build();
        assert_eq!(info.hooks, Hooks::DECIDE | Hooks::FAILOVER);
        assert_eq!(info.description, "d");
        assert_eq!(PluginInfo::builder("x", "1").only_failover().build().hooks, Hooks::FAILOVER);
    }
}
