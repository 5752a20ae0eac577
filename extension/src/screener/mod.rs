//! Sliding screener windows of one symbol, kept in memory between candle closes.
//!
//! The screener (DESIGN.md "Screener semantics") needs, at every new candle `s`, the high and
//! low of the last N candles for N in [`WINDOWS`], the open and running quote volume of the
//! first candle of each window (`s-N+1`) and of the window before it (`s-2N+1`), and a few
//! values of the candles `s-1`, `s-2` and `s-9`. The data schema stores those in a state row per
//! candle; [`SlidingWindows`] produces them in O(1) amortised time per candle from the
//! previous candles it has seen, instead of ~25 index lookups.
//!
//! - **Input**: candles of one symbol, in order, numbered by `seq` (1, 2, 3, ... without
//!   gaps). Quote volumes are opaque values `V` (exact decimals); the engine only hands them
//!   back, it never does arithmetic on them.
//! - **Output**: [`WindowValues`] for the newest candle; `None` fields while a window is not
//!   full.
//! - **Memory**: rings of 2880 quote-volume sums and 1440 opens plus two monotonic deques per
//!   window: about 60 KiB per symbol.
//! - **Algorithm**: sliding maximum/minimum with monotonic deques (each candle enters and leaves
//!   each deque once); max/min are exact, so the results equal the level-by-level
//!   `greatest()`/`least()` of the SQL path bit for bit.
//! - **Errors**: [`WindowError`] when a candle is not the successor of the previous one.

use std::collections::VecDeque;

/// Window lengths in candles: 5m, 15m, 1h, 4h, 8h, 1d of 1-minute candles.
pub const WINDOWS: [usize; 6] = [5, 15, 60, 240, 480, 1440];

/// How many past candles the longest lookup reaches back (the previous 1d window).
const CUM_DEPTH: usize = 2 * 1440;
const OPEN_DEPTH: usize = 1440;
const SMALL_DEPTH: usize = 10;

/// One candle as the window engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candle<V> {
    pub seq: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub quote_volume: V,
    /// Sum of quote_volume over all earlier candles of the symbol.
    pub cum_before: V,
    /// ln(close / previous close); None for the first candle or non-positive prices.
    pub log_return: Option<f64>,
    /// Running sum of log_return^2 up to and including this candle.
    pub sum_log_return_sq: f64,
}

/// Values of earlier candles one window needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStart<V> {
    /// open of the first candle of the window (seq s-N+1).
    pub open: Option<f64>,
    /// cum_before of that candle.
    pub cum_before: Option<V>,
    /// cum_before of the first candle of the previous window (seq s-2N+1).
    pub cum_before_prev: Option<V>,
}

/// Everything the state row of the newest candle needs from the sliding windows.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowValues<V> {
    /// max(high) / min(low) over the last N candles, per [`WINDOWS`]; None until seq >= N.
    pub high: [Option<f64>; 6],
    pub low: [Option<f64>; 6],
    pub starts: [WindowStart<V>; 6],
    /// (open, close, quote_volume) of the candles 1 and 2 before.
    pub m1: Option<(f64, f64, V)>,
    pub m2: Option<(f64, f64, V)>,
    /// (close, log_return, sum_log_return_sq) of the candle 9 before.
    pub m9: Option<(f64, Option<f64>, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("candle seq {got} does not follow seq {last}")]
    NotNext { last: i64, got: i64 },
}

/// A ring buffer indexed by seq: holds the values of the last `cap` seqs.
#[derive(Debug, Clone)]
struct Ring<T> {
    cap: usize,
    buf: Vec<Option<T>>,
}

