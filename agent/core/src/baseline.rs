//! A baseline autoscaler to compare the engine with: Kubernetes' Horizontal Pod Autoscaler
//! (`kube-controller-manager`, `pkg/controller/podautoscaler`) for one resource-utilization
//! metric with a utilization target, at its defaults, sans-IO (the caller owns the clock and the
//! capacity).
//!
//! It is a port of the Go, in three layers, each tested against Kubernetes' own test tables:
//! - [`resource_replicas`] is `ReplicaCalculator.GetResourceReplicas` over a snapshot of pods:
//!   utilization in whole percent of the pods' requests (`GetResourceUtilizationRatio`), the
//!   recommendation `ceil(usage ratio × ready pods)` unless the ratio is within the tolerance
//!   (10%), and the handling of pods whose sample it cannot use (`groupPods`): failed and
//!   terminating pods are ignored; pending, not-ready and still-initializing pods count as idle on
//!   a scale-up and are left out on a scale-down; running pods without a sample count as idle on a
//!   scale-up and as fully busy on a scale-down; and no change when those assumptions reverse the
//!   direction or land within the tolerance.
//! - [`Hpa::reconcile`] is `HorizontalController.reconcileAutoscaler`: the first pass records the
//!   current count as a recommendation (so nothing scales below it for the first stabilization
//!   window), counts outside `[min, max]` go to the bound, and the recommendation is normalized
//!   either by `spec.behavior` (by default: scale-up limited per 15 s to the larger of +100% and
//!   +4 pods counted from the replicas at the period's start, scale-down to the highest
//!   recommendation of the last 300 s and then by at most 100% per 15 s) or, with no behavior, by
//!   the older rules (the highest recommendation of the last 300 s, at most `max(2 × current, 4)`).
//! - [`Hpa::observe`] and [`Hpa::sync`] are how the replays and the simulator drive it: every
//!   `sync_period` (15 s) it reconciles on the workload's utilization as it was `metrics_delay`
//!   (15 s) ago, the metrics pipeline's lag. Replicas serving at that moment have a sample;
//!   replicas that became ready since are still initializing (their CPU sample predates a full
//!   metric window after readiness); replicas asked for and not serving yet are pending.
//!
//! It has no prediction, no traffic classes and no admission control: past capacity, every class
//! suffers alike.

use std::collections::VecDeque;
use std::time::Duration;

/// Without `spec.behavior`, a scale-up goes to at most this factor of the current replicas...
/// (`scaleUpLimitFactor`).
pub const SCALE_UP_LIMIT_FACTOR: f64 = 2.0;
/// ...or to this many replicas, whichever is more (`scaleUpLimitMinimum`).
pub const SCALE_UP_LIMIT_MINIMUM: f64 = 4.0;
/// What the model's replica requests, in milli-units: its serving capacity is 100% utilization.
const REPLICA_REQUEST_MILLI: i64 = 1000;

/// The HPA's tunables; [`HpaSettings::default`] is Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaSettings {
    /// How often it recomputes (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// Ratios within this of 1 cause no change (`--horizontal-pod-autoscaler-tolerance`, 0.1).
    pub tolerance: f64,
    /// Age of the metric it acts on (the metrics pipeline: 15 s).
    pub metrics_delay: Duration,
    /// The scale-down stabilization window when the behavior sets none, and the window of the
    /// rules without behavior (`--horizontal-pod-autoscaler-downscale-stabilization`, 300 s).
    pub scale_down_stabilization: Duration,
    /// The autoscaler's `spec.behavior`: `Some(Behavior::default())` is the documented default
    /// behavior; `None` is an autoscaler without a `behavior` stanza, which the controller
    /// normalizes with its older rules (`normalizeDesiredReplicas`).
    pub behavior: Option<Behavior>,
}

impl Default for HpaSettings {
    fn default() -> Self {
        HpaSettings {
            sync_period: Duration::from_secs(15),
            tolerance: 0.1,
            metrics_delay: Duration::from_secs(15),
            scale_down_stabilization: Duration::from_secs(300),
            behavior: Some(Behavior::default()),
        }
    }
}

/// `spec.behavior`: how fast each direction may move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behavior {
    /// `scaleUp`.
    pub scale_up: ScalingRules,
    /// `scaleDown`.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// Kubernetes' defaults (`GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules`).
    fn default() -> Self {
        Behavior { scale_up: ScalingRules::default_scale_up(), scale_down: ScalingRules::default_scale_down() }
    }
}

/// `HPAScalingRules`: a stabilization window and at most one policy of each type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingRules {
    /// `stabilizationWindowSeconds`; `None` is 0 for a scale-up and
    /// [`HpaSettings::scale_down_stabilization`] for a scale-down.
    pub stabilization_window: Option<Duration>,
    /// `selectPolicy`.
    pub select_policy: SelectPolicy,
    /// A `Pods` policy: at most `value` replicas per `period`.
    pub pods: Option<ScalingPolicy>,
    /// A `Percent` policy: at most `value`% of the replicas at the period's start per `period`.
    pub percent: Option<ScalingPolicy>,
}

