//! The engine against a naive scan of every metric: each value recomputed from the whole
//! candle list by its definition (0.1.0's SQL formulas; windows as slices, running sums as
//! prefix folds, RSI/MACD from the batch indicators), for an engine started at the beginning
//! of the series or from any checkpoint of it.

use std::cmp::Ordering;

use super::pgfloat as f8;
use super::*;
use crate::indicators::{macd::macd, rsi::rsi};

/// An exact decimal with a display scale, like numeric: `units` of 1e-8; `+`/`-` keep the
/// larger scale; compares by value.
#[derive(Debug, Clone, PartialEq)]
struct Dec {
    units: i128,
    scale: u8,
}

impl Volume for Dec {
    fn zero() -> Self {
        Dec { units: 0, scale: 0 }
    }
    fn add(&self, o: &Self) -> Self {
        Dec {
            units: self.units + o.units,
            scale: self.scale.max(o.scale),
        }
    }
    fn sub(&self, o: &Self) -> Self {
        Dec {
            units: self.units - o.units,
            scale: self.scale.max(o.scale),
        }
    }
    fn to_f64(&self) -> f64 {
        self.units as f64 / 1e8
    }
    fn cmp(&self, o: &Self) -> Ordering {
        self.units.cmp(&o.units)
    }
}

const MIN: i64 = 60_000_000;
const DAY: i64 = 1440 * MIN;

#[derive(Clone, Copy)]
struct Shape {
    /// price multiplier (1e-8 .. 1e8)
    scale: f64,
    /// include candles priced 0 (NULL branches of the guards)
    zeros: bool,
}

/// A deterministic series: a random walk with plateaus, flat candles (O=H=L=C), ties, zero
/// volumes (with different scales, so least() must keep the first), gaps of 284 minutes and
/// of two whole days, starting 22:00 UTC so several UTC midnights are crossed.
fn series(n: usize, shape: Shape) -> Vec<Candle<Dec>> {
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut cents: i64 = 100_000;
    let mut t = 19_723 * DAY + 22 * 60 * MIN;
    for i in 0..n {
        if i == 700 {
            t += 2 * DAY + 17 * MIN; // a multi-day gap
        } else if i == 2000 {
            t += 284 * MIN; // an exchange outage
        }
        let r = rnd();
        let open = cents;
        let step = if i % 9 == 4 { 0 } else { (r % 61) as i64 - 30 };
        cents = (cents + step).max(500);
        let close = cents;
        let flat = i % 17 == 3;
        let (mut o, mut c) = if flat { (open, open) } else { (open, close) };
        let mut h = o.max(c) + if flat { 0 } else { ((r >> 8) % 5) as i64 * 10 };
        let l = o.min(c) - if flat { 0 } else { ((r >> 16) % 4) as i64 * 10 };
        if i % 23 == 5 {
            h = o.max(c) + 200; // a new high that ties later ones
        }
        if shape.zeros && i % 97 == 50 {
            o = 0; // open 0: change_1m and vcp's weighted average hit nullif
        }
        if shape.zeros && i % 89 == 40 {
            c = 0; // close 0: no log return for this and the next candle
        }
        let l = l.min(o).min(c).max(0);
        let zero_vol = i % 13 == 7;
        let qv = if zero_vol {
            Dec {
                units: 0,
                scale: (i % 3) as u8,
            }
        } else {
            Dec {
                units: ((r >> 24) % 5_000_000_000) as i128 + 1,
                scale: 8 - (i % 4) as u8,
            }
        };
        // volumes equal to the previous one but with another scale (ties in least())
        let qv = if i % 29 == 11 {
            Dec {
                units: out
                    .last()
                    .map(|p: &Candle<Dec>| p.quote_volume.units)
                    .unwrap_or(0),
                scale: 2,
            }
        } else {
            qv
        };
        let p = |v: i64| v as f64 / 100.0 * shape.scale;
        out.push(Candle {
            open_time: t,
            close_time: t + MIN - 1,
            open: p(o),
            high: p(h),
            low: p(l),
            close: p(c),
            quote_volume: qv,
        });
        t += MIN;
    }
    out
}

