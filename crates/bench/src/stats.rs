//! Percentiles of latency samples.

use std::time::Duration;

/// Sorted latency samples.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted_ns: Vec<u64>,
}

impl Samples {
    pub fn from_durations(samples: impl IntoIterator<Item = Duration>) -> Self {
        let mut sorted_ns: Vec<u64> =
            samples.into_iter().map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).collect();
        sorted_ns.sort_unstable();
        Self { sorted_ns }
    }

    pub fn from_micros(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        Self { sorted_ns: micros.into_iter().map(|us| u64::from(us) * 1_000).collect() }
    }

    /// The samples in µs, in order.
    pub fn micros(&self) -> impl Iterator<Item = u32> + '_ {
        self.sorted_ns.iter().map(|&ns| u32::try_from(ns / 1_000).unwrap_or(u32::MAX))
    }

    pub fn len(&self) -> usize {
        self.sorted_ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted_ns.is_empty()
    }

    /// The `p`-th percentile (0-100, nearest rank) in milliseconds; NaN without samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.is_empty() {
            return f64::NAN;
        }
        let n = self.sorted_ns.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        self.sorted_ns[index] as f64 / 1e6
    }

    pub fn max_ms(&self) -> f64 {
        self.sorted_ns.last().map_or(f64::NAN, |&ns| ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s = Samples::from_micros((1..=100).collect());
        assert_eq!(s.percentile_ms(50.0), 0.050);
        assert_eq!(s.percentile_ms(99.0), 0.099);
        assert_eq!(s.percentile_ms(100.0), 0.100);
        assert_eq!(s.percentile_ms(0.0), 0.001);
        assert!(Samples::default().percentile_ms(50.0).is_nan());
    }
}