impl ScalingRules {
    /// The default `scaleUp`: no stabilization, `Pods 4 / 15 s`, `Percent 100 / 15 s`,
    /// `selectPolicy: Max`.
    pub fn default_scale_up() -> ScalingRules {
        ScalingRules {
            stabilization_window: Some(Duration::ZERO),
            select_policy: SelectPolicy::Max,
            pods: Some(ScalingPolicy { value: 4, period: Duration::from_secs(15) }),
            percent: Some(ScalingPolicy { value: 100, period: Duration::from_secs(15) }),
        }
    }

    /// The default `scaleDown`: the controller's stabilization window, `Percent 100 / 15 s`,
    /// `selectPolicy: Max`.
    pub fn default_scale_down() -> ScalingRules {
        ScalingRules {
            stabilization_window: None,
            select_policy: SelectPolicy::Max,
            pods: None,
            percent: Some(ScalingPolicy { value: 100, period: Duration::from_secs(15) }),
        }
    }

    fn policies(&self) -> impl Iterator<Item = (PolicyType, ScalingPolicy)> {
        let pods = self.pods.map(|p| (PolicyType::Pods, p));
        let percent = self.percent.map(|p| (PolicyType::Percent, p));
        pods.into_iter().chain(percent)
    }

    /// `getLongestPolicyPeriod`, seconds.
    fn longest_period(&self) -> f64 {
        self.policies().map(|(_, p)| p.period.as_secs_f64()).fold(0.0, f64::max)
    }
}

/// `HPAScalingPolicy` without its type (the field of [`ScalingRules`] holding it gives that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// Replicas, or percent of the replicas at the start of the period.
    pub value: u32,
    /// `periodSeconds`.
    pub period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyType {
    Pods,
    Percent,
}

/// `selectPolicy`: which policy wins when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// Scale-up and scale-down tolerances (`Tolerances`): a usage ratio within
/// `[1 - scale_down, 1 + scale_up]` causes no change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// How far below 1 the usage ratio may go without a scale-down.
    pub scale_down: f64,
    /// How far above 1 the usage ratio may go without a scale-up.
    pub scale_up: f64,
}

impl Tolerances {
    /// The same tolerance both ways (`--horizontal-pod-autoscaler-tolerance`).
    pub fn both(tolerance: f64) -> Tolerances {
        Tolerances { scale_down: tolerance, scale_up: tolerance }
    }

    fn is_within(self, usage_ratio: f64) -> bool {
        (1.0 - self.scale_down) <= usage_ratio && usage_ratio <= (1.0 + self.scale_up)
    }
}

/// A pod as the replica calculator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pod {
    /// The pod's request of the resource, milli-units.
    pub request: i64,
    /// Its usage in the metrics, milli-units; `None` when the metrics have no sample of it.
    pub usage: Option<i64>,
    /// Its lifecycle state.
    pub state: PodState,
}

/// What `groupPods` makes of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Running, ready, and its CPU sample covers a full metric window since it became ready.
    Ready,
    /// Running, but its CPU sample is not used: not ready (and started long enough ago to have
    /// been), or still in the CPU initialization period with a sample from before a full metric
    /// window after it became ready ("hot CPU"). A running pod without a sample is missing
    /// whatever its readiness.
    NotReady,
    /// Not running yet (phase `Pending`): unready whatever its metrics say.
    Pending,
    /// Phase `Failed`: ignored.
    Failed,
    /// Being deleted (has a deletion timestamp): ignored.
    Terminating,
}

/// A replica count the calculator recommends, with the utilization it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaCount {
    /// The recommended replicas (the current count when within the tolerance).
    pub replicas: u32,
    /// Utilization of the ready pods with a sample, whole percent of their requests.
    pub utilization: i32,
    /// Their average usage, milli-units.
    pub raw_average: i64,
}

/// Why the calculator has no recommendation (the controller then leaves the replicas alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRecommendation {
    /// No pods match the workload.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// No ready pod has a sample.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    /// The pods with samples request nothing.
    #[error("no metrics returned matched known pods")]
    NoRequests,
}

/// `ReplicaCalculator.GetResourceReplicas`: the replicas `pods` call for at `target_percent`
/// utilization of their requests, given `current` (the workload's `spec.replicas`).
pub fn resource_replicas(
    current: u32,
    target_percent: i32,
    tolerances: Tolerances,
    pods: &[Pod],
) -> Result<ReplicaCount, NoRecommendation> {
    let groups: Vec<(Pod, u64)> = pods.iter().map(|pod| (*pod, 1)).collect();
    replicas_for(current, target_percent, tolerances, &groups)
}

