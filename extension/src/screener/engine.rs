//! The screener engine: every metric of the screener row of one instrument, candle by candle.
//!
//! - **Input**: the 1m candles of one instrument in increasing `open_time` ([`Candle`]: times in
//!   µs since a midnight-aligned epoch such as PostgreSQL's 2000-01-01 or Unix 1970-01-01;
//!   prices as f64; quote volume as an exact decimal `V`, see [`Volume`]).
//! - **State**: the *chain* ([`Checkpoint`]: what must be carried from the first candle of the
//!   series: candle count, last open time and close, running quote volume, running sum of
//!   squared log returns, RSI(14) and MACD(12,26,9) streaming states) and the *windows*
//!   ([`SlidingWindows`], rebuilt from the last [`super::HISTORY`] candles). An engine started from a
//!   checkpoint with `candles = k` has seen candles k+1.. only: a value that needs an earlier
//!   candle is None (a too-short warm-up gives NULL, never a partial window).
//! - **Output**, after each [`Engine::push`]: [`Engine::row`] (the [`ScreenerRow`] of that
//!   candle, computed on demand), [`Engine::chain`] (the checkpoint after it) and
//!   [`Engine::day_checkpoint`] (the checkpoint before it when it is the first candle of its UTC
//!   day: its UTC date differs from the previous candle's, or it is the first candle of the
//!   series).
//! - **Formulas**: pg_ta 0.1.0's SQL (`sql/003_screener_state.sql`, `_state_append_lookup`, and
//!   `sql/004_metrics.sql`, `market._metrics`, at commit 5dea118), with the same IEEE operations
//!   in the same order ([`super::pgfloat`], PostgreSQL's checks included) and `V` arithmetic for
//!   the volumes, so every value equals 0.1.0's bit for bit (floats) and by value and scale
//!   (numerics); `tests/parity/test_screener_engine.py` proves it on real Binance data. Windows
//!   count candles, not minutes: after an exchange outage a window spans more wall-clock time.
//! - **Errors**: [`EngineError`]; on error the engine is unchanged.

use std::cmp::Ordering;

use super::pgfloat::{self as f8, FloatError};
use super::windows::{Recent, SlidingWindows, WINDOWS};
use crate::indicators::macd::{Macd, MACD_STATE_LEN};
use crate::indicators::rsi::{Rsi, RSI_STATE_LEN};

/// RSI period of the screener row (`rsi_14`).
pub const RSI_PERIOD: i32 = 14;
/// MACD periods of the screener row (`macd`, `macd_signal`, `macd_hist`).
pub const MACD_PERIODS: (i32, i32, i32) = (12, 26, 9);
/// Length of a checkpoint's `rsi_state`: `ta.rsi_step`'s layout (output, then the state).
pub const RSI_ARRAY_LEN: usize = 1 + RSI_STATE_LEN;
/// Length of a checkpoint's `macd_state`: `ta.macd_step`'s layout (3 outputs, the state).
pub const MACD_ARRAY_LEN: usize = 3 + MACD_STATE_LEN;
/// Candles before the first RSI(14) value / the first MACD(12,26,9) value.
const RSI_LOOKBACK: i64 = 14;
const MACD_LOOKBACK: i64 = 33;
const DAY_MICROS: i64 = 86_400_000_000;

/// An exact decimal quote volume. The SQL wrapper implements it with PostgreSQL's own
/// `numeric_add`, `numeric_sub`, `numeric_float8` and `numeric_cmp` (results equal SQL numeric
/// arithmetic in value and display scale); the tests use an exact integer type.
pub trait Volume: Clone {
    /// The running volume of a fresh series: numeric `0` (scale 0).
    fn zero() -> Self;
    /// `self + other`.
    fn add(&self, other: &Self) -> Self;
    /// `self - other`.
    fn sub(&self, other: &Self) -> Self;
    /// `self::float8` (correctly rounded, as PostgreSQL's cast).
    fn to_f64(&self) -> f64;
    /// Numeric order (by value; 1.0 = 1.00).
    fn cmp(&self, other: &Self) -> Ordering;
}

/// One 1m candle.
#[derive(Debug, Clone, PartialEq)]
pub struct Candle<V> {
    pub open_time: i64,
    pub close_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub quote_volume: V,
}

