//! The feature engine: the screener engine of one instrument plus the rolling state of every
//! feature of the feature row (version [`FEATURE_VERSION`]).
//!
//! - **Input**: the 1m candles of one instrument in increasing open_time ([`Candle`], as the
//!   screener engine takes them) with, per candle, [`Extra`]: base volume, quote volume and
//!   taker-buy base volume as doubles (PostgreSQL's `numeric::float8`), and the book features
//!   of that minute ([`BookInput`], None where the tick tables have no rows).
//! - **Output**: after each [`FeatureEngine::push`], [`FeatureEngine::features`] (the
//!   [`FeatureRow`] of that candle) and the screener engine ([`FeatureEngine::screener`]: its
//!   row, chain and day checkpoints, unchanged).
//! - **Windows count candles** (as the screener's): "5m" is the last 5 stored 1m candles. A
//!   feature that needs k candles is None until the engine has seen k (a series that short,
//!   or an engine started too late: callers start [`crate::screener::HISTORY`] candles early,
//!   more than the [`HISTORY`] features need).
//! - **Exactness**: window sums are [`ExactSum`]s (the correctly rounded exact sum of the
//!   window's values, as Python's `math.fsum`), flat windows are detected exactly, and each
//!   formula is a fixed sequence of IEEE operations on those, so a value is a function of the
//!   window's contents (bit for bit; `tests/common/features_ref.py` recomputes every column
//!   from the formulas below with `math.fsum`).
//!
//! # Columns (double precision; None = SQL NULL, never NaN)
//! With c = close, v = volume, q = quote volume, r_i = ln(c_i / c_{i−1}) (the screener's log
//! return), W = the last N candles including the current one:
//!
//! | column | formula | None when |
//! |---|---|---|
//! | `ret_1m` … `ret_1d` | ln(c / c₋ₖ), k = 1, 5, 15, 60, 240, 1440 candles | fewer than k+1 candles |
//! | `rv_5m` … `rv_1d` | √(fsum(r_i²) over the last N = 5, 15, 60, 240, 480, 1440 candles) | fewer than N+1 candles |
//! | `rsi_14`, `macd_hist` | the screener's RSI(14), MACD(12,26,9) histogram (TA-Lib) | lookback 14 / 33 |
//! | `bb_pct_b` | μ = fsum(c)/20, σ = √(fsum((c−μ)²)/20), (c − (μ−2σ)) / ((μ+2σ) − (μ−2σ)) over the last 20 closes | fewer than 20 candles, 20 equal closes |
//! | `vwap_dist_1d` | ln(c / (fsum(q)/fsum(v))) over the last 1440 candles | fewer than 1440 candles, fsum(v) = 0 |
//! | `vol_z_1d`, `quote_vol_z_1d` | z-score of v (q) over the last 1440 candles: (x − μ)/√(fsum(x²)/N − μ²), μ = fsum(x)/N | fewer than 1440 candles, all equal, variance ≤ 0 |
//! | `taker_buy_ratio` | taker_buy_volume / v | v = 0 |
//! | `imbalance_1m`, `spread_bps_1m`, `wmid_offset_bps_1m` | the minute's book features (`ta.book_features`: time-weighted imbalance, time-weighted spread, weighted-mid offset of the last quote) | no book rows in the minute |
//! | `<column>_z` (every column above but the two volume z-scores) | z-score of the column over the last [`Z_WINDOW`] = 60 candles, formula as `vol_z_1d` | the column is None at any of those 60 candles, the 60 values are equal, variance ≤ 0 |
//!
//! A value whose magnitude exceeds 1e150 (its square would overflow) counts as missing; a
//! result that is not finite is None.

use super::exact::ExactSum;
use crate::screener::{Candle, Checkpoint, Engine, EngineError, Volume, WINDOWS};

/// Version of the feature column set (the `version` of the `ta_features` NOTIFY payload).
/// Bumped on any change of a column's name, formula or NULL rule.
pub const FEATURE_VERSION: i32 = 1;

/// Window of the `_z` variants, in candles.
pub const Z_WINDOW: usize = 60;