impl<T: Clone> Ring<T> {
    fn new(cap: usize) -> Self {
        Ring {
            cap,
            buf: vec![None; cap],
        }
    }
    fn put(&mut self, seq: i64, v: T) {
        let i = seq.rem_euclid(self.cap as i64) as usize;
        self.buf[i] = Some(v);
    }
    /// The value at `seq`, if `seq` is within the last `cap` seqs up to `last` and >= 1.
    fn get(&self, seq: i64, last: i64) -> Option<&T> {
        if seq < 1 || seq > last || last - seq >= self.cap as i64 {
            return None;
        }
        self.buf[seq.rem_euclid(self.cap as i64) as usize].as_ref()
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
    fn push(&mut self, seq: i64, x: f64) {
        // drop values the new one dominates (ties: keep the newest; the value is the same)
        while let Some(&(_, b)) = self.dq.back() {
            let dominated = if self.less { b >= x } else { b <= x };
            if dominated {
                self.dq.pop_back();
            } else {
                break;
            }
        }
        self.dq.push_back((seq, x));
        while let Some(&(s, _)) = self.dq.front() {
            if s <= seq - self.n {
                self.dq.pop_front();
            } else {
                break;
            }
        }
    }
    fn value(&self) -> Option<f64> {
        self.dq.front().map(|&(_, v)| v)
    }
}

/// The sliding windows of one symbol.
#[derive(Debug, Clone)]
pub struct SlidingWindows<V> {
    last: i64,
    cum: Ring<V>,
    open: Ring<f64>,
    small: Ring<(f64, f64, V, Option<f64>, f64)>,
    highs: Vec<Extreme>,
    lows: Vec<Extreme>,
}

impl<V: Clone> Default for SlidingWindows<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> SlidingWindows<V> {
    pub fn new() -> Self {
        SlidingWindows {
            last: 0,
            cum: Ring::new(CUM_DEPTH),
            open: Ring::new(OPEN_DEPTH),
            small: Ring::new(SMALL_DEPTH),
            highs: WINDOWS.iter().map(|&n| Extreme::new(n, false)).collect(),
            lows: WINDOWS.iter().map(|&n| Extreme::new(n, true)).collect(),
        }
    }

    /// seq of the newest candle seen (0 when none).
    pub fn last_seq(&self) -> i64 {
        self.last
    }

    /// Add the next candle. The first candle may have any seq (a cache filled from the middle
    /// of a series); later ones must follow without gaps.
    pub fn push(&mut self, c: &Candle<V>) -> Result<(), WindowError> {
        if self.last != 0 && c.seq != self.last + 1 {
            return Err(WindowError::NotNext {
                last: self.last,
                got: c.seq,
            });
        }
        self.last = c.seq;
        self.cum.put(c.seq, c.cum_before.clone());
        self.open.put(c.seq, c.open);
        self.small.put(
            c.seq,
            (
                c.open,
                c.close,
                c.quote_volume.clone(),
                c.log_return,
                c.sum_log_return_sq,
            ),
        );
        for h in &mut self.highs {
            h.push(c.seq, c.high);
        }
        for l in &mut self.lows {
            l.push(c.seq, c.low);
        }
        Ok(())
    }

    /// Window values for the newest candle. Exact as long as the engine saw the
    /// [`Self::HISTORY`] candles before it (or every candle since seq 1).
    pub fn values(&self) -> WindowValues<V> {
        let s = self.last;
        let full = |n: usize| s >= n as i64;
        let mut high = [None; 6];
        let mut low = [None; 6];
        for (i, &n) in WINDOWS.iter().enumerate() {
            if full(n) {
                high[i] = self.highs[i].value();
                low[i] = self.lows[i].value();
            }
        }
        let starts = WINDOWS.map(|n| {
            let n = n as i64;
            WindowStart {
                open: self.open.get(s - n + 1, s).copied(),
                cum_before: self.cum.get(s - n + 1, s).cloned(),
                cum_before_prev: self.cum.get(s - 2 * n + 1, s).cloned(),
            }
        });
        let m = |k: i64| self.small.get(s - k, s);
        WindowValues {
            high,
            low,
            starts,
            m1: m(1).map(|r| (r.0, r.1, r.2.clone())),
            m2: m(2).map(|r| (r.0, r.1, r.2.clone())),
            m9: m(9).map(|r| (r.1, r.3, r.4)),
        }
    }
}

/// Candles an engine needs to have seen to answer [`SlidingWindows::values`] exactly for the
/// next candle: the last 2879 (the previous 1d window starts 2879 candles back).
pub const HISTORY: usize = CUM_DEPTH - 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic zig-zag series with plateaus, ties and a trend, seq 1..=n; volumes in
    /// integer cents.
    fn series(n: i64) -> Vec<Candle<i64>> {
        let mut out = Vec::new();
        let mut cum = 0i64;
        let mut prev_close: Option<f64> = None;
        let mut s2 = 0.0;
        for seq in 1..=n {
            let base = 100.0 + ((seq * 37) % 101) as f64 * 0.25 + (seq / 500) as f64;
            let (open, close) = (base, base + ((seq % 7) as f64 - 3.0) * 0.1);
            let qv = 1000 + (seq * 13) % 977;
            let lr = prev_close.map(|p| (close / p).ln());
            s2 += lr.map_or(0.0, |x| x * x);
            out.push(Candle {
                seq,
                open,
                high: open.max(close) + if seq % 11 == 0 { 1.0 } else { 0.1 },
                low: open.min(close) - 0.1,
                close,
                quote_volume: qv,
                cum_before: cum,
                log_return: lr,
                sum_log_return_sq: s2,
            });
            cum += qv;
            prev_close = Some(close);
        }
        out
    }