/// Prefix values of the whole series: running volume before each candle, log returns and
/// the running sum of their squares (definitions of the state columns).
struct Prefix {
    cum_before: Vec<Dec>,
    lr: Vec<Option<f64>>,
    s2: Vec<f64>,
    rsi: Vec<Option<f64>>,
    macd: Vec<[Option<f64>; 3]>,
}

fn prefix(cs: &[Candle<Dec>]) -> Prefix {
    let mut cum_before = Vec::new();
    let mut lr = Vec::new();
    let mut s2 = Vec::new();
    let mut cum = Dec::zero();
    let mut s = 0.0;
    for (q, c) in cs.iter().enumerate() {
        cum_before.push(cum.clone());
        cum = cum.add(&c.quote_volume);
        let l = (q > 0 && c.close > 0.0 && cs[q - 1].close > 0.0)
            .then(|| f8::ln(f8::div(c.close, cs[q - 1].close).unwrap()).unwrap());
        s = f8::add(s, l.map_or(0.0, |x| x * x)).unwrap();
        lr.push(l);
        s2.push(s);
    }
    let closes: Vec<f64> = cs.iter().map(|c| c.close).collect();
    Prefix {
        cum_before,
        lr,
        s2,
        rsi: rsi(&closes, 14).unwrap(),
        macd: macd(&closes, 12, 26, 9)
            .unwrap()
            .into_iter()
            .map(|o| {
                o.map_or([None; 3], |o| {
                    [Some(o.macd), Some(o.macd_signal), Some(o.macd_hist)]
                })
            })
            .collect(),
    }
}

fn pct(x: f64, base: f64) -> Option<f64> {
    let d = f8::sub(x, base).unwrap();
    (base != 0.0).then(|| f8::mul(f8::div(d, base).unwrap(), 100.0).unwrap())
}

