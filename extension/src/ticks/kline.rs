//! Trades → Binance kline fields, exactly (Binance: a kline is the aggregate of its trades).

use std::cmp::Ordering;

/// An exact decimal. The SQL wrapper implements it with PostgreSQL's own `numeric_add`,
/// `numeric_mul` and `numeric_cmp` (results equal SQL numeric arithmetic in value and display
/// scale); the tests use integers.
pub trait Decimal: Clone {
    /// `0` (numeric scale 0).
    fn zero() -> Self;
    /// `self + other`.
    fn add(&self, other: &Self) -> Self;
    /// `self * other`.
    fn mul(&self, other: &Self) -> Self;
    /// Numeric order (by value).
    fn cmp(&self, other: &Self) -> Ordering;
}

/// One aggregate trade (Binance aggTrade `{a, p, q, f, l, m}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Trade<D> {
    /// `a`: aggregate trade id (contiguous per symbol)
    pub agg_trade_id: i64,
    /// `p`: price, quote units per base unit
    pub price: D,
    /// `q`: quantity, base units
    pub quantity: D,
    /// `f`: first (raw) trade id
    pub first_trade_id: i64,
    /// `l`: last (raw) trade id
    pub last_trade_id: i64,
    /// `m`: the buyer was the maker (the taker sold)
    pub is_buyer_maker: bool,
}

/// The kline of a set of trades: Binance's kline fields (kline stream `o h l c v q n V Q`,
/// plus `f`/`L` first and last trade id) and the first and last aggregate trade id.
#[derive(Debug, Clone, PartialEq)]
pub struct Kline<D> {
    pub open: D,
    pub high: D,
    pub low: D,
    pub close: D,
    pub volume: D,
    pub quote_volume: D,
    pub trades: i64,
    pub taker_buy_volume: D,
    pub taker_buy_quote_volume: D,
    pub first_trade_id: i64,
    pub last_trade_id: i64,
    pub first_agg_trade_id: i64,
    pub last_agg_trade_id: i64,
}

/// Why a trade was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KlineError {
    /// `first_trade_id > last_trade_id`, or a negative id.
    #[error("trade ids must satisfy 0 <= first_trade_id <= last_trade_id, got {first}..{last}")]
    TradeIds { first: i64, last: i64 },
    /// The trade count does not fit a bigint.
    #[error("the trade count overflows bigint")]
    Overflow,
}

/// Trades → kline, streaming and mergeable (Binance kline semantics).
/// # Input       aggregate trades in any order (a set: duplicates count as often as given).
/// # Output      [`Kline`]: open / close = price of the trade with the lowest / highest
///   `agg_trade_id` (equal ids: the lower / higher price), high / low = max / min price,
///   `volume` = Σ quantity, `quote_volume` = Σ price·quantity (each product exact),
///   `trades` = Σ (last_trade_id − first_trade_id + 1), `taker_buy_volume` /
///   `taker_buy_quote_volume` = the same sums over trades with `is_buyer_maker = false`
///   (the taker bought); first/last trade ids = min `f` / max `l`. Exact decimals throughout
///   (the result does not depend on the order of the trades or on how they were split
///   between partial states). None for no trades.
/// # Errors      [`KlineError`].
/// # Reference   Binance spot/USD-M docs, "Kline/Candlestick Data" and "Aggregate Trade
///   Streams" (a 1m kline is the aggregate of the minute's trades).
#[derive(Debug, Clone)]
pub struct KlineState<D> {
    k: Option<Kline<D>>,
}

impl<D: Decimal> Default for KlineState<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Decimal> KlineState<D> {
    /// No trades yet.
    pub fn new() -> Self {
        KlineState { k: None }
    }

    /// Adds one trade. # Errors [`KlineError`] (the state is then unchanged).
    pub fn update(&mut self, t: Trade<D>) -> Result<(), KlineError> {
        if t.first_trade_id < 0 || t.first_trade_id > t.last_trade_id {
            return Err(KlineError::TradeIds {
                first: t.first_trade_id,
                last: t.last_trade_id,
            });
        }
        let n = t.last_trade_id - t.first_trade_id + 1;
        let quote = t.price.mul(&t.quantity);
        let (tb, tbq) = if t.is_buyer_maker {
            (D::zero(), D::zero())
        } else {
            (t.quantity.clone(), quote.clone())
        };
        let one = Kline {
            open: t.price.clone(),
            high: t.price.clone(),
            low: t.price.clone(),
            close: t.price,
            volume: t.quantity,
            quote_volume: quote,
            trades: n,
            taker_buy_volume: tb,
            taker_buy_quote_volume: tbq,
            first_trade_id: t.first_trade_id,
            last_trade_id: t.last_trade_id,
            first_agg_trade_id: t.agg_trade_id,
            last_agg_trade_id: t.agg_trade_id,
        };
        self.merge_kline(one)
    }

