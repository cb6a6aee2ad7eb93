//! Health state machine tests (paused time).

use super::*;

use std::sync::Arc;

use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::upstream::{Upstream, UpstreamPolicy};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Gateway failures only: `max_fails` within `fail_window`, ejections of `base` growing to
/// `max`.
fn gateway(max_fails: u32, window: Duration, base: Duration, max: Duration) -> OutlierPolicy {
    OutlierPolicy {
        max_fails,
        fail_window: window,
        consecutive_5xx: 0,
        failure_percentage: None,
        base_ejection: base,
        max_ejection: max,
        max_ejection_percent: 100,
    }
}

fn check(healthy: u32, unhealthy: u32) -> ActiveCheck {
    ActiveCheck {
        healthy_threshold: healthy,
        unhealthy_threshold: unhealthy,
        ..ActiveCheck::default()
    }
}

fn yes() -> bool {
    true
}

#[track_caller]
fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-6,
        "expected {expected}, got {actual}"
    );
}

#[tokio::test(start_paused = true)]
async fn gateway_failures_within_the_window_eject() {
    let policy = gateway(3, secs(10), secs(10), secs(300));
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    assert_eq!(h.record(Outcome::GatewayFailure, &policy, t0, yes), None);
    assert_eq!(
        h.record(Outcome::GatewayFailure, &policy, t0 + secs(1), yes),
        None
    );
    assert!(h.is_available(t0 + secs(1)));
    let t = h
        .record(Outcome::GatewayFailure, &policy, t0 + secs(2), yes)
        .expect("third failure within the window ejects");
    assert_eq!(
        t,
        Transition {
            available: false,
            cause: Cause::GatewayFailures,
            ejected_for: Some(secs(10)),
            ejections: 1,
        }
    );
    assert!(!h.is_available(t0 + secs(2)));
    assert!(h.is_ejected(t0 + secs(11)));
    assert_eq!(h.is_ejected_for(t0 + secs(5)), secs(7));
    assert!(
        h.is_available(t0 + secs(12)),
        "the ejection ends after base"
    );
    let v = h.view(t0 + secs(3), None);
    assert!(!v.available);
    assert!(!v.checks_failing);
    assert_eq!(v.ejected_for, Some(secs(9)));
    assert_eq!(v.ejections, 1);
    assert_eq!(v.transitions, 1);
    assert_eq!(v.last_cause, Some(Cause::GatewayFailures));
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_gateway_failure_streak() {
    let policy = gateway(3, secs(10), secs(10), secs(300));
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    let fail = |t: Instant| h.record(Outcome::GatewayFailure, &policy, t, yes);
    assert_eq!(fail(t0), None);
    assert_eq!(fail(t0 + secs(1)), None);
    assert_eq!(h.record(Outcome::Success, &policy, t0 + secs(2), yes), None);
    assert_eq!(fail(t0 + secs(3)), None);
    assert_eq!(fail(t0 + secs(4)), None, "the streak started over");
    assert!(h.is_available(t0 + secs(4)));
    let t = fail(t0 + secs(5)).expect("three in a row again");
    assert_eq!(t.cause, Cause::GatewayFailures);
    assert!(!h.is_available(t0 + secs(5)));
}

#[tokio::test(start_paused = true)]
async fn gateway_failures_spread_beyond_the_window_do_not_eject() {
    let policy = gateway(3, secs(10), secs(10), secs(300));
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    // One failure every 5 s: never three within 10 s of the first of a streak.
    for i in 0..10 {
        let t = t0 + secs(5 * i);
        assert_eq!(
            h.record(Outcome::GatewayFailure, &policy, t, yes),
            None,
            "failure {i}"
        );
        assert!(h.is_available(t));
    }
    // max_fails = 0 disables the rule.
    let off = gateway(0, secs(10), secs(10), secs(300));
    for _ in 0..10 {
        assert_eq!(h.record(Outcome::GatewayFailure, &off, t0, yes), None);
    }
    assert!(h.is_available(t0));
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_eject_and_a_success_resets_them() {
    let policy = OutlierPolicy {
        max_fails: 0,
        consecutive_5xx: 3,
        ..gateway(0, secs(10), secs(10), secs(300))
    };
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    let err = |t: Instant| h.record(Outcome::ServerError, &policy, t, yes);
    assert_eq!(err(t0), None);
    assert_eq!(err(t0), None);
    assert_eq!(h.record(Outcome::Success, &policy, t0, yes), None);
    assert_eq!(err(t0), None);
    assert_eq!(err(t0), None, "the success reset the count");
    assert!(h.is_available(t0));
    // Far apart in time still counts: the rule has no window.
    let t = err(t0 + secs(3600)).expect("third 5xx in a row ejects");
    assert_eq!(t.cause, Cause::Consecutive5xx);
    assert_eq!(t.ejected_for, Some(secs(10)));
    assert!(!h.is_available(t0 + secs(3600)));

    // A gateway failure breaks a run of 5xx as well.
    let h = EndpointHealth::new(false);
    let err = |t: Instant| h.record(Outcome::ServerError, &policy, t, yes);
    assert_eq!(err(t0), None);
    assert_eq!(err(t0), None);
    assert_eq!(h.record(Outcome::GatewayFailure, &policy, t0, yes), None);
    assert_eq!(err(t0), None);
    assert!(h.is_available(t0));
}

#[tokio::test(start_paused = true)]
async fn ejections_grow_with_repeats_up_to_the_cap_and_decay_with_good_time() {
    let policy = gateway(1, secs(10), secs(10), secs(25));
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    let fail = |t: Instant| {
        h.record(Outcome::GatewayFailure, &policy, t, yes)
            .map(|t| (t.ejected_for, t.ejections))
    };
    assert_eq!(fail(t0), Some((Some(secs(10)), 1)));
    // While ejected, further failures do not eject again.
    assert_eq!(fail(t0 + secs(5)), None);
    // Failing again as soon as it is back: twice as long.
    assert_eq!(fail(t0 + secs(10)), Some((Some(secs(20)), 2)));
    assert!(h.is_ejected(t0 + secs(29)));
    assert!(!h.is_ejected(t0 + secs(30)));
    // Then three times, capped at max_ejection.
    assert_eq!(fail(t0 + secs(30)), Some((Some(secs(25)), 3)));
    assert_eq!(h.is_ejected_for(t0 + secs(30)), secs(25));
    // Ejection 3 ends at 55 s. 20 s (two bases) of good behaviour take the count from 3 to
    // 1, so the next ejection is the second in a row.
    assert_eq!(fail(t0 + secs(75)), Some((Some(secs(20)), 2)));
    // Ends at 95 s; 19 s of good time is one base: the count drops to 1, the next is 2 again.
    assert_eq!(fail(t0 + secs(114)), Some((Some(secs(20)), 2)));
    // Ends at 134 s; a long quiet period forgets everything.
    assert_eq!(fail(t0 + secs(1000)), Some((Some(secs(10)), 1)));
    assert_eq!(h.view(t0 + secs(1000), None).ejections, 1);
}

#[tokio::test(start_paused = true)]
async fn may_eject_false_prevents_ejection() {
    let policy = OutlierPolicy {
        consecutive_5xx: 1,
        failure_percentage: Some(FailurePercentage {
            threshold: 10,
            min_requests: 1,
            interval: secs(1),
        }),
        ..gateway(1, secs(10), secs(10), secs(300))
    };
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    assert!(h.sweep(&policy, t0, || false).is_empty());
    assert_eq!(
        h.record(Outcome::GatewayFailure, &policy, t0, || false),
        None
    );
    assert_eq!(h.record(Outcome::ServerError, &policy, t0, || false), None);
    assert!(h.is_available(t0));
    assert!(h.sweep(&policy, t0 + secs(1), || false).is_empty());
    assert!(h.is_available(t0 + secs(1)));
    let v = h.view(t0 + secs(1), None);
    assert_eq!(v.ejections, 0);
    assert_eq!(v.transitions, 0);
    // Allowed again, the next failure ejects.
    assert!(
        h.record(Outcome::GatewayFailure, &policy, t0 + secs(2), yes)
            .is_some()
    );
    assert!(!h.is_available(t0 + secs(2)));
}

fn percentage(threshold: u8, min_requests: u32) -> OutlierPolicy {
    OutlierPolicy {
        failure_percentage: Some(FailurePercentage {
            threshold,
            min_requests,
            interval: secs(10),
        }),
        ..gateway(0, secs(10), secs(30), secs(300))
    }
}

/// Feeds `failures` 5xx and `successes` successes, sweeping at the start and end of a window.
fn window(h: &EndpointHealth, policy: &OutlierPolicy, start: Instant, failures: u32, ok: u32) {
    assert!(h.sweep(policy, start, yes).is_empty());
    for _ in 0..failures {
        assert_eq!(h.record(Outcome::ServerError, policy, start, yes), None);
    }
    for _ in 0..ok {
        assert_eq!(h.record(Outcome::Success, policy, start, yes), None);
    }
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejects_at_the_end_of_the_window() {
    let policy = percentage(50, 4);
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    window(&h, &policy, t0, 2, 2);
    // Not before the window is over.
    assert!(h.sweep(&policy, t0 + secs(5), yes).is_empty());
    assert!(h.is_available(t0 + secs(5)));
    // 2 of 4 failed: 50% reaches the threshold.
    let out = h.sweep(&policy, t0 + secs(10), yes);
    assert_eq!(
        out,
        vec![Transition {
            available: false,
            cause: Cause::FailurePercentage,
            ejected_for: Some(secs(30)),
            ejections: 1,
        }]
    );
    assert!(!h.is_available(t0 + secs(10)));
    assert_eq!(
        h.view(t0 + secs(10), None).last_cause,
        Some(Cause::FailurePercentage)
    );
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_needs_min_requests_and_the_threshold() {
    let policy = percentage(50, 4);
    let t0 = Instant::now();
    // Three requests, all failed: below min_requests.
    let h = EndpointHealth::new(false);
    window(&h, &policy, t0, 3, 0);
    assert!(h.sweep(&policy, t0 + secs(10), yes).is_empty());
    assert!(h.is_available(t0 + secs(10)));
    // Those three do not carry over into the next window: one more failure is not enough.
    assert_eq!(
        h.record(Outcome::ServerError, &policy, t0 + secs(11), yes),
        None
    );
    assert!(h.sweep(&policy, t0 + secs(20), yes).is_empty());
    assert!(h.is_available(t0 + secs(20)));

    // 1 of 4 failed: 25% is below 50%.
    let h = EndpointHealth::new(false);
    window(&h, &policy, t0, 1, 3);
    assert!(h.sweep(&policy, t0 + secs(10), yes).is_empty());
    assert!(h.is_available(t0 + secs(10)));

    // Gateway failures count as failures too: 4 of 5.
    let h = EndpointHealth::new(false);
    assert!(h.sweep(&policy, t0, yes).is_empty());
    for _ in 0..4 {
        assert_eq!(h.record(Outcome::GatewayFailure, &policy, t0, yes), None);
    }
    assert_eq!(h.record(Outcome::Success, &policy, t0, yes), None);
    let out = h.sweep(&policy, t0 + secs(10), yes);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].cause, Cause::FailurePercentage);
}

#[tokio::test(start_paused = true)]
async fn sweep_reports_the_end_of_an_ejection_exactly_once() {
    let policy = gateway(1, secs(10), secs(10), secs(300));
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    assert!(
        h.record(Outcome::GatewayFailure, &policy, t0, yes)
            .is_some()
    );
    assert!(h.sweep(&policy, t0 + secs(5), yes).is_empty());
    assert!(
        h.sweep(&policy, t0 + Duration::from_millis(9_999), yes)
            .is_empty()
    );
    let out = h.sweep(&policy, t0 + secs(10), yes);
    assert_eq!(
        out,
        vec![Transition {
            available: true,
            cause: Cause::EjectionEnded,
            ejected_for: None,
            ejections: 1,
        }]
    );
    assert!(h.sweep(&policy, t0 + secs(11), yes).is_empty());
    assert!(h.sweep(&policy, t0 + secs(100), yes).is_empty());
    let v = h.view(t0 + secs(100), None);
    assert!(v.available);
    assert_eq!(v.transitions, 2);
    assert_eq!(v.last_cause, Some(Cause::EjectionEnded));

    // An ejection that ends while active checks fail the endpoint is reported, as still
    // unavailable.
    let h = EndpointHealth::new(false);
    assert!(
        h.record(Outcome::GatewayFailure, &policy, t0, yes)
            .is_some()
    );
    let c = check(1, 1);
    assert!(h.record_check(false, &c, t0 + secs(1)).is_some());
    let out = h.sweep(&policy, t0 + secs(10), yes);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].cause, Cause::EjectionEnded);
    assert!(!out[0].available);
    assert!(!h.is_available(t0 + secs(10)));
}