/// The row of candle `j` (0-based) for an engine that has seen candles `k..=j`.
fn naive(cs: &[Candle<Dec>], p: &Prefix, k: usize, j: usize) -> ScreenerRow<Dec> {
    let seen = |q: isize| q >= k as isize && q <= j as isize;
    let c = &cs[j];
    let jj = j as isize;
    let cum_after = p.cum_before[j].add(&c.quote_volume);
    let windows: Vec<WindowMetrics<Dec>> = WINDOWS
        .iter()
        .map(|&n| {
            let start = jj - n as isize + 1;
            if !seen(start) {
                return WindowMetrics {
                    open: None,
                    high: None,
                    low: None,
                    change: None,
                    range: None,
                    vol: None,
                    vol_ratio: None,
                };
            }
            let win = &cs[start as usize..=j];
            let high = win.iter().map(|x| x.high).fold(f64::MIN, f64::max);
            let low = win.iter().map(|x| x.low).fold(f64::MAX, f64::min);
            let open = win[0].open;
            let cb = &p.cum_before[start as usize];
            let vol = cum_after.sub(cb);
            let prev = jj - 2 * n as isize + 1;
            let vol_ratio = if seen(prev) {
                let den = cb.sub(&p.cum_before[prev as usize]).to_f64();
                (den != 0.0).then(|| f8::div(vol.to_f64(), den).unwrap())
            } else {
                None
            };
            WindowMetrics {
                open: Some(open),
                high: Some(high),
                low: Some(low),
                change: pct(c.close, open),
                range: pct(high, low),
                vol: Some(vol),
                vol_ratio,
            }
        })
        .collect();
    let last3 = seen(jj - 2) && j >= 2;
    let ch = |x: &Candle<Dec>| f8::div(f8::sub(x.close, x.open).unwrap(), x.open).unwrap();
    let (min_c, max_c) = if last3 && c.open > 0.0 && cs[j - 1].open > 0.0 && cs[j - 2].open > 0.0 {
        let v = [ch(c), ch(&cs[j - 1]), ch(&cs[j - 2])];
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(f64::MIN, f64::max);
        (Some(lo * 100.0), Some(hi * 100.0))
    } else {
        (None, None)
    };
    let min_vol = last3.then(|| {
        // the first of the smallest, newest first
        let mut m = &c.quote_volume;
        for x in [&cs[j - 1].quote_volume, &cs[j - 2].quote_volume] {
            if x.units < m.units {
                m = x;
            }
        }
        m.clone()
    });
    let volatility_10 =
        (j >= 10 && seen(jj - 9) && c.close > 0.0 && cs[j - 9].close > 0.0).then(|| {
            let l9 = p.lr[j - 9];
            let a = l9.map(|l| (p.s2[j] - p.s2[j - 9] + l * l) / 10.0);
            let lnr = (c.close / cs[j - 9].close).ln();
            let b = l9.map(|l| f8::pow((lnr + l) / 10.0, 2.0).unwrap());
            let x = a.zip(b).map(|(a, b)| a - b);
            x.map_or(0.0, |x| if x < 0.0 { 0.0 } else { x }).sqrt()
        });
    let vcp = if c.high == c.low {
        Some(0.0)
    } else {
        let wa = (c.open + c.close) / 2.0;
        (wa != 0.0)
            .then(|| (c.close / wa) * ((c.close - c.low) - (c.high - c.close)) / (c.high - c.low))
    };
    let day = &windows[5];
    let fib = match (day.high, day.low) {
        (Some(h), Some(l)) => {
            let pv = (h + l + c.close) / 3.0;
            let r = h - l;
            [
                Some(pv),
                Some(pv + 0.382 * r),
                Some(pv + 0.618 * r),
                Some(pv + r),
                Some(pv - 0.382 * r),
                Some(pv - 0.618 * r),
                Some(pv - r),
            ]
        }
        _ => [None; 7],
    };
    ScreenerRow {
        open_time: c.open_time,
        close_time: c.close_time,
        candles: j as i64 + 1,
        price: c.close,
        change_1m: pct(c.close, c.open),
        vol_1m: c.quote_volume.clone(),
        windows: windows.try_into().unwrap(),
        min_change_1m_3: min_c,
        max_change_1m_3: max_c,
        min_vol_1m_3: min_vol,
        volatility_10,
        vcp,
        fib,
        rsi_14: p.rsi[j],
        macd: p.macd[j],
    }
}

/// Rows compared bit for bit (Debug prints the shortest round-trip form of each f64, so two
/// values print alike only when their bits are equal, -0.0 included).
#[track_caller]
fn assert_same(got: &ScreenerRow<Dec>, want: &ScreenerRow<Dec>, what: &str) {
    let (g, w) = (format!("{got:?}"), format!("{want:?}"));
    assert!(g == w, "{what}\n got: {g}\nwant: {w}");
}

fn run(cs: &[Candle<Dec>]) -> (Vec<ScreenerRow<Dec>>, Vec<Checkpoint<Dec>>) {
    let mut e = Engine::<Dec>::new();
    let mut rows = Vec::new();
    let mut chains = vec![e.chain()];
    for c in cs {
        e.push(c.clone()).unwrap();
        rows.push(e.row().unwrap().unwrap());
        chains.push(e.chain());
    }
    (rows, chains)
}

const SHAPES: [Shape; 3] = [
    Shape {
        scale: 1.0,
        zeros: true,
    },
    Shape {
        scale: 1e-8,
        zeros: false,
    },
    Shape {
        scale: 1e8,
        zeros: false,
    },
];