    /// Adds the trades of another state (the combine step). # Errors [`KlineError::Overflow`].
    pub fn merge(&mut self, other: &KlineState<D>) -> Result<(), KlineError> {
        match &other.k {
            None => Ok(()),
            Some(k) => self.merge_kline(k.clone()),
        }
    }

    fn merge_kline(&mut self, b: Kline<D>) -> Result<(), KlineError> {
        let Some(a) = &self.k else {
            self.k = Some(b);
            return Ok(());
        };
        let trades = a.trades.checked_add(b.trades).ok_or(KlineError::Overflow)?;
        // open: lowest (agg_trade_id, price); close: highest (agg_trade_id, price)
        let (open, first_agg) = match a
            .first_agg_trade_id
            .cmp(&b.first_agg_trade_id)
            .then_with(|| a.open.cmp(&b.open))
        {
            Ordering::Greater => (b.open.clone(), b.first_agg_trade_id),
            _ => (a.open.clone(), a.first_agg_trade_id),
        };
        let (close, last_agg) = match a
            .last_agg_trade_id
            .cmp(&b.last_agg_trade_id)
            .then_with(|| a.close.cmp(&b.close))
        {
            Ordering::Less => (b.close.clone(), b.last_agg_trade_id),
            _ => (a.close.clone(), a.last_agg_trade_id),
        };
        let high = if b.high.cmp(&a.high) == Ordering::Greater {
            b.high.clone()
        } else {
            a.high.clone()
        };
        let low = if b.low.cmp(&a.low) == Ordering::Less {
            b.low.clone()
        } else {
            a.low.clone()
        };
        let k = Kline {
            open,
            high,
            low,
            close,
            volume: a.volume.add(&b.volume),
            quote_volume: a.quote_volume.add(&b.quote_volume),
            trades,
            taker_buy_volume: a.taker_buy_volume.add(&b.taker_buy_volume),
            taker_buy_quote_volume: a.taker_buy_quote_volume.add(&b.taker_buy_quote_volume),
            first_trade_id: a.first_trade_id.min(b.first_trade_id),
            last_trade_id: a.last_trade_id.max(b.last_trade_id),
            first_agg_trade_id: first_agg,
            last_agg_trade_id: last_agg,
        };
        self.k = Some(k);
        Ok(())
    }

    /// The kline so far (None before the first trade).
    pub fn value(&self) -> Option<&Kline<D>> {
        self.k.as_ref()
    }

    /// Replaces the state by a kline (the SQL wrapper's deserialisation).
    pub fn from_kline(k: Option<Kline<D>>) -> Self {
        KlineState { k }
    }
}

/// Trade-side features of a kline (from its trades, or from a stored kline's taker fields).
/// # Output      `vwap` = quote_volume / volume (price units; None when volume = 0),
///   `taker_buy_ratio` = taker_buy_volume / volume (0..1; None when volume = 0),
///   `signed_volume` = taker_buy_volume − (volume − taker_buy_volume) (base units: taker buys
///   minus taker sells), `trades`. Each quotient is of the two sums converted to the nearest
///   double (one rounding each, then one IEEE division).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradeFeatures {
    pub vwap: Option<f64>,
    pub trades: i64,
    pub taker_buy_ratio: Option<f64>,
    pub signed_volume: f64,
}

