//! The feature engine against a naive computation of every column from the whole series, and
//! started from checkpoints (live from anywhere = offline, bit for bit).

use super::engine::{column_names, BookInput, Extra, FeatureEngine, NoVolume, RET_LAGS, Z_OF};
use super::exact::fsum;
use super::{HISTORY, N_BASE, N_FEATURES, Z_WINDOW};
use crate::screener::{Candle, Volume, WINDOWS};

/// Exact integer quote volumes for the screener side (as the screener's own tests).
impl Volume for i64 {
    fn zero() -> Self {
        0
    }
    fn add(&self, o: &Self) -> Self {
        self + o
    }
    fn sub(&self, o: &Self) -> Self {
        self - o
    }
    fn to_f64(&self) -> f64 {
        *self as f64
    }
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        Ord::cmp(self, o)
    }
}

struct Series {
    candles: Vec<Candle<i64>>,
    extra: Vec<Extra>,
}

/// A deterministic series of `n` candles: a random walk with jumps, a flat stretch (equal
/// closes, zero volume), book features on part of the minutes (with gaps).
fn series(n: usize, seed: u64) -> Series {
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut price = 100.0f64;
    let mut candles = Vec::with_capacity(n);
    let mut extra = Vec::with_capacity(n);
    for i in 0..n {
        let flat = (2000..2100).contains(&i);
        let open = price;
        let close = if flat {
            open
        } else {
            let r = (rnd() - 0.5) * 0.004
                + if rnd() < 0.003 {
                    (rnd() - 0.5) * 0.05
                } else {
                    0.0
                };
            (open * r.exp() * 1e4).round() / 1e4
        };
        price = close;
        let high = open.max(close) * 1.0003;
        let low = open.min(close) * 0.9997;
        let vol = if flat {
            0.0
        } else {
            (1.0 + rnd() * 30.0).round()
        };
        let t = i as i64 * 60_000_000;
        candles.push(Candle {
            open_time: t,
            close_time: t + 59_999_000,
            open,
            high,
            low,
            close,
            quote_volume: vol as i64 * 7,
        });
        let book = if i % 97 == 5 || i < 300 {
            BookInput::default()
        } else {
            BookInput {
                imbalance: Some((rnd() - 0.5) * 1.6),
                spread_bps: Some(if (3000..3200).contains(&i) {
                    1.5
                } else {
                    0.5 + rnd()
                }),
                wmid_offset_bps: if i % 11 == 0 {
                    None
                } else {
                    Some((rnd() - 0.5) * 3.0)
                },
            }
        };
        extra.push(Extra {
            volume: vol,
            quote_volume: vol * close,
            taker_buy_volume: (vol * rnd()).round(),
            book,
        });
    }
    Series { candles, extra }
}

/// Every feature of candle `s` from the whole series, formula by formula.
fn naive(
    ser: &Series,
    s: usize,
    rsi: Option<f64>,
    macd_hist: Option<f64>,
) -> [Option<f64>; N_FEATURES] {
    let c = |i: usize| ser.candles[i].close;
    let mut b: Vec<Option<f64>> = vec![None; N_BASE];
    for (j, &k) in RET_LAGS.iter().enumerate() {
        b[j] = (s >= k).then(|| (c(s) / c(s - k)).ln());
    }
    for (w, &n) in WINDOWS.iter().enumerate() {
        b[6 + w] = (s >= n).then(|| {
            fsum((s + 1 - n..=s).map(|i| {
                let r = (c(i) / c(i - 1)).ln();
                r * r
            }))
            .sqrt()
        });
    }
    b[12] = rsi;
    b[13] = macd_hist;
    if s + 1 >= 20 {
        let w: Vec<f64> = (s + 1 - 20..=s).map(c).collect();
        let mean = fsum(w.iter().copied()) / 20.0;
        let sd = (fsum(w.iter().map(|x| (x - mean) * (x - mean))) / 20.0).sqrt();
        let flat = w.iter().all(|&x| x == w[0]);
        b[14] = (!flat && sd > 0.0).then(|| {
            let (lo, hi) = (mean - 2.0 * sd, mean + 2.0 * sd);
            (c(s) - lo) / (hi - lo)
        });
    }
    let z = |xs: Vec<f64>| -> Option<f64> {
        let n = xs.len() as f64;
        let x = *xs.last().unwrap();
        if xs.iter().all(|&v| v == x) {
            return None;
        }
        let mean = fsum(xs.iter().copied()) / n;
        let var = fsum(xs.iter().map(|v| v * v)) / n - mean * mean;
        (var > 0.0).then(|| (x - mean) / var.sqrt())
    };
    if s + 1 >= 1440 {
        let r = s + 1 - 1440..=s;
        let v: Vec<f64> = r.clone().map(|i| ser.extra[i].volume).collect();
        let q: Vec<f64> = r.map(|i| ser.extra[i].quote_volume).collect();
        let sv = fsum(v.iter().copied());
        if sv > 0.0 {
            b[15] = Some((c(s) / (fsum(q.iter().copied()) / sv)).ln());
        }
        b[16] = z(v);
        b[17] = z(q);
    }
    let e = &ser.extra[s];
    b[18] = (e.volume != 0.0).then(|| e.taker_buy_volume / e.volume);
    b[19] = e.book.imbalance;
    b[20] = e.book.spread_bps;
    b[21] = e.book.wmid_offset_bps;
    let mut out = [None; N_FEATURES];
    out[..N_BASE].copy_from_slice(&b);
    out
}

