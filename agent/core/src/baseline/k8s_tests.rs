//! Kubernetes' own tests of the HPA, ported to [`super`]: the cases of
//! `pkg/controller/podautoscaler/replica_calculator_test.go` and
//! `pkg/controller/podautoscaler/horizontal_test.go` (kubernetes/kubernetes) within the model's
//! scope: one CPU-utilization metric of whole pods, target-tracking. Each Rust test is named after
//! the Go test it ports; the Go case names are in the assertion messages.
//!
//! How the Go fixtures map onto [`Pod`]:
//! - The Go pods have two containers. In `replica_calculator_test.go` each container requests
//!   the pod's `requests[i]` and uses `levels[i]` ([`rc_pod`]); in `horizontal_test.go` each
//!   requests half the pod's request and uses half its level, in integer milli-units
//!   ([`hc_pod`]). Pods beyond the levels have no sample; levels beyond the pods (superfluous
//!   metrics) are left out, since a sample here belongs to a pod.
//! - `groupPods`' CPU rule is the caller's in this model ([`PodState::NotReady`]): a pod reported
//!   not ready (started long before, so past the initial readiness delay), or started "hot" (within
//!   the CPU initialization period, its sample from before a full window since it became ready),
//!   is `NotReady`. Phase `Pending` is `Pending`, `Failed` is `Failed`, a deletion timestamp is
//!   `Terminating`.
//! - A Go test's `recommendations: nil` is `None` (the first reconcile records the current
//!   count); `[]timestampedRecommendation{}` is `Some(vec![])`.
//! - The Go controller tests set `scaleUpLimitFactor = 8`; their cases below stay under the
//!   default factor 2, except `TestConvertDesiredReplicasWithRules`, which calls the function
//!   with 8.
//!
//! Not ported, being outside the model: custom (`Pods`), `Object` and `External` metrics and
//! their tolerance, overflow and scale-from/to-zero cases (`*CM*`, `*CMObject*`, `*CMExternal*`,
//! `*PerPod*`, `TestReplicaCalcScaleUpOverflow`, `TestExternalPerPodMetric*Overflow`,
//! `TestReplicaCalcExternalMetricUsageOverflow`); container-scoped metrics
//! (`TestScaleUpContainer`, `TestScaleDownContainerResource` and the container subcases of
//! `TestReplicaCalcResourceScale`); several metrics at once (`TestScaleUpOneMetricInvalid`,
//! `TestScaleUpOneMetricEmpty`, `TestNoScaleDownOneMetric*`, `TestScaleUpBothMetricsEmpty`,
//! `TestScaleUpFromZeroOneMetricInvalid`, `TestNoBackoffUpscaleCMNoBackoffCpu`); status
//! conditions, events, API errors and selectors (`TestCondition*`, `TestEventCreated`'s event,
//! `TestAvoidUnnecessaryUpdates`' status write, `TestMultipleHPAs`); requests
//! (`TestEmptyCPURequest`, `TestReplicaCalcEmptyCPURequest`, `TestCalculateRequests`,
//! `TestCalculatePodRequestsFromContainers_NonExistentContainer`: a replica here always requests
//! its capacity); metrics of pods that do not exist (`TestReplicaCalcDisjointResourcesMetrics`);
//! the scale target's kind (`TestScaleUpDeployment`, `TestScaleUpReplicaSet`: `TestScaleUp`'s
//! numbers); and the CPU-readiness subcases of `TestGroupPods` (readiness conditions, start
//! times and metric windows), whose verdict is an input here.

use super::*;

use PodState::{Failed, NotReady, Pending, Ready, Terminating};

/// `time.Now()` of the ported tests.
const NOW: f64 = 100_000.0;

fn ago(seconds: f64) -> f64 {
    NOW - seconds
}

/// A pod of `replica_calculator_test.go`: two containers, each requesting `request` and using
/// `level` milli-units.
fn rc_pod(request: i64, level: Option<i64>, state: PodState) -> Pod {
    Pod { request: 2 * request, usage: level.map(|l| 2 * l), state }
}

/// A pod of `horizontal_test.go`: two containers, each requesting `request / 2` and using
/// `level / 2` milli-units.
fn hc_pod(request: i64, level: Option<i64>, state: PodState) -> Pod {
    Pod { request: 2 * (request / 2), usage: level.map(|l| 2 * (l / 2)), state }
}

/// Pods from a Go fixture: one per request; the first `levels.len()` have a sample; `states`
/// (`Ready` where missing) give readiness, start time, phase and deletion.
fn pods(pod: fn(i64, Option<i64>, PodState) -> Pod, requests: &[i64], levels: &[i64], states: &[PodState]) -> Vec<Pod> {
    requests
        .iter()
        .enumerate()
        .map(|(i, &request)| pod(request, levels.get(i).copied(), states.get(i).copied().unwrap_or(Ready)))
        .collect()
}

fn rc_pods(requests: &[i64], levels: &[i64], states: &[PodState]) -> Vec<Pod> {
    pods(rc_pod, requests, levels, states)
}

fn hc_pods(requests: &[i64], levels: &[i64], states: &[PodState]) -> Vec<Pod> {
    pods(hc_pod, requests, levels, states)
}

const DEFAULT_TOLERANCES: Tolerances = Tolerances { scale_down: 0.1, scale_up: 0.1 };

/// `GetResourceReplicas`: (replicas, utilization, raw average) or why not.
fn calc(current: u32, target: i32, tolerances: Tolerances, pods: &[Pod]) -> Result<(u32, i32, i64), NoRecommendation> {
    resource_replicas(current, target, tolerances, pods).map(|c| (c.replicas, c.utilization, c.raw_average))
}

// ---------------------------------------------------------------------------------------------
// replica_calculator_test.go
// ---------------------------------------------------------------------------------------------