/// Pods grouped by `groupPods`, each entry (request, usage, how many such pods).
#[derive(Debug, Default)]
struct Grouped {
    ready: u64,
    metrics: Vec<(i64, i64, u64)>,
    unready: Vec<(i64, u64)>,
    missing: Vec<(i64, u64)>,
}

/// `groupPods` over pods given as (pod, count); the metrics of ignored and unready pods are
/// dropped (`removeMetricsForPods`).
fn group_pods(pods: &[(Pod, u64)]) -> Grouped {
    let mut grouped = Grouped::default();
    for &(pod, n) in pods.iter().filter(|(_, n)| *n > 0) {
        match (pod.state, pod.usage) {
            (PodState::Failed | PodState::Terminating, _) => {}
            (PodState::Pending, _) => grouped.unready.push((pod.request, n)),
            (_, None) => grouped.missing.push((pod.request, n)),
            (PodState::NotReady, Some(_)) => grouped.unready.push((pod.request, n)),
            (PodState::Ready, Some(usage)) => {
                grouped.ready += n;
                grouped.metrics.push((pod.request, usage, n));
            }
        }
    }
    grouped
}

/// `GetResourceUtilizationRatio`: (usage ratio, utilization in whole percent, average usage).
/// The utilization is `int32((metricsTotal * 100) / requestsTotal)`, truncated, and the ratio
/// is that integer over the integer target.
fn utilization_ratio(metrics: &[(i64, i64, u64)], target_percent: i32) -> Result<(f64, i32, i64), NoRecommendation> {
    let (mut used, mut requested, mut entries) = (0i128, 0i128, 0i128);
    for &(request, usage, n) in metrics {
        used += i128::from(usage) * i128::from(n);
        requested += i128::from(request) * i128::from(n);
        entries += i128::from(n);
    }
    if requested == 0 {
        return Err(NoRecommendation::NoRequests);
    }
    let percent = (used * 100 / requested).clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
    let average = (used / entries.max(1)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    Ok((f64::from(percent) / f64::from(target_percent), percent, average))
}

/// `int32(math.Ceil(x))`, within `u32`.
fn ceil_replicas(x: f64) -> u32 {
    let x = x.ceil();
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        x as u32
    }
}

/// [`resource_replicas`] over pods given as (pod, count).
fn replicas_for(
    current: u32,
    target_percent: i32,
    tolerances: Tolerances,
    pods: &[(Pod, u64)],
) -> Result<ReplicaCount, NoRecommendation> {
    if pods.iter().all(|(_, n)| *n == 0) {
        return Err(NoRecommendation::NoPods);
    }
    let Grouped { ready, mut metrics, unready, missing, .. } = group_pods(pods);
    if metrics.is_empty() {
        return Err(NoRecommendation::NoMetrics);
    }
    let (usage_ratio, utilization, raw_average) = utilization_ratio(&metrics, target_percent)?;
    let count = |replicas| Ok(ReplicaCount { replicas, utilization, raw_average });

    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if tolerances.is_within(usage_ratio) {
            return count(current);
        }
        return count(ceil_replicas(usage_ratio * ready as f64));
    }
    if !missing.is_empty() {
        if usage_ratio < 1.0 {
            // On a scale-down, pods without a sample use 100% of their request (or the target,
            // when it is above 100%).
            let fallback = i64::from(target_percent.max(100));
            metrics.extend(missing.iter().map(|&(request, n)| (request, request.saturating_mul(fallback) / 100, n)));
        } else if usage_ratio > 1.0 {
            // On a scale-up, none.
            metrics.extend(missing.iter().map(|&(request, n)| (request, 0, n)));
        }
    }
    if scale_up_with_unready {
        // On a scale-up, unready pods use none of their request.
        metrics.extend(unready.iter().map(|&(request, n)| (request, 0, n)));
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, target_percent)?;
    if tolerances.is_within(new_ratio)
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        // Too small a change, or the assumptions reverse the direction.
        return count(current);
    }
    let pods_counted: u64 = metrics.iter().map(|(_, _, n)| n).sum();
    let replicas = ceil_replicas(new_ratio * pods_counted as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        // Counting the pods without a sample reverses the direction.
        return count(current);
    }
    count(replicas)
}

/// `convertDesiredReplicasWithRules`: without behavior, `desired` within `[min, max]` and at
/// most `max(factor × current, 4)`.
fn convert_desired_replicas_with_rules(current: u32, desired: u32, min: u32, max: u32, factor: f64) -> u32 {
    let scale_up_limit = (factor * f64::from(current)).max(SCALE_UP_LIMIT_MINIMUM);
    let scale_up_limit = if scale_up_limit >= f64::from(u32::MAX) { u32::MAX } else { scale_up_limit as u32 };
    let maximum = if max > scale_up_limit { scale_up_limit } else { max };
    if desired < min {
        min
    } else if desired > maximum {
        maximum
    } else {
        desired
    }
}

