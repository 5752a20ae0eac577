//! Bollinger bands (TA-Lib: BBANDS with the default SMA).

use super::{check_nb_dev, check_period, run_series, variance_is_zero, Ring, TaError};

/// One BBANDS output bar, TA-Lib's output names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BbandsOutput {
    /// `middle_band + nb_dev_up · stddev`
    pub upper_band: f64,
    /// SMA(time_period)
    pub middle_band: f64,
    /// `middle_band − nb_dev_dn · stddev`
    pub lower_band: f64,
}

/// Bollinger bands (TA-Lib: BBANDS, MA type SMA), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      upper/middle/lower band, price units; `None` for the first `time_period−1` bars.
/// # Parameters  `time_period` in 2..=100_000; `nb_dev_up`, `nb_dev_dn` finite and `>= 0`.
///   The deviation is the population standard deviation around the SMA.
/// # Errors      [`TaError::InvalidPeriod`], [`TaError::InvalidParameter`].
/// # Reference   TA-Lib `ta_BBANDS.c` (SMA from `TA_INT_SMA`, deviation from
///   `TA_INT_stddev_using_precalc_ma`: `mean(x²) − sma²`); John Bollinger.
///   Difference: the zero clamp, see [`super::variance_is_zero`].
#[doc(alias = "BBANDS")]
#[derive(Debug, Clone)]
pub struct Bbands {
    n: usize,
    up: f64,
    dn: f64,
    count: usize,
    total: f64,
    total2: f64,
    ring: Ring,
}

impl Bbands {
    /// New state.
    pub fn new(time_period: i32, nb_dev_up: f64, nb_dev_dn: f64) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            n,
            up: check_nb_dev("nb_dev_up", nb_dev_up)?,
            dn: check_nb_dev("nb_dev_dn", nb_dev_dn)?,
            count: 0,
            total: 0.0,
            total2: 0.0,
            ring: Ring::new(n),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<BbandsOutput> {
        self.ring.push(x);
        self.total += x;
        self.total2 += x * x;
        if self.count + 1 < self.n {
            self.count += 1;
            return None;
        }
        let n = self.n as f64;
        let t = self.ring.oldest();
        let ma = self.total / n;
        self.total -= t;
        let mut mean2 = self.total2 / n;
        self.total2 -= t * t;
        let mean_sq = mean2;
        mean2 -= ma * ma;
        let sd = if variance_is_zero(mean2, mean_sq) {
            0.0
        } else {
            mean2.sqrt()
        };
        Some(BbandsOutput {
            upper_band: ma + sd * self.up,
            middle_band: ma,
            lower_band: ma - sd * self.dn,
        })
    }
}

/// BBANDS over a whole series.
/// # Errors see [`Bbands::new`], and [`TaError::NonFiniteInput`].
#[doc(alias = "BBANDS")]
pub fn bbands(
    values: &[f64],
    time_period: i32,
    nb_dev_up: f64,
    nb_dev_dn: f64,
) -> Result<Vec<Option<BbandsOutput>>, TaError> {
    run_series(
        values,
        Bbands::new(time_period, nb_dev_up, nb_dev_dn)?,
        Bbands::update,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        for (p, up, dn, exp) in [
            (20, 2.0, 2.0, g::BBANDS_20_2_2),
            (10, 1.5, 2.5, g::BBANDS_10_15_25),
        ] {
            let b = bbands(g::CLOSE, p, up, dn).unwrap();
            let u: Vec<_> = b.iter().map(|o| o.map(|o| o.upper_band)).collect();
            let m: Vec<_> = b.iter().map(|o| o.map(|o| o.middle_band)).collect();
            let l: Vec<_> = b.iter().map(|o| o.map(|o| o.lower_band)).collect();
            assert_series_exact(&u, exp[0]);
            assert_series_exact(&m, exp[1]);
            assert_series_exact(&l, exp[2]);
        }
    }

    #[test]
    fn edge_cases() {
        let b = bbands(&[5.0; 25], 20, 2.0, 2.0).unwrap();
        assert!(b[19..].iter().all(|o| *o
            == Some(BbandsOutput {
                upper_band: 5.0,
                middle_band: 5.0,
                lower_band: 5.0
            })));
        assert!(matches!(
            bbands(&[], 20, -2.0, 2.0),
            Err(TaError::InvalidParameter {
                name: "nb_dev_up",
                ..
            })
        ));
        assert!(matches!(
            bbands(&[], 20, 2.0, f64::NAN),
            Err(TaError::InvalidParameter {
                name: "nb_dev_dn",
                ..
            })
        ));
        // invariant: lower <= middle <= upper
        for o in bbands(g::CLOSE, 20, 2.0, 2.0)
            .unwrap()
            .into_iter()
            .flatten()
        {
            assert!(o.lower_band <= o.middle_band && o.middle_band <= o.upper_band);
        }
    }
}