/// `TestReplicaCalcResourceScale` (replica_calculator_test.go), its whole-pod subcases.
#[test]
fn test_replica_calc_resource_scale() {
    let r3 = [1000; 3];
    let r4 = [1000; 4];
    let r5 = [1000; 5];
    let r7 = [1000; 7];
    #[rustfmt::skip]
    let cases = vec![
        ("scale up", 3, 30, rc_pods(&r3, &[300, 500, 700], &[]), (5, 50, 2 * 500)),
        ("scale up: unready pod scales less", 3, 30,
            rc_pods(&r3, &[300, 500, 700], &[NotReady, Ready, Ready]), (4, 60, 2 * 600)),
        ("scale up: hot-CPU pod scales less", 3, 30,
            rc_pods(&r3, &[300, 500, 700], &[NotReady, Ready, Ready]), (4, 60, 2 * 600)),
        ("no scale: unready pods ignored", 3, 30,
            rc_pods(&r3, &[400, 500, 700], &[Ready, NotReady, NotReady]), (3, 40, 2 * 400)),
        ("no scale: hot-CPU pods ignored", 3, 30,
            rc_pods(&r3, &[400, 500, 700], &[Ready, NotReady, NotReady]), (3, 40, 2 * 400)),
        ("scale up: failed pods ignored", 2, 30,
            rc_pods(&r4, &[500, 700], &[Ready, Ready, Failed, Failed]), (4, 60, 2 * 600)),
        ("scale up: pods being deleted are ignored", 2, 30,
            rc_pods(&r4, &[500, 700], &[Ready, Ready, Terminating, Terminating]), (4, 60, 2 * 600)),
        ("scale down", 5, 50, rc_pods(&r5, &[100, 300, 500, 250, 250], &[]), (3, 28, 2 * 280)),
        ("scale down: exclude unready pods", 5, 50,
            rc_pods(&r5, &[100, 300, 500, 250, 250], &[Ready, Ready, Ready, NotReady, NotReady]), (2, 30, 2 * 300)),
        ("scale down: exclude unscheduled pods", 5, 50,
            rc_pods(&r5, &[100], &[Ready, Pending, Pending, Pending, Pending]), (1, 10, 2 * 100)),
        ("scale down: ignore hot-CPU pods", 5, 50,
            rc_pods(&r5, &[100, 300, 500, 250, 250], &[Ready, Ready, Ready, NotReady, NotReady]), (2, 30, 2 * 300)),
        ("scale down: failed pods ignored", 5, 50,
            rc_pods(&r7, &[100, 300, 500, 250, 250], &[Ready, Ready, Ready, Ready, Ready, Failed, Failed]),
            (3, 28, 2 * 280)),
        ("scale down: pods being deleted are ignored", 5, 50,
            rc_pods(&r7, &[100, 300, 500, 250, 250], &[Ready, Ready, Ready, Ready, Ready, Terminating, Terminating]),
            (3, 28, 2 * 280)),
    ];
    for (name, current, target, pods, expected) in cases {
        assert_eq!(calc(current, target, DEFAULT_TOLERANCES, &pods), Ok(expected), "{name}");
    }
}

/// `TestReplicaCalcTolerance` (replica_calculator_test.go).
#[test]
fn test_replica_calc_tolerance() {
    let pods = rc_pods(&[900, 1000, 1100], &[1010, 1030, 1020], &[]);
    assert_eq!(calc(3, 100, DEFAULT_TOLERANCES, &pods), Ok((3, 102, 2 * 1020)));
}

/// `TestReplicaCalcConfigurableTolerance` (replica_calculator_test.go).
#[test]
fn test_replica_calc_configurable_tolerance() {
    let requests = [900, 1000, 1100];
    let tolerances = |scale_down, scale_up| Tolerances { scale_down, scale_up };
    #[rustfmt::skip]
    let cases = [
        ("Outside of a 0% tolerance", tolerances(0.0, 0.0), [909, 1010, 1111], (4, 101, 2 * 1010)),
        ("Within a 200% scale-up tolerance", tolerances(0.1, 2.0), [1890, 1910, 1900], (3, 190, 2 * 1900)),
        ("Outside 8% scale-up tolerance (and superfuous scale-down tolerance)", tolerances(2.0, 0.08),
            [1100, 1080, 1090], (4, 109, 2 * 1090)),
        ("Within a 36% scale-down tolerance", tolerances(0.36, 0.1), [660, 640, 650], (3, 65, 2 * 650)),
        ("Outside a 34% scale-down tolerance", tolerances(0.34, 0.1), [660, 640, 650], (2, 65, 2 * 650)),
    ];
    for (name, tolerances, levels, expected) in cases {
        assert_eq!(calc(3, 100, tolerances, &rc_pods(&requests, &levels, &[])), Ok(expected), "{name}");
    }
}

/// `TestReplicaCalcSuperfluousMetrics` (replica_calculator_test.go): the samples of the two
/// pods that do not exist (3200, 2000) have no place here.
#[test]
fn test_replica_calc_superfluous_metrics() {
    let pods = rc_pods(&[1000; 4], &[4000, 9500, 3000, 7000], &[]);
    assert_eq!(calc(4, 100, DEFAULT_TOLERANCES, &pods), Ok((24, 587, 2 * 5875)));
}

/// `TestReplicaCalcMissingMetrics` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics() {
    let pods = rc_pods(&[1000; 4], &[400, 95], &[]);
    assert_eq!(calc(4, 100, DEFAULT_TOLERANCES, &pods), Ok((3, 24, 495)));
}

/// `TestReplicaCalcEmptyMetrics` (replica_calculator_test.go).
#[test]
fn test_replica_calc_empty_metrics() {
    let pods = rc_pods(&[1000; 4], &[], &[]);
    assert_eq!(calc(4, 100, DEFAULT_TOLERANCES, &pods), Err(NoRecommendation::NoMetrics));
    assert_eq!(calc(4, 100, DEFAULT_TOLERANCES, &[]), Err(NoRecommendation::NoPods));
}

/// `TestReplicaCalcMissingMetricsNoChangeEq` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_no_change_eq() {
    assert_eq!(calc(2, 100, DEFAULT_TOLERANCES, &rc_pods(&[1000; 2], &[1000], &[])), Ok((2, 100, 2 * 1000)));
}

/// `TestReplicaCalcMissingMetricsNoChangeGt` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_no_change_gt() {
    assert_eq!(calc(2, 100, DEFAULT_TOLERANCES, &rc_pods(&[1000; 2], &[1900], &[])), Ok((2, 190, 2 * 1900)));
}

/// `TestReplicaCalcMissingMetricsNoChangeLt` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_no_change_lt() {
    assert_eq!(calc(2, 100, DEFAULT_TOLERANCES, &rc_pods(&[1000; 2], &[600], &[])), Ok((2, 60, 2 * 600)));
}

/// `TestReplicaCalcMissingMetricsUnreadyChange` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_unready_change() {
    let pods = rc_pods(&[1000; 3], &[100, 450], &[NotReady, Ready, Ready]);
    assert_eq!(calc(3, 50, DEFAULT_TOLERANCES, &pods), Ok((3, 45, 2 * 450)));
}

/// `TestReplicaCalcMissingMetricsHotCpuNoChange` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_hot_cpu_no_change() {
    let pods = rc_pods(&[1000; 3], &[100, 450], &[NotReady, Ready, Ready]);
    assert_eq!(calc(3, 50, DEFAULT_TOLERANCES, &pods), Ok((3, 45, 2 * 450)));
}

/// `TestReplicaCalcMissingMetricsUnreadyScaleUp` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_unready_scale_up() {
    let pods = rc_pods(&[1000; 3], &[100, 2000], &[NotReady, Ready, Ready]);
    assert_eq!(calc(3, 50, DEFAULT_TOLERANCES, &pods), Ok((4, 200, 2 * 2000)));
}

/// `TestReplicaCalcMissingMetricsHotCpuScaleUp` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_hot_cpu_scale_up() {
    let pods = rc_pods(&[1000; 3], &[100, 2000], &[NotReady, Ready, Ready]);
    assert_eq!(calc(3, 50, DEFAULT_TOLERANCES, &pods), Ok((4, 200, 2 * 2000)));
}

/// `TestReplicaCalcMissingMetricsUnreadyScaleDown` (replica_calculator_test.go).
#[test]
fn test_replica_calc_missing_metrics_unready_scale_down() {
    let pods = rc_pods(&[1000; 4], &[100, 100, 100], &[NotReady, Ready, Ready, Ready]);
    assert_eq!(calc(4, 50, DEFAULT_TOLERANCES, &pods), Ok((3, 10, 2 * 100)));
}