#[tokio::test(start_paused = true)]
async fn active_checks_fail_after_the_unhealthy_threshold_and_recover_after_the_healthy_one() {
    let c = check(2, 3);
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    assert!(h.is_available(t0));
    // Passes agree with the state: nothing happens.
    assert_eq!(h.record_check(true, &c, t0), None);
    assert_eq!(h.record_check(false, &c, t0), None);
    assert_eq!(h.record_check(false, &c, t0), None);
    // A pass resets the failure streak.
    assert_eq!(h.record_check(true, &c, t0), None);
    assert_eq!(h.record_check(false, &c, t0), None);
    assert_eq!(h.record_check(false, &c, t0), None);
    assert!(h.is_available(t0));
    let t = h
        .record_check(false, &c, t0 + secs(1))
        .expect("third failure in a row");
    assert_eq!(
        t,
        Transition {
            available: false,
            cause: Cause::ChecksFailed,
            ejected_for: None,
            ejections: 0,
        }
    );
    assert!(!h.is_available(t0 + secs(1)));
    assert!(
        !h.is_ejected(t0 + secs(1)),
        "failing checks are not an ejection"
    );
    assert!(h.view(t0 + secs(1), None).checks_failing);
    // More failures change nothing; a failure resets the pass streak.
    assert_eq!(h.record_check(false, &c, t0 + secs(2)), None);
    assert_eq!(h.record_check(true, &c, t0 + secs(3)), None);
    assert_eq!(h.record_check(false, &c, t0 + secs(4)), None);
    assert_eq!(h.record_check(true, &c, t0 + secs(5)), None);
    assert!(!h.is_available(t0 + secs(5)));
    let t = h
        .record_check(true, &c, t0 + secs(6))
        .expect("second pass in a row");
    assert_eq!(t.cause, Cause::ChecksPassed);
    assert!(t.available);
    assert!(h.is_available(t0 + secs(6)));
    let v = h.view(t0 + secs(6), None);
    assert!(!v.checks_failing);
    assert_eq!(v.transitions, 2);
    assert_eq!(v.last_cause, Some(Cause::ChecksPassed));
}

