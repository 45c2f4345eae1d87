//! A lock-free latency histogram (10 µs buckets up to 20 ms, then one
//! overflow bucket) for the callout's per-request time, cheap enough to be
//! always on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKET_US: u64 = 10;
const BUCKETS: usize = 2000;

/// Counts durations into fixed buckets.
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let i = ((d.as_micros() as u64) / BUCKET_US).min(BUCKETS as u64) as usize;
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1), as the upper edge of its bucket; `None`
    /// when empty. Values past 20 ms report as 20 ms.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(Duration::from_micros((i as u64 + 1) * BUCKET_US));
            }
        }
        None
    }

    /// Forgets everything recorded.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us * 10 - 5));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(500)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_micros(990)));
        h.record(Duration::from_secs(5));
        assert_eq!(h.quantile(1.0), Some(Duration::from_micros(20_010)));
        h.reset();
        assert_eq!(h.count(), 0);
    }
}

/// Lets a log line through at most once per period, counting the events
/// held back in between: a flood of one failure costs a line per period,
/// not a line per event.
pub struct LogEvery {
    every: std::time::Duration,
    state: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl LogEvery {
    /// At most one line per `every`.
    pub fn new(every: std::time::Duration) -> LogEvery {
        LogEvery { every, state: std::sync::Mutex::new((0, None)) }
    }

    /// Counts one event; `Some(n)` (the events since the last line,
    /// this one included) when a line is due.
    pub fn note(&self) -> Option<u64> {
        self.note_at(std::time::Instant::now())
    }

    fn note_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 += 1;
        if st.1.is_some_and(|last| now.saturating_duration_since(last) < self.every) {
            return None;
        }
        let n = st.0;
        *st = (0, Some(now));
        Some(n)
    }
}

#[cfg(test)]
mod log_every_tests {
    use super::LogEvery;
    use std::time::{Duration, Instant};

    /// The first event logs, then one line per period with the count.
    #[test]
    fn first_then_once_per_period() {
        let l = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.note_at(t0), Some(1));
        for i in 1..50u64 {
            assert_eq!(l.note_at(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(l.note_at(t0 + Duration::from_secs(10)), Some(50));
    }
}
