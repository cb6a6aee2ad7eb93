//! A log-linear latency histogram in microseconds: exact below 64 µs, then 32 linear
//! sub-buckets per power of two (at most 1/32 ≈ 3 % relative error), up to about 2^40 µs.

use std::time::Duration;

/// Values below this are counted exactly, one bucket each.
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above [`LINEAR`] (2^SUB_BITS).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above [`LINEAR`]: 2^6 .. 2^40 µs (about 12 days).
const MAGNITUDES: u64 = 35;
const BUCKETS: usize = (LINEAR + MAGNITUDES * SUB) as usize;

/// Latency counts; merge per-task histograms with [`Histogram::merge`].
#[derive(Clone)]
pub(super) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_us: u128,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    /// Counts one latency.
    pub(super) fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let index = bucket(us).min(BUCKETS - 1);
        self.counts[index] += 1;
        self.total += 1;
        self.sum_us += u128::from(us);
        self.max_us = self.max_us.max(us);
    }

    /// Adds `other`'s counts to these.
    pub(super) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The `q` quantile (0.0..=1.0) in microseconds: the midpoint of the bucket that holds
    /// it, capped at the maximum seen. `None` when empty.
    pub(super) fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        // The rank of the value wanted, 1-based: at least the first, at most the last.
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bounds(index);
                let mid = low as f64 + (width as f64 - 1.0) / 2.0;
                return Some(mid.min(self.max_us as f64));
            }
        }
        Some(self.max_us as f64)
    }

    /// The mean in microseconds, `None` when empty.
    pub(super) fn mean_us(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum_us as f64 / self.total as f64)
    }

    /// The largest value in microseconds.
    pub(super) fn max_us(&self) -> u64 {
        self.max_us
    }
}

/// The bucket of `us`.
fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let magnitude = u64::from(63 - us.leading_zeros()); // >= 6
    let shift = magnitude - u64::from(SUB_BITS);
    let sub = (us >> shift) & (SUB - 1);
    (LINEAR + (magnitude - 6) * SUB + sub) as usize
}

/// The lowest value and the width of bucket `index`.
fn bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < LINEAR {
        return (index, 1);
    }
    let magnitude = (index - LINEAR) / SUB + 6;
    let sub = (index - LINEAR) % SUB;
    let shift = magnitude - u64::from(SUB_BITS);
    ((SUB + sub) << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for us in [0, 1, 63, 64, 65, 100, 127, 128, 1000, 123_456, 1 << 39] {
            let (low, width) = bounds(bucket(us));
            assert!(
                low <= us && us < low + width,
                "{us} not in [{low}, +{width})"
            );
            assert!(
                width as f64 <= (low as f64 / 32.0).max(1.0),
                "{us}: bucket too wide"
            );
        }
    }

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5).unwrap();
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.04, "p50 {p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.04, "p99 {p99}");
        assert_eq!(h.quantile_us(1.0).unwrap(), 10_000.0);
        assert!((h.mean_us().unwrap() - 5000.5).abs() < 1e-6);

        let mut merged = Histogram::default();
        merged.merge(&h);
        merged.merge(&h);
        assert_eq!(merged.total, 20_000);
        assert_eq!(merged.quantile_us(0.5), h.quantile_us(0.5));
        assert_eq!(Histogram::default().quantile_us(0.5), None);
    }
}