#[tokio::test(start_paused = true)]
async fn recovery_by_checks_ends_an_outlier_ejection() {
    let policy = gateway(1, secs(10), secs(60), secs(300));
    let c = check(2, 1);
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    assert!(
        h.record(Outcome::GatewayFailure, &policy, t0, yes)
            .is_some()
    );
    assert!(h.is_ejected(t0 + secs(1)));
    // Passing checks of a healthy-by-checks endpoint do not end an ejection.
    assert_eq!(h.record_check(true, &c, t0 + secs(1)), None);
    assert!(h.is_ejected(t0 + secs(1)));
    // Failing checks, then recovering ones, do.
    assert!(h.record_check(false, &c, t0 + secs(2)).is_some());
    assert_eq!(h.record_check(true, &c, t0 + secs(3)), None);
    let t = h
        .record_check(true, &c, t0 + secs(4))
        .expect("recovered by checks");
    assert!(t.available);
    assert_eq!(t.ejections, 1);
    assert!(!h.is_ejected(t0 + secs(4)), "ejection ended early");
    assert!(h.is_available(t0 + secs(4)));
    assert_eq!(h.view(t0 + secs(4), None).ejected_for, None);
    // The ended ejection is not reported again by a sweep.
    assert!(h.sweep(&policy, t0 + secs(5), yes).is_empty());
    assert!(h.sweep(&policy, t0 + secs(61), yes).is_empty());
}