/// `TestReplicaCalcMissingMetricsScaleDownTargetOver100` (replica_calculator_test.go): a pod
/// without a sample counts at the target, not 100%, when the target is above 100%.
#[test]
fn test_replica_calc_missing_metrics_scale_down_target_over100() {
    let pods = rc_pods(&[1000, 1000, 2000, 2000], &[200, 100, 100], &[NotReady, Ready, Ready, Ready]);
    assert_eq!(calc(4, 300, DEFAULT_TOLERANCES, &pods), Ok((2, 6, 2 * 100)));
}

/// `TestReplicaCalcDuringRollingUpdateWithMaxSurge` (replica_calculator_test.go).
#[test]
fn test_replica_calc_during_rolling_update_with_max_surge() {
    let pods = rc_pods(&[1000; 3], &[100, 100], &[]);
    assert_eq!(calc(2, 50, DEFAULT_TOLERANCES, &pods), Ok((2, 10, 2 * 100)));
}

/// The requests of `TestComputedToleranceAlgImplementation` and
/// `TestReplicaCalcComputedToleranceAlgImplementation`: 2 × 150 per pod, jittered.
fn tolerance_alg_requests() -> [i64; 10] {
    let per_pod = 300;
    [
        per_pod + 100,
        per_pod - 100,
        per_pod + 10,
        per_pod - 10,
        per_pod + 2,
        per_pod - 2,
        per_pod + 1,
        per_pod - 1,
        per_pod,
        per_pod,
    ]
}

/// The targets of the same tests: the smallest percentage that scales down, then one that does
/// not.
fn tolerance_alg_targets() -> (i32, u32, i32) {
    let requested_to_used: f64 = 2.0;
    let target = (1.0 / (requested_to_used * (1.0 - 0.1))).abs() + 0.01;
    let final_target = (target * 100.0) as i32;
    let resources_used_ratio = 1500.0 / (3000.0 * target);
    let final_pods = (resources_used_ratio * 10.0).ceil() as u32;
    let target = (1.0 / (requested_to_used * (1.0 - 0.1))).abs() + 0.004;
    (final_target, final_pods, (target * 100.0) as i32)
}

/// `TestReplicaCalcComputedToleranceAlgImplementation` (replica_calculator_test.go).
#[test]
fn test_replica_calc_computed_tolerance_alg_implementation() {
    let (scaling_target, final_pods, still_target) = tolerance_alg_targets();
    assert_eq!((scaling_target, final_pods, still_target), (56, 9, 55));
    let pods = rc_pods(&tolerance_alg_requests(), &[150; 10], &[]);
    assert_eq!(calc(10, scaling_target, DEFAULT_TOLERANCES, &pods), Ok((final_pods, 50, 2 * 150)));
    assert_eq!(calc(10, still_target, DEFAULT_TOLERANCES, &pods), Ok((10, 50, 2 * 150)));
}

/// `TestGroupPods` (replica_calculator_test.go), the subcases that do not test the CPU
/// readiness rule itself: (ready, unready, missing, ignored).
#[test]
fn test_group_pods() {
    let count = |pods: &[Pod]| {
        let groups: Vec<(Pod, u64)> = pods.iter().map(|p| (*p, 1)).collect();
        let g = group_pods(&groups);
        let unready: u64 = g.unready.iter().map(|(_, n)| n).sum();
        let missing: u64 = g.missing.iter().map(|(_, n)| n).sum();
        (g.ready, unready, missing, pods.len() as u64 - g.ready - unready - missing)
    };
    let pod = |usage, state| Pod { request: 1000, usage, state };
    #[rustfmt::skip]
    let cases = [
        ("void", vec![], (0, 0, 0, 0)),
        ("count in a ready pod - memory", vec![pod(Some(1), Ready)], (1, 0, 0, 0)),
        ("a missing pod", vec![pod(None, Ready)], (0, 0, 1, 0)),
        // lucretius has no ready condition (CPU: unready), niccolo is ready, epicurus has no sample.
        ("several pods", vec![pod(Some(1), NotReady), pod(Some(1), Ready), pod(None, Ready)], (1, 1, 1, 0)),
        ("pending pods are unreadied", vec![pod(None, Pending)], (0, 1, 0, 0)),
        ("ignore pods with deletion timestamps", vec![pod(Some(1), Terminating)], (0, 0, 0, 1)),
        ("ignore pods in a failed state", vec![pod(Some(1), Failed)], (0, 0, 0, 1)),
    ];
    for (name, pods, expected) in cases {
        assert_eq!(count(&pods), expected, "{name}");
    }
    // A not-ready pod without a sample is missing, not unready: the sample is checked first.
    assert_eq!(count(&[pod(None, NotReady)]), (0, 0, 1, 0));
}

// ---------------------------------------------------------------------------------------------
// horizontal_test.go
// ---------------------------------------------------------------------------------------------

/// A `testCase` of horizontal_test.go, reduced to what the model has.
struct Case {
    min: u32,
    max: u32,
    spec: u32,
    target: i32,
    pods: Vec<Pod>,
    /// `None` is Go's nil (the first reconcile records `spec`); `Some(vec![])` an empty history.
    recommendations: Option<Vec<(f64, u32)>>,
    scale_up_rules: Option<ScalingRules>,
    scale_down_rules: Option<ScalingRules>,
}

impl Case {
    fn new(min: u32, max: u32, spec: u32, target: i32, pods: Vec<Pod>) -> Case {
        Case { min, max, spec, target, pods, recommendations: None, scale_up_rules: None, scale_down_rules: None }
    }

    fn recommendations(mut self, recommendations: &[(f64, u32)]) -> Case {
        self.recommendations = Some(recommendations.to_vec());
        self
    }

    fn scale_up_rules(mut self, rules: ScalingRules) -> Case {
        self.scale_up_rules = Some(rules);
        self
    }

    /// One reconcile, as `tc.runTest`: the replicas the controller sets.
    fn run(self) -> u32 {
        // A behavior exists when either direction has rules; the other takes the defaults.
        let behavior = (self.scale_up_rules.is_some() || self.scale_down_rules.is_some()).then(|| Behavior {
            scale_up: self.scale_up_rules.unwrap_or_else(ScalingRules::default_scale_up),
            scale_down: self.scale_down_rules.unwrap_or_else(ScalingRules::default_scale_down),
        });
        let settings = HpaSettings { behavior, ..HpaSettings::default() };
        let mut hpa = controller(settings, self.min, self.max);
        hpa.target_percent = self.target;
        hpa.recommendations = self
            .recommendations
            .map(|recs| recs.into_iter().map(|(at, replicas)| TimedRecommendation { at, replicas }).collect());
        hpa.reconcile(NOW, self.spec, &self.pods)
    }
}

fn controller(settings: HpaSettings, min: u32, max: u32) -> Hpa {
    Hpa::new(settings, min, max, 1.0)
}

/// `generateScalingRules`.
fn generate_scaling_rules(pods: u32, pods_period: u64, percent: u32, percent_period: u64, window: u64) -> ScalingRules {
    ScalingRules {
        stabilization_window: Some(Duration::from_secs(window)),
        select_policy: SelectPolicy::Max,
        pods: (pods != 0).then(|| ScalingPolicy { value: pods, period: Duration::from_secs(pods_period) }),
        percent: (percent != 0).then(|| ScalingPolicy { value: percent, period: Duration::from_secs(percent_period) }),
    }
}