/// A scale of the workload in one direction (`timestampedScaleEvent`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ScaleEvent {
    at: f64,
    change: u32,
    outdated: bool,
}

/// An unstabilized recommendation (`timestampedRecommendation`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct TimedRecommendation {
    at: f64,
    replicas: u32,
}

/// `getReplicasChangePerPeriod`: replicas changed by `events` in the `period` before `t`.
fn replicas_change_per_period(t: f64, period: f64, events: &[ScaleEvent]) -> i64 {
    let cutoff = t - period;
    events.iter().filter(|e| e.at > cutoff).map(|e| i64::from(e.change)).sum()
}

/// `calculateScaleUpLimitWithScalingRules`: the most replicas `rules` allow at `t`, counted from
/// the replicas at the start of each policy's period.
fn scale_up_limit(t: f64, current: i64, up: &[ScaleEvent], down: &[ScaleEvent], rules: &ScalingRules) -> i64 {
    let (mut result, select): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i64::from(i32::MAX), i64::min),
        SelectPolicy::Max => (i64::from(i32::MIN), i64::max),
    };
    for (kind, policy) in rules.policies() {
        let period = policy.period.as_secs_f64();
        let start = current - replicas_change_per_period(t, period, up) + replicas_change_per_period(t, period, down);
        let proposed = match kind {
            PolicyType::Pods => start + i64::from(policy.value),
            // Rounded up, or a small workload would never grow.
            PolicyType::Percent => (start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64,
        };
        result = select(result, proposed);
    }
    result
}

/// `calculateScaleDownLimitWithBehaviors`: the fewest replicas `rules` allow at `t`.
fn scale_down_limit(t: f64, current: i64, up: &[ScaleEvent], down: &[ScaleEvent], rules: &ScalingRules) -> i64 {
    let (mut result, select): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i64::from(i32::MIN), i64::max),
        SelectPolicy::Max => (i64::from(i32::MAX), i64::min),
    };
    for (kind, policy) in rules.policies() {
        let period = policy.period.as_secs_f64();
        let start = current - replicas_change_per_period(t, period, up) + replicas_change_per_period(t, period, down);
        let proposed = match kind {
            PolicyType::Pods => start - i64::from(policy.value),
            PolicyType::Percent => (start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64,
        };
        result = select(result, proposed);
    }
    result
}

/// A reading of the workload: when, how many replicas were serving, their utilization.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    ready: u32,
    utilization: f64,
}

/// The autoscaler for one workload.
///
/// Times are seconds on the caller's clock. A moment exactly one window or period old counts as
/// past (the controller's own clock always runs a little past its nominal sync period).
#[derive(Debug, Clone)]
pub struct Hpa {
    settings: HpaSettings,
    min: u32,
    max: u32,
    target_percent: i32,
    /// Readings kept until [`HpaSettings::metrics_delay`] has passed over them.
    samples: VecDeque<Sample>,
    /// `recommendations[key]`: `None` until the first reconcile (Go's nil).
    recommendations: Option<Vec<TimedRecommendation>>,
    scale_up_events: Vec<ScaleEvent>,
    scale_down_events: Vec<ScaleEvent>,
    next_sync: f64,
}

impl Hpa {
    /// An autoscaler keeping replicas in `[min, max]` at `target_utilization` of each replica's
    /// capacity (its request): 0.7 is `averageUtilization: 70`, rounded to a whole percent.
    pub fn new(settings: HpaSettings, min: u32, max: u32, target_utilization: f64) -> Hpa {
        let percent = (target_utilization * 100.0).round();
        let target_percent =
            if percent.is_finite() && percent >= 1.0 { percent.min(f64::from(i32::MAX)) as i32 } else { 100 };
        Hpa {
            settings,
            min,
            max: max.max(min),
            target_percent,
            samples: VecDeque::new(),
            recommendations: None,
            scale_up_events: Vec::new(),
            scale_down_events: Vec::new(),
            next_sync: settings.sync_period.as_secs_f64(),
        }
    }

    /// Records a reading at `t` seconds: `ready` replicas serving, at `utilization` (their load
    /// over their capacity: 1.0 is 100% of their requests). Replicas asked for and not serving
    /// yet are not in it.
    pub fn observe(&mut self, t: f64, ready: u32, utilization: f64) {
        let utilization = if utilization.is_finite() { utilization.max(0.0) } else { 0.0 };
        self.samples.push_back(Sample { at: t, ready, utilization });
        // Keep the newest reading old enough to act on, and everything after it.
        let acted_on_by = t - self.settings.metrics_delay.as_secs_f64();
        while self.samples.get(1).is_some_and(|s| s.at <= acted_on_by) {
            self.samples.pop_front();
        }
    }