/// Candles before a candle that its feature row needs (`ret_1d_z`: 1440 + 59).
pub const HISTORY: usize = 1440 + Z_WINDOW - 1;

/// Lags of `ret_*`, in candles.
pub const RET_LAGS: [usize; 6] = [1, 5, 15, 60, 240, 1440];
const DAY: usize = 1440;
const BB_PERIOD: usize = 20;
const BB_NB_DEV: f64 = 2.0;
const MAX_ABS: f64 = 1e150;

/// The base columns, in row order.
pub const BASE_COLUMNS: [&str; 22] = [
    "ret_1m",
    "ret_5m",
    "ret_15m",
    "ret_1h",
    "ret_4h",
    "ret_1d",
    "rv_5m",
    "rv_15m",
    "rv_1h",
    "rv_4h",
    "rv_8h",
    "rv_1d",
    "rsi_14",
    "macd_hist",
    "bb_pct_b",
    "vwap_dist_1d",
    "vol_z_1d",
    "quote_vol_z_1d",
    "taker_buy_ratio",
    "imbalance_1m",
    "spread_bps_1m",
    "wmid_offset_bps_1m",
];
/// Number of base columns.
pub const N_BASE: usize = BASE_COLUMNS.len();
const VOL_Z: usize = 16;
const QUOTE_VOL_Z: usize = 17;
/// The base columns that have a `_z` variant (all but the two volume z-scores), in row order.
pub const Z_OF: [usize; 20] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18, 19, 20, 21,
];
/// Number of feature columns (base, then the `_z` variants).
pub const N_FEATURES: usize = N_BASE + Z_OF.len();

/// Every feature column name, in row order.
pub fn column_names() -> Vec<String> {
    BASE_COLUMNS
        .iter()
        .map(|s| s.to_string())
        .chain(Z_OF.iter().map(|&i| format!("{}_z", BASE_COLUMNS[i])))
        .collect()
}

/// The book features of a minute (None: no book rows, or undefined).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BookInput {
    pub imbalance: Option<f64>,
    pub spread_bps: Option<f64>,
    pub wmid_offset_bps: Option<f64>,
}

/// What the features need of a candle besides the screener's [`Candle`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Extra {
    /// base volume
    pub volume: f64,
    /// quote volume (the candle's, as a double)
    pub quote_volume: f64,
    /// taker-buy base volume
    pub taker_buy_volume: f64,
    pub book: BookInput,
}

/// The feature row of one candle.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub open_time: i64,
    pub close_time: i64,
    /// per [`column_names`]
    pub values: [Option<f64>; N_FEATURES],
}

/// A quote volume the engine does not keep: the features-only path (`features_range`, the
/// training-set export) runs the screener engine for its RSI/MACD chain and never builds a
/// screener row, so it needs no exact volume arithmetic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NoVolume;

impl Volume for NoVolume {
    fn zero() -> Self {
        NoVolume
    }
    fn add(&self, _: &Self) -> Self {
        NoVolume
    }
    fn sub(&self, _: &Self) -> Self {
        NoVolume
    }
    fn to_f64(&self) -> f64 {
        0.0
    }
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[inline]
fn usable(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && v.abs() <= MAX_ABS)
}

#[inline]
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A ring of the last `cap` values by position (NaN = missing).
#[derive(Debug, Clone)]
struct Ring {
    buf: Vec<f64>,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            buf: vec![f64::NAN; cap],
        }
    }
    #[inline]
    fn put(&mut self, pos: u64, x: f64) {
        let n = self.buf.len() as u64;
        self.buf[(pos % n) as usize] = x;
    }
    /// The value at `pos` (the caller checks it is among the last `cap` pushed).
    #[inline]
    fn get(&self, pos: u64) -> f64 {
        let n = self.buf.len() as u64;
        self.buf[(pos % n) as usize]
    }
}

/// Exact sums of a window's values and squares, for its mean and z-score, with its missing
/// count and trailing run of equal values (the window's ring is kept by the caller).
#[derive(Debug, Clone)]
struct Moments {
    s1: ExactSum,
    s2: ExactSum,
    /// missing values in the window
    missing: usize,
    /// trailing run of equal values (0 after a missing one)
    run: usize,
    last: f64,
}

