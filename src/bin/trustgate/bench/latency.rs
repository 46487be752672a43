//! Latency recording: an HDR histogram of request → reply times and its summary.
//!
//! Values are recorded in nanoseconds with three significant digits, so a p99 of 1.234 ms is
//! exact to the microsecond; the histogram grows as needed, so a stray multi-second reply is
//! recorded rather than clipped.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Request → reply latencies of one phase.
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hist: Histogram::new(3).expect("3 significant digits is a valid precision"),
        }
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        // With auto-resize on, recording only fails for values beyond u64 range.
        let _ = self.hist.record(nanos);
    }

    pub fn summary(&self) -> Summary {
        let us = |nanos: u64| nanos as f64 / 1_000.0;
        if self.hist.is_empty() {
            return Summary::default();
        }
        Summary {
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
            mean_us: self.hist.mean() / 1_000.0,
        }
    }
}

/// Percentiles in microseconds; all zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let mut l = Latencies::default();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(l.hist.len(), 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn empty_is_all_zero() {
        assert_eq!(Latencies::default().summary(), Summary::default());
    }
}