/// `generateEventsUniformDistribution`: `changes` spread over the last `period` seconds, each in
/// the middle of its segment.
fn generate_events_uniform_distribution(changes: &[u32], period: f64) -> Vec<ScaleEvent> {
    let segment = period / changes.len() as f64;
    changes
        .iter()
        .enumerate()
        .map(|(i, &change)| ScaleEvent {
            at: ago(period - segment * (i + 1) as f64 + segment / 2.0),
            change,
            outdated: false,
        })
        .collect()
}

const R3: [i64; 3] = [1000; 3];
const R5: [i64; 5] = [1000; 5];

/// `TestScaleUp` (horizontal_test.go); `TestScaleUpDeployment` and `TestScaleUpReplicaSet`
/// differ only in the target's kind.
#[test]
fn test_scale_up() {
    assert_eq!(Case::new(2, 6, 3, 30, hc_pods(&R3, &[300, 500, 700], &[])).run(), 5);
}

/// `TestScaleUpUnreadyLessScale` (horizontal_test.go).
#[test]
fn test_scale_up_unready_less_scale() {
    assert_eq!(Case::new(2, 6, 3, 30, hc_pods(&R3, &[300, 500, 700], &[NotReady, Ready, Ready])).run(), 4);
}

/// `TestScaleUpHotCpuLessScale` (horizontal_test.go): the hot pod is `NotReady`.
#[test]
fn test_scale_up_hot_cpu_less_scale() {
    assert_eq!(Case::new(2, 6, 3, 30, hc_pods(&R3, &[300, 500, 700], &[NotReady, Ready, Ready])).run(), 4);
}

/// `TestScaleUpUnreadyNoScale` (horizontal_test.go).
#[test]
fn test_scale_up_unready_no_scale() {
    assert_eq!(Case::new(2, 6, 3, 30, hc_pods(&R3, &[400, 500, 700], &[Ready, NotReady, NotReady])).run(), 3);
}

/// `TestScaleUpHotCpuNoScale` (horizontal_test.go).
#[test]
fn test_scale_up_hot_cpu_no_scale() {
    assert_eq!(Case::new(2, 6, 3, 30, hc_pods(&R3, &[400, 500, 700], &[Ready, NotReady, NotReady])).run(), 3);
}

/// `TestScaleUpIgnoresFailedPods` (horizontal_test.go).
#[test]
fn test_scale_up_ignores_failed_pods() {
    let pods = hc_pods(&[1000; 4], &[500, 700], &[Ready, Ready, Failed, Failed]);
    assert_eq!(Case::new(2, 6, 2, 30, pods).run(), 4);
}

/// `TestScaleUpIgnoresDeletionPods` (horizontal_test.go).
#[test]
fn test_scale_up_ignores_deletion_pods() {
    let pods = hc_pods(&[1000; 4], &[500, 700], &[Ready, Ready, Terminating, Terminating]);
    assert_eq!(Case::new(2, 6, 2, 30, pods).run(), 4);
}

/// `TestScaleDown` (horizontal_test.go).
#[test]
fn test_scale_down() {
    let pods = hc_pods(&R5, &[100, 300, 500, 250, 250], &[]);
    assert_eq!(Case::new(2, 6, 5, 50, pods).recommendations(&[]).run(), 3);
}

/// `TestScaleDownWithScalingRules` (horizontal_test.go).
#[test]
fn test_scale_down_with_scaling_rules() {
    let pods = hc_pods(&R5, &[100, 300, 500, 250, 250], &[]);
    let case =
        Case::new(2, 6, 5, 50, pods).recommendations(&[]).scale_up_rules(generate_scaling_rules(0, 0, 100, 15, 30));
    assert_eq!(case.run(), 3);
}

/// `TestScaleDownStabilizeInitialSize` (horizontal_test.go): with no recommendations yet, the
/// first pass records the current 5 and holds it.
#[test]
fn test_scale_down_stabilize_initial_size() {
    let pods = hc_pods(&R5, &[100, 300, 500, 250, 250], &[]);
    assert_eq!(Case::new(2, 6, 5, 50, pods).run(), 5);
    // The same with the default behavior.
    let pods = hc_pods(&R5, &[100, 300, 500, 250, 250], &[]);
    let case = Case::new(2, 6, 5, 50, pods).scale_up_rules(ScalingRules::default_scale_up());
    assert_eq!(case.run(), 5);
}

/// `TestScaleDownIncludeUnreadyPods` (horizontal_test.go).
#[test]
fn test_scale_down_include_unready_pods() {
    let pods = hc_pods(&R5, &[100, 300, 500, 250, 250], &[Ready, Ready, Ready, NotReady, NotReady]);
    assert_eq!(Case::new(2, 6, 5, 50, pods).recommendations(&[]).run(), 2);
}

/// `TestScaleDownIgnoreHotCpuPods` (horizontal_test.go).
#[test]
fn test_scale_down_ignore_hot_cpu_pods() {
    let pods = hc_pods(&R5, &[100, 300, 500, 250, 250], &[Ready, Ready, Ready, NotReady, NotReady]);
    assert_eq!(Case::new(2, 6, 5, 50, pods).recommendations(&[]).run(), 2);
}

/// `TestScaleDownIgnoresFailedPods` (horizontal_test.go).
#[test]
fn test_scale_down_ignores_failed_pods() {
    let states = [Ready, Ready, Ready, Ready, Ready, Failed, Failed];
    let pods = hc_pods(&[1000; 7], &[100, 300, 500, 250, 250], &states);
    assert_eq!(Case::new(2, 6, 5, 50, pods).recommendations(&[]).run(), 3);
}

/// `TestScaleDownIgnoresDeletionPods` (horizontal_test.go).
#[test]
fn test_scale_down_ignores_deletion_pods() {
    let states = [Ready, Ready, Ready, Ready, Ready, Terminating, Terminating];
    let pods = hc_pods(&[1000; 7], &[100, 300, 500, 250, 250], &states);
    assert_eq!(Case::new(2, 6, 5, 50, pods).recommendations(&[]).run(), 3);
}

/// `TestTolerance` (horizontal_test.go).
#[test]
fn test_tolerance() {
    let pods = hc_pods(&[900, 1000, 1100], &[1010, 1030, 1020], &[]);
    assert_eq!(Case::new(1, 5, 3, 100, pods).run(), 3);
}

/// `TestMinReplicas` (horizontal_test.go).
#[test]
fn test_min_replicas() {
    let pods = hc_pods(&[900, 1000, 1100], &[10, 95, 10], &[]);
    assert_eq!(Case::new(2, 5, 3, 90, pods).recommendations(&[]).run(), 2);
}

/// `TestZeroMinReplicasDesiredZero` (horizontal_test.go).
#[test]
fn test_zero_min_replicas_desired_zero() {
    let pods = hc_pods(&[900, 1000, 1100], &[0, 0, 0], &[]);
    assert_eq!(Case::new(0, 5, 3, 90, pods).recommendations(&[]).run(), 0);
}

/// `TestMinReplicasDesiredZero` (horizontal_test.go).
#[test]
fn test_min_replicas_desired_zero() {
    let pods = hc_pods(&[900, 1000, 1100], &[0, 0, 0], &[]);
    assert_eq!(Case::new(2, 5, 3, 90, pods).recommendations(&[]).run(), 2);
}

