//! Sliding windows over the last candles an engine has seen.
//!
//! For each candle `s` the screener needs the high and low of the last N candles for N in
//! [`WINDOWS`], the open and running quote volume before the first candle of each window
//! (`s-N+1`) and of the window before it (`s-2N+1`), and a few values of the candles `s-1`,
//! `s-2` and `s-9`. [`SlidingWindows`] keeps exactly those, in O(1) amortised time per candle.
//!
//! - **Input**: candles of one instrument in order, numbered by `seq` (the instrument's
//!   candle count, 1-based, without gaps). The first candle pushed may have any seq (an engine
//!   started from a checkpoint); the windows then know only the candles from that one on.
//! - **Output**: every accessor returns None when it needs a candle the windows have not
//!   seen, so a short history gives NULL, never a partial window.
//! - **Memory**: rings of 2880 running volumes and 1440 opens, a ring of 10 small records and
//!   two monotonic deques per window (at most N entries each; a few on real data): about
//!   2880 × size_of::<V>() + 12 KiB (≈ 80 KiB with the SQL wrapper's 24-byte numerics).
//! - **Algorithm**: sliding maximum/minimum with monotonic deques (each candle enters and
//!   leaves each deque once). Maxima and minima are exact, so they equal the level-by-level
//!   `greatest()`/`least()` of pg_ta 0.1.0's SQL bit for bit.

use std::collections::VecDeque;

/// Window lengths in candles: 5m, 15m, 1h, 4h, 8h, 1d of 1-minute candles.
pub const WINDOWS: [usize; 6] = [5, 15, 60, 240, 480, 1440];

/// Candles before a candle that its values need (the previous 1d window starts 2879
/// candles back): an engine that has seen them gives that candle's full row.
pub const HISTORY: usize = 2 * 1440 - 1;

const CUM_DEPTH: usize = 2 * 1440;
const OPEN_DEPTH: usize = 1440;
const SMALL_DEPTH: usize = 10;

/// A ring buffer indexed by seq: the values of the last `cap` seqs pushed (slots not yet
/// written hold `fill` and are never read: `get` checks the seq range first).
#[derive(Debug, Clone)]
struct Ring<T> {
    buf: Vec<T>,
}

impl<T: Clone> Ring<T> {
    fn new(cap: usize, fill: T) -> Self {
        Ring {
            buf: vec![fill; cap],
        }
    }
    #[inline]
    fn slot(&self, seq: i64) -> usize {
        seq.rem_euclid(self.buf.len() as i64) as usize
    }
    #[inline]
    fn put(&mut self, seq: i64, v: T) {
        let i = self.slot(seq);
        self.buf[i] = v;
    }
    /// The value at `seq`: seen (`first <= seq <= last`) and not yet overwritten.
    #[inline]
    fn get(&self, seq: i64, first: i64, last: i64) -> Option<&T> {
        if first == 0 || seq < first || seq > last || last - seq >= self.buf.len() as i64 {
            return None;
        }
        Some(&self.buf[self.slot(seq)])
    }
}

/// Monotonic deque for the maximum (or, with `less`, the minimum) of the last `n` values.
#[derive(Debug, Clone)]
struct Extreme {
    n: i64,
    less: bool,
    dq: VecDeque<(i64, f64)>,
}

impl Extreme {
    fn new(n: usize, less: bool) -> Self {
        Extreme {
            n: n as i64,
            less,
            dq: VecDeque::new(),
        }
    }
    #[inline]
    fn push(&mut self, seq: i64, x: f64) {
        // drop values the new one dominates (ties: keep the newest; the value is the same)
        while let Some(&(_, b)) = self.dq.back() {
            let dominated = if self.less { b >= x } else { b <= x };
            if !dominated {
                break;
            }
            self.dq.pop_back();
        }
        self.dq.push_back((seq, x));
        while let Some(&(s, _)) = self.dq.front() {
            if s > seq - self.n {
                break;
            }
            self.dq.pop_front();
        }
    }
    #[inline]
    fn value(&self) -> Option<f64> {
        self.dq.front().map(|&(_, v)| v)
    }
}

/// The values of one candle the rows of later candles read back (`s-1`, `s-2`, `s-9`).
#[derive(Debug, Clone)]
pub struct Recent<V> {
    pub open: f64,
    pub close: f64,
    pub quote_volume: V,
    /// ln(close / previous close); None for the first candle of a series or a price <= 0
    pub log_return: Option<f64>,
    /// running sum of log_return² up to and including this candle
    pub sum_log_return_sq: f64,
}

/// The sliding windows of one instrument.
#[derive(Debug, Clone)]
pub struct SlidingWindows<V> {
    /// seq of the first candle pushed (0: none yet)
    first: i64,
    /// seq of the newest candle (0: none yet)
    last: i64,
    /// running quote volume before each candle
    cum_before: Ring<V>,
    open: Ring<f64>,
    recent: Ring<Recent<V>>,
    highs: Vec<Extreme>,
    lows: Vec<Extreme>,
}