impl TradeFeatures {
    /// From the kline's sums as doubles.
    pub fn from_sums(volume: f64, quote_volume: f64, taker_buy_volume: f64, trades: i64) -> Self {
        let ratio = |x: f64| {
            (volume != 0.0)
                .then(|| x / volume)
                .filter(|v| v.is_finite())
        };
        TradeFeatures {
            vwap: ratio(quote_volume),
            trades,
            taker_buy_ratio: ratio(taker_buy_volume),
            signed_volume: taker_buy_volume - (volume - taker_buy_volume),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Decimal for i128 {
        fn zero() -> Self {
            0
        }
        fn add(&self, o: &Self) -> Self {
            self + o
        }
        fn mul(&self, o: &Self) -> Self {
            self * o
        }
        fn cmp(&self, o: &Self) -> Ordering {
            Ord::cmp(self, o)
        }
    }

    fn t(a: i64, p: i128, q: i128, f: i64, l: i64, m: bool) -> Trade<i128> {
        Trade {
            agg_trade_id: a,
            price: p,
            quantity: q,
            first_trade_id: f,
            last_trade_id: l,
            is_buyer_maker: m,
        }
    }

    fn fold(ts: &[Trade<i128>]) -> Option<Kline<i128>> {
        let mut s = KlineState::new();
        for x in ts {
            s.update(x.clone()).unwrap();
        }
        s.value().cloned()
    }

    #[test]
    fn hand_checked_minute() {
        // TC1: three trades; the buyer-maker one is a taker sell
        let ts = [
            t(10, 100, 2, 100, 101, false),
            t(11, 105, 1, 102, 102, true),
            t(12, 99, 3, 103, 105, false),
        ];
        let k = fold(&ts).unwrap();
        assert_eq!(
            k,
            Kline {
                open: 100,
                high: 105,
                low: 99,
                close: 99,
                volume: 6,
                quote_volume: 200 + 105 + 297,
                trades: 2 + 1 + 3,
                taker_buy_volume: 5,
                taker_buy_quote_volume: 200 + 297,
                first_trade_id: 100,
                last_trade_id: 105,
                first_agg_trade_id: 10,
                last_agg_trade_id: 12,
            }
        );
        // TC2: no trades
        assert_eq!(fold(&[]), None);
    }

    #[test]
    fn order_and_split_independent() {
        // TC3: a pseudo-random minute: every permutation of the input (rotations and a
        // reversal) and every split into two merged partial states give the same kline
        let ts: Vec<Trade<i128>> = (0..200)
            .map(|i| {
                let p = 1000 + (i * 37 % 23) as i128 - (i % 7) as i128;
                t(
                    500 + i,
                    p,
                    1 + (i * 13 % 5) as i128,
                    9000 + 3 * i,
                    9000 + 3 * i + (i % 3),
                    i % 4 == 0,
                )
            })
            .collect();
        let want = fold(&ts).unwrap();
        assert_eq!(want.open, ts[0].price);
        assert_eq!(want.close, ts[199].price);
        let mut rev = ts.clone();
        rev.reverse();
        assert_eq!(fold(&rev).unwrap(), want);
        for r in [1, 50, 199] {
            let mut rot = ts.clone();
            rot.rotate_left(r);
            assert_eq!(fold(&rot).unwrap(), want);
        }
        for cut in [0, 1, 77, 199, 200] {
            let mut a = KlineState::new();
            let mut b = KlineState::new();
            // interleaved split: even positions to a, odd to b, below the cut; the rest to b
            for (i, x) in ts.iter().enumerate() {
                if i < cut && i % 2 == 0 {
                    a.update(x.clone()).unwrap();
                } else {
                    b.update(x.clone()).unwrap();
                }
            }
            a.merge(&b).unwrap();
            assert_eq!(a.value().unwrap(), &want, "cut {cut}");
        }
    }

    #[test]
    fn equal_ids_break_ties_by_price_and_errors() {
        // TC4: duplicated id: open = the lower price, close = the higher, in either order
        for ts in [
            [t(5, 10, 1, 1, 1, true), t(5, 12, 1, 1, 1, true)],
            [t(5, 12, 1, 1, 1, true), t(5, 10, 1, 1, 1, true)],
        ] {
            let k = fold(&ts).unwrap();
            assert_eq!((k.open, k.close), (10, 12));
        }
        // TC5: bad trade ids are rejected and leave the state unchanged
        let mut s = KlineState::new();
        s.update(t(1, 10, 1, 5, 5, false)).unwrap();
        assert_eq!(
            s.update(t(2, 10, 1, 6, 5, false)),
            Err(KlineError::TradeIds { first: 6, last: 5 })
        );
        assert!(s.update(t(2, 10, 1, -1, 5, false)).is_err());
        assert_eq!(s.value().unwrap().trades, 1);
        // TC6: trade count overflow
        let mut s = KlineState::new();
        s.update(t(1, 1, 1, 0, i64::MAX - 1, false)).unwrap();
        assert_eq!(
            s.update(t(2, 1, 1, 0, i64::MAX - 1, false)),
            Err(KlineError::Overflow)
        );
    }

    #[test]
    fn trade_features() {
        // TC7: vwap, taker-buy ratio, signed volume; zero volume gives None, never NaN
        let f = TradeFeatures::from_sums(4.0, 402.0, 3.0, 7);
        assert_eq!(f.vwap, Some(100.5));
        assert_eq!(f.taker_buy_ratio, Some(0.75));
        assert_eq!(f.signed_volume, 2.0);
        assert_eq!(f.trades, 7);
        let z = TradeFeatures::from_sums(0.0, 0.0, 0.0, 0);
        assert_eq!(
            (z.vwap, z.taker_buy_ratio, z.signed_volume),
            (None, None, 0.0)
        );
    }
}