#[tokio::test(start_paused = true)]
async fn initially_failing_endpoints_wait_for_healthy_threshold_passes() {
    let c = check(3, 2);
    let h = EndpointHealth::new(true);
    let t0 = Instant::now();
    assert!(!h.is_available(t0));
    assert!(!h.is_ejected(t0));
    assert_eq!(h.record_check(true, &c, t0), None);
    assert_eq!(h.record_check(true, &c, t0 + secs(1)), None);
    assert!(!h.is_available(t0 + secs(1)));
    assert!(h.record_check(true, &c, t0 + secs(2)).is_some());
    assert!(h.is_available(t0 + secs(2)));

    // The same through an endpoint and an upstream with checks.
    let ep = Arc::new(
        Endpoint::new(
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9001".parse().unwrap(),
            1,
        )
        .initially_failing(true),
    );
    let policy = UpstreamPolicy {
        health: HealthPolicy {
            active: Some(c.clone()),
            panic_threshold: 0,
            ..HealthPolicy::default()
        },
        ..UpstreamPolicy::default()
    };
    let mock = crate::test_util::MockConnector::new(|_, _| crate::test_util::MockReply::Refuse);
    let up = Upstream::new("pool", vec![ep.clone()], policy, mock);
    assert_eq!(up.selection(t0), None, "nothing may take requests yet");
    assert_eq!(up.pick(t0, &[], None), None);
    for _ in 0..3 {
        up.record_check(0, true, None, t0);
    }
    assert!(ep.is_available(t0));
    assert_eq!(up.pick(t0, &[], None), Some(0));
}

