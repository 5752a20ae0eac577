//! Moving average convergence/divergence (TA-Lib: MACD).

use super::ema::Ema;
use super::{check_period, check_same_param, run_series, state_count, TaError};

/// Marker (first element) of a serialised MACD state, version 1.
pub const MACD_STATE_V1: f64 = 7201.0;
/// Length of a serialised MACD state: marker, fast, slow, signal, count, 3×3 EMA states.
pub const MACD_STATE_LEN: usize = 5 + 9;

/// One MACD output bar, TA-Lib's output names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdOutput {
    /// fast EMA − slow EMA
    pub macd: f64,
    /// EMA(signal_period) of `macd`
    pub macd_signal: f64,
    /// `macd − macd_signal`
    pub macd_hist: f64,
}

/// MACD (TA-Lib: MACD), streaming state.
/// # Input       one value per bar (usually the close), oldest first, price units.
/// # Output      `macd`, `macd_signal`, `macd_hist` in price units; `None` for the first
///   `slow_period−1 + signal_period−1` bars (33 for 12/26/9).
/// # Parameters  `fast_period` 2..=100_000, `slow_period` 2..=100_000 with
///   `fast_period < slow_period` (TA-Lib silently swaps them; we reject),
///   `signal_period` 1..=100_000. The fast and slow EMAs' seed windows end on the
///   same bar (`slow_period−1`): the fast EMA is seeded with the SMA of bars
///   `slow−fast ..= slow−1`. The signal EMA is seeded with the SMA of the first
///   `signal_period` MACD values.
/// # Errors      [`TaError::InvalidPeriod`], [`TaError::InvalidParameter`].
/// # Reference   TA-Lib `ta_MACD.c` (`TA_INT_MACD`); Gerald Appel (1979).
#[doc(alias = "MACD")]
#[derive(Debug, Clone, PartialEq)]
pub struct Macd {
    fast_n: usize,
    slow_n: usize,
    signal_n: usize,
    count: usize,
    fast: Ema,
    slow: Ema,
    signal: Ema,
}

impl Macd {
    /// New state; see the type's docs for the parameter ranges.
    pub fn new(fast_period: i32, slow_period: i32, signal_period: i32) -> Result<Self, TaError> {
        let fast_n = check_period("fast_period", fast_period, 2)?;
        let slow_n = check_period("slow_period", slow_period, 2)?;
        let signal_n = check_period("signal_period", signal_period, 1)?;
        if fast_n >= slow_n {
            return Err(TaError::InvalidParameter {
                name: "fast_period",
                value: format!("{fast_period} >= slow_period {slow_period}"),
                reason: "must be less than slow_period",
            });
        }
        Ok(Self {
            fast_n,
            slow_n,
            signal_n,
            count: 0,
            fast: Ema::with_period(fast_n),
            slow: Ema::with_period(slow_n),
            signal: Ema::with_period(signal_n),
        })
    }

    /// Adds one bar; returns the three outputs once the lookback has passed.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<MacdOutput> {
        let bar = self.count;
        if self.count <= self.slow_n {
            self.count += 1;
        }
        let slow = self.slow.update(x);
        // the fast EMA starts so that its seed window ends with the slow one's
        if bar + self.fast_n < self.slow_n {
            return None;
        }
        let fast = self.fast.update(x);
        let macd = fast? - slow?;
        let signal = self.signal.update(macd)?;
        Some(MacdOutput {
            macd,
            macd_signal: signal,
            macd_hist: macd - signal,
        })
    }

    /// Serialises the whole state (opaque to users; versioned by [`MACD_STATE_V1`]).
    pub fn to_state(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(MACD_STATE_LEN);
        v.extend_from_slice(&[
            MACD_STATE_V1,
            self.fast_n as f64,
            self.slow_n as f64,
            self.signal_n as f64,
            self.count as f64,
        ]);
        v.extend_from_slice(&self.fast.to_state());
        v.extend_from_slice(&self.slow.to_state());
        v.extend_from_slice(&self.signal.to_state());
        v
    }

    /// Restores a state written by [`Macd::to_state`]; the periods must match the stored ones.
    /// # Errors [`TaError::InvalidState`], [`TaError::ParameterChanged`], parameter errors.
    pub fn from_state(
        s: &[f64],
        fast_period: i32,
        slow_period: i32,
        signal_period: i32,
    ) -> Result<Self, TaError> {
        if s.len() != MACD_STATE_LEN || s[0] != MACD_STATE_V1 {
            return Err(TaError::InvalidState {
                reason: format!(
                    "not a MACD state (expected {MACD_STATE_LEN} elements starting with {MACD_STATE_V1})"
                ),
            });
        }
        let mut m = Self::new(fast_period, slow_period, signal_period)?;
        check_same_param("fast_period", s[1], fast_period)?;
        check_same_param("slow_period", s[2], slow_period)?;
        check_same_param("signal_period", s[3], signal_period)?;
        m.count = state_count(s[4], m.slow_n + 1)?;
        m.fast = Ema::from_state(m.fast_n, &s[5..8])?;
        m.slow = Ema::from_state(m.slow_n, &s[8..11])?;
        m.signal = Ema::from_state(m.signal_n, &s[11..14])?;
        // the EMAs' counters follow from the bar counter (see `update`): the slow EMA sees
        // every bar, the fast one starts slow-fast bars later, the signal line only after
        // the slow EMA is seeded
        let fast_seen = m.count.saturating_sub(m.slow_n - m.fast_n).min(m.fast_n);
        if m.slow.seen() != m.count.min(m.slow_n)
            || m.fast.seen() != fast_seen
            || (m.count < m.slow_n && m.signal.seen() != 0)
        {
            return Err(TaError::InvalidState {
                reason: format!(
                    "EMA counters {}, {}, {} do not match bar counter {}",
                    m.fast.seen(),
                    m.slow.seen(),
                    m.signal.seen(),
                    m.count
                ),
            });
        }
        Ok(m)
    }

    /// Bars seen so far, saturating at `slow_period + 1`.
    pub fn seen(&self) -> usize {
        self.count
    }

    /// True when the state holds only finite numbers.
    pub fn is_finite(&self) -> bool {
        self.fast.is_finite() && self.slow.is_finite() && self.signal.is_finite()
    }
}