/// The chain state of an instrument (SQL `ta.screener_checkpoint`); every field is optional
/// so that [`Engine::from_checkpoint`] is the one place a checkpoint is validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint<V> {
    /// candles of the series so far
    pub candles: Option<i64>,
    /// open time of the last of them
    pub open_time: Option<i64>,
    /// close of the last of them
    pub close: Option<f64>,
    /// sum of their quote volumes
    pub cum_quote_volume: Option<V>,
    /// sum of their squared log returns
    pub sum_log_return_sq: Option<f64>,
    /// `ta.rsi_step(.., 14)` array after the last of them
    pub rsi_state: Option<Vec<Option<f64>>>,
    /// `ta.macd_step(.., 12, 26, 9)` array after the last of them
    pub macd_state: Option<Vec<Option<f64>>>,
}

impl<V: Volume> Checkpoint<V> {
    /// The chain before the first candle: `(0, NULL, NULL, 0, 0, NULL, NULL)`.
    pub fn fresh() -> Self {
        Checkpoint {
            candles: Some(0),
            open_time: None,
            close: None,
            cum_quote_volume: Some(V::zero()),
            sum_log_return_sq: Some(0.0),
            rsi_state: None,
            macd_state: None,
        }
    }
}

/// The seven metrics of one window (5m, 15m, 1h, 4h, 8h, 1d).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowMetrics<V> {
    /// open of the first candle of the window
    pub open: Option<f64>,
    pub high: Option<f64>,
    pub low: Option<f64>,
    /// (price - open) / open * 100, percent
    pub change: Option<f64>,
    /// (high - low) / low * 100, percent
    pub range: Option<f64>,
    /// sum of quote volumes of the window
    pub vol: Option<V>,
    /// vol / quote volume of the window before (NULL until 2N candles)
    pub vol_ratio: Option<f64>,
}

/// The screener row of one candle (SQL `ta.screener_row` without market and symbol).
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenerRow<V> {
    pub open_time: i64,
    pub close_time: i64,
    pub candles: i64,
    pub price: f64,
    pub change_1m: Option<f64>,
    pub vol_1m: V,
    /// per [`WINDOWS`]
    pub windows: [WindowMetrics<V>; 6],
    pub min_change_1m_3: Option<f64>,
    pub max_change_1m_3: Option<f64>,
    pub min_vol_1m_3: Option<V>,
    pub volatility_10: Option<f64>,
    pub vcp: Option<f64>,
    /// pivot, r1, r2, r3, s1, s2, s3 of the 1d window
    pub fib: [Option<f64>; 7],
    pub rsi_14: Option<f64>,
    /// macd, macd_signal, macd_hist
    pub macd: [Option<f64>; 3],
}

/// Why a candle or a checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// Candles must come in strictly increasing open_time.
    #[error("open_time {got} is not after the previous candle's open_time {last}")]
    NotIncreasing { last: i64, got: i64 },
    /// A NaN or infinite price.
    #[error("{name} must be a finite number, got {value}")]
    NonFinite { name: &'static str, value: f64 },
    /// A float8 operation failed as it does in SQL (overflow, underflow, ...).
    #[error("{err} (computing {metric})")]
    Float {
        metric: &'static str,
        err: FloatError,
    },
    /// A checkpoint that no series produces.
    #[error("invalid checkpoint: {reason}")]
    InvalidCheckpoint { reason: String },
}

fn fe(metric: &'static str) -> impl Fn(FloatError) -> EngineError {
    move |err| EngineError::Float { metric, err }
}

fn bad(reason: impl Into<String>) -> EngineError {
    EngineError::InvalidCheckpoint {
        reason: reason.into(),
    }
}

/// The chain, decoded.
#[derive(Debug, Clone)]
struct Chain<V> {
    candles: i64,
    open_time: Option<i64>,
    close: Option<f64>,
    cum: V,
    sum_lr2: f64,
    rsi: Option<Rsi>,
    rsi_out: Option<f64>,
    macd: Option<Macd>,
    macd_out: [Option<f64>; 3],
}

impl<V: Volume> Chain<V> {
    fn checkpoint(&self) -> Checkpoint<V> {
        Checkpoint {
            candles: Some(self.candles),
            open_time: self.open_time,
            close: self.close,
            cum_quote_volume: Some(self.cum.clone()),
            sum_log_return_sq: Some(self.sum_lr2),
            rsi_state: self.rsi.as_ref().map(|r| {
                let mut v = Vec::with_capacity(RSI_ARRAY_LEN);
                v.push(self.rsi_out);
                v.extend(r.to_state().into_iter().map(Some));
                v
            }),
            macd_state: self.macd.as_ref().map(|m| {
                let mut v = Vec::with_capacity(MACD_ARRAY_LEN);
                v.extend(self.macd_out);
                v.extend(m.to_state().into_iter().map(Some));
                v
            }),
        }
    }
}

