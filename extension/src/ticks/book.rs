//! Best bid/ask updates → book features of a bucket (a minute): time-weighted imbalance,
//! spread, weighted mid.

use std::cmp::Ordering;

/// One best bid/ask update (Binance bookTicker `{u, b, B, a, A}` and its time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    /// event time, µs (any epoch aligned to the bucket origin, e.g. PostgreSQL's 2000-01-01)
    pub time: i64,
    /// `u`: order book update id (orders updates of equal time)
    pub update_id: i64,
    /// `b`, `B`: best bid price and quantity
    pub bid: f64,
    pub bid_qty: f64,
    /// `a`, `A`: best ask price and quantity
    pub ask: f64,
    pub ask_qty: f64,
}

impl Quote {
    /// The total order the state sorts by: time, update id, then the values (so that equal
    /// keys with different values, impossible in `market.book_tickers`, still sort the same
    /// way whatever the input order).
    fn order(&self, o: &Self) -> Ordering {
        self.time
            .cmp(&o.time)
            .then(self.update_id.cmp(&o.update_id))
            .then(self.bid.total_cmp(&o.bid))
            .then(self.bid_qty.total_cmp(&o.bid_qty))
            .then(self.ask.total_cmp(&o.ask))
            .then(self.ask_qty.total_cmp(&o.ask_qty))
    }
    /// mid = (a + b) / 2
    fn mid(&self) -> f64 {
        (self.ask + self.bid) / 2.0
    }
    /// (a − b) / mid · 10⁴
    fn spread_bps(&self) -> f64 {
        (self.ask - self.bid) / self.mid() * 1e4
    }
    /// (B − A) / (B + A); None when B + A = 0
    fn imbalance(&self) -> Option<f64> {
        let d = self.bid_qty + self.ask_qty;
        (d != 0.0).then(|| (self.bid_qty - self.ask_qty) / d)
    }
    /// (a·B + b·A) / (A + B); None when A + B = 0
    fn weighted_mid(&self) -> Option<f64> {
        let d = self.ask_qty + self.bid_qty;
        (d != 0.0).then(|| (self.ask * self.bid_qty + self.bid * self.ask_qty) / d)
    }
}

/// The book features of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookMinute {
    /// time-weighted mean of (B − A)/(B + A), −1..1 (None: no quote with B + A > 0)
    pub imbalance: Option<f64>,
    /// time-weighted mean spread, basis points of the mid
    pub spread_bps: f64,
    /// spread of the last quote, basis points
    pub spread_bps_last: f64,
    /// weighted mid of the last quote, price units (None when its A + B = 0)
    pub weighted_mid: Option<f64>,
    /// mid of the last quote, price units
    pub mid: f64,
    /// (weighted_mid − mid) / mid · 10⁴ of the last quote, basis points
    pub weighted_mid_offset_bps: Option<f64>,
    /// number of updates
    pub updates: i64,
}

/// Why a quote was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BookError {
    /// A price that is not finite and positive, or a quantity that is not finite and >= 0.
    #[error("{name} must be a finite number {rule}, got {value}")]
    Invalid {
        name: &'static str,
        rule: &'static str,
        value: f64,
    },
    /// A bucket width that is not positive.
    #[error("bucket_width must be a positive interval of days, hours, minutes or seconds")]
    Width,
}

/// Book features of a bucket, streaming and mergeable.
/// # Input       best bid/ask updates in any order; `width` = the bucket width in µs.
/// # Output      [`BookMinute`]. Sorted by (time, update_id), each quote stands from its time
///   until the next quote's time; the last one until the end of its bucket
///   (`floor(time / width) · width + width`, buckets aligned to the epoch of the times,
///   PostgreSQL's 2000-01-01 in SQL, so 1-minute buckets are UTC minutes). The time before the
///   first quote of the bucket is not covered (the quote standing then belongs to an earlier
///   bucket: a bucket's features are a function of its own rows). Imbalance and spread are
///   means over those intervals weighted by their length in µs (Σ wᵢ·xᵢ / Σ wᵢ, summed in
///   that order); the weighted mid and its offset are those of the last quote.
///   None when there is no quote.
/// # Errors      [`BookError`] (the state is then unchanged).
/// # Reference   Stoikov, "The micro-price: a high-frequency estimator of future prices",
///   Quantitative Finance 18(12), 2018 (the weighted mid `(a·B + b·A)/(A + B)` is its
///   first-order micro-price); hftbacktest and nautilus_trader for the imbalance and spread
///   conventions.
#[derive(Debug, Clone, Default)]
pub struct BookState {
    quotes: Vec<Quote>,
    /// `quotes` is sorted and `closed`/the sums describe it
    sorted: bool,
    /// quotes[..closed] have their interval (to the next quote) in the sums
    closed: usize,
    w_imb: i128,
    s_imb: f64,
    w_spread: i128,
    s_spread: f64,
}

impl BookState {
    /// No quotes yet.
    pub fn new() -> Self {
        BookState {
            sorted: true,
            ..Default::default()
        }
    }