impl Moments {
    fn new() -> Self {
        Moments {
            s1: ExactSum::new(),
            s2: ExactSum::new(),
            missing: 0,
            run: 0,
            last: f64::NAN,
        }
    }

    /// The value `o` (NaN = missing) leaves the window.
    #[inline]
    fn leave(&mut self, o: f64) {
        if o.is_nan() {
            self.missing -= 1;
        } else {
            self.s1.sub(o);
            self.s2.sub(o * o);
        }
    }

    /// `x` enters the window; returns what the ring keeps for it (NaN = missing).
    #[inline]
    fn enter(&mut self, x: Option<f64>) -> f64 {
        match x {
            Some(x) => {
                self.s1.add(x);
                self.s2.add(x * x);
                self.run = if x == self.last { self.run + 1 } else { 1 };
                self.last = x;
                x
            }
            None => {
                self.missing += 1;
                self.run = 0;
                self.last = f64::NAN;
                f64::NAN
            }
        }
    }

    /// (x − μ)/√(fsum(x²)/n − μ²) of the newest value x, μ = fsum(x)/n, when the window of
    /// `n` has been filled (`filled`) with no value missing and not all equal.
    fn zscore(&self, n: usize, filled: bool) -> Option<f64> {
        if !filled || self.missing != 0 || self.run >= n {
            return None;
        }
        let n = n as f64;
        let mean = self.s1.value() / n;
        let var = self.s2.value() / n - mean * mean;
        // var <= 0 (rounding) or NaN: no z-score
        if var.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        finite((self.last - mean) / var.sqrt())
    }
}

/// A column's last `n` values (ring) and their [`Moments`].
#[derive(Debug, Clone)]
struct Rolling {
    n: usize,
    ring: Ring,
    count: u64,
    m: Moments,
}

impl Rolling {
    fn new(n: usize) -> Self {
        Rolling {
            n,
            ring: Ring::new(n),
            count: 0,
            m: Moments::new(),
        }
    }

    #[inline]
    fn push(&mut self, x: Option<f64>) {
        if self.count >= self.n as u64 {
            self.m.leave(self.ring.get(self.count));
        }
        let v = self.m.enter(x);
        self.ring.put(self.count, v);
        self.count += 1;
    }

    /// The window has `n` values, none missing.
    #[inline]
    fn full(&self) -> bool {
        self.count >= self.n as u64 && self.m.missing == 0
    }

    fn zscore(&self) -> Option<f64> {
        self.m.zscore(self.n, self.count >= self.n as u64)
    }
}

/// Number of `_z` columns.
const NZ: usize = Z_OF.len();

/// The windows of the `_z` columns: one ring of the last [`Z_WINDOW`] input rows (a push
/// reads and writes one contiguous row) and each column's [`Moments`].
#[derive(Debug, Clone)]
struct ZWindows {
    ring: Vec<[f64; NZ]>,
    count: u64,
    cols: [Moments; NZ],
}

impl ZWindows {
    fn new() -> Self {
        ZWindows {
            ring: vec![[f64::NAN; NZ]; Z_WINDOW],
            count: 0,
            cols: std::array::from_fn(|_| Moments::new()),
        }
    }

    /// The row the next push replaces (a copy; all NaN before the window is full).
    #[inline]
    fn oldest(&self) -> [f64; NZ] {
        self.ring[(self.count % Z_WINDOW as u64) as usize]
    }

    /// Pushes a row; `old` = [`ZWindows::oldest`], read beforehand.
    #[inline]
    fn push(&mut self, xs: [Option<f64>; NZ], old: [f64; NZ]) {
        let filled = self.count >= Z_WINDOW as u64;
        let row = &mut self.ring[(self.count % Z_WINDOW as u64) as usize];
        for (((m, slot), x), o) in self.cols.iter_mut().zip(row.iter_mut()).zip(xs).zip(old) {
            if filled {
                m.leave(o);
            }
            *slot = m.enter(x);
        }
        self.count += 1;
    }