/// The newest candle's own values (its open, close and volume are in the windows).
#[derive(Debug, Clone)]
struct Current {
    open_time: i64,
    close_time: i64,
    high: f64,
    low: f64,
}

/// The screener engine of one instrument (see the module docs).
#[derive(Debug, Clone)]
pub struct Engine<V> {
    chain: Chain<V>,
    /// the chain before the newest candle, when that candle is the first of its UTC day
    before: Option<Chain<V>>,
    current: Option<Current>,
    windows: SlidingWindows<V>,
}

impl<V: Volume> Default for Engine<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes the state part of a `ta.*_step` array (after `outputs` output elements).
fn state_part(name: &str, a: &[Option<f64>], outputs: usize) -> Result<Vec<f64>, EngineError> {
    a[outputs..]
        .iter()
        .enumerate()
        .map(|(i, x)| x.ok_or_else(|| bad(format!("{name} element {} is NULL", outputs + i + 1))))
        .collect()
}

/// Checks the output elements of a `ta.*_step` array: NULL exactly during the lookback,
/// finite after it.
fn check_outputs(
    name: &str,
    out: &[Option<f64>],
    candles: i64,
    lookback: i64,
) -> Result<(), EngineError> {
    for (i, x) in out.iter().enumerate() {
        match x {
            Some(v) if !v.is_finite() => {
                return Err(bad(format!("{name} element {} is not finite", i + 1)))
            }
            Some(_) if candles <= lookback => {
                return Err(bad(format!(
                    "{name} element {} must be NULL after {candles} candles (lookback {lookback})",
                    i + 1
                )))
            }
            None if candles > lookback => {
                return Err(bad(format!(
                    "{name} element {} is NULL after {candles} candles",
                    i + 1
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

impl<V: Volume> Engine<V> {
    /// An engine at the start of a series.
    pub fn new() -> Self {
        Engine {
            chain: Chain {
                candles: 0,
                open_time: None,
                close: None,
                cum: V::zero(),
                sum_lr2: 0.0,
                rsi: None,
                rsi_out: None,
                macd: None,
                macd_out: [None; 3],
            },
            before: None,
            current: None,
            windows: SlidingWindows::new(V::zero()),
        }
    }

    /// An engine continuing a series from its chain state. The checkpoint must be one a
    /// series produces: `candles >= 0`; a fresh one is `(0, NULL, NULL, 0, 0, NULL, NULL)`
    /// (any zero volume); otherwise open_time and a finite close are set, the sum of squares
    /// is finite and >= 0, and the RSI/MACD arrays are valid `ta.rsi_step(.., 14)` /
    /// `ta.macd_step(.., 12, 26, 9)` states of `candles` values whose last value is `close`.
    /// # Errors [`EngineError::InvalidCheckpoint`].
    pub fn from_checkpoint(cp: Checkpoint<V>) -> Result<Self, EngineError> {
        let candles = cp.candles.ok_or_else(|| bad("candles is NULL"))?;
        if candles < 0 {
            return Err(bad(format!("candles must be >= 0, got {candles}")));
        }
        let cum = cp
            .cum_quote_volume
            .ok_or_else(|| bad("cum_quote_volume is NULL"))?;
        let sum_lr2 = cp
            .sum_log_return_sq
            .ok_or_else(|| bad("sum_log_return_sq is NULL"))?;
        if !(sum_lr2.is_finite() && sum_lr2 >= 0.0) {
            return Err(bad(format!(
                "sum_log_return_sq must be a finite number >= 0, got {sum_lr2}"
            )));
        }
        let mut e = Self::new();
        if candles == 0 {
            if cp.open_time.is_some()
                || cp.close.is_some()
                || cp.rsi_state.is_some()
                || cp.macd_state.is_some()
                || sum_lr2 != 0.0
                || cum.cmp(&V::zero()) != Ordering::Equal
            {
                return Err(bad(
                    "a checkpoint with candles = 0 must be (0, NULL, NULL, 0, 0, NULL, NULL)",
                ));
            }
            e.chain.cum = cum;
            return Ok(e);
        }
        let open_time = cp
            .open_time
            .ok_or_else(|| bad("open_time is NULL with candles > 0"))?;
        let close = cp
            .close
            .ok_or_else(|| bad("close is NULL with candles > 0"))?;
        if !close.is_finite() {
            return Err(bad(format!("close must be finite, got {close}")));
        }
        let rsi_a = cp
            .rsi_state
            .ok_or_else(|| bad("rsi_state is NULL with candles > 0"))?;
        if rsi_a.len() != RSI_ARRAY_LEN {
            return Err(bad(format!(
                "rsi_state must have {RSI_ARRAY_LEN} elements, got {}",
                rsi_a.len()
            )));
        }
        check_outputs("rsi_state", &rsi_a[..1], candles, RSI_LOOKBACK)?;
        let rsi = Rsi::from_state(&state_part("rsi_state", &rsi_a, 1)?, RSI_PERIOD)
            .map_err(|err| bad(format!("rsi_state: {err}")))?;
        let rsi_seen = (candles as u64).min(RSI_PERIOD as u64 + 2) as usize;
        if rsi.seen() != rsi_seen || rsi.prev_value() != close {
            return Err(bad(format!(
                "rsi_state is not the RSI state after {candles} candles ending with close {close}"
            )));
        }
        let macd_a = cp
            .macd_state
            .ok_or_else(|| bad("macd_state is NULL with candles > 0"))?;
        if macd_a.len() != MACD_ARRAY_LEN {
            return Err(bad(format!(
                "macd_state must have {MACD_ARRAY_LEN} elements, got {}",
                macd_a.len()
            )));
        }
        check_outputs("macd_state", &macd_a[..3], candles, MACD_LOOKBACK)?;
        let (fp, sp, gp) = MACD_PERIODS;
        let macd = Macd::from_state(&state_part("macd_state", &macd_a, 3)?, fp, sp, gp)
            .map_err(|err| bad(format!("macd_state: {err}")))?;
        if macd.seen() != (candles as u64).min(sp as u64 + 1) as usize {
            return Err(bad(format!(
                "macd_state is not the MACD state after {candles} candles"
            )));
        }
        e.chain = Chain {
            candles,
            open_time: Some(open_time),
            close: Some(close),
            cum,
            sum_lr2,
            rsi: Some(rsi),
            rsi_out: rsi_a[0],
            macd: Some(macd),
            macd_out: [macd_a[0], macd_a[1], macd_a[2]],
        };
        Ok(e)
    }

    /// Candles of the series so far (the newest candle's `candles`).
    pub fn candles(&self) -> i64 {
        self.chain.candles
    }

    /// Candles this engine has seen (since its start).
    pub fn seen(&self) -> i64 {
        self.windows.seen()
    }

    /// Open time of the newest candle of the series (None for a fresh series).
    pub fn last_open_time(&self) -> Option<i64> {
        self.chain.open_time
    }

    /// RSI(14) and MACD(12,26,9) (macd, macd_signal, macd_hist) after the newest candle
    /// (the screener row's `rsi_14` and `macd*`, without building the row).
    pub fn rsi_macd(&self) -> (Option<f64>, [Option<f64>; 3]) {
        (self.chain.rsi_out, self.chain.macd_out)
    }

    /// True when the newest pushed candle is the first of its UTC day.
    pub fn is_day_first(&self) -> bool {
        self.before.is_some()
    }

    /// Adds the next candle. # Errors: [`EngineError::NotIncreasing`],
    /// [`EngineError::NonFinite`], [`EngineError::Float`] (the engine is then unchanged).
    pub fn push(&mut self, c: Candle<V>) -> Result<(), EngineError> {
        for (name, value) in [
            ("open", c.open),
            ("high", c.high),
            ("low", c.low),
            ("close", c.close),
        ] {
            if !value.is_finite() {
                return Err(EngineError::NonFinite { name, value });
            }
        }
        let day_first = match self.chain.open_time {
            Some(last) if c.open_time <= last => {
                return Err(EngineError::NotIncreasing {
                    last,
                    got: c.open_time,
                })
            }
            Some(last) => last.div_euclid(DAY_MICROS) != c.open_time.div_euclid(DAY_MICROS),
            None => true,
        };
        // everything that can fail, before anything changes
        // log_return = CASE WHEN close > 0 AND prev_close > 0 THEN ln(close / prev_close) END
        let lr = match self.chain.close {
            Some(prev) if c.close > 0.0 && prev > 0.0 => Some(
                f8::div(c.close, prev)
                    .and_then(f8::ln)
                    .map_err(fe("log_return"))?,
            ),
            _ => None,
        };
        // sum_log_return_sq = previous + coalesce(lr * lr, 0)
        let sq = match lr {
            Some(x) => f8::mul(x, x).map_err(fe("sum_log_return_sq"))?,
            None => 0.0,
        };
        let sum_lr2 = f8::add(self.chain.sum_lr2, sq).map_err(fe("sum_log_return_sq"))?;
        let mut rsi = match &self.chain.rsi {
            Some(r) => r.clone(),
            None => Rsi::new(RSI_PERIOD).expect("constant RSI period"),
        };
        let rsi_out = rsi.update(c.close);
        if !rsi.is_finite() || rsi_out.is_some_and(|x| !x.is_finite()) {
            return Err(EngineError::Float {
                metric: "rsi_14",
                err: FloatError::Overflow,
            });
        }
        let mut macd = match &self.chain.macd {
            Some(m) => m.clone(),
            None => {
                let (f, s, g) = MACD_PERIODS;
                Macd::new(f, s, g).expect("constant MACD periods")
            }
        };
        let macd_out = macd
            .update(c.close)
            .map(|o| [Some(o.macd), Some(o.macd_signal), Some(o.macd_hist)])
            .unwrap_or([None; 3]);
        if !macd.is_finite() || macd_out.iter().flatten().any(|x| !x.is_finite()) {
            return Err(EngineError::Float {
                metric: "macd",
                err: FloatError::Overflow,
            });
        }
        let seq = self
            .chain
            .candles
            .checked_add(1)
            .ok_or(EngineError::Float {
                metric: "candles",
                err: FloatError::Overflow,
            })?;
        let cum_after = self.chain.cum.add(&c.quote_volume);

        self.before = day_first.then(|| self.chain.clone());
        let cum_before = std::mem::replace(&mut self.chain.cum, cum_after);
        self.windows.push(
            seq,
            c.high,
            c.low,
            cum_before,
            Recent {
                open: c.open,
                close: c.close,
                quote_volume: c.quote_volume,
                log_return: lr,
                sum_log_return_sq: sum_lr2,
            },
        );
        let ch = &mut self.chain;
        ch.candles = seq;
        ch.open_time = Some(c.open_time);
        ch.close = Some(c.close);
        ch.sum_lr2 = sum_lr2;
        ch.rsi = Some(rsi);
        ch.rsi_out = rsi_out;
        ch.macd = Some(macd);
        ch.macd_out = macd_out;
        self.current = Some(Current {
            open_time: c.open_time,
            close_time: c.close_time,
            high: c.high,
            low: c.low,
        });
        Ok(())
    }

    /// The chain after the newest candle.
    pub fn chain(&self) -> Checkpoint<V> {
        self.chain.checkpoint()
    }

    /// The chain before the newest candle when it is the first of its UTC day, else None.
    pub fn day_checkpoint(&self) -> Option<Checkpoint<V>> {
        self.before.as_ref().map(Chain::checkpoint)
    }

    /// The screener row of the newest candle (None before the first push).
    /// # Errors [`EngineError::Float`] where the SQL formula raises.
    pub fn row(&self) -> Result<Option<ScreenerRow<V>>, EngineError> {
        let Some(cur) = &self.current else {
            return Ok(None);
        };
        let s = self.chain.candles;
        let w = &self.windows;
        w.prefetch_row(s);
        let me = w.recent(s).expect("the newest candle is in the windows");
        let (open, close, high, low) = (me.open, me.close, cur.high, cur.low);
        // cum_before + quote_volume (exactly the value and scale SQL's `+` gives)
        let cum_after = &self.chain.cum;

        let change_1m = pct_change(close, Some(open)).map_err(fe("change_1m"))?;

        let mut windows: Vec<WindowMetrics<V>> = Vec::with_capacity(WINDOWS.len());
        for (i, &n) in WINDOWS.iter().enumerate() {
            let n = n as i64;
            let start = s - n + 1;
            let w_open = w.open(start);
            let (w_high, w_low) = w.extremes(i);
            let metric = |m: [&'static str; 6]| fe(m[i]);
            // (close - open_N) / nullif(open_N, 0) * 100
            let change = pct_change(close, w_open).map_err(metric(CHANGE))?;
            // (high_N - low_N) / nullif(low_N, 0) * 100
            let range = match (w_high, w_low) {
                (Some(h), Some(l)) => pct_change(h, Some(l)).map_err(metric(RANGE))?,
                _ => None,
            };
            // vol_N = (cum_before + quote_volume) - cum_before_N
            let cb = w.cum_before(start);
            let vol = cb.map(|cb| cum_after.sub(cb));
            // vol_ratio_N = vol_N::float8 / nullif((cum_before_N - cum_before_prev_N)::float8, 0)
            let vol_ratio = match &vol {
                None => None,
                Some(v) => {
                    let num = v.to_f64();
                    match (cb, w.cum_before(s - 2 * n + 1)) {
                        (Some(cb), Some(prev)) => match f8::nullif_zero(cb.sub(prev).to_f64()) {
                            Some(den) => Some(f8::div(num, den).map_err(metric(VOL_RATIO))?),
                            None => None,
                        },
                        _ => None,
                    }
                }
            };
            windows.push(WindowMetrics {
                open: w_open,
                high: w_high,
                low: w_low,
                change,
                range,
                vol,
                vol_ratio,
            });
        }

        // the last 3 candles:
        // CASE WHEN seq >= 3 AND open > 0 AND open_m1 > 0 AND open_m2 > 0 THEN
        //   least/greatest((close - open) / nullif(open, 0), .._m1, .._m2) * 100 END
        let (m1, m2) = (w.recent(s - 1), w.recent(s - 2));
        let (min_change_1m_3, max_change_1m_3) = match (m1, m2) {
            (Some(m1), Some(m2)) if s >= 3 && open > 0.0 && m1.open > 0.0 && m2.open > 0.0 => {
                let ch = |c: f64, o: f64| f8::sub(c, o).and_then(|d| f8::div(d, o));
                let changes = || -> Result<[Option<f64>; 3], FloatError> {
                    Ok([
                        Some(ch(close, open)?),
                        Some(ch(m1.close, m1.open)?),
                        Some(ch(m2.close, m2.open)?),
                    ])
                };
                let lo = f8::least(changes().map_err(fe("min_change_1m_3"))?);
                let lo =
                    f8::mul(lo.expect("three values"), 100.0).map_err(fe("min_change_1m_3"))?;
                let hi = f8::greatest(changes().map_err(fe("max_change_1m_3"))?);
                let hi =
                    f8::mul(hi.expect("three values"), 100.0).map_err(fe("max_change_1m_3"))?;
                (Some(lo), Some(hi))
            }
            _ => (None, None),
        };
        // CASE WHEN seq >= 3 THEN least(quote_volume, quote_volume_m1, quote_volume_m2) END
        let min_vol_1m_3 = match (m1, m2) {
            (Some(m1), Some(m2)) if s >= 3 => f8::min_max(
                [
                    Some(&me.quote_volume),
                    Some(&m1.quote_volume),
                    Some(&m2.quote_volume),
                ],
                false,
                |a, b| a.cmp(b),
            )
            .cloned(),
            _ => None,
        };

        // volatility_10 (0.1.0's running-sum form; NULL log return of s-9 gives 0):
        // CASE WHEN seq >= 11 AND close > 0 AND close_m9 > 0 THEN
        //   sqrt(greatest((sum_lr2 - sum_lr2_m9 + lr_m9 * lr_m9) / 10
        //                 - ((ln(close / close_m9) + lr_m9) / 10) ^ 2, 0)) END
        let volatility_10 = match w.recent(s - 9) {
            Some(m9) if s >= 11 && close > 0.0 && m9.close > 0.0 => {
                Some(volatility_10(self.chain.sum_lr2, close, m9).map_err(fe("volatility_10"))?)
            }
            _ => None,
        };

        // vcp: CASE WHEN high = low THEN 0 ELSE (close / nullif((open + close) / 2, 0))
        //        * ((close - low) - (high - close)) / (high - low) END
        let vcp = if high == low {
            Some(0.0)
        } else {
            vcp(open, high, low, close).map_err(fe("vcp"))?
        };

        // Fibonacci pivots of the 1d window
        let fib = match w.extremes(WINDOWS.len() - 1) {
            (Some(h), Some(l)) => fib_pivots(h, l, close).map_err(fe("fib_pivot"))?,
            _ => [None; 7],
        };

        Ok(Some(ScreenerRow {
            open_time: cur.open_time,
            close_time: cur.close_time,
            candles: s,
            price: close,
            change_1m,
            vol_1m: me.quote_volume.clone(),
            windows: windows
                .try_into()
                .unwrap_or_else(|_| unreachable!("six windows")),
            min_change_1m_3,
            max_change_1m_3,
            min_vol_1m_3,
            volatility_10,
            vcp,
            fib,
            rsi_14: self.chain.rsi_out,
            macd: self.chain.macd_out,
        }))
    }
}

const CHANGE: [&str; 6] = [
    "change_5m",
    "change_15m",
    "change_1h",
    "change_4h",
    "change_8h",
    "change_1d",
];
const RANGE: [&str; 6] = [
    "range_5m",
    "range_15m",
    "range_1h",
    "range_4h",
    "range_8h",
    "range_1d",
];
const VOL_RATIO: [&str; 6] = [
    "vol_ratio_5m",
    "vol_ratio_15m",
    "vol_ratio_1h",
    "vol_ratio_4h",
    "vol_ratio_8h",
    "vol_ratio_1d",
];

/// `(x - base) / nullif(base, 0) * 100` (NULL base: NULL).
fn pct_change(x: f64, base: Option<f64>) -> Result<Option<f64>, FloatError> {
    let Some(b) = base else {
        return Ok(None);
    };
    let d = f8::sub(x, b)?;
    match f8::nullif_zero(b) {
        Some(b) => Ok(Some(f8::mul(f8::div(d, b)?, 100.0)?)),
        None => Ok(None),
    }
}

fn volatility_10<V>(sum_lr2: f64, close: f64, m9: &Recent<V>) -> Result<f64, FloatError> {
    let lr9 = m9.log_return;
    // every argument is evaluated (PostgreSQL evaluates the arguments of a strict operator
    // before it sees a NULL), NULL propagates through the operators
    let d = f8::sub(sum_lr2, m9.sum_log_return_sq)?;
    let sq = lr9.map(|x| f8::mul(x, x)).transpose()?;
    let a = match sq {
        Some(q) => Some(f8::div(f8::add(d, q)?, 10.0)?),
        None => None,
    };
    let l = f8::ln(f8::div(close, m9.close)?)?;
    let b = match lr9 {
        Some(x) => Some(f8::pow(f8::div(f8::add(l, x)?, 10.0)?, 2.0)?),
        None => None,
    };
    let x = match (a, b) {
        (Some(a), Some(b)) => Some(f8::sub(a, b)?),
        _ => None,
    };
    // greatest(x, 0): 0 when x is NULL
    f8::sqrt(f8::greatest([x, Some(0.0)]).expect("0 is not NULL"))
}

fn vcp(open: f64, high: f64, low: f64, close: f64) -> Result<Option<f64>, FloatError> {
    let wa = f8::div(f8::add(open, close)?, 2.0)?;
    let p_wa = match f8::nullif_zero(wa) {
        Some(wa) => Some(f8::div(close, wa)?),
        None => None,
    };
    let spread = f8::sub(f8::sub(close, low)?, f8::sub(high, close)?)?;
    let num = p_wa.map(|x| f8::mul(x, spread)).transpose()?;
    let range = f8::sub(high, low)?;
    num.map(|x| f8::div(x, range)).transpose()
}

/// pivot = (h + l + c) / 3; R/S = pivot ± {0.382, 0.618, 1.0} * (h - l).
fn fib_pivots(h: f64, l: f64, c: f64) -> Result<[Option<f64>; 7], FloatError> {
    let p = f8::div(f8::add(f8::add(h, l)?, c)?, 3.0)?;
    let r = f8::sub(h, l)?;
    let (k1, k2, k3) = (f8::mul(0.382, r)?, f8::mul(0.618, r)?, f8::mul(1.0, r)?);
    Ok([
        Some(p),
        Some(f8::add(p, k1)?),
        Some(f8::add(p, k2)?),
        Some(f8::add(p, k3)?),
        Some(f8::sub(p, k1)?),
        Some(f8::sub(p, k2)?),
        Some(f8::sub(p, k3)?),
    ])
}