    /// Checks a quote's values.
    pub fn check(q: &Quote) -> Result<(), BookError> {
        for (name, value, positive) in [
            ("best_bid_price", q.bid, true),
            ("best_ask_price", q.ask, true),
            ("best_bid_qty", q.bid_qty, false),
            ("best_ask_qty", q.ask_qty, false),
        ] {
            let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
            if !ok {
                return Err(BookError::Invalid {
                    name,
                    rule: if positive { "> 0" } else { ">= 0" },
                    value,
                });
            }
        }
        Ok(())
    }

    /// Adds one quote. # Errors [`BookError::Invalid`].
    pub fn update(&mut self, q: Quote) -> Result<(), BookError> {
        Self::check(&q)?;
        if self.sorted {
            if let Some(last) = self.quotes.last() {
                if q.order(last) == Ordering::Less {
                    self.sorted = false;
                }
            }
        }
        self.quotes.push(q);
        Ok(())
    }

    /// Adds the quotes of another state (the combine step).
    pub fn merge(&mut self, other: &BookState) {
        if other.quotes.is_empty() {
            return;
        }
        self.quotes.extend_from_slice(&other.quotes);
        self.sorted = false;
    }

    /// The quotes held (for serialisation).
    pub fn quotes(&self) -> &[Quote] {
        &self.quotes
    }

    /// A state holding `quotes` (deserialisation).
    pub fn from_quotes(quotes: Vec<Quote>) -> Self {
        BookState {
            quotes,
            sorted: false,
            ..Default::default()
        }
    }

    /// The features of the quotes so far, buckets of `width` µs. Sorts the quotes when they
    /// did not arrive in order (the result does not depend on the input order); in-order
    /// input costs O(1) amortised per quote, also when called after every row (window use).
    /// # Errors [`BookError::Width`].
    pub fn value(&mut self, width: i64) -> Result<Option<BookMinute>, BookError> {
        if width <= 0 {
            return Err(BookError::Width);
        }
        if !self.sorted {
            self.quotes.sort_by(Quote::order);
            self.sorted = true;
            self.closed = 0;
            self.w_imb = 0;
            self.s_imb = 0.0;
            self.w_spread = 0;
            self.s_spread = 0.0;
        }
        let n = self.quotes.len();
        let Some(last) = self.quotes.last().copied() else {
            return Ok(None);
        };
        while self.closed + 1 < n {
            let (q, next) = (self.quotes[self.closed], self.quotes[self.closed + 1]);
            let w = i128::from(next.time) - i128::from(q.time);
            self.add(&q, w);
            self.closed += 1;
        }
        let end = last.time.div_euclid(width) * width + width;
        let w_last = i128::from(end) - i128::from(last.time);
        let (mut w_imb, mut s_imb) = (self.w_imb, self.s_imb);
        if let Some(x) = last.imbalance() {
            w_imb += w_last;
            s_imb += w_last as f64 * x;
        }
        let w_spread = self.w_spread + w_last;
        let s_spread = self.s_spread + w_last as f64 * last.spread_bps();
        let mid = last.mid();
        let wmid = last.weighted_mid();
        let finite = |x: f64| x.is_finite().then_some(x);
        Ok(Some(BookMinute {
            imbalance: (w_imb > 0).then(|| s_imb / w_imb as f64).and_then(finite),
            spread_bps: s_spread / w_spread as f64,
            spread_bps_last: last.spread_bps(),
            weighted_mid: wmid,
            mid,
            weighted_mid_offset_bps: wmid.map(|w| (w - mid) / mid * 1e4).and_then(finite),
            updates: n as i64,
        }))
    }