/// `TestZeroReplicas` (horizontal_test.go): a workload scaled to zero is not autoscaled.
#[test]
fn test_zero_replicas() {
    assert_eq!(Case::new(3, 5, 0, 90, vec![]).run(), 0);
}

/// `TestTooFewReplicas` (horizontal_test.go).
#[test]
fn test_too_few_replicas() {
    assert_eq!(Case::new(3, 5, 2, 90, vec![]).run(), 3);
}

/// `TestTooManyReplicas` (horizontal_test.go).
#[test]
fn test_too_many_replicas() {
    assert_eq!(Case::new(3, 5, 10, 90, vec![]).run(), 5);
}

/// `TestMaxReplicas` (horizontal_test.go).
#[test]
fn test_max_replicas() {
    let pods = hc_pods(&[900, 1000, 1100], &[8000, 9500, 1000], &[]);
    assert_eq!(Case::new(2, 5, 3, 90, pods).run(), 5);
}

/// `TestSuperfluousMetrics` (horizontal_test.go): the samples of pods that do not exist (3200,
/// 2000) have no place here.
#[test]
fn test_superfluous_metrics() {
    let pods = hc_pods(&[1000; 4], &[4000, 9500, 3000, 7000], &[]);
    assert_eq!(Case::new(2, 6, 4, 100, pods).run(), 6);
}

/// `TestMissingMetrics` (horizontal_test.go).
#[test]
fn test_missing_metrics() {
    let pods = hc_pods(&[1000; 4], &[400, 95], &[]);
    assert_eq!(Case::new(2, 6, 4, 100, pods).recommendations(&[]).run(), 3);
}

/// `TestEmptyMetrics` (horizontal_test.go).
#[test]
fn test_empty_metrics() {
    assert_eq!(Case::new(2, 6, 4, 100, hc_pods(&[1000; 4], &[], &[])).run(), 4);
}

/// `TestEventCreated` (horizontal_test.go), its scale (the event is outside the model).
#[test]
fn test_event_created() {
    assert_eq!(Case::new(1, 5, 1, 50, hc_pods(&[200], &[200], &[])).run(), 2);
}

/// `TestEventNotCreated` (horizontal_test.go), its replicas.
#[test]
fn test_event_not_created() {
    assert_eq!(Case::new(1, 5, 2, 50, hc_pods(&[400, 400], &[200, 200], &[])).run(), 2);
}

/// `TestMissingReports` (horizontal_test.go): four replicas, one pod.
#[test]
fn test_missing_reports() {
    assert_eq!(Case::new(1, 5, 4, 50, hc_pods(&[200], &[200], &[])).recommendations(&[]).run(), 2);
}

/// `TestUpscaleCap` (horizontal_test.go).
#[test]
fn test_upscale_cap() {
    let pods = hc_pods(&[100; 3], &[100, 200, 300], &[]);
    let case = Case::new(1, 100, 3, 10, pods).scale_up_rules(generate_scaling_rules(0, 0, 700, 60, 0));
    assert_eq!(case.run(), 24);
}

/// `TestUpscaleCapGreaterThanMaxReplicas` (horizontal_test.go).
#[test]
fn test_upscale_cap_greater_than_max_replicas() {
    let pods = hc_pods(&[100; 3], &[100, 200, 300], &[]);
    let case = Case::new(1, 20, 3, 10, pods).scale_up_rules(generate_scaling_rules(0, 0, 700, 60, 0));
    assert_eq!(case.run(), 20);
}

/// `TestMoreReplicasThanSpecNoScale` (horizontal_test.go): 5 pods during a 25% surge of 4.
#[test]
fn test_more_replicas_than_spec_no_scale() {
    assert_eq!(Case::new(1, 8, 4, 50, hc_pods(&R5, &[500; 5], &[])).run(), 4);
}

/// `TestStabilizeDownscale` (horizontal_test.go).
#[test]
fn test_stabilize_downscale() {
    let pods = hc_pods(&[100; 3], &[50, 50, 50], &[]);
    let case = Case::new(1, 5, 4, 100, pods).recommendations(&[(ago(600.0), 10), (ago(60.0), 4)]);
    assert_eq!(case.run(), 4);
}

/// `TestComputedToleranceAlgImplementation` (horizontal_test.go).
#[test]
fn test_computed_tolerance_alg_implementation() {
    let (scaling_target, final_pods, still_target) = tolerance_alg_targets();
    let pods = || hc_pods(&tolerance_alg_requests(), &[150; 10], &[]);
    assert_eq!(Case::new(0, 1000, 10, scaling_target, pods()).recommendations(&[]).run(), final_pods);
    assert_eq!(Case::new(0, 1000, 10, still_target, pods()).recommendations(&[]).run(), 10);
}

/// `TestScaleUpRCImmediately` (horizontal_test.go).
#[test]
fn test_scale_up_rc_immediately() {
    assert_eq!(Case::new(2, 6, 1, 100, hc_pods(&[1000; 4], &[0; 4], &[])).run(), 2);
}

/// `TestScaleDownRCImmediately` (horizontal_test.go).
#[test]
fn test_scale_down_rc_immediately() {
    let pods = hc_pods(&[900, 1000, 1100], &[8000, 9500, 1000], &[]);
    assert_eq!(Case::new(2, 5, 6, 50, pods).run(), 5);
}

/// `TestAvoidUnnecessaryUpdates` (horizontal_test.go), its replicas: 2 stay 2 (the target its
/// HPA object has is 80%).
#[test]
fn test_avoid_unnecessary_updates() {
    let pods = hc_pods(&R3, &[400, 500, 700], &[Ready, NotReady, NotReady]);
    assert_eq!(Case::new(2, 6, 2, 80, pods).recommendations(&[]).run(), 2);
}