#[tokio::test(start_paused = true)]
async fn slow_start_factor_is_one_without_a_ramp() {
    let ss = SlowStart {
        window: secs(10),
        min_weight_percent: 10,
    };
    let h = EndpointHealth::new(false);
    let t0 = Instant::now();
    assert_close(h.weight_factor(t0, None), 1.0);
    assert_close(h.weight_factor(t0, Some(&ss)), 1.0);
    assert_close(h.weight_factor(t0 + secs(3), Some(&ss)), 1.0);
    assert_close(h.view(t0, Some(&ss)).weight_factor, 1.0);
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_after_recovery_by_checks() {
    let ss = SlowStart {
        window: secs(10),
        min_weight_percent: 20,
    };
    let c = check(1, 1);
    let h = EndpointHealth::new(true);
    let t = Instant::now() + secs(7);
    assert!(h.record_check(true, &c, t).is_some());
    assert_close(h.weight_factor(t, Some(&ss)), 0.2);
    // The floor holds while the linear ramp is below it.
    assert_close(h.weight_factor(t + secs(1), Some(&ss)), 0.2);
    assert_close(h.weight_factor(t + secs(5), Some(&ss)), 0.5);
    assert_close(h.weight_factor(t + secs(8), Some(&ss)), 0.8);
    assert_close(h.weight_factor(t + secs(10), Some(&ss)), 1.0);
    assert_close(h.weight_factor(t + secs(100), Some(&ss)), 1.0);
    assert_close(h.weight_factor(t + secs(5), None), 1.0);
    assert_close(h.view(t + secs(5), Some(&ss)).weight_factor, 0.5);
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_from_the_end_of_an_ejection() {
    let ss = SlowStart {
        window: secs(10),
        min_weight_percent: 10,
    };
    let policy = gateway(1, secs(10), secs(30), secs(300));
    let h = EndpointHealth::new(false);
    let t0 = Instant::now() + secs(1);
    assert!(
        h.record(Outcome::GatewayFailure, &policy, t0, yes)
            .is_some()
    );
    // The ejection ends at t0 + 30 s; the ramp starts there, not at the ejection.
    let end = t0 + secs(30);
    assert_close(h.weight_factor(end, Some(&ss)), 0.1);
    assert_close(h.weight_factor(end + secs(5), Some(&ss)), 0.5);
    assert_close(h.weight_factor(end + secs(10), Some(&ss)), 1.0);
}

#[tokio::test(start_paused = true)]
async fn inherit_copies_ejection_checks_and_ejection_count() {
    let policy = gateway(1, secs(10), secs(10), secs(300));
    let c = check(2, 1);
    let old = EndpointHealth::new(false);
    let t0 = Instant::now();
    assert!(
        old.record(Outcome::GatewayFailure, &policy, t0, yes)
            .is_some()
    );
    assert!(old.record_check(false, &c, t0).is_some());
    tokio::time::advance(secs(3)).await;
    let now = Instant::now();
    let new = EndpointHealth::new(false);
    new.inherit(&old, true);
    let v = new.view(now, None);
    assert!(!v.available);
    assert!(v.checks_failing);
    // The rest of the ejection (give or take the nanosecond that marks a set time).
    let left = v.ejected_for.expect("still ejected");
    assert!(
        left <= secs(7) && left > secs(7) - Duration::from_millis(1),
        "{left:?}"
    );
    assert_eq!(v.ejections, 1);
    assert!(new.is_ejected(now + secs(6)));
    assert!(!new.is_ejected(now + secs(7)));
    // The ejection count carries on: failing right after it ends doubles the length.
    let again = new
        .record(Outcome::GatewayFailure, &policy, t0 + secs(10), yes)
        .expect("ejects again after the inherited ejection");
    assert_eq!(again.ejections, 2);
    assert_eq!(again.ejected_for, Some(secs(20)));

    // A healthy endpoint's state is inherited as healthy.
    let fresh = EndpointHealth::new(false);
    let healed = EndpointHealth::new(true);
    healed.inherit(&fresh, true);
    assert!(healed.is_available(now));
    assert_eq!(healed.view(now, None).ejections, 0);

    // Without active checks in the new configuration, failing checks are not carried over:
    // nothing would ever clear them.
    let unchecked = EndpointHealth::new(false);
    unchecked.inherit(&old, false);
    assert!(!unchecked.view(now, None).checks_failing);
    assert!(unchecked.is_ejected(now), "the ejection still carries over");
}

#[tokio::test(start_paused = true)]
async fn inherit_keeps_a_slow_start_ramp_in_progress() {
    let ss = SlowStart {
        window: secs(30),
        min_weight_percent: 10,
    };
    let c = check(1, 1);
    let old = EndpointHealth::new(true);
    let t0 = Instant::now();
    assert!(old.record_check(true, &c, t0).is_some());
    tokio::time::advance(secs(15)).await;
    let now = Instant::now();
    assert_close(old.weight_factor(now, Some(&ss)), 0.5);
    // A reload at half way: the new endpoint carries on from there.
    let new = EndpointHealth::new(false);
    new.inherit(&old, true);
    assert_close(new.weight_factor(now, Some(&ss)), 0.5);
    assert_close(new.weight_factor(now + secs(15), Some(&ss)), 1.0);
}

#[tokio::test(start_paused = true)]
async fn inherit_keeps_a_finished_slow_start_ramp_finished() {
    let ss = SlowStart {
        window: secs(30),
        min_weight_percent: 10,
    };
    let c = check(1, 1);
    let old = EndpointHealth::new(true);
    assert!(old.record_check(true, &c, Instant::now()).is_some());
    // A ramp that ended long before the reload stays ended: full weight at once.
    tokio::time::advance(secs(600)).await;
    let later = Instant::now();
    assert_close(old.weight_factor(later, Some(&ss)), 1.0);
    let reloaded = EndpointHealth::new(false);
    reloaded.inherit(&old, true);
    assert_close(reloaded.weight_factor(later, Some(&ss)), 1.0);
}

#[tokio::test(start_paused = true)]
async fn the_upstream_caps_how_many_endpoints_are_ejected() {
    let eps: Vec<Arc<Endpoint>> = (1..=4)
        .map(|i| {
            let a = format!("127.0.0.1:900{i}");
            Arc::new(Endpoint::new(a.parse().unwrap(), a.parse().unwrap(), 1))
        })
        .collect();
    let policy = UpstreamPolicy {
        health: HealthPolicy {
            outlier: OutlierPolicy {
                max_ejection_percent: 50,
                ..OutlierPolicy::default()
            },
            ..HealthPolicy::default()
        },
        ..UpstreamPolicy::default()
    };
    let mock = crate::test_util::MockConnector::new(|_, _| crate::test_util::MockReply::Refuse);
    let up = Upstream::new("pool", eps.clone(), policy, mock);
    let t0 = Instant::now();
    for i in 0..4 {
        up.record(i, Outcome::GatewayFailure, t0);
    }
    let ejected = eps.iter().filter(|e| e.health().is_ejected(t0)).count();
    assert_eq!(ejected, 2, "at most half of four");
    assert!(!eps[2].health().is_ejected(t0));
    assert!(!eps[3].health().is_ejected(t0));
    // When the ejections end, the others may go.
    up.sweep(t0 + secs(10));
    up.record(2, Outcome::GatewayFailure, t0 + secs(10));
    assert!(eps[2].health().is_ejected(t0 + secs(10)));
    let views = up.health_view(t0 + secs(10));
    assert_eq!(
        views.iter().filter(|(_, v)| v.available).count(),
        3,
        "{views:?}"
    );
}