    fn add(&mut self, q: &Quote, w: i128) {
        if let Some(x) = q.imbalance() {
            self.w_imb += w;
            self.s_imb += w as f64 * x;
        }
        self.w_spread += w;
        self.s_spread += w as f64 * q.spread_bps();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn q(time: i64, id: i64, bid: f64, bq: f64, ask: f64, aq: f64) -> Quote {
        Quote {
            time,
            update_id: id,
            bid,
            bid_qty: bq,
            ask,
            ask_qty: aq,
        }
    }

    fn run(qs: &[Quote]) -> Option<BookMinute> {
        let mut s = BookState::new();
        for x in qs {
            s.update(*x).unwrap();
        }
        s.value(MIN).unwrap()
    }

    #[test]
    fn hand_checked_minute() {
        // TC1: minute [10 min, 11 min): a quote at +0 s (B=3, A=1: imbalance 0.5, spread
        // 2/100 = 200 bps) stands 15 s, one at +15 s (B=1, A=1: 0, spread 100 bps) stands the
        // remaining 45 s
        let t0 = 10 * MIN;
        let m = run(&[
            q(t0, 1, 99.0, 3.0, 101.0, 1.0),
            q(t0 + 15_000_000, 2, 99.5, 1.0, 100.5, 1.0),
        ])
        .unwrap();
        assert_eq!(m.imbalance, Some((15.0 * 0.5 + 45.0 * 0.0) / 60.0));
        assert_eq!(m.spread_bps, (15.0 * 200.0 + 45.0 * 100.0) / 60.0);
        assert_eq!(m.spread_bps_last, 100.0);
        assert_eq!(m.mid, 100.0);
        assert_eq!(m.weighted_mid, Some(100.0));
        assert_eq!(m.weighted_mid_offset_bps, Some(0.0));
        assert_eq!(m.updates, 2);
        // TC2: the weighted mid leans to the side with the smaller quantity (Stoikov):
        // b=99, B=3, a=101, A=1 -> (101·3 + 99·1)/4 = 100.5, +50 bps
        let m = run(&[q(t0 + 5, 7, 99.0, 3.0, 101.0, 1.0)]).unwrap();
        assert_eq!(m.weighted_mid, Some(100.5));
        assert_eq!(m.weighted_mid_offset_bps, Some(50.0));
        assert_eq!(m.imbalance, Some(0.5));
        // TC3: no quotes
        assert_eq!(run(&[]), None);
    }

    #[test]
    fn empty_sides_give_none_never_nan() {
        // TC4: B = A = 0: imbalance and weighted mid undefined for that quote
        let t0 = 3 * MIN;
        let m = run(&[q(t0, 1, 10.0, 0.0, 11.0, 0.0)]).unwrap();
        assert_eq!(m.imbalance, None);
        assert_eq!(m.weighted_mid, None);
        assert_eq!(m.weighted_mid_offset_bps, None);
        assert!(m.spread_bps.is_finite());
        // an empty quote for 30 s then a full one for 30 s: imbalance is the full one's
        let m = run(&[
            q(t0, 1, 10.0, 0.0, 11.0, 0.0),
            q(t0 + 30_000_000, 2, 10.0, 1.0, 11.0, 3.0),
        ])
        .unwrap();
        assert_eq!(m.imbalance, Some(-0.5));
    }

    #[test]
    fn order_independent_and_incremental() {
        // TC5: 500 quotes over a minute with ties in time; any input order, a merge of two
        // interleaved halves, and a value() read after every row give the same result
        let t0 = 7 * MIN;
        let qs: Vec<Quote> = (0..500)
            .map(|i| {
                let bid = 100.0 + (i * 37 % 23) as f64 * 0.01;
                q(
                    t0 + (i as i64 / 2) * 100_000,
                    1000 + i as i64,
                    bid,
                    1.0 + (i * 13 % 7) as f64,
                    bid + 0.01 + (i % 3) as f64 * 0.01,
                    0.5 + (i * 7 % 5) as f64,
                )
            })
            .collect();
        let want = run(&qs).unwrap();
        let mut rev = qs.clone();
        rev.reverse();
        assert_eq!(run(&rev).unwrap(), want);
        let mut rot = qs.clone();
        rot.rotate_left(123);
        assert_eq!(run(&rot).unwrap(), want);
        let (mut a, mut b) = (BookState::new(), BookState::new());
        for (i, x) in qs.iter().enumerate() {
            if i % 2 == 0 {
                a.update(*x)
            } else {
                b.update(*x)
            }
            .unwrap();
        }
        a.merge(&b);
        assert_eq!(a.value(MIN).unwrap().unwrap(), want);
        let mut s = BookState::new();
        for x in &qs {
            s.update(*x).unwrap();
            s.value(MIN).unwrap();
        }
        assert_eq!(s.value(MIN).unwrap().unwrap(), want);
        // the time-weighted imbalance equals a direct computation
        let mut num = 0.0;
        let mut den = 0i128;
        for i in 0..qs.len() {
            let end = if i + 1 < qs.len() {
                qs[i + 1].time
            } else {
                t0 + MIN
            };
            let w = i128::from(end - qs[i].time);
            num += w as f64 * qs[i].imbalance().unwrap();
            den += w;
        }
        assert_eq!(want.imbalance, Some(num / den as f64));
        assert_eq!(want.updates, 500);
    }

    #[test]
    fn errors() {
        // TC6: bad values are rejected, the state is unchanged; a bad width
        let mut s = BookState::new();
        for bad in [
            q(0, 1, f64::NAN, 1.0, 2.0, 1.0),
            q(0, 1, 0.0, 1.0, 2.0, 1.0),
            q(0, 1, 1.0, -1.0, 2.0, 1.0),
            q(0, 1, 1.0, 1.0, f64::INFINITY, 1.0),
        ] {
            assert!(matches!(s.update(bad), Err(BookError::Invalid { .. })));
        }
        assert_eq!(s.value(MIN), Ok(None));
        assert_eq!(s.value(0), Err(BookError::Width));
        // TC7: a quote at the very end of its bucket stands 1 µs
        let m = run(&[q(MIN - 1, 1, 1.0, 2.0, 1.5, 1.0)]).unwrap();
        assert_eq!(m.imbalance, Some(1.0 / 3.0));
    }
}