#[test]
fn columns_and_warm_up() {
    let names = column_names();
    assert_eq!(names.len(), N_FEATURES);
    assert_eq!(names[0], "ret_1m");
    assert_eq!(names[N_BASE], "ret_1m_z");
    assert_eq!(names[N_FEATURES - 1], "wmid_offset_bps_1m_z");
    assert!(!names.contains(&"vol_z_1d_z".to_string()));
    const { assert!(HISTORY < crate::screener::HISTORY) }; // the screener's warm-up covers the features'
}

#[test]
fn engine_equals_naive_and_any_start() {
    // TC1: 5,000 candles; the engine from the first candle equals the naive formulas at every
    // candle (z-scores: from the naive base columns of the last 60 candles)
    let ser = series(5000, 42);
    let mut full: FeatureEngine<i64> = FeatureEngine::new();
    let mut rows = Vec::new();
    let mut chains = Vec::new();
    for (c, x) in ser.candles.iter().zip(&ser.extra) {
        chains.push(full.screener().chain());
        full.push(c.clone(), x).unwrap();
        rows.push(full.features().unwrap());
    }
    let mut bases: Vec<[Option<f64>; N_FEATURES]> = Vec::new();
    #[allow(clippy::needless_range_loop)]
    for s in 0..ser.candles.len() {
        // RSI and MACD come from the screener engine (tested there against TA-Lib)
        let mut want = naive(&ser, s, rows[s].values[12], rows[s].values[13]);
        bases.push(want);
        for (j, &i) in Z_OF.iter().enumerate() {
            want[N_BASE + j] = if s + 1 >= Z_WINDOW {
                let xs: Option<Vec<f64>> = (s + 1 - Z_WINDOW..=s).map(|k| bases[k][i]).collect();
                xs.and_then(|xs| {
                    let x = *xs.last().unwrap();
                    if xs.iter().all(|&v| v == x) {
                        return None;
                    }
                    let n = xs.len() as f64;
                    let mean = fsum(xs.iter().copied()) / n;
                    let var = fsum(xs.iter().map(|v| v * v)) / n - mean * mean;
                    (var > 0.0).then(|| (x - mean) / var.sqrt())
                })
            } else {
                None
            };
        }
        let got = &rows[s].values;
        for k in 0..N_FEATURES {
            assert_eq!(
                got[k].map(f64::to_bits),
                want[k].map(f64::to_bits),
                "candle {s} column {} got {:?} want {:?}",
                column_names()[k],
                got[k],
                want[k]
            );
        }
    }
    // RSI and MACD are the screener's
    let r = full.screener().row().unwrap().unwrap();
    assert_eq!(rows[4999].values[12], r.rsi_14);
    assert_eq!(rows[4999].values[13], r.macd[2]);
    // warm-up: NULL exactly until each column's window is full
    let first = |k: usize| rows.iter().position(|r| r.values[k].is_some());
    assert_eq!(first(0), Some(1));
    assert_eq!(first(5), Some(1440));
    assert_eq!(first(11), Some(1440)); // rv_1d: 1440 log returns
    assert_eq!(first(12), Some(14));
    assert_eq!(first(13), Some(33));
    assert_eq!(first(14), Some(19));
    assert_eq!(first(16), Some(1439));
    assert_eq!(first(N_BASE + 5), Some(1440 + 59)); // ret_1d_z
                                                    // the flat stretch: bb NULL once 20 equal closes, volume z NULL never (a day has both)
    assert!(rows[2050].values[14].is_none());
    assert!(rows[2050].values[0] == Some(0.0));
    // 60 equal spreads (3110..=3169, no missing book minute) make spread_bps_1m_z NULL; a
    // later window without a missing minute has a value
    assert!(rows[3169].values[N_BASE + 18].is_none());
    assert!(rows[3266].values[N_BASE + 18].is_some());
    // no NaN anywhere
    assert!(rows
        .iter()
        .all(|r| r.values.iter().flatten().all(|v| v.is_finite())));

    // TC2: engines started from the screener chain at candles k (a day checkpoint or any
    // other) give the full run's rows bit for bit once they have seen HISTORY candles, with
    // exact volumes or without (NoVolume: the features-only path)
    for k in [1usize, 777, 1500, 2601] {
        let mut e: FeatureEngine<i64> = FeatureEngine::from_checkpoint(chains[k].clone()).unwrap();
        let cp = chains[k].clone();
        let nv = crate::screener::Checkpoint::<NoVolume> {
            candles: cp.candles,
            open_time: cp.open_time,
            close: cp.close,
            cum_quote_volume: Some(NoVolume),
            sum_log_return_sq: cp.sum_log_return_sq,
            rsi_state: cp.rsi_state,
            macd_state: cp.macd_state,
        };
        let mut f: FeatureEngine<NoVolume> = FeatureEngine::from_checkpoint(nv).unwrap();
        #[allow(clippy::needless_range_loop)]
        for s in k..ser.candles.len() {
            e.push(ser.candles[s].clone(), &ser.extra[s]).unwrap();
            let c = &ser.candles[s];
            f.push(
                Candle {
                    open_time: c.open_time,
                    close_time: c.close_time,
                    open: c.open,
                    high: c.high,
                    low: c.low,
                    close: c.close,
                    quote_volume: NoVolume,
                },
                &ser.extra[s],
            )
            .unwrap();
            let (a, b) = (e.features().unwrap(), f.features().unwrap());
            assert_eq!(a, b, "k {k} s {s}");
            if s - k >= HISTORY {
                assert_eq!(a, rows[s], "k {k} s {s}");
            } else {
                // a late start gives NULL, never a partial window
                for (x, y) in a.values.iter().zip(rows[s].values.iter()) {
                    assert!(x.is_none() || x == y, "k {k} s {s}");
                }
            }
        }
    }
}

#[test]
fn screener_only_steps_leave_the_features_stale() {
    // TC: an engine stepped with push_screener (the live path while nothing reads features)
    // has the screener rows and chain of a full engine at every candle, and no features from
    // its first such step on (it must be reloaded to give them again)
    let ser = series(3200, 7);
    let mut full: FeatureEngine<i64> = FeatureEngine::new();
    let mut part: FeatureEngine<i64> = FeatureEngine::new();
    for (i, (c, x)) in ser.candles.iter().zip(&ser.extra).enumerate() {
        full.push(c.clone(), x).unwrap();
        if i < 3000 {
            part.push(c.clone(), x).unwrap();
            assert_eq!(part.features(), full.features());
            assert!(!part.is_stale());
        } else {
            part.push_screener(c.clone()).unwrap();
            assert!(part.is_stale());
            assert_eq!(part.features(), None);
        }
        assert_eq!(
            part.screener().row().unwrap(),
            full.screener().row().unwrap()
        );
        assert_eq!(part.screener().chain(), full.screener().chain());
    }
}