    /// The naive definition: scan the window.
    fn naive(c: &[Candle<i64>], s: i64) -> WindowValues<i64> {
        let at = |q: i64| {
            if q >= 1 && q <= s {
                Some(&c[(q - 1) as usize])
            } else {
                None
            }
        };
        let mut high = [None; 6];
        let mut low = [None; 6];
        for (i, &n) in WINDOWS.iter().enumerate() {
            let n = n as i64;
            if s >= n {
                let w = &c[(s - n) as usize..s as usize];
                high[i] = w.iter().map(|x| x.high).reduce(f64::max);
                low[i] = w.iter().map(|x| x.low).reduce(f64::min);
            }
        }
        WindowValues {
            high,
            low,
            starts: WINDOWS.map(|n| {
                let n = n as i64;
                WindowStart {
                    open: at(s - n + 1).map(|x| x.open),
                    cum_before: at(s - n + 1).map(|x| x.cum_before),
                    cum_before_prev: at(s - 2 * n + 1).map(|x| x.cum_before),
                }
            }),
            m1: at(s - 1).map(|x| (x.open, x.close, x.quote_volume)),
            m2: at(s - 2).map(|x| (x.open, x.close, x.quote_volume)),
            m9: at(s - 9).map(|x| (x.close, x.log_return, x.sum_log_return_sq)),
        }
    }

    #[test]
    fn equals_the_naive_scan_at_every_candle() {
        let c = series(3500);
        let mut w = SlidingWindows::new();
        for x in &c {
            w.push(x).unwrap();
            assert_eq!(w.values(), naive(&c, x.seq), "seq {}", x.seq);
        }
    }

    #[test]
    fn filled_from_the_middle_of_a_series() {
        // a cache filled with the last HISTORY candles answers like one that saw everything
        let c = series(4000);
        let mut full = SlidingWindows::new();
        for x in &c[..3000] {
            full.push(x).unwrap();
        }
        let mut partial = SlidingWindows::new();
        for x in &c[3000 - HISTORY..3000] {
            partial.push(x).unwrap();
        }
        for x in &c[3000..] {
            full.push(x).unwrap();
            partial.push(x).unwrap();
            assert_eq!(partial.values(), full.values(), "seq {}", x.seq);
        }
    }

    #[test]
    fn rejects_gaps_and_repeats() {
        let c = series(5);
        let mut w = SlidingWindows::new();
        w.push(&c[0]).unwrap();
        assert_eq!(w.push(&c[2]), Err(WindowError::NotNext { last: 1, got: 3 }));
        assert_eq!(w.push(&c[0]), Err(WindowError::NotNext { last: 1, got: 1 }));
        w.push(&c[1]).unwrap();
        assert_eq!(w.last_seq(), 2);
    }

    #[test]
    fn short_history_gives_no_window() {
        let c = series(6);
        let mut w = SlidingWindows::new();
        for x in &c[..4] {
            w.push(x).unwrap();
        }
        let v = w.values();
        assert_eq!(v.high, [None; 6]);
        assert_eq!(
            v.starts[0].open, None,
            "the 5-candle window starts before seq 1"
        );
        w.push(&c[4]).unwrap();
        let v = w.values();
        assert_eq!(v.high[0], naive(&c, 5).high[0]);
        assert_eq!(v.starts[0].open, Some(c[0].open));
        assert_eq!(v.starts[0].cum_before_prev, None);
        assert_eq!(v.m9, None);
    }
}