/// MACD (TA-Lib: MACD) over a whole series.
/// # Errors see [`Macd::new`], and [`TaError::NonFiniteInput`].
#[doc(alias = "MACD")]
pub fn macd(
    values: &[f64],
    fast_period: i32,
    slow_period: i32,
    signal_period: i32,
) -> Result<Vec<Option<MacdOutput>>, TaError> {
    run_series(
        values,
        Macd::new(fast_period, slow_period, signal_period)?,
        Macd::update,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    fn split(v: &[Option<MacdOutput>]) -> [Vec<Option<f64>>; 3] {
        [
            v.iter().map(|o| o.map(|o| o.macd)).collect(),
            v.iter().map(|o| o.map(|o| o.macd_signal)).collect(),
            v.iter().map(|o| o.map(|o| o.macd_hist)).collect(),
        ]
    }

    #[test]
    fn golden_talib() {
        // TC1: TA-Lib MACD(12,26,9) and MACD(5,13,4), bit for bit; lookback 33
        let [m, s, h] = split(&macd(g::CLOSE, 12, 26, 9).unwrap());
        assert_series_exact(&m, g::MACD_12_26_9[0]);
        assert_series_exact(&s, g::MACD_12_26_9[1]);
        assert_series_exact(&h, g::MACD_12_26_9[2]);
        assert!(m[..33].iter().all(Option::is_none) && m[33].is_some());
        let [m, s, h] = split(&macd(g::CLOSE, 5, 13, 4).unwrap());
        assert_series_exact(&m, g::MACD_5_13_4[0]);
        assert_series_exact(&s, g::MACD_5_13_4[1]);
        assert_series_exact(&h, g::MACD_5_13_4[2]);
    }

    #[test]
    fn edge_cases() {
        // TC2: fast >= slow rejected (TA-Lib would swap)
        assert!(matches!(
            macd(&[], 26, 12, 9),
            Err(TaError::InvalidParameter { .. })
        ));
        assert!(matches!(
            macd(&[], 12, 12, 9),
            Err(TaError::InvalidParameter { .. })
        ));
        assert!(matches!(
            macd(&[], 12, 26, 0),
            Err(TaError::InvalidPeriod { .. })
        ));
        // TC3: constant series -> all zero
        let c = macd(&[3.0; 60], 12, 26, 9).unwrap();
        assert!(c[33..].iter().all(|o| *o
            == Some(MacdOutput {
                macd: 0.0,
                macd_signal: 0.0,
                macd_hist: 0.0
            })));
        // TC4: shorter than the lookback
        assert!(macd(&[1.0; 33], 12, 26, 9)
            .unwrap()
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn state_round_trip_is_bit_exact() {
        let mut a = Macd::new(12, 26, 9).unwrap();
        for &x in g::CLOSE {
            let mut b = Macd::from_state(&a.to_state(), 12, 26, 9).unwrap();
            assert_eq!(a, b);
            let (va, vb) = (a.update(x), b.update(x));
            assert_eq!(va, vb);
        }
        assert!(matches!(
            Macd::from_state(&a.to_state(), 12, 26, 10),
            Err(TaError::ParameterChanged { .. })
        ));
        assert!(matches!(
            Macd::from_state(&[7101.0, 14.0, 0.0, 0.0, 0.0, 0.0], 12, 26, 9),
            Err(TaError::InvalidState { .. })
        ));
    }

    #[test]
    fn forged_states_are_rejected() {
        // TC5: [marker, fast, slow, signal, count, fast(count, sum, prev), slow(..), signal(..)]
        let mut m = Macd::new(12, 26, 9).unwrap();
        let mut states = vec![m.to_state()];
        for &x in g::CLOSE {
            m.update(x);
            states.push(m.to_state());
        }
        // every state update() produces is accepted (counters consistent at every bar)
        for s in &states {
            assert!(Macd::from_state(s, 12, 26, 9).is_ok(), "{s:?}");
        }
        let seeded = states.last().unwrap().clone();
        for (i, bad) in [
            (4, 28.0),     // bar counter past slow_period + 1
            (4, -1.0),     // negative
            (5, 13.0),     // fast EMA counter past its period
            (8, 25.0),     // slow EMA counter inconsistent with the bar counter
            (11, 10.0),    // signal counter past its period
            (6, f64::NAN), // non-finite sums and values
            (10, f64::INFINITY),
        ] {
            let mut s = seeded.clone();
            s[i] = bad;
            assert!(
                matches!(
                    Macd::from_state(&s, 12, 26, 9),
                    Err(TaError::InvalidState { .. })
                ),
                "element {i} = {bad}"
            );
        }
        // a signal line that started before the slow EMA was seeded
        let mut early = states[10].clone();
        early[11] = 1.0;
        assert!(matches!(
            Macd::from_state(&early, 12, 26, 9),
            Err(TaError::InvalidState { .. })
        ));
    }
}