impl<V: Clone> SlidingWindows<V> {
    /// Empty windows; `fill` is any value of `V` for the unused slots (never read back).
    pub fn new(fill: V) -> Self {
        SlidingWindows {
            first: 0,
            last: 0,
            cum_before: Ring::new(CUM_DEPTH, fill.clone()),
            open: Ring::new(OPEN_DEPTH, 0.0),
            recent: Ring::new(
                SMALL_DEPTH,
                Recent {
                    open: 0.0,
                    close: 0.0,
                    quote_volume: fill,
                    log_return: None,
                    sum_log_return_sq: 0.0,
                },
            ),
            highs: WINDOWS.iter().map(|&n| Extreme::new(n, false)).collect(),
            lows: WINDOWS.iter().map(|&n| Extreme::new(n, true)).collect(),
        }
    }

    /// Candles pushed so far.
    #[inline]
    pub fn seen(&self) -> i64 {
        if self.last == 0 {
            0
        } else {
            self.last - self.first + 1
        }
    }

    /// Adds candle `seq`; the caller guarantees `seq = last + 1` after the first push.
    #[inline]
    pub fn push(&mut self, seq: i64, high: f64, low: f64, cum_before: V, recent: Recent<V>) {
        debug_assert!(self.last == 0 || seq == self.last + 1);
        if self.last == 0 {
            self.first = seq;
        }
        self.last = seq;
        self.cum_before.put(seq, cum_before);
        self.open.put(seq, recent.open);
        self.recent.put(seq, recent);
        for h in &mut self.highs {
            h.push(seq, high);
        }
        for l in &mut self.lows {
            l.push(seq, low);
        }
    }

    /// max(high) and min(low) of the last `WINDOWS[i]` candles; None until that many seen.
    #[inline]
    pub fn extremes(&self, i: usize) -> (Option<f64>, Option<f64>) {
        if self.seen() < WINDOWS[i] as i64 {
            return (None, None);
        }
        (self.highs[i].value(), self.lows[i].value())
    }

    /// Running quote volume before candle `seq`, if seen.
    #[inline]
    pub fn cum_before(&self, seq: i64) -> Option<&V> {
        self.cum_before.get(seq, self.first, self.last)
    }

    /// Open of candle `seq`, if seen (the last 1440).
    #[inline]
    pub fn open(&self, seq: i64) -> Option<f64> {
        self.open.get(seq, self.first, self.last).copied()
    }

    /// The recent values of candle `seq`, if seen (the last 10).
    #[inline]
    pub fn recent(&self, seq: i64) -> Option<&Recent<V>> {
        self.recent.get(seq, self.first, self.last)
    }

    /// Asks the CPU for the slots a row of candle `seq` reads (each window's open and the
    /// running volumes before its start and before the window before it), so that their
    /// cache misses overlap: the live path builds rows for hundreds of instruments, whose
    /// rings do not stay in the CPU caches between two closes. No effect on any value.
    #[inline]
    pub fn prefetch_row(&self, seq: i64) {
        for &n in WINDOWS.iter() {
            let start = seq - n as i64 + 1;
            for p in [start, start - n as i64] {
                if let Some(v) = self.cum_before(p) {
                    prefetch(v);
                }
            }
            if let Some(o) = self.open.get(start, self.first, self.last) {
                prefetch(o);
            }
        }
    }
}

/// A hint to load `v`'s cache line (x86-64: `PREFETCHT0`; elsewhere nothing).
#[inline(always)]
fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        #[allow(unused_unsafe)]
        // SAFETY: a prefetch reads nothing into the program: any address is allowed
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((v as *const T).cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(open: f64) -> Recent<i64> {
        Recent {
            open,
            close: open,
            quote_volume: 1,
            log_return: None,
            sum_log_return_sq: 0.0,
        }
    }

    #[test]
    fn extremes_equal_a_scan_and_need_a_full_window() {
        // TC1: zig-zag with plateaus and ties; started at seq 101 (a checkpoint)
        let hl = |s: i64| {
            let h = 100.0 + ((s * 37) % 101) as f64 * 0.25 + if s % 11 == 0 { 1.0 } else { 0.0 };
            (h, h - 0.5 - ((s * 13) % 7) as f64 * 0.125)
        };
        let mut w = SlidingWindows::<i64>::new(0);
        for s in 101..=3600i64 {
            let (h, l) = hl(s);
            w.push(s, h, l, s, rec(h));
            for (i, &n) in WINDOWS.iter().enumerate() {
                let n = n as i64;
                let (gh, gl) = w.extremes(i);
                if s - 100 < n {
                    assert_eq!((gh, gl), (None, None), "seq {s} window {n}");
                } else {
                    let want_h = (s - n + 1..=s).map(|q| hl(q).0).reduce(f64::max);
                    let want_l = (s - n + 1..=s).map(|q| hl(q).1).reduce(f64::min);
                    assert_eq!((gh, gl), (want_h, want_l), "seq {s} window {n}");
                }
            }
            // values of unseen or overwritten candles are None
            assert_eq!(w.cum_before(100), None);
            assert_eq!(w.cum_before(s - 2880), None);
            assert_eq!(
                w.cum_before(s - 2879).copied(),
                (s >= 2980).then_some(s - 2879)
            );
            assert_eq!(w.open(s - 1440), None);
            assert_eq!(w.recent(s - 10).map(|r| r.open), None);
            assert_eq!(w.recent(s - 9).is_some(), s >= 110);
        }
    }
}