    /// At a sync (every `sync_period`), the replicas it wants given `current` ones (the
    /// workload's `spec.replicas`: serving or on their way); `None` between syncs and when it
    /// wants no change.
    pub fn sync(&mut self, t: f64, current: u32) -> Option<u32> {
        if t < self.next_sync {
            return None;
        }
        self.next_sync = t + self.settings.sync_period.as_secs_f64();
        let pods = self.pods(t, current);
        let desired = self.reconcile_groups(t, current, &pods);
        (desired != current).then_some(desired)
    }

    /// The workload's pods at a sync at `t` with `current` replicas: those serving when the
    /// reading acted on was taken have a sample of it; those serving since are still
    /// initializing; the rest are pending. Without a reading old enough, no pod has a sample.
    fn pods(&self, t: f64, current: u32) -> [(Pod, u64); 3] {
        let ready_now = self.samples.iter().rev().find(|s| s.at <= t).map_or(0, |s| s.ready);
        let seen_at = t - self.settings.metrics_delay.as_secs_f64();
        let (sampled, usage) = match self.samples.iter().rev().find(|s| s.at <= seen_at) {
            Some(s) => (s.ready.min(ready_now), (s.utilization * REPLICA_REQUEST_MILLI as f64).round() as i64),
            None => (0, 0),
        };
        let pod = |usage, state| Pod { request: REPLICA_REQUEST_MILLI, usage, state };
        [
            (pod(Some(usage), PodState::Ready), u64::from(sampled)),
            (pod(Some(0), PodState::NotReady), u64::from(ready_now - sampled)),
            (pod(None, PodState::Pending), u64::from(current.saturating_sub(ready_now))),
        ]
    }

    /// One pass of the controller (`reconcileAutoscaler`) at `t` over `pods`, the workload
    /// having `current` replicas (`spec.replicas`): the replicas it sets (`current` for no
    /// change). Without a recommendation from the metrics it changes nothing.
    pub fn reconcile(&mut self, t: f64, current: u32, pods: &[Pod]) -> u32 {
        let groups: Vec<(Pod, u64)> = pods.iter().map(|pod| (*pod, 1)).collect();
        self.reconcile_groups(t, current, &groups)
    }

    fn reconcile_groups(&mut self, t: f64, current: u32, pods: &[(Pod, u64)]) -> u32 {
        self.record_initial_recommendation(t, current);
        let desired = if current == 0 && self.min != 0 {
            // Autoscaling is disabled for a workload scaled to zero.
            return current;
        } else if current > self.max {
            self.max
        } else if current < self.min {
            self.min
        } else {
            let tolerances = Tolerances::both(self.settings.tolerance);
            let Ok(count) = replicas_for(current, self.target_percent, tolerances, pods) else {
                return current;
            };
            match self.settings.behavior {
                None => self.normalize_desired_replicas(t, current, count.replicas),
                Some(behavior) => self.normalize_desired_replicas_with_behaviors(t, current, count.replicas, &behavior),
            }
        };
        if desired != current {
            self.store_scale_event(t, current, desired);
        }
        desired
    }

    /// `recordInitialRecommendation`: the first pass records the current count.
    fn record_initial_recommendation(&mut self, t: f64, current: u32) {
        if self.recommendations.is_none() {
            self.recommendations = Some(vec![TimedRecommendation { at: t, replicas: current }]);
        }
    }

    /// Records `desired` in place of a recommendation older than both windows, or appends it.
    fn record_recommendation(&mut self, old: Option<usize>, at: f64, desired: u32) {
        let recommendations = self.recommendations.get_or_insert_with(Vec::new);
        let recommendation = TimedRecommendation { at, replicas: desired };
        match old {
            Some(i) => recommendations[i] = recommendation,
            None => recommendations.push(recommendation),
        }
    }

    /// `normalizeDesiredReplicas`, without behavior.
    fn normalize_desired_replicas(&mut self, t: f64, current: u32, prenormalized: u32) -> u32 {
        let stabilized = self.stabilize_recommendation(t, prenormalized);
        convert_desired_replicas_with_rules(current, stabilized, self.min, self.max, SCALE_UP_LIMIT_FACTOR)
    }

    /// `stabilizeRecommendation`: the highest recommendation of the stabilization window,
    /// whichever the direction.
    fn stabilize_recommendation(&mut self, t: f64, prenormalized: u32) -> u32 {
        let cutoff = t - self.settings.scale_down_stabilization.as_secs_f64();
        let mut highest = prenormalized;
        let mut old = None;
        for (i, rec) in self.recommendations.iter().flatten().enumerate() {
            if rec.at <= cutoff {
                old = Some(i);
            } else if rec.replicas > highest {
                highest = rec.replicas;
            }
        }
        self.record_recommendation(old, t, prenormalized);
        highest
    }