#[test]
fn full_run_equals_the_naive_scan_at_every_candle() {
    for shape in SHAPES {
        let cs = series(3600, shape);
        let p = prefix(&cs);
        let (rows, _) = run(&cs);
        for (j, row) in rows.iter().enumerate() {
            assert_same(
                row,
                &naive(&cs, &p, 0, j),
                &format!("scale {} candle {j}", shape.scale),
            );
        }
        // the data has what the test claims to cover
        assert!(rows.iter().any(|r| r.vcp.is_none()) == shape.zeros);
        // a NULL log return 9 candles back (after a close of 0) makes volatility_10 0
        assert_eq!(
            rows.iter().any(|r| r.volatility_10 == Some(0.0)),
            shape.zeros
        );
        assert!(rows
            .iter()
            .any(|r| r.min_vol_1m_3.as_ref().is_some_and(|v| v.units == 0)));
        assert!(
            rows[2879].windows[5].vol_ratio.is_some() && rows[2878].windows[5].vol_ratio.is_none()
        );
    }
}

#[test]
fn checkpoint_start_plus_warm_up_equals_the_full_run() {
    let cs = series(3600, SHAPES[0]);
    let p = prefix(&cs);
    let (full, chains) = run(&cs);
    for k in [1usize, 2, 9, 10, 11, 500, 699, 700, 701] {
        let mut e = Engine::from_checkpoint(chains[k].clone()).unwrap();
        assert_eq!(e.candles(), k as i64);
        for j in k..cs.len() {
            e.push(cs[j].clone()).unwrap();
            let row = e.row().unwrap().unwrap();
            // values that need a candle before k are NULL; everything else is exact
            assert_same(
                &row,
                &naive(&cs, &p, k, j),
                &format!("start {k} candle {j}"),
            );
            if j - k >= HISTORY {
                assert_same(&row, &full[j], &format!("warm start {k} candle {j}"));
            }
            assert_eq!(e.chain(), chains[j + 1], "chain, start {k} candle {j}");
        }
    }
}

#[test]
fn too_short_warm_up_gives_null_windows() {
    let cs = series(3000, SHAPES[0]);
    let (full, chains) = run(&cs);
    // 100 candles after the checkpoint: the 5m..1h windows are there, 4h..1d are NULL
    let k = 2000;
    let mut e = Engine::from_checkpoint(chains[k].clone()).unwrap();
    for c in &cs[k..k + 100] {
        e.push(c.clone()).unwrap();
    }
    let row = e.row().unwrap().unwrap();
    let want = &full[k + 99];
    for i in 0..2 {
        assert_eq!(
            format!("{:?}", row.windows[i]),
            format!("{:?}", want.windows[i])
        );
    }
    // 1h: the window is there, its ratio to the hour before needs 120 candles
    let (h, wh) = (&row.windows[2], &want.windows[2]);
    assert_eq!(
        format!("{:?}", (h.open, h.high, h.low, h.change, h.range, &h.vol)),
        format!(
            "{:?}",
            (wh.open, wh.high, wh.low, wh.change, wh.range, &wh.vol)
        )
    );
    assert!(h.vol_ratio.is_none() && wh.vol_ratio.is_some());
    for i in 3..6 {
        let w = &row.windows[i];
        assert!(w.open.is_none() && w.high.is_none() && w.change.is_none() && w.vol.is_none());
        assert!(want.windows[i].change.is_some(), "the full run has them");
    }
    assert_eq!(row.fib, [None; 7]);
    // the chain values are exact from the first candle on
    assert_eq!(
        (row.candles, row.rsi_14, row.macd),
        (want.candles, want.rsi_14, want.macd)
    );
    assert_eq!(row.volatility_10, want.volatility_10);
    // vol_ratio needs 2N candles: at 119 seen, the 1h ratio is still NULL
    let mut e = Engine::from_checkpoint(chains[k].clone()).unwrap();
    for c in &cs[k..k + 119] {
        e.push(c.clone()).unwrap();
    }
    let row = e.row().unwrap().unwrap();
    assert!(row.windows[2].vol.is_some() && row.windows[2].vol_ratio.is_none());
    e.push(cs[k + 119].clone()).unwrap();
    assert_eq!(
        e.row().unwrap().unwrap().windows[2].vol_ratio,
        full[k + 119].windows[2].vol_ratio
    );
}

