use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::health::{Outcome, OutlierPolicy};

fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let addr = format!("127.0.0.1:{}", 9000 + i);
            Arc::new(Endpoint::new(
                addr.parse().unwrap(),
                addr.parse().unwrap(),
                w,
            ))
        })
        .collect()
}

fn ctx(now: Instant) -> PickContext<'static> {
    PickContext::new(now)
}

fn eject(ep: &Endpoint, now: Instant) {
    let policy = OutlierPolicy {
        base_ejection: Duration::from_secs(30),
        ..OutlierPolicy::default()
    };
    ep.health()
        .record(Outcome::GatewayFailure, &policy, now, || true);
}

#[tokio::test(start_paused = true)]
async fn round_robin_is_exact_and_skips_tried_and_ejected() {
    let eps = endpoints(&[1, 1, 1]);
    let b = RoundRobin::default();
    let now = Instant::now();
    let seq: Vec<_> = (0..6).map(|_| b.pick(&eps, &ctx(now)).unwrap()).collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    let tried = [0, 1];
    let c = PickContext {
        tried: &tried,
        ..ctx(now)
    };
    for _ in 0..3 {
        assert_eq!(b.pick(&eps, &c), Some(2));
    }
    eject(&eps[2], now);
    assert_eq!(b.pick(&eps, &c), None);
    assert!(
        (0..4).all(|_| b.pick(&eps, &ctx(now)) != Some(2)),
        "ejected endpoint skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn smooth_weighted_round_robin_matches_nginx() {
    let eps = endpoints(&[5, 1, 1]);
    let b = WeightedRoundRobin::new(3);
    let now = Instant::now();
    let seq: Vec<_> = (0..14).map(|_| b.pick(&eps, &ctx(now)).unwrap()).collect();
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn least_request_prefers_idle_and_weights() {
    let eps = endpoints(&[1, 1, 2]);
    let b = LeastRequest::default();
    let now = Instant::now();
    let _busy0 = eps[0].start();
    let _busy2 = eps[2].start();
    assert_eq!(b.pick(&eps, &ctx(now)), Some(1));
    let _busy1 = eps[1].start();
    // 1/1, 1/1, 1/2: the weight-2 endpoint carries the least relative load.
    assert_eq!(b.pick(&eps, &ctx(now)), Some(2));
}

#[tokio::test(start_paused = true)]
async fn least_request_rotates_ties() {
    let eps = endpoints(&[1, 1, 1]);
    let b = LeastRequest::default();
    let now = Instant::now();
    let mut seen = [0; 3];
    for _ in 0..30 {
        seen[b.pick(&eps, &ctx(now)).unwrap()] += 1;
    }
    assert_eq!(seen, [10, 10, 10]);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_avoids_the_slow_endpoint() {
    let eps = endpoints(&[1, 1]);
    let now = Instant::now();
    eps[0].observe_latency(Duration::from_millis(200), now);
    eps[1].observe_latency(Duration::from_millis(2), now);
    let b = PeakEwma;
    for _ in 0..50 {
        assert_eq!(b.pick(&eps, &ctx(now)), Some(1));
    }
    // With only the slow one eligible, it is still used.
    let tried = [1];
    let c = PickContext {
        tried: &tried,
        ..ctx(now)
    };
    assert_eq!(b.pick(&eps, &c), Some(0));
}

#[tokio::test(start_paused = true)]
async fn random_respects_weights_within_tolerance() {
    let eps = endpoints(&[3, 1]);
    let b = Random;
    let now = Instant::now();
    let mut counts = [0u32; 2];
    for _ in 0..20_000 {
        counts[b.pick(&eps, &ctx(now)).unwrap()] += 1;
    }
    let share = f64::from(counts[0]) / 20_000.0;
    assert!((share - 0.75).abs() < 0.03, "share {share}");
}

#[tokio::test(start_paused = true)]
async fn ring_hash_is_sticky_and_remaps_minimally() {
    let eps = endpoints(&[1, 1, 1, 1, 1]);
    let b = RingHash::new(&eps);
    let now = Instant::now();
    let keys: Vec<u64> = (0..5_000u32).map(|k| hash_key(&k.to_le_bytes())).collect();
    let pick = |h: u64| {
        b.pick(
            &eps,
            &PickContext {
                hash: Some(h),
                ..ctx(now)
            },
        )
        .unwrap()
    };
    let before: Vec<usize> = keys.iter().map(|&h| pick(h)).collect();
    assert_eq!(before, keys.iter().map(|&h| pick(h)).collect::<Vec<_>>());
    let mut per: HashMap<usize, u32> = HashMap::new();
    for &i in &before {
        *per.entry(i).or_default() += 1;
    }
    for (&i, &n) in &per {
        assert!((600..=1400).contains(&n), "endpoint {i} got {n} of 5000");
    }
    eject(&eps[3], now);
    let after: Vec<usize> = keys.iter().map(|&h| pick(h)).collect();
    for (b4, af) in before.iter().zip(&after) {
        if *b4 != 3 {
            assert_eq!(b4, af, "a key that was not on the removed endpoint moved");
        } else {
            assert_ne!(*af, 3);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn ring_hash_without_key_falls_back_to_rotation() {
    let eps = endpoints(&[1, 1]);
    let b = RingHash::new(&eps);
    let now = Instant::now();
    let seq: Vec<_> = (0..4).map(|_| b.pick(&eps, &ctx(now)).unwrap()).collect();
    assert_eq!(seq, [0, 1, 0, 1]);
}

#[tokio::test(start_paused = true)]
async fn every_balancer_returns_none_when_nothing_is_eligible() {
    let eps = endpoints(&[1, 2]);
    let now = Instant::now();
    eject(&eps[0], now);
    eject(&eps[1], now);
    for kind in [
        BalancerKind::RoundRobin,
        BalancerKind::WeightedRoundRobin,
        BalancerKind::LeastRequest,
        BalancerKind::PeakEwma,
        BalancerKind::ConsistentHash,
        BalancerKind::Random,
    ] {
        let b = build(kind, &eps);
        assert_eq!(b.pick(&eps, &ctx(now)), None, "{kind:?}");
        let c = PickContext {
            hash: Some(7),
            ..ctx(now)
        };
        assert_eq!(b.pick(&eps, &c), None, "{kind:?}");
    }
}
