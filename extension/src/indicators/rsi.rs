//! Relative strength index, Wilder smoothing (TA-Lib: RSI).

use super::{
    check_period, check_same_param, run_series, state_count, state_non_negative, state_value,
    TaError,
};

/// Marker (first element) of a serialised RSI state, version 1.
pub const RSI_STATE_V1: f64 = 7101.0;
/// Length of a serialised RSI state: marker, time_period, count, prev_value, avg_gain, avg_loss.
pub const RSI_STATE_LEN: usize = 6;

/// Relative strength index (TA-Lib: RSI), streaming state.
/// # Input       one value per bar (usually the close), oldest first, price units.
/// # Output      0..=100; `None` for the first `time_period` bars (lookback = time_period).
/// # Parameters  `time_period` in 2..=100_000. Average gain/loss are seeded with the simple
///   means of the first `time_period` changes, then smoothed with Wilder's
///   `avg = (avg·(N−1) + x)/N`, computed as TA-Lib does (`*= N−1; += x; /= N`).
///   `RSI = 100·avg_gain/(avg_gain+avg_loss)`, 0 when both averages are 0 (flat).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_RSI.c`; J. Welles Wilder, *New Concepts in Technical Trading
///   Systems* (1978). Difference: TA-Lib returns 0 when `avg_gain+avg_loss` is
///   below 1e-14 (`TA_IS_ZERO`), i.e. for any instrument priced below ~1e-12; we
///   return 0 only when it is exactly 0.
#[doc(alias = "RSI")]
#[derive(Debug, Clone, PartialEq)]
pub struct Rsi {
    n: usize,
    /// bars seen
    count: usize,
    prev_value: f64,
    avg_gain: f64,
    avg_loss: f64,
}

impl Rsi {
    /// New state; `time_period` in 2..=100_000.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            n,
            count: 0,
            prev_value: 0.0,
            avg_gain: 0.0,
            avg_loss: 0.0,
        })
    }

    #[inline]
    fn value(&self) -> f64 {
        let total = self.avg_gain + self.avg_loss;
        if total != 0.0 {
            100.0 * (self.avg_gain / total)
        } else {
            0.0
        }
    }

    /// Adds one bar; returns the RSI once `time_period` changes have been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let n = self.n;
        self.count += 1;
        if self.count == 1 {
            self.prev_value = x;
            return None;
        }
        let change = x - self.prev_value;
        self.prev_value = x;
        if self.count <= n + 1 {
            // seeding: plain sums of the first N changes
            if change < 0.0 {
                self.avg_loss -= change;
            } else {
                self.avg_gain += change;
            }
            if self.count < n + 1 {
                return None;
            }
            self.avg_loss /= n as f64;
            self.avg_gain /= n as f64;
            return Some(self.value());
        }
        self.count = self.count.min(n + 2); // saturate: only "seeded or not" matters now
        let nm1 = (n - 1) as f64;
        self.avg_loss *= nm1;
        self.avg_gain *= nm1;
        if change < 0.0 {
            self.avg_loss -= change;
        } else {
            self.avg_gain += change;
        }
        self.avg_loss /= n as f64;
        self.avg_gain /= n as f64;
        Some(self.value())
    }

    /// Serialises the whole state: `[RSI_STATE_V1, time_period, count, prev_value, avg_gain,
    /// avg_loss]` (opaque to users; versioned by the marker).
    pub fn to_state(&self) -> Vec<f64> {
        vec![
            RSI_STATE_V1,
            self.n as f64,
            self.count as f64,
            self.prev_value,
            self.avg_gain,
            self.avg_loss,
        ]
    }

    /// Restores a state written by [`Rsi::to_state`]; `time_period` must match the stored one.
    /// The state is validated as one [`Rsi::update`] can produce: count in `0..=time_period+2`,
    /// finite values, average gain and loss `>= 0` (so the RSI stays in 0..=100) and both 0
    /// before the first change.
    /// # Errors [`TaError::InvalidState`], [`TaError::ParameterChanged`], [`TaError::InvalidPeriod`].
    pub fn from_state(s: &[f64], time_period: i32) -> Result<Self, TaError> {
        if s.len() != RSI_STATE_LEN || s[0] != RSI_STATE_V1 {
            return Err(TaError::InvalidState {
                reason: format!(
                    "not an RSI state (expected {RSI_STATE_LEN} elements starting with {RSI_STATE_V1})"
                ),
            });
        }
        let mut r = Self::new(time_period)?;
        check_same_param("time_period", s[1], time_period)?;
        r.count = state_count(s[2], r.n + 2)?;
        r.prev_value = state_value(s[3])?;
        r.avg_gain = state_non_negative("average gain", s[4])?;
        r.avg_loss = state_non_negative("average loss", s[5])?;
        if r.count <= 1 && (r.avg_gain != 0.0 || r.avg_loss != 0.0) {
            return Err(TaError::InvalidState {
                reason: format!(
                    "average gain and loss must be 0 before the first change, got {} and {}",
                    r.avg_gain, r.avg_loss
                ),
            });
        }
        Ok(r)
    }

    /// Values seen so far, saturating at `time_period + 2`.
    pub fn seen(&self) -> usize {
        self.count
    }

    /// The last value seen (0 before the first).
    pub fn prev_value(&self) -> f64 {
        self.prev_value
    }

    /// True when the state holds only finite numbers (false after an overflow, e.g. a change
    /// from -1e308 to 1e308).
    pub fn is_finite(&self) -> bool {
        self.prev_value.is_finite() && self.avg_gain.is_finite() && self.avg_loss.is_finite()
    }
}