/// `TestConvertDesiredReplicasWithRules` (horizontal_test.go), with its `scaleUpLimitFactor` of 8.
#[test]
fn test_convert_desired_replicas_with_rules() {
    #[rustfmt::skip]
    let cases = [
        ("prenormalized desired replicas within range", 5, 7, 3, 8, 7),
        ("prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2),
        ("prenormalized desired zeroed replicas within range", 1, 0, 0, 10, 0),
        ("maxReplicas is the limit because maxReplicas < scaleUpLimit", 20, 1000, 1, 10, 10),
        ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas", 3, 1000, 1, 2000, 24),
    ];
    for (name, current, desired, min, max, expected) in cases {
        assert_eq!(convert_desired_replicas_with_rules(current, desired, min, max, 8.0), expected, "{name}");
    }
    // With Kubernetes' factor of 2: max(2 × current, 4).
    assert_eq!(convert_desired_replicas_with_rules(3, 1000, 1, 2000, SCALE_UP_LIMIT_FACTOR), 6);
    assert_eq!(convert_desired_replicas_with_rules(1, 1000, 1, 2000, SCALE_UP_LIMIT_FACTOR), 4);
}

/// The rules of `TestCalculateScaleUpLimitWithScalingRules` and
/// `TestCalculateScaleDownLimitWithBehaviors`.
fn min_change_rules() -> ScalingRules {
    ScalingRules {
        stabilization_window: Some(Duration::from_secs(300)),
        select_policy: SelectPolicy::Min,
        pods: Some(ScalingPolicy { value: 2, period: Duration::from_secs(60) }),
        percent: Some(ScalingPolicy { value: 50, period: Duration::from_secs(60) }),
    }
}

/// `TestCalculateScaleUpLimitWithScalingRules` (horizontal_test.go).
#[test]
fn test_calculate_scale_up_limit_with_scaling_rules() {
    assert_eq!(scale_up_limit(NOW, 1, &[], &[], &min_change_rules()), 2);
}

/// `TestCalculateScaleDownLimitWithBehaviors` (horizontal_test.go).
#[test]
fn test_calculate_scale_down_limit_with_behaviors() {
    assert_eq!(scale_down_limit(NOW, 5, &[], &[], &min_change_rules()), 3);
}

/// `TestNormalizeDesiredReplicas` (horizontal_test.go): the stabilization without behavior
/// (window 5 min), and how many recommendations it keeps.
#[test]
fn test_normalize_desired_replicas() {
    let m = 60.0;
    #[rustfmt::skip]
    let cases = [
        ("empty log", vec![], 5, 5, 1),
        ("stabilize", vec![(ago(2.0 * m), 4), (ago(m), 5)], 3, 5, 3),
        ("no stabilize", vec![(ago(2.0 * m), 1), (ago(m), 2)], 3, 3, 3),
        ("no stabilize - old recommendations", vec![(ago(10.0 * m), 10), (ago(9.0 * m), 9)], 3, 3, 2),
        ("stabilize - old recommendations",
            vec![(ago(10.0 * m), 10), (ago(m), 4), (ago(2.0 * m), 5), (ago(9.0 * m), 9)], 3, 5, 4),
    ];
    for (name, recommendations, prenormalized, expected, log_length) in cases {
        let mut hpa = controller(HpaSettings { behavior: None, ..HpaSettings::default() }, 1, 100);
        hpa.recommendations =
            Some(recommendations.into_iter().map(|(at, replicas)| TimedRecommendation { at, replicas }).collect());
        assert_eq!(hpa.stabilize_recommendation(NOW, prenormalized), expected, "{name}");
        assert_eq!(hpa.recommendations.as_ref().map(Vec::len), Some(log_length), "{name}");
    }
}

/// `TestNormalizeDesiredReplicasWithBehavior` (horizontal_test.go): the stabilization with
/// behavior, and the recommendations it keeps.
#[test]
fn test_normalize_desired_replicas_with_behavior() {
    let m = 60.0;
    struct C {
        name: &'static str,
        recommendations: Vec<(f64, u32)>,
        current: u32,
        prenormalized: u32,
        expected: u32,
        kept: Option<Vec<u32>>,
        up_window: u64,
        down_window: u64,
    }
    #[rustfmt::skip]
    let cases = [
        C { name: "empty recommendations for scaling down", recommendations: vec![], current: 100, prenormalized: 5,
            expected: 5, kept: Some(vec![5]), up_window: 0, down_window: 0 },
        C { name: "simple scale down stabilization", recommendations: vec![(ago(2.0 * m), 4), (ago(m), 5)],
            current: 100, prenormalized: 3, expected: 5, kept: Some(vec![4, 5, 3]), up_window: 0, down_window: 180 },
        C { name: "simple scale up stabilization", recommendations: vec![(ago(2.0 * m), 4), (ago(m), 5)],
            current: 1, prenormalized: 7, expected: 4, kept: Some(vec![4, 5, 7]), up_window: 300, down_window: 0 },
        C { name: "no scale down stabilization", recommendations: vec![(ago(2.0 * m), 1), (ago(m), 2)],
            current: 100, prenormalized: 3, expected: 3, kept: Some(vec![1, 2, 3]), up_window: 300, down_window: 0 },
        C { name: "no scale up stabilization", recommendations: vec![(ago(2.0 * m), 4), (ago(m), 5)],
            current: 1, prenormalized: 3, expected: 3, kept: Some(vec![4, 5, 3]), up_window: 0, down_window: 300 },
        C { name: "no scale down stabilization, reuse recommendation element",
            recommendations: vec![(ago(10.0 * m), 10), (ago(9.0 * m), 9)], current: 100, prenormalized: 3,
            expected: 3, kept: Some(vec![10, 3]), up_window: 0, down_window: 0 },
        C { name: "no scale up stabilization, reuse recommendation element",
            recommendations: vec![(ago(10.0 * m), 10), (ago(9.0 * m), 9)], current: 1, prenormalized: 100,
            expected: 100, kept: Some(vec![10, 100]), up_window: 0, down_window: 0 },
        C { name: "scale down stabilization, reuse one of obsolete recommendation element",
            recommendations: vec![(ago(10.0 * m), 10), (ago(m), 4), (ago(2.0 * m), 5), (ago(9.0 * m), 9)],
            current: 100, prenormalized: 3, expected: 5, kept: Some(vec![10, 4, 5, 3]), up_window: 0, down_window: 180 },
        C { name: "scale up stabilization, reuse one of obsolete recommendation element",
            recommendations: vec![(ago(100.0 * m), 10), (ago(m), 6), (ago(2.0 * m), 5), (ago(3.0 * m), 9)],
            current: 1, prenormalized: 100, expected: 5, kept: Some(vec![100, 6, 5, 9]), up_window: 300, down_window: 0 },
        C { name: "scale up and down stabilization, do not scale up when prenormalized rec goes down",
            recommendations: vec![(ago(100.0 * m), 2), (ago(3.0 * m), 3)], current: 2, prenormalized: 1,
            expected: 2, kept: None, up_window: 300, down_window: 300 },
        C { name: "scale up and down stabilization, do not scale down when prenormalized rec goes up",
            recommendations: vec![(ago(100.0 * m), 2), (ago(3.0 * m), 1)], current: 2, prenormalized: 3,
            expected: 2, kept: None, up_window: 300, down_window: 300 },
    ];
    for c in cases {
        let mut hpa = controller(HpaSettings::default(), 1, 1000);
        hpa.recommendations =
            Some(c.recommendations.into_iter().map(|(at, replicas)| TimedRecommendation { at, replicas }).collect());
        let (up, down) = (Duration::from_secs(c.up_window), Duration::from_secs(c.down_window));
        let got = hpa.stabilize_recommendation_with_behaviors(NOW, c.current, c.prenormalized, up, down);
        assert_eq!(got, c.expected, "{}", c.name);
        if let Some(kept) = c.kept {
            let stored: Vec<u32> = hpa.recommendations.iter().flatten().map(|r| r.replicas).collect();
            assert_eq!(stored, kept, "{}", c.name);
        }
    }
}

/// `TestScalingWithRules` (horizontal_test.go): the rate limits of a behavior, with the scale
/// events of the last periods.
#[test]
fn test_scaling_with_rules() {
    struct C {
        name: &'static str,
        up_events: Vec<ScaleEvent>,
        down_events: Vec<ScaleEvent>,
        min: u32,
        max: u32,
        up: Option<ScalingRules>,
        down: Option<ScalingRules>,
        current: u32,
        prenormalized: u32,
        expected: u32,
    }
    let none = Vec::new;
    let events = generate_events_uniform_distribution;
    let rules = generate_scaling_rules;
    #[rustfmt::skip]
    let cases = [
        C { name: "prenormalized desired replicas within range", up_events: none(), down_events: none(),
            min: 3, max: 8, up: None, down: None, current: 5, prenormalized: 7, expected: 7 },
        C { name: "prenormalized desired replicas < minReplicas", up_events: none(), down_events: none(),
            min: 2, max: 8, up: None, down: None, current: 3, prenormalized: 1, expected: 2 },
        C { name: "prenormalized desired replicas within range when minReplicas is 0", up_events: none(),
            down_events: none(), min: 0, max: 10, up: None, down: None, current: 1, prenormalized: 0, expected: 0 },
        C { name: "maxReplicas is the limit because maxReplicas < scaleUpLimit", up_events: none(),
            down_events: none(), min: 1, max: 10, up: None, down: None, current: 20, prenormalized: 1000, expected: 10 },
        C { name: "desired replica count is more than the maximum replica count", up_events: none(),
            down_events: none(), min: 100, max: 150, up: None, down: None, current: 100, prenormalized: 1000,
            expected: 150 },
        C { name: "scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies",
            up_events: none(), down_events: none(), min: 1, max: 2000, up: Some(rules(0, 0, 1, 60, 0)), down: None,
            current: 3, prenormalized: 1000, expected: 4 },
        // Skipped in Go (`testThis`), and it holds.
        C { name: "scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies",
            up_events: none(), down_events: none(), min: 3, max: 2000, up: None, down: Some(rules(20, 60, 0, 0, 0)),
            current: 1000, prenormalized: 3, expected: 980 },
        C { name: "scaleUp with default behavior", up_events: none(), down_events: none(), min: 1, max: 1000,
            up: None, down: None, current: 10, prenormalized: 50, expected: 20 },
        C { name: "scaleUp with pods policy larger than percent policy", up_events: none(), down_events: none(),
            min: 1, max: 1000, up: Some(rules(100, 60, 100, 60, 0)), down: None, current: 10, prenormalized: 500,
            expected: 110 },
        C { name: "scaleUp with percent policy larger than pods policy", up_events: none(), down_events: none(),
            min: 1, max: 1000, up: Some(rules(2, 60, 100, 60, 0)), down: None, current: 10, prenormalized: 500,
            expected: 20 },
        C { name: "scaleUp with spec MaxReplicas limitation with large pod policy", up_events: none(),
            down_events: none(), min: 1, max: 1000, up: Some(rules(100, 60, 0, 0, 0)), down: None, current: 10,
            prenormalized: 50, expected: 50 },
        C { name: "scaleUp with spec MaxReplicas limitation with large percent policy", up_events: none(),
            down_events: none(), min: 1, max: 1000, up: Some(rules(10000, 60, 0, 0, 0)), down: None, current: 10,
            prenormalized: 50, expected: 50 },
        C { name: "scaleUp with pod policy limitation", up_events: none(), down_events: none(), min: 1, max: 1000,
            up: Some(rules(30, 60, 0, 0, 0)), down: None, current: 10, prenormalized: 50, expected: 40 },
        C { name: "scaleUp with percent policy limitation", up_events: none(), down_events: none(), min: 1,
            max: 1000, up: Some(rules(0, 0, 200, 60, 0)), down: None, current: 10, prenormalized: 50, expected: 30 },
        C { name: "scaleDown with percent policy larger than pod policy", up_events: none(), down_events: none(),
            min: 1, max: 1000, up: None, down: Some(rules(20, 60, 1, 60, 300)), current: 100, prenormalized: 2,
            expected: 80 },
        C { name: "scaleDown with pod policy larger than percent policy", up_events: none(), down_events: none(),
            min: 1, max: 1000, up: None, down: Some(rules(2, 60, 1, 60, 300)), current: 100, prenormalized: 2,
            expected: 98 },
        C { name: "scaleDown with spec MinReplicas=nil limitation with large pod policy", up_events: none(),
            down_events: none(), min: 1, max: 1000, up: None, down: Some(rules(100, 60, 0, 0, 300)), current: 10,
            prenormalized: 0, expected: 1 },
        C { name: "scaleDown with spec MinReplicas limitation with large pod policy", up_events: none(),
            down_events: none(), min: 1, max: 1000, up: None, down: Some(rules(100, 60, 0, 0, 300)), current: 10,
            prenormalized: 0, expected: 1 },
        C { name: "scaleDown with spec MinReplicas limitation with large percent policy", up_events: none(),
            down_events: none(), min: 5, max: 1000, up: None, down: Some(rules(0, 0, 100, 60, 300)), current: 10,
            prenormalized: 2, expected: 5 },
        C { name: "scaleDown with pod policy limitation", up_events: none(), down_events: none(), min: 1,
            max: 1000, up: None, down: Some(rules(5, 60, 0, 0, 300)), current: 10, prenormalized: 2, expected: 5 },
        C { name: "scaleDown with percent policy limitation", up_events: none(), down_events: none(), min: 1,
            max: 1000, up: None, down: Some(rules(0, 0, 50, 60, 300)), current: 10, prenormalized: 5, expected: 5 },
        C { name: "scaleUp with spec MaxReplicas limitation with large pod policy and events",
            up_events: events(&[1, 5, 9], 120.0), down_events: none(), min: 1, max: 200,
            up: Some(rules(300, 60, 0, 0, 0)), down: None, current: 100, prenormalized: 500, expected: 200 },
        C { name: "scaleUp with spec MaxReplicas limitation with large percent policy and events",
            up_events: events(&[1, 5, 9], 120.0), down_events: none(), min: 1, max: 200,
            up: Some(rules(0, 0, 10000, 60, 0)), down: None, current: 100, prenormalized: 500, expected: 200 },
        C { name: "scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",
            up_events: events(&[1, 5, 9], 120.0), down_events: none(), min: 1, max: 1000,
            up: Some(rules(5, 120, 0, 0, 0)), down: None, current: 100, prenormalized: 500, expected: 100 },
        C { name: "scaleUp with pod policy and previous scale up events", up_events: events(&[1, 5, 9], 120.0),
            down_events: none(), min: 1, max: 1000, up: Some(rules(150, 120, 0, 0, 0)), down: None, current: 100,
            prenormalized: 500, expected: 235 },
        C { name: "scaleUp with percent policy and previous scale up events", up_events: events(&[1, 5, 9], 120.0),
            down_events: none(), min: 1, max: 1000, up: Some(rules(0, 0, 200, 120, 0)), down: None, current: 100,
            prenormalized: 500, expected: 255 },
        C { name: "scaleUp with percent policy and previous scale up and down events",
            up_events: events(&[4], 120.0), down_events: events(&[2], 120.0), min: 1, max: 1000,
            up: Some(rules(0, 0, 300, 300, 0)), down: None, current: 6, prenormalized: 24, expected: 16 },
        C { name: "scaleDown with default policy and previous events", up_events: none(),
            down_events: events(&[1, 5, 9], 120.0), min: 1, max: 1000, up: None, down: None, current: 10,
            prenormalized: 5, expected: 5 },
        C { name: "scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events",
            up_events: none(), down_events: events(&[1, 5, 9], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(115, 120, 0, 0, 300)), current: 100, prenormalized: 0, expected: 1 },
        C { name: "scaleDown with spec MinReplicas limitation with large pod policy and previous events",
            up_events: none(), down_events: events(&[1, 5, 9], 120.0), min: 5, max: 1000, up: None,
            down: Some(rules(130, 120, 0, 0, 300)), current: 100, prenormalized: 0, expected: 5 },
        C { name: "scaleDown with spec MinReplicas limitation with large percent policy and previous events",
            up_events: none(), down_events: events(&[1, 5, 9], 120.0), min: 5, max: 1000, up: None,
            down: Some(rules(0, 0, 100, 120, 300)), current: 100, prenormalized: 2, expected: 5 },
        C { name: "scaleDown with pod policy limitation and previous events", up_events: none(),
            down_events: events(&[1, 5, 9], 120.0), min: 1, max: 1000, up: None, down: Some(rules(5, 120, 0, 0, 300)),
            current: 100, prenormalized: 2, expected: 100 },
        C { name: "scaleDown with percent policy limitation and previous events", up_events: none(),
            down_events: events(&[2, 4, 6], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(0, 0, 50, 120, 300)), current: 100, prenormalized: 0, expected: 56 },
        C { name: "scaleDown with percent policy and previous scale up and down events",
            up_events: events(&[2], 120.0), down_events: events(&[4], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(0, 0, 50, 180, 0)), current: 10, prenormalized: 1, expected: 6 },
        C { name: "scaleDown with previous events preventing further scale down", up_events: none(),
            down_events: events(&[10, 10, 10], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(0, 0, 10, 120, 300)), current: 100, prenormalized: 0, expected: 100 },
        C { name: "scaleDown with with previous events still allowing more scale down", up_events: none(),
            down_events: events(&[10, 10, 10], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(0, 0, 1000, 120, 300)), current: 10, prenormalized: 5, expected: 5 },
        C { name: "check 'outdated' flag for events for one behavior for up",
            up_events: events(&[8, 12, 9, 11], 120.0), down_events: none(), min: 1, max: 1000,
            up: Some(rules(1000, 60, 0, 0, 0)), down: None, current: 100, prenormalized: 200, expected: 200 },
        C { name: "check that events were not marked 'outdated' for two different policies in the behavior for up",
            up_events: events(&[8, 12, 9, 11], 120.0), down_events: none(), min: 1, max: 1000,
            up: Some(rules(1000, 120, 100, 60, 0)), down: None, current: 100, prenormalized: 200, expected: 200 },
        C { name: "check that events were marked 'outdated' for two different policies in the behavior for up",
            up_events: events(&[8, 12, 9, 11], 120.0), down_events: none(), min: 1, max: 1000,
            up: Some(rules(1000, 30, 100, 60, 0)), down: None, current: 100, prenormalized: 200, expected: 200 },
        C { name: "check 'outdated' flag for events for one behavior for down", up_events: none(),
            down_events: events(&[8, 12, 9, 11], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(1000, 60, 0, 0, 300)), current: 100, prenormalized: 5, expected: 5 },
        C { name: "check that events were not marked 'outdated' for two different policies in the behavior for down",
            up_events: none(), down_events: events(&[8, 12, 9, 11], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(1000, 120, 100, 60, 300)), current: 100, prenormalized: 5, expected: 5 },
        C { name: "check that events were marked 'outdated' for two different policies in the behavior for down",
            up_events: none(), down_events: events(&[8, 12, 9, 11], 120.0), min: 1, max: 1000, up: None,
            down: Some(rules(1000, 30, 100, 60, 300)), current: 100, prenormalized: 5, expected: 5 },
    ];
    for c in cases {
        let behavior = Behavior {
            scale_up: c.up.unwrap_or_else(ScalingRules::default_scale_up),
            scale_down: c.down.unwrap_or_else(ScalingRules::default_scale_down),
        };
        let mut hpa = controller(HpaSettings { behavior: Some(behavior), ..HpaSettings::default() }, c.min, c.max);
        hpa.scale_up_events = c.up_events;
        hpa.scale_down_events = c.down_events;
        let got = hpa.convert_desired_replicas_with_behavior_rate(NOW, c.current, c.prenormalized, &behavior);
        assert_eq!(got, c.expected, "{}", c.name);
    }
}

/// `TestStoreScaleEvents` (horizontal_test.go): how scale events are kept, and counted over the
/// last 60 s.
#[test]
fn test_store_scale_events() {
    struct C {
        name: &'static str,
        change: u32,
        previous: Vec<(u32, f64)>,
        stored: Vec<(u32, bool)>,
        rules: Option<ScalingRules>,
        expected_change: i64,
    }
    let rules = generate_scaling_rules;
    #[rustfmt::skip]
    let cases = [
        C { name: "empty entries with default behavior", change: 5, previous: vec![], stored: vec![], rules: None,
            expected_change: 0 },
        C { name: "empty entries with two-policy-behavior", change: 5, previous: vec![], stored: vec![(5, false)],
            rules: Some(rules(10, 60, 100, 60, 0)), expected_change: 0 },
        C { name: "one outdated entry to be kept untouched without behavior", change: 5, previous: vec![(7, 61.0)],
            stored: vec![(7, false)], rules: None, expected_change: 0 },
        C { name: "one outdated entry to be replaced with behavior", change: 5, previous: vec![(7, 61.0)],
            stored: vec![(5, false)], rules: Some(rules(10, 60, 100, 60, 0)), expected_change: 0 },
        C { name: "one actual entry to be not touched with behavior", change: 5, previous: vec![(7, 58.0)],
            stored: vec![(7, false), (5, false)], rules: Some(rules(10, 60, 100, 60, 0)), expected_change: 7 },
        C { name: "two entries, one of them to be replaced", change: 5, previous: vec![(7, 61.0), (6, 59.0)],
            stored: vec![(5, false), (6, false)], rules: Some(rules(10, 60, 0, 0, 0)), expected_change: 6 },
        C { name: "replace one entry, use policies with different periods", change: 5,
            previous: vec![(8, 29.0), (6, 59.0), (7, 61.0), (9, 61.0)],
            stored: vec![(8, false), (6, false), (7, true), (5, false)], rules: Some(rules(10, 60, 100, 30, 0)),
            expected_change: 14 },
        C { name: "two entries, both actual", change: 5, previous: vec![(7, 58.0), (6, 59.0)],
            stored: vec![(7, false), (6, false), (5, false)], rules: Some(rules(10, 120, 100, 30, 0)),
            expected_change: 13 },
    ];
    for c in cases {
        let previous: Vec<ScaleEvent> = c
            .previous
            .iter()
            .map(|&(change, seconds)| ScaleEvent { at: ago(seconds), change, outdated: false })
            .collect();
        assert_eq!(replicas_change_per_period(NOW, 60.0, &previous), c.expected_change, "{}", c.name);
        for up in [true, false] {
            let behavior = c.rules.map(|rules| Behavior { scale_up: rules, scale_down: rules });
            let mut hpa = controller(HpaSettings { behavior, ..HpaSettings::default() }, 1, 1000);
            if up {
                hpa.scale_up_events = previous.clone();
                hpa.store_scale_event(NOW, 10, 10 + c.change);
            } else {
                hpa.scale_down_events = previous.clone();
                hpa.store_scale_event(NOW, 10, 10 - c.change);
            }
            let events = if up { &hpa.scale_up_events } else { &hpa.scale_down_events };
            let stored: Vec<(u32, bool)> = events.iter().map(|e| (e.change, e.outdated)).collect();
            assert_eq!(stored, c.stored, "{} ({})", c.name, if up { "up" } else { "down" });
        }
    }
}