#[test]
fn day_checkpoints_at_utc_midnights_and_across_gaps() {
    let cs = series(3600, SHAPES[0]);
    let (_, chains) = run(&cs);
    let day = |t: i64| t.div_euclid(DAY);
    let mut e = Engine::<Dec>::new();
    let mut firsts = Vec::new();
    for (j, c) in cs.iter().enumerate() {
        e.push(c.clone()).unwrap();
        let first = j == 0 || day(c.open_time) != day(cs[j - 1].open_time);
        assert_eq!(e.is_day_first(), first, "candle {j}");
        // the checkpoint before the first candle of a day is the chain after the candle
        // before it (fresh for the first candle of the series)
        assert_eq!(
            e.day_checkpoint(),
            first.then(|| chains[j].clone()),
            "candle {j}"
        );
        if first {
            firsts.push(j);
        }
    }
    assert_eq!(chains[0], Checkpoint::fresh());
    // 22:00 start: midnights at candle 120 and after the two-day gap at candle 700; no UTC
    // date is skipped twice
    assert_eq!(&firsts[..3], &[0, 120, 700]);
    assert!(firsts.len() >= 4);
    // an engine started from a checkpoint compares with the checkpoint's open_time
    for k in firsts.iter().copied().filter(|&k| k > 0) {
        let mut e = Engine::from_checkpoint(chains[k].clone()).unwrap();
        e.push(cs[k].clone()).unwrap();
        assert!(e.is_day_first());
        assert_eq!(e.day_checkpoint(), Some(chains[k].clone()));
        let mut e = Engine::from_checkpoint(chains[k + 1].clone()).unwrap();
        e.push(cs[k + 1].clone()).unwrap();
        assert!(!e.is_day_first() && e.day_checkpoint().is_none());
    }
    // every day checkpoint restarts an engine that continues exactly
    let k = firsts[2];
    let mut a = Engine::from_checkpoint(chains[k].clone()).unwrap();
    let mut b = Engine::from_checkpoint(a.chain()).unwrap();
    for c in &cs[k..k + 50] {
        a.push(c.clone()).unwrap();
        b.push(c.clone()).unwrap();
        assert_eq!(a.chain(), b.chain());
    }
}

#[test]
fn rejects_bad_candles_and_leaves_the_engine_unchanged() {
    let cs = series(20, SHAPES[0]);
    let mut e = Engine::<Dec>::new();
    for c in &cs[..10] {
        e.push(c.clone()).unwrap();
    }
    let before = e.chain();
    let mut same = cs[9].clone();
    assert_eq!(
        e.push(same.clone()),
        Err(EngineError::NotIncreasing {
            last: cs[9].open_time,
            got: cs[9].open_time
        })
    );
    same.open_time -= MIN;
    assert!(matches!(
        e.push(same),
        Err(EngineError::NotIncreasing { .. })
    ));
    for (field, v) in [
        (0, f64::NAN),
        (1, f64::INFINITY),
        (2, f64::NEG_INFINITY),
        (3, f64::NAN),
    ] {
        let mut c = cs[10].clone();
        *[&mut c.open, &mut c.high, &mut c.low, &mut c.close][field] = v;
        assert!(matches!(e.push(c), Err(EngineError::NonFinite { .. })));
    }
    // overflow, as SQL: close / previous close
    let mut c = cs[10].clone();
    e.push(Candle {
        close: 1e-300,
        low: 1e-300,
        ..c.clone()
    })
    .unwrap();
    let chain_tiny = e.chain();
    c.open_time += MIN;
    c.close = 1e300;
    c.high = 1e300;
    assert_eq!(
        e.push(c),
        Err(EngineError::Float {
            metric: "log_return",
            err: FloatError::Overflow
        })
    );
    assert_eq!(e.chain(), chain_tiny);
    assert_ne!(before, chain_tiny);
    // no candle: no row
    assert_eq!(Engine::<Dec>::new().row(), Ok(None));
}