/// Relative strength index (TA-Lib: RSI) over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "RSI")]
pub fn rsi(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Rsi::new(time_period)?, Rsi::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        // TC1: TA-Lib golden values, bit for bit
        assert_series_exact(&rsi(g::CLOSE, 14).unwrap(), g::RSI_14);
        assert_series_exact(&rsi(g::CLOSE, 2).unwrap(), g::RSI_2);
        assert_series_exact(&rsi(g::CLOSE, 7).unwrap(), g::RSI_7);
    }

    #[test]
    fn edge_cases() {
        // TC2: lookback is time_period: first value at index N
        let r = rsi(g::CLOSE, 14).unwrap();
        assert!(r[..14].iter().all(Option::is_none) && r[14].is_some());
        assert!(rsi(&[], 14).unwrap().is_empty());
        // TC3: flat series -> 0 (TA-Lib convention), rising -> 100, falling -> 0
        assert!(rsi(&[5.0; 30], 14).unwrap()[14..]
            .iter()
            .all(|v| *v == Some(0.0)));
        let up: Vec<f64> = (0..30).map(f64::from).collect();
        assert!(rsi(&up, 14).unwrap()[14..]
            .iter()
            .all(|v| *v == Some(100.0)));
        let down: Vec<f64> = (0..30).map(|i| 100.0 - f64::from(i)).collect();
        assert!(rsi(&down, 14).unwrap()[14..]
            .iter()
            .all(|v| *v == Some(0.0)));
        // TC4: scale invariance at 1e-8 and 1e8 (TA-Lib would give 0 below ~1e-12)
        let base = rsi(g::CLOSE, 14).unwrap();
        for scale in [1e-8, 1e-15, 1e8] {
            let scaled: Vec<f64> = g::CLOSE.iter().map(|x| x * scale).collect();
            assert_series(&rsi(&scaled, 14).unwrap(), &to_nan(&base));
        }
        // TC5: errors
        assert!(matches!(rsi(&[1.0], 1), Err(TaError::InvalidPeriod { .. })));
        assert!(matches!(
            rsi(&[f64::NAN], 14),
            Err(TaError::NonFiniteInput { .. })
        ));
    }

    #[test]
    fn invariant_range_and_state_round_trip() {
        let mut a = Rsi::new(14).unwrap();
        let mut b_out = Vec::new();
        for &x in g::CLOSE {
            // folding through the serialised state gives the same values, bit for bit
            let mut b = Rsi::from_state(&a.to_state(), 14).unwrap();
            let va = a.update(x);
            let vb = b.update(x);
            assert_eq!(va.map(f64::to_bits), vb.map(f64::to_bits));
            assert_eq!(a, b);
            if let Some(v) = va {
                assert!((0.0..=100.0).contains(&v));
            }
            b_out.push(vb);
        }
        assert_eq!(b_out, rsi(g::CLOSE, 14).unwrap());
        // wrong marker / period
        assert!(matches!(
            Rsi::from_state(&[1.0; 6], 14),
            Err(TaError::InvalidState { .. })
        ));
        assert!(matches!(
            Rsi::from_state(&a.to_state(), 10),
            Err(TaError::ParameterChanged { .. })
        ));
    }

    #[test]
    fn forged_states_are_rejected() {
        // TC6: [marker, period, count, prev_value, avg_gain, avg_loss]; a negative average
        // would give RSI 125, a counter past N+2 or a fraction cannot come from update()
        let ok = [RSI_STATE_V1, 14.0, 16.0, 100.0, 1.0, 2.0];
        assert!(Rsi::from_state(&ok, 14).is_ok());
        for (i, bad) in [
            (4, -1.0),
            (5, -0.5),
            (4, f64::INFINITY),
            (5, f64::NAN),
            (3, f64::NEG_INFINITY),
            (2, 17.0),
            (2, -1.0),
            (2, 3.5),
        ] {
            let mut s = ok;
            s[i] = bad;
            assert!(
                matches!(Rsi::from_state(&s, 14), Err(TaError::InvalidState { .. })),
                "element {i} = {bad}"
            );
        }
        // averages before the first change must be 0
        let early = [RSI_STATE_V1, 14.0, 1.0, 100.0, 0.0, 3.0];
        assert!(matches!(
            Rsi::from_state(&early, 14),
            Err(TaError::InvalidState { .. })
        ));
        // every state update() produces is accepted and in range
        let mut r = Rsi::new(14).unwrap();
        for &x in g::CLOSE {
            r.update(x);
            assert!(Rsi::from_state(&r.to_state(), 14).is_ok());
        }
    }
}