    fn zscore(&self, j: usize) -> Option<f64> {
        self.cols[j].zscore(Z_WINDOW, self.count >= Z_WINDOW as u64)
    }
}

/// Rolling state of the candle and book features (everything but the screener chain).
#[derive(Debug, Clone)]
struct FeatureState {
    /// candles pushed
    seen: u64,
    closes: Ring,
    /// r_i² (NaN: no log return)
    sq: Ring,
    sq_sum: [ExactSum; 6],
    sq_missing: [usize; 6],
    volume: Rolling,
    quote_volume: Rolling,
    base: [Option<f64>; N_BASE],
    z: ZWindows,
}

impl FeatureState {
    fn new() -> Self {
        FeatureState {
            seen: 0,
            closes: Ring::new(DAY + 1),
            sq: Ring::new(DAY),
            sq_sum: Default::default(),
            sq_missing: [0; 6],
            volume: Rolling::new(DAY),
            quote_volume: Rolling::new(DAY),
            base: [None; N_BASE],
            z: ZWindows::new(),
        }
    }

    fn push(&mut self, close: f64, x: &Extra, rsi: Option<f64>, macd_hist: Option<f64>) {
        let pos = self.seen;
        let seen = pos + 1;
        let mut b = [None; N_BASE];
        // every ring value this step reads, loaded before any arithmetic: the loads are
        // independent, so their cache misses overlap (the live path steps hundreds of
        // instruments whose states do not fit in the CPU caches)
        let lags: [Option<f64>; 6] = std::array::from_fn(|i| {
            let lag = RET_LAGS[i] as u64;
            (pos >= lag).then(|| self.closes.get(pos - lag))
        });
        let sq_old: [Option<f64>; 6] = std::array::from_fn(|w| {
            let n = WINDOWS[w] as u64;
            (pos >= n).then(|| self.sq.get(pos - n))
        });
        let z_old = self.z.oldest();
        let lr = |p: f64| (close > 0.0 && p > 0.0).then(|| (close / p).ln());
        // ret_*
        for (i, lag) in lags.iter().enumerate() {
            b[i] = lag.and_then(lr).and_then(finite);
        }
        // rv_*: r² of this candle into the ring and the six window sums
        debug_assert_eq!(RET_LAGS[0], 1);
        let r2 = usable(lags[0].and_then(lr)).map(|r| r * r);
        for (w, &n) in WINDOWS.iter().enumerate() {
            if let Some(o) = sq_old[w] {
                if o.is_nan() {
                    self.sq_missing[w] -= 1;
                } else {
                    self.sq_sum[w].sub(o);
                }
            }
            match r2 {
                Some(v) => self.sq_sum[w].add(v),
                None => self.sq_missing[w] += 1,
            }
            b[6 + w] = (seen > n as u64 && self.sq_missing[w] == 0)
                .then(|| self.sq_sum[w].value().sqrt())
                .and_then(finite);
        }
        self.sq.put(pos, r2.unwrap_or(f64::NAN));
        self.closes.put(pos, close);
        // the screener's RSI and MACD histogram
        b[12] = rsi;
        b[13] = macd_hist;
        // bb_pct_b over the last 20 closes
        if seen >= BB_PERIOD as u64 {
            let w = (seen - BB_PERIOD as u64..seen).map(|p| self.closes.get(p));
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            let mut s = ExactSum::new();
            for c in w.clone() {
                lo = lo.min(c);
                hi = hi.max(c);
                s.add(c);
            }
            let mean = s.value() / BB_PERIOD as f64;
            let mut d = ExactSum::new();
            for c in w {
                let e = c - mean;
                d.add(e * e);
            }
            let sd = (d.value() / BB_PERIOD as f64).sqrt();
            b[14] = (lo != hi && sd > 0.0 && close.abs() <= MAX_ABS)
                .then(|| {
                    let lower = mean - BB_NB_DEV * sd;
                    let upper = mean + BB_NB_DEV * sd;
                    (close - lower) / (upper - lower)
                })
                .and_then(finite);
        }
        // volumes: z-scores over the day and the day's VWAP
        self.volume.push(usable(Some(x.volume)));
        self.quote_volume.push(usable(Some(x.quote_volume)));
        if self.volume.full() && self.quote_volume.full() {
            let v = self.volume.m.s1.value();
            if v > 0.0 {
                let vwap = self.quote_volume.m.s1.value() / v;
                b[15] = (vwap > 0.0 && close > 0.0)
                    .then(|| (close / vwap).ln())
                    .and_then(finite);
            }
        }
        b[VOL_Z] = self.volume.zscore();
        b[QUOTE_VOL_Z] = self.quote_volume.zscore();
        b[18] = (x.volume != 0.0)
            .then(|| x.taker_buy_volume / x.volume)
            .and_then(finite);
        b[19] = x.book.imbalance.and_then(finite);
        b[20] = x.book.spread_bps.and_then(finite);
        b[21] = x.book.wmid_offset_bps.and_then(finite);
        self.z
            .push(std::array::from_fn(|j| usable(b[Z_OF[j]])), z_old);
        self.base = b;
        self.seen = seen;
    }