    /// `normalizeDesiredReplicasWithBehaviors`.
    fn normalize_desired_replicas_with_behaviors(
        &mut self,
        t: f64,
        current: u32,
        prenormalized: u32,
        behavior: &Behavior,
    ) -> u32 {
        let up_window = behavior.scale_up.stabilization_window.unwrap_or(Duration::ZERO);
        let down_window = behavior.scale_down.stabilization_window.unwrap_or(self.settings.scale_down_stabilization);
        let stabilized =
            self.stabilize_recommendation_with_behaviors(t, current, prenormalized, up_window, down_window);
        self.convert_desired_replicas_with_behavior_rate(t, current, stabilized, behavior)
    }

    /// `stabilizeRecommendationWithBehaviors`: `current`, raised to the lowest recommendation of
    /// the scale-up window and lowered to the highest of the scale-down window.
    fn stabilize_recommendation_with_behaviors(
        &mut self,
        t: f64,
        current: u32,
        prenormalized: u32,
        up_window: Duration,
        down_window: Duration,
    ) -> u32 {
        let up_cutoff = t - up_window.as_secs_f64();
        let down_cutoff = t - down_window.as_secs_f64();
        let (mut up, mut down) = (prenormalized, prenormalized);
        let mut old = None;
        for (i, rec) in self.recommendations.iter().flatten().enumerate() {
            if rec.at > up_cutoff {
                up = up.min(rec.replicas);
            }
            if rec.at > down_cutoff {
                down = down.max(rec.replicas);
            }
            if rec.at <= up_cutoff && rec.at <= down_cutoff {
                old = Some(i);
            }
        }
        let recommendation = current.max(up).min(down);
        self.record_recommendation(old, t, prenormalized);
        recommendation
    }

    /// `convertDesiredReplicasWithBehaviorRate`: `desired` within `[min, max]` and the rates
    /// of `behavior`.
    fn convert_desired_replicas_with_behavior_rate(
        &self,
        t: f64,
        current: u32,
        desired: u32,
        behavior: &Behavior,
    ) -> u32 {
        let (current_i, desired_i) = (i64::from(current), i64::from(desired));
        let (up, down) = (&self.scale_up_events, &self.scale_down_events);
        if desired > current {
            // Not below the current count until the scale-up events age out.
            let limit = scale_up_limit(t, current_i, up, down, &behavior.scale_up).max(current_i);
            let maximum = i64::from(self.max).min(limit);
            if desired_i > maximum {
                return u32::try_from(maximum).unwrap_or(current);
            }
        } else if desired < current {
            // Not above the current count until the scale-down events age out.
            let limit = scale_down_limit(t, current_i, up, down, &behavior.scale_down).min(current_i);
            let minimum = i64::from(self.min).max(limit);
            if desired_i < minimum {
                return u32::try_from(minimum).unwrap_or(current);
            }
        }
        desired
    }

