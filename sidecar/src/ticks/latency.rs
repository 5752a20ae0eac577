//! Receive → commit latency of live ticks: a fixed-bucket histogram (1 ms buckets below 1 s,
//! 10 ms buckets up to 120 s, one overflow bucket), so quantiles cost no memory per tick.

/// Latency histogram in milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyHist {
    buckets: Vec<u64>,
    count: u64,
    max_ms: u64,
}

const FINE: u64 = 1000;
const COARSE_STEP: u64 = 10;
const LIMIT: u64 = 120_000;

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist {
            buckets: vec![0; (FINE + (LIMIT - FINE) / COARSE_STEP + 1) as usize],
            count: 0,
            max_ms: 0,
        }
    }
}

impl LatencyHist {
    fn bucket(ms: u64) -> usize {
        if ms < FINE {
            ms as usize
        } else if ms < LIMIT {
            (FINE + (ms - FINE) / COARSE_STEP) as usize
        } else {
            (FINE + (LIMIT - FINE) / COARSE_STEP) as usize
        }
    }

    fn lower_ms(b: usize) -> u64 {
        let b = b as u64;
        if b < FINE {
            b
        } else {
            FINE + (b - FINE) * COARSE_STEP
        }
    }

    pub fn record(&mut self, ms: u64) {
        self.buckets[Self::bucket(ms)] += 1;
        self.count += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_ms(&self) -> u64 {
        self.max_ms
    }

    /// The `q` quantile (0..=1) in ms (the lower edge of its bucket; exact below 1 s), or
    /// None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::lower_ms(b).min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = LatencyHist::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(ms);
        }
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.quantile(1.0), Some(100));
        h.record(5_555);
        h.record(500_000);
        assert_eq!(h.max_ms(), 500_000);
        assert_eq!(h.quantile(1.0), Some(120_000));
        assert_eq!(h.count(), 102);
    }
}