    fn values(&self) -> [Option<f64>; N_FEATURES] {
        let mut v = [None; N_FEATURES];
        v[..N_BASE].copy_from_slice(&self.base);
        for j in 0..NZ {
            v[N_BASE + j] = self.z.zscore(j);
        }
        v
    }
}

/// The screener engine plus the features of one instrument (see the module docs).
#[derive(Debug, Clone)]
pub struct FeatureEngine<V> {
    engine: Engine<V>,
    state: FeatureState,
    times: Option<(i64, i64)>,
    /// a candle was pushed with [`FeatureEngine::push_screener`]: the features are unknown
    stale: bool,
}

impl<V: Volume> Default for FeatureEngine<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Volume> FeatureEngine<V> {
    /// At the start of a series.
    pub fn new() -> Self {
        FeatureEngine {
            engine: Engine::new(),
            state: FeatureState::new(),
            times: None,
            stale: false,
        }
    }

    /// Continuing a series from the screener chain `cp` (see [`Engine::from_checkpoint`]); the
    /// features' windows start empty. # Errors [`EngineError::InvalidCheckpoint`].
    pub fn from_checkpoint(cp: Checkpoint<V>) -> Result<Self, EngineError> {
        Ok(FeatureEngine {
            engine: Engine::from_checkpoint(cp)?,
            state: FeatureState::new(),
            times: None,
            stale: false,
        })
    }

    /// Adds the next candle. # Errors: those of [`Engine::push`] (the engine is then
    /// unchanged).
    pub fn push(&mut self, c: Candle<V>, x: &Extra) -> Result<(), EngineError> {
        let (close, times) = (c.close, (c.open_time, c.close_time));
        self.engine.push(c)?;
        let (rsi, macd) = self.engine.rsi_macd();
        self.state.push(close, x, rsi, macd[2]);
        self.times = Some(times);
        Ok(())
    }

    /// Adds the next candle to the screener engine only (the live path while nothing reads
    /// the features): the features' windows miss it, so from now on the engine has no
    /// features ([`FeatureEngine::features`] is None, [`FeatureEngine::is_stale`]); a new
    /// engine loaded from the candles has them again. # Errors: those of [`Engine::push`].
    pub fn push_screener(&mut self, c: Candle<V>) -> Result<(), EngineError> {
        let times = (c.open_time, c.close_time);
        self.engine.push(c)?;
        self.times = Some(times);
        self.stale = true;
        Ok(())
    }

    /// A candle was pushed without its features ([`FeatureEngine::push_screener`]).
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The screener engine (its row, chain and day checkpoint of the newest candle).
    pub fn screener(&self) -> &Engine<V> {
        &self.engine
    }

    /// The feature row of the newest candle (None before the first push, and once stale).
    pub fn features(&self) -> Option<FeatureRow> {
        if self.stale {
            return None;
        }
        let (open_time, close_time) = self.times?;
        Some(FeatureRow {
            open_time,
            close_time,
            values: self.state.values(),
        })
    }
}