    /// `storeScaleEvent`: with behavior, records a scale in place of an event older than the
    /// direction's longest policy period, or appends it.
    fn store_scale_event(&mut self, t: f64, previous: u32, new: u32) {
        let Some(behavior) = self.settings.behavior else {
            return;
        };
        let (events, rules, change) = if new > previous {
            (&mut self.scale_up_events, &behavior.scale_up, new - previous)
        } else {
            (&mut self.scale_down_events, &behavior.scale_down, previous - new)
        };
        // `markScaleEventsOutdated`.
        let cutoff = t - rules.longest_period();
        for event in events.iter_mut().filter(|e| e.at <= cutoff) {
            event.outdated = true;
        }
        let event = ScaleEvent { at: t, change, outdated: false };
        match events.iter().rposition(|e| e.outdated) {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

#[cfg(test)]
mod k8s_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa() -> Hpa {
        Hpa::new(HpaSettings::default(), 2, 100, 0.5)
    }

    #[test]
    fn it_acts_on_the_metric_of_15_s_ago_every_15_s() {
        let mut h = hpa();
        for t in 0..=14 {
            h.observe(f64::from(t), 4, 0.5);
        }
        assert_eq!(h.sync(14.0, 4), None, "not a sync yet");
        h.observe(15.0, 4, 2.0);
        // At 15 s it sees the sample of 0 s (0.5 = target): no change, despite the new load.
        assert_eq!(h.sync(15.0, 4), None);
        for t in 16..=30 {
            h.observe(f64::from(t), 4, 2.0);
        }
        assert_eq!(h.sync(20.0, 4), None, "between syncs");
        // At 30 s it sees 15 s: 4 × 200% / 50% = 16, limited to doubling (8).
        assert_eq!(h.sync(30.0, 4), Some(8));
    }

    #[test]
    fn scale_up_takes_the_larger_of_doubling_and_four_pods() {
        let mut h = hpa();
        for t in 0..=15 {
            h.observe(f64::from(t), 2, 5.0);
        }
        // From 2: doubling allows 4, four pods allow 6.
        assert_eq!(h.sync(15.0, 2), Some(6));
    }

    #[test]
    fn tolerance_and_bounds_hold() {
        let mut h = hpa();
        for t in 0..=15 {
            h.observe(f64::from(t), 10, 0.54);
        }
        assert_eq!(h.sync(15.0, 10), None, "within 10%");
        let mut h = Hpa::new(HpaSettings::default(), 2, 12, 0.5);
        for t in 0..=15 {
            h.observe(f64::from(t), 10, 50.0);
        }
        assert_eq!(h.sync(15.0, 10), Some(12), "at most max");
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut h = hpa();
        let mut replicas = 20;
        let mut t = 0.0;
        // Busy for a minute, then idle.
        while t <= 600.0 {
            h.observe(t, replicas, if t < 60.0 { 0.5 } else { 0.05 * 20.0 / f64::from(replicas) });
            if let Some(r) = h.sync(t, replicas) {
                assert!(t >= 60.0 + 300.0, "scaled down to {r} at {t} s, inside the window");
                replicas = r;
            }
            t += 1.0;
        }
        assert_eq!(replicas, 2);
    }

    /// Drives `h` from `from` to `to` seconds in 1 s steps against a pool whose replicas serve
    /// `delay` seconds after they are asked for, under `load` (in replicas' worth of capacity);
    /// returns (t, replicas asked for) at each scale.
    fn run(h: &mut Hpa, replicas: &mut Vec<(f64, u32)>, from: u32, to: u32, delay: f64, load: f64) -> Vec<(f64, u32)> {
        let mut scales = Vec::new();
        for s in from..=to {
            let t = f64::from(s);
            let asked = replicas.last().map_or(0, |(_, r)| *r);
            // Serving: the latest request at least `delay` old (scale-downs take effect at once).
            let serving = replicas.iter().rev().find(|(at, _)| t - at >= delay).map_or(0, |(_, r)| *r).min(asked);
            let utilization = if serving > 0 { load / f64::from(serving) } else { 0.0 };
            h.observe(t, serving, utilization);
            if let Some(to) = h.sync(t, asked) {
                scales.push((t, to));
                replicas.push((if to < asked { f64::NEG_INFINITY } else { t }, to));
            }
        }
        scales
    }

    #[test]
    fn the_first_sync_holds_the_starting_count_for_a_stabilization_window() {
        // Gap 1: `recordInitialRecommendation`. A fresh HPA on an idle workload of 10 records 10
        // at its first sync (15 s), so it does not go below 10 until that record is 300 s old.
        let mut h = hpa();
        let mut replicas = vec![(f64::NEG_INFINITY, 10)];
        let scales = run(&mut h, &mut replicas, 0, 600, 30.0, 1.0);
        assert_eq!(scales, vec![(315.0, 2)], "idle at 10% of 10 replicas: 2 wanted, from 315 s");
    }

    #[test]
    fn replicas_on_their_way_dilute_a_stale_reading_instead_of_compounding_it() {
        // Gap 2: 3 replicas at 80% of a 50% target want ceil(1.6 × 3) = 5 at 15 s. At 30 s the
        // reading (of 15 s) still shows 3 replicas at 80%; the 2 new replicas are not ready
        // (provisioning takes 30 s) and count as idle: 3 × 80% over 5 = 48%, within the
        // tolerance, so it holds 5 where compounding the stale ratio on 5 would ask for 8. When
        // they are ready (45 s) their first samples are not used yet; from 60 s the reading
        // covers all 5 at 48%. Kubernetes holds 5 throughout.
        let mut h = hpa();
        let mut replicas = vec![(f64::NEG_INFINITY, 3)];
        let scales = run(&mut h, &mut replicas, 0, 300, 30.0, 2.4);
        assert_eq!(scales, vec![(15.0, 5)]);
        // The diluted ratio is checked against the tolerance again: 3 ready at 87% and 2 pending
        // are 3 × 87% over 5 = 52%, within it, so 5 it stays, where ceil(1.74 × 3) = 6 would not.
        let mut h = hpa();
        h.recommendations = Some(Vec::new());
        let ready = Pod { request: 1000, usage: Some(870), state: PodState::Ready };
        let pending = Pod { request: 1000, usage: None, state: PodState::Pending };
        assert_eq!(h.reconcile(1000.0, 5, &[ready, ready, ready, pending, pending]), 5);
    }

    #[test]
    fn a_scale_down_leaves_replicas_that_are_not_ready_out() {
        // Load falls while 8 replicas are on their way (2 ready at 10%): Kubernetes recommends
        // from the ready ones alone, ceil(0.2 × 2) = 1 (with no higher recommendation in the
        // stabilization window, it goes there).
        let mut h = Hpa::new(HpaSettings::default(), 1, 100, 0.5);
        let pods: Vec<Pod> = (0..10)
            .map(|i| {
                let ready = i < 2;
                Pod {
                    request: 1000,
                    usage: ready.then_some(100),
                    state: if ready { PodState::Ready } else { PodState::Pending },
                }
            })
            .collect();
        h.recommendations = Some(Vec::new());
        assert_eq!(h.reconcile(1000.0, 10, &pods), 1);
    }

    #[test]
    fn utilization_is_a_whole_percent_truncated() {
        // Gap 3: `int32(metricsTotal * 100 / requestsTotal)`. 55.9% of a 50% target is 55%, a
        // ratio of 1.1: within the tolerance (the fractional 1.118 is not).
        let at = |utilization: f64| {
            let mut h = hpa();
            for t in 0..=15 {
                h.observe(f64::from(t), 10, utilization);
            }
            h.sync(15.0, 10)
        };
        assert_eq!(at(0.559), None);
        // 56%: 1.12 × 10 = 11.2, up to 12.
        assert_eq!(at(0.561), Some(12));
        // 44.9% is 44%: 0.88, outside the tolerance (the fractional 0.898 is not).
        let pods = [Pod { request: 1000, usage: Some(449), state: PodState::Ready }; 10];
        let count = resource_replicas(10, 50, Tolerances::both(0.1), &pods).unwrap();
        assert_eq!((count.replicas, count.utilization), (9, 44));
        assert_eq!(Hpa::new(HpaSettings::default(), 1, 10, 0.7).target_percent, 70);
    }

    #[test]
    fn the_scale_up_limit_counts_from_the_replicas_at_the_period_start() {
        // `calculateScaleUpLimitWithScalingRules`: at most +100% per 60 s, from the replicas 60 s
        // before, not from the current ones: 2 → 4 at 15 s, then nothing more until 75 s.
        let rules = ScalingRules {
            stabilization_window: Some(Duration::ZERO),
            select_policy: SelectPolicy::Max,
            pods: None,
            percent: Some(ScalingPolicy { value: 100, period: Duration::from_secs(60) }),
        };
        let settings = HpaSettings {
            behavior: Some(Behavior { scale_up: rules, ..Behavior::default() }),
            ..HpaSettings::default()
        };
        let mut h = Hpa::new(settings, 1, 100, 0.5);
        let mut replicas = vec![(f64::NEG_INFINITY, 2)];
        let scales = run(&mut h, &mut replicas, 0, 90, 1.0, 20.0);
        assert_eq!(scales, vec![(15.0, 4), (75.0, 8)]);
        // By default the 15 s period has passed at each sync: doubling every sync.
        let mut h = hpa();
        let mut replicas = vec![(f64::NEG_INFINITY, 8)];
        let scales = run(&mut h, &mut replicas, 0, 50, 1.0, 200.0);
        assert_eq!(scales, vec![(15.0, 16), (30.0, 32), (45.0, 64)]);
    }

    #[test]
    fn the_default_scale_down_is_not_rate_limited_after_stabilization() {
        // Percent 100 per 15 s allows going to min at once.
        let mut h = hpa();
        h.recommendations = Some(Vec::new());
        let pods = vec![Pod { request: 1000, usage: Some(10), state: PodState::Ready }; 50];
        assert_eq!(h.reconcile(1000.0, 50, &pods), 2);
    }

    #[test]
    fn without_behavior_the_older_rules_apply() {
        // No `spec.behavior`: a scale-up goes to at most max(2 × current, 4), not +4 pods...
        let settings = HpaSettings { behavior: None, ..HpaSettings::default() };
        let mut h = Hpa::new(settings, 1, 100, 0.5);
        let mut replicas = vec![(f64::NEG_INFINITY, 1)];
        let scales = run(&mut h, &mut replicas, 0, 15, 1.0, 20.0);
        assert_eq!(scales, vec![(15.0, 4)], "with the default behavior it would be 5");
        // ...and stabilization takes the highest recommendation of the window in both
        // directions: a scale-up limited to 8 goes on to an earlier, higher recommendation.
        let mut h = Hpa::new(settings, 1, 100, 0.5);
        h.recommendations = Some(vec![TimedRecommendation { at: 900.0, replicas: 40 }]);
        let pods = vec![Pod { request: 1000, usage: Some(600), state: PodState::Ready }; 8];
        // 8 at 60% of 50%: 10 wanted now, 40 100 s ago.
        assert_eq!(h.reconcile(1000.0, 8, &pods), 16);
    }
}
