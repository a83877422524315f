//! Percentiles over latency samples.

use std::time::Duration;

/// The value at percentile `p` (0..=100) of an ascending-sorted slice, nearest-rank.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// A summary of durations: count, mean, min, p50, p90, p99, max.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: Duration,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises samples (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        Summary {
            count: samples.len(),
            mean: total / samples.len() as u32,
            min: samples[0],
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            max: samples[samples.len() - 1],
        }
    }
}

/// Milliseconds with three decimals, for printing.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile::<u32>(&[], 50.0), 0);
        assert_eq!(percentile(&[7u32], 99.0), 7);
    }

    #[test]
    fn summary() {
        let mut v: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.count, 10);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.p50, Duration::from_millis(5));
        assert_eq!(s.max, Duration::from_millis(10));
        assert_eq!(s.mean, Duration::from_micros(5500));
    }
}