#[test]
fn rejects_forged_checkpoints() {
    let cs = series(60, SHAPES[0]);
    let (_, chains) = run(&cs);
    let good = chains[40].clone();
    assert!(Engine::from_checkpoint(good.clone()).is_ok());
    assert!(Engine::from_checkpoint(Checkpoint::<Dec>::fresh()).is_ok());
    let rsi_len = good.rsi_state.as_ref().unwrap().len();
    let cases: Vec<(&str, Checkpoint<Dec>)> = vec![
        (
            "negative candles",
            Checkpoint {
                candles: Some(-1),
                ..good.clone()
            },
        ),
        (
            "NULL candles",
            Checkpoint {
                candles: None,
                ..good.clone()
            },
        ),
        (
            "another count",
            Checkpoint {
                candles: Some(12),
                ..good.clone()
            },
        ),
        (
            "NULL open_time",
            Checkpoint {
                open_time: None,
                ..good.clone()
            },
        ),
        (
            "other close",
            Checkpoint {
                close: Some(1.5),
                ..good.clone()
            },
        ),
        (
            "infinite close",
            Checkpoint {
                close: Some(f64::INFINITY),
                ..good.clone()
            },
        ),
        (
            "NULL volume",
            Checkpoint {
                cum_quote_volume: None,
                ..good.clone()
            },
        ),
        (
            "negative sum",
            Checkpoint {
                sum_log_return_sq: Some(-1e-9),
                ..good.clone()
            },
        ),
        (
            "NaN sum",
            Checkpoint {
                sum_log_return_sq: Some(f64::NAN),
                ..good.clone()
            },
        ),
        (
            "NULL rsi",
            Checkpoint {
                rsi_state: None,
                ..good.clone()
            },
        ),
        (
            "short rsi",
            Checkpoint {
                rsi_state: Some(vec![Some(1.0); rsi_len - 1]),
                ..good.clone()
            },
        ),
        (
            "NULL macd",
            Checkpoint {
                macd_state: None,
                ..good.clone()
            },
        ),
        (
            "fresh with data",
            Checkpoint {
                cum_quote_volume: Some(Dec { units: 5, scale: 0 }),
                ..Checkpoint::fresh()
            },
        ),
        (
            "fresh with a close",
            Checkpoint {
                close: Some(1.0),
                ..Checkpoint::fresh()
            },
        ),
    ];
    let mut cases = cases;
    let mut forge = |what: &'static str, arr: usize, i: usize, v: Option<f64>| {
        let mut cp = good.clone();
        let a = if arr == 0 {
            cp.rsi_state.as_mut()
        } else {
            cp.macd_state.as_mut()
        };
        a.unwrap()[i] = v;
        cases.push((what, cp));
    };
    forge("negative average loss", 0, 6, Some(-1.0));
    forge("RSI output NaN", 0, 0, Some(f64::NAN));
    forge("RSI output NULL after the lookback", 0, 0, None);
    forge("NULL state element", 0, 3, None);
    forge("wrong RSI marker", 0, 1, Some(7201.0));
    forge("wrong RSI period", 0, 2, Some(10.0));
    forge("MACD counter", 1, 7, Some(3.0));
    forge("MACD output infinite", 1, 1, Some(f64::INFINITY));
    for (what, cp) in cases {
        assert!(
            matches!(
                Engine::from_checkpoint(cp),
                Err(EngineError::InvalidCheckpoint { .. })
            ),
            "{what}"
        );
    }
    // the MACD output of 40 candles is set (lookback 33), of 20 it must be NULL
    let early = chains[20].clone();
    assert!(Engine::from_checkpoint(early.clone()).is_ok());
    let mut m = early.macd_state.clone().unwrap();
    m[2] = Some(0.5);
    assert!(Engine::from_checkpoint(Checkpoint {
        macd_state: Some(m),
        ..early
    })
    .is_err());
}
