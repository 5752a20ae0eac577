//! SQL surface of the tick aggregates (`crate::ticks`):
//!
//! - `ta.kline(agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker)`
//!   → `ta.kline`: the Binance kline fields of a set of trades, numeric (exact: PostgreSQL's
//!   own `numeric_add`/`numeric_mul`). Order-independent, with combine / serialize /
//!   deserialize functions: usable `OVER`, in parallel plans and in TimescaleDB continuous
//!   aggregates.
//! - `ta.trade_features(...)`: the same aggregate with the trade-side features as result;
//!   `ta.trade_features(volume, quote_volume, trades, taker_buy_volume)`: the same from a
//!   stored kline's fields.
//! - `ta.book_features(event_time, update_id, bid, bid_qty, ask, ask_qty, bucket_width)` →
//!   `ta.book_features`: time-weighted imbalance and spread, weighted mid of a bucket.

use std::cmp::Ordering;

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts};

use super::common::{
    agg_context, c_numeric_add, c_numeric_cmp, c_numeric_mul, c_numeric_sub, composite_return,
    form_tuple, raise_msg, result_tupdesc, RawNumeric,
};
use super::screener::NumBytes;
use crate::screener::Volume;
use crate::ticks::book::BookError;
use crate::ticks::kline::{KlineError, TradeFeatures};
use crate::ticks::{BookState, Decimal, Kline, KlineState, Quote, Trade};

composite_return!(KlineResult, "ta.kline");
composite_return!(TradeFeaturesResult, "ta.trade_features");
composite_return!(BookFeaturesResult, "ta.book_features");

extension_sql_file!("sql/tick_types.sql", name = "tick_types");

impl Decimal for NumBytes {
    fn zero() -> Self {
        <NumBytes as Volume>::zero()
    }
    fn add(&self, other: &Self) -> Self {
        self.binary(other, c_numeric_add)
    }
    fn mul(&self, other: &Self) -> Self {
        self.binary(other, c_numeric_mul)
    }
    fn cmp(&self, other: &Self) -> Ordering {
        self.with_datum(|a| {
            other.with_datum(|b| unsafe {
                let r =
                    pg_sys::DirectFunctionCall2Coll(Some(c_numeric_cmp), pg_sys::InvalidOid, a, b);
                (r.value() as i32).cmp(&0)
            })
        })
    }
}

fn number(fname: &str, arg: &str, v: RawNumeric) -> NumBytes {
    let n = unsafe { NumBytes::from_datum(v.0) };
    if n.is_special() {
        raise_msg(fname, &format!("{arg} must be a finite number"));
    }
    n
}

// ---------------------------------------------------------------------------------------
// ta.kline / ta.trade_features (aggregate)

/// Transition state of ta.kline and ta.trade_features.
struct KlineAgg {
    k: KlineState<NumBytes>,
    tupdesc: pg_sys::TupleDesc,
    ctx: pg_sys::MemoryContext,
}

unsafe fn kline_alloc(ctx: pg_sys::MemoryContext, k: KlineState<NumBytes>) -> Internal {
    let p = PgMemoryContexts::For(ctx).leak_and_drop_on_delete(KlineAgg {
        k,
        tupdesc: std::ptr::null_mut(),
        ctx,
    });
    Internal::from(Some(pg_sys::Datum::from(p)))
}

fn kline_err(fname: &str, e: KlineError) -> ! {
    if let KlineError::Overflow = e {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{fname}: {e}")
        );
    }
    raise_msg(fname, &e.to_string())
}

/// Transition function of ta.kline and ta.trade_features: a row with a NULL argument is
/// skipped; NaN/±Infinity price or quantity and inconsistent trade ids raise 22023.
#[pg_extern(immutable, parallel_safe, name = "kline_trans", requires = ["tick_types"])]
#[allow(clippy::too_many_arguments)]
fn kline_trans(
    mut state: Internal,
    agg_trade_id: Option<i64>,
    price: Option<RawNumeric>,
    quantity: Option<RawNumeric>,
    first_trade_id: Option<i64>,
    last_trade_id: Option<i64>,
    is_buyer_maker: Option<bool>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta.kline";
    let (Some(a), Some(p), Some(q), Some(f), Some(l), Some(m)) = (
        agg_trade_id,
        price,
        quantity,
        first_trade_id,
        last_trade_id,
        is_buyer_maker,
    ) else {
        return state;
    };
    let t = Trade {
        agg_trade_id: a,
        price: number(F, "price", p),
        quantity: number(F, "quantity", q),
        first_trade_id: f,
        last_trade_id: l,
        is_buyer_maker: m,
    };
    unsafe {
        if state.get_mut::<KlineAgg>().is_none() {
            state = kline_alloc(agg_context(fcinfo, F), KlineState::new());
        }
        let st = state.get_mut::<KlineAgg>().expect("allocated");
        if let Err(e) = st.k.update(t) {
            kline_err(F, e);
        }
    }
    state
}

/// Combine function of ta.kline / ta.trade_features (parallel and partial aggregation).
#[pg_extern(immutable, parallel_safe, name = "kline_combine")]
fn kline_combine(mut a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    const F: &str = "ta.kline";
    unsafe {
        let Some(bs) = b.get::<KlineAgg>() else {
            return a;
        };
        match a.get_mut::<KlineAgg>() {
            Some(st) => {
                if let Err(e) = st.k.merge(&bs.k) {
                    kline_err(F, e);
                }
                a
            }
            None => kline_alloc(agg_context(fcinfo, F), bs.k.clone()),
        }
    }
}

const KLINE_NUMERICS: usize = 8;

/// Serialize function of ta.kline / ta.trade_features: the state as bytes (native endian;
/// parallel workers of one server only).
#[pg_extern(immutable, parallel_safe, strict, name = "kline_serialize")]
fn kline_serialize(state: Internal) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let k = unsafe { state.get::<KlineAgg>() }.and_then(|s| s.k.value());
    let Some(k) = k else {
        out.push(0);
        return out;
    };
    out.push(1);
    for x in [
        k.trades,
        k.first_trade_id,
        k.last_trade_id,
        k.first_agg_trade_id,
        k.last_agg_trade_id,
    ] {
        out.extend_from_slice(&x.to_ne_bytes());
    }
    for n in [
        &k.open,
        &k.high,
        &k.low,
        &k.close,
        &k.volume,
        &k.quote_volume,
        &k.taker_buy_volume,
        &k.taker_buy_quote_volume,
    ] {
        let p = n.payload();
        out.extend_from_slice(&(p.len() as u32).to_ne_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn decode_kline(b: &[u8]) -> Option<Option<Kline<NumBytes>>> {
    let (&flag, mut rest) = b.split_first()?;
    if flag == 0 {
        return rest.is_empty().then_some(None);
    }
    let mut ints = [0i64; 5];
    for x in &mut ints {
        let (h, t) = rest.split_at_checked(8)?;
        *x = i64::from_ne_bytes(h.try_into().ok()?);
        rest = t;
    }
    let mut nums = Vec::with_capacity(KLINE_NUMERICS);
    for _ in 0..KLINE_NUMERICS {
        let (h, t) = rest.split_at_checked(4)?;
        let len = u32::from_ne_bytes(h.try_into().ok()?) as usize;
        let (p, t) = t.split_at_checked(len)?;
        nums.push(NumBytes::from_payload(p));
        rest = t;
    }
    if !rest.is_empty() {
        return None;
    }
    let mut it = nums.into_iter();
    let mut n = || it.next().expect("8 numerics");
    Some(Some(Kline {
        open: n(),
        high: n(),
        low: n(),
        close: n(),
        volume: n(),
        quote_volume: n(),
        taker_buy_volume: n(),
        taker_buy_quote_volume: n(),
        trades: ints[0],
        first_trade_id: ints[1],
        last_trade_id: ints[2],
        first_agg_trade_id: ints[3],
        last_agg_trade_id: ints[4],
    }))
}

/// Deserialize function of ta.kline / ta.trade_features.
#[pg_extern(immutable, parallel_safe, strict, name = "kline_deserialize")]
fn kline_deserialize(
    bytes: &[u8],
    _internal: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta.kline";
    let k = decode_kline(bytes).unwrap_or_else(|| raise_msg(F, "invalid serialized state"));
    unsafe { kline_alloc(agg_context(fcinfo, F), KlineState::from_kline(k)) }
}

/// Final function of ta.kline.
#[pg_extern(immutable, parallel_safe, name = "kline_final", requires = ["tick_types"])]
fn kline_final(mut state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Option<KlineResult> {
    let st = unsafe { state.get_mut::<KlineAgg>() }?;
    let k = st.k.value()?.clone();
    let i = |x: i64| Some(pg_sys::Datum::from(x));
    let n = |x: &NumBytes| Some(x.to_datum());
    let cols = [
        n(&k.open),
        n(&k.high),
        n(&k.low),
        n(&k.close),
        n(&k.volume),
        n(&k.quote_volume),
        i(k.trades),
        n(&k.taker_buy_volume),
        n(&k.taker_buy_quote_volume),
        i(k.first_trade_id),
        i(k.last_trade_id),
        i(k.first_agg_trade_id),
        i(k.last_agg_trade_id),
    ];
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, "ta.kline");
        Some(KlineResult(form(td, &cols)))
    }
}

unsafe fn form(td: pg_sys::TupleDesc, cols: &[Option<pg_sys::Datum>]) -> pg_sys::Datum {
    let mut values: Vec<pg_sys::Datum> = cols
        .iter()
        .map(|c| c.unwrap_or(pg_sys::Datum::from(0usize)))
        .collect();
    let mut nulls: Vec<bool> = cols.iter().map(Option::is_none).collect();
    unsafe { form_tuple(td, &mut values, &mut nulls) }
}

/// ta.trade_features of the sums: vwap and taker-buy ratio as quotients of the sums converted
/// to double precision, signed volume = 2·taker_buy_volume − volume (exact numeric).
fn trade_features_cols(
    volume: &NumBytes,
    quote_volume: &NumBytes,
    taker_buy_volume: &NumBytes,
    trades: Option<i64>,
) -> [Option<pg_sys::Datum>; 4] {
    let f = TradeFeatures::from_sums(
        Volume::to_f64(volume),
        Volume::to_f64(quote_volume),
        Volume::to_f64(taker_buy_volume),
        trades.unwrap_or(0),
    );
    let signed = Decimal::add(taker_buy_volume, taker_buy_volume).binary(volume, c_numeric_sub);
    let d = |x: Option<f64>| x.map(|v| pg_sys::Datum::from(v.to_bits() as usize));
    [
        d(f.vwap),
        trades.map(pg_sys::Datum::from),
        d(f.taker_buy_ratio),
        Some(signed.to_datum()),
    ]
}

/// Final function of ta.trade_features (aggregate).
#[pg_extern(immutable, parallel_safe, name = "trade_features_final", requires = ["tick_types"])]
fn trade_features_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<TradeFeaturesResult> {
    let st = unsafe { state.get_mut::<KlineAgg>() }?;
    let k = st.k.value()?.clone();
    let cols = trade_features_cols(
        &k.volume,
        &k.quote_volume,
        &k.taker_buy_volume,
        Some(k.trades),
    );
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, "ta.trade_features");
        Some(TradeFeaturesResult(form(td, &cols)))
    }
}

/// ta.trade_features of a stored kline (its volume, quote volume, trade count and taker-buy
/// volume): the same columns as the aggregate over its trades. NULL when volume, quote_volume
/// or taker_buy_volume is NULL.
#[pg_extern(immutable, parallel_safe, name = "trade_features", requires = ["tick_types"])]
fn trade_features_of_kline(
    volume: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    trades: Option<i64>,
    taker_buy_volume: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<TradeFeaturesResult> {
    const F: &str = "ta.trade_features";
    let (v, q, tb) = (
        number(F, "volume", volume?),
        number(F, "quote_volume", quote_volume?),
        number(F, "taker_buy_volume", taker_buy_volume?),
    );
    let cols = trade_features_cols(&v, &q, &tb, trades);
    unsafe {
        let mut td: pg_sys::TupleDesc = std::ptr::null_mut();
        let class = pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut td);
        if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || td.is_null() {
            raise_msg(F, "result type is not a composite type");
        }
        let td = pg_sys::BlessTupleDesc(td);
        Some(TradeFeaturesResult(form(td, &cols)))
    }
}

// ---------------------------------------------------------------------------------------
// ta.book_features

/// Transition state of ta.book_features.
struct BookAgg {
    s: BookState,
    width: i64,
    tupdesc: pg_sys::TupleDesc,
    ctx: pg_sys::MemoryContext,
}

fn book_err(fname: &str, e: BookError) -> ! {
    raise_msg(fname, &e.to_string())
}

/// An interval as µs; months are not a fixed length: refused.
fn width_of(fname: &str, w: Option<Interval>) -> i64 {
    let Some(w) = w else {
        raise_msg(fname, "bucket_width must not be NULL")
    };
    let us = (w.months() == 0)
        .then(|| i64::from(w.days()).checked_mul(86_400_000_000))
        .flatten()
        .and_then(|d| d.checked_add(w.micros()))
        .filter(|&x| x > 0);
    us.unwrap_or_else(|| book_err(fname, BookError::Width))
}

#[allow(clippy::too_many_arguments)]
unsafe fn book_trans(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    time: Option<TimestampWithTimeZone>,
    update_id: Option<i64>,
    prices: [Option<f64>; 4],
    width: Option<Interval>,
) -> Internal {
    const F: &str = "ta.book_features";
    let w = width_of(F, width);
    unsafe {
        match state.get_mut::<BookAgg>() {
            Some(st) if st.width != w => raise_msg(
                F,
                "bucket_width must be constant within a group or partition",
            ),
            Some(_) => {}
            None => {
                let ctx = agg_context(fcinfo, F);
                let p = PgMemoryContexts::For(ctx).leak_and_drop_on_delete(BookAgg {
                    s: BookState::new(),
                    width: w,
                    tupdesc: std::ptr::null_mut(),
                    ctx,
                });
                state = Internal::from(Some(pg_sys::Datum::from(p)));
            }
        }
        let (Some(t), Some(u), [Some(b), Some(bq), Some(a), Some(aq)]) = (time, update_id, prices)
        else {
            return state;
        };
        if !t.is_finite() {
            raise_msg(F, "event_time must be a finite timestamp");
        }
        let st = state.get_mut::<BookAgg>().expect("allocated");
        let q = Quote {
            time: t.into_inner(),
            update_id: u,
            bid: b,
            bid_qty: bq,
            ask: a,
            ask_qty: aq,
        };
        if let Err(e) = st.s.update(q) {
            book_err(F, e);
        }
    }
    state
}

/// Transition function of ta.book_features (numeric prices and quantities, converted to the
/// nearest double precision).
#[pg_extern(immutable, parallel_safe, name = "book_features_trans")]
#[allow(clippy::too_many_arguments)]
fn book_features_trans_numeric(
    state: Internal,
    event_time: Option<TimestampWithTimeZone>,
    update_id: Option<i64>,
    best_bid_price: Option<RawNumeric>,
    best_bid_qty: Option<RawNumeric>,
    best_ask_price: Option<RawNumeric>,
    best_ask_qty: Option<RawNumeric>,
    bucket_width: Option<Interval>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let f = |x: Option<RawNumeric>| x.map(RawNumeric::to_f64);
    unsafe {
        book_trans(
            state,
            fcinfo,
            event_time,
            update_id,
            [
                f(best_bid_price),
                f(best_bid_qty),
                f(best_ask_price),
                f(best_ask_qty),
            ],
            bucket_width,
        )
    }
}

/// Transition function of ta.book_features (double precision).
#[pg_extern(immutable, parallel_safe, name = "book_features_trans")]
#[allow(clippy::too_many_arguments)]
fn book_features_trans_float8(
    state: Internal,
    event_time: Option<TimestampWithTimeZone>,
    update_id: Option<i64>,
    best_bid_price: Option<f64>,
    best_bid_qty: Option<f64>,
    best_ask_price: Option<f64>,
    best_ask_qty: Option<f64>,
    bucket_width: Option<Interval>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        book_trans(
            state,
            fcinfo,
            event_time,
            update_id,
            [best_bid_price, best_bid_qty, best_ask_price, best_ask_qty],
            bucket_width,
        )
    }
}

/// Final function of ta.book_features. It sorts the quotes in place when they came out of
/// order and keeps running sums (the multiset the state stands for never changes), so it is
/// declared READ_ONLY and works as a window function.
#[pg_extern(immutable, parallel_safe, name = "book_features_final", requires = ["tick_types"])]
fn book_features_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<BookFeaturesResult> {
    const F: &str = "ta.book_features";
    let st = unsafe { state.get_mut::<BookAgg>() }?;
    let m = st.s.value(st.width).unwrap_or_else(|e| book_err(F, e))?;
    let d = |x: Option<f64>| x.map(|v| pg_sys::Datum::from(v.to_bits() as usize));
    let cols = [
        d(m.imbalance),
        d(Some(m.spread_bps)),
        d(Some(m.spread_bps_last)),
        d(m.weighted_mid),
        d(Some(m.mid)),
        d(m.weighted_mid_offset_bps),
        Some(pg_sys::Datum::from(m.updates)),
    ];
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, F);
        Some(BookFeaturesResult(form(td, &cols)))
    }
}

extension_sql_file!(
    "sql/ticks.sql",
    name = "ticks_sql",
    requires = [
        "tick_types",
        kline_trans,
        kline_combine,
        kline_serialize,
        kline_deserialize,
        kline_final,
        trade_features_final,
        trade_features_of_kline,
        book_features_trans_numeric,
        book_features_trans_float8,
        book_features_final
    ]
);

// The SQL glue of the tick aggregates: NULL arguments, errors and their SQLSTATEs, window
// use, parallel (partial) aggregation through the combine/serialize functions.
#[cfg(feature = "pg_test")]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn text_of(q: &str) -> String {
        Spi::get_one::<String>(q)
            .expect("query")
            .unwrap_or_default()
    }

    fn err(q: &str) -> String {
        text_of(&format!("SELECT pg_temp.err($q${q}$q$)"))
    }

    fn setup() {
        Spi::run(
            "CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$;
             -- 200,000 trades over 100 minutes, prices and quantities with up to 8 decimals
             CREATE TABLE public.tk_trades AS
             SELECT 1000 + i AS a, (100 + (i * 37 % 1009) * 0.01 + (i % 7) * 0.00000001)::numeric AS p,
                    (0.001 + (i * 13 % 97) * 0.0001)::numeric AS q, 5000 + 2 * i AS f,
                    5000 + 2 * i + (i % 3) AS l,
                    timestamptz '2024-01-01' + i * interval '30 milliseconds' AS t, i % 4 = 0 AS m
               FROM generate_series(0, 199999) i;
             ANALYZE public.tk_trades;",
        )
        .expect("setup");
    }

    #[pg_test]
    fn kline_parallel_equals_serial_and_sums() {
        setup();
        let q = "SELECT string_agg(k::text, ';' ORDER BY b) FROM (
                   SELECT date_bin('1 minute', t, '2000-01-01') AS b,
                          ta.kline(a, p, q, f, l, m) AS k FROM public.tk_trades GROUP BY 1) s";
        Spi::run("SET max_parallel_workers_per_gather = 0").unwrap();
        let serial = text_of(q);
        Spi::run(
            "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
             SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
             SET enable_hashagg = off",
        )
        .unwrap();
        let parallel = text_of(q);
        assert_eq!(serial, parallel);
        // the whole table in one group: partial aggregates in the workers, serialized, combined
        let whole = "SELECT ta.kline(a, p, q, f, l, m)::text FROM public.tk_trades";
        let plan: String = Spi::connect(|c| {
            c.select(&format!("EXPLAIN (COSTS OFF) {whole}"), None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(
            plan.contains("Partial") && plan.contains("Finalize"),
            "{plan}"
        );
        let whole_parallel = text_of(whole);
        Spi::run("SET max_parallel_workers_per_gather = 0").unwrap();
        assert_eq!(whole_parallel, text_of(whole));
        // the kline of the whole table equals the built-in sums
        let same = text_of(
            "SELECT (ta.kline(a, p, q, f, l, m)::text = ROW(
                       (SELECT p FROM public.tk_trades ORDER BY a LIMIT 1), max(p), min(p),
                       (SELECT p FROM public.tk_trades ORDER BY a DESC LIMIT 1), sum(q), sum(p * q),
                       sum(l - f + 1), sum(q) FILTER (WHERE NOT m), sum(p * q) FILTER (WHERE NOT m),
                       min(f), max(l), min(a), max(a))::ta.kline::text)::text FROM public.tk_trades",
        );
        assert_eq!(same, "true");
    }

    #[pg_test]
    fn kline_errors_and_nulls() {
        setup();
        assert_eq!(
            err("SELECT ta.kline(1, 'Infinity', 1, 1, 1, true)"),
            "22023 ta.kline: price must be a finite number"
        );
        assert_eq!(
            err("SELECT ta.kline(1, 1, 'NaN', 1, 1, true)"),
            "22023 ta.kline: quantity must be a finite number"
        );
        assert!(
            err("SELECT ta.kline(1, 1, 1, -1, 1, true)").starts_with("22023 ta.kline: trade ids")
        );
        assert!(err(
            "SELECT ta.kline(a, 1, 1, 0, l, true) FROM (VALUES (1, 9223372036854775806), (2, 9223372036854775806)) v(a, l)"
        )
        .starts_with("22003 ta.kline: the trade count overflows bigint"));
        // NULL in each argument: the row is skipped
        for i in 0..6 {
            let mut args = ["2", "10", "1", "2", "2", "false"];
            args[i] = "NULL";
            let q = format!(
                "SELECT (ta.kline(a, p, q, f, l, m)).trades::text FROM (VALUES (1::bigint, 10::numeric, 1::numeric, 1::bigint, 1::bigint, true),
                   ({}::bigint, {}::numeric, {}::numeric, {}::bigint, {}::bigint, {}::boolean)) v(a, p, q, f, l, m)",
                args[0], args[1], args[2], args[3], args[4], args[5]
            );
            assert_eq!(text_of(&q), "1", "NULL argument {i}");
        }
        // trade features from the kline fields, NULLs
        assert_eq!(text_of("SELECT ta.trade_features(NULL, 1, 1, 1)::text"), "");
        assert_eq!(
            text_of("SELECT ta.trade_features(4, 402, 7, 3)::text"),
            "(100.5,7,0.75,2)"
        );
    }

    #[pg_test]
    fn book_features_window_and_errors() {
        setup();
        // running value OVER (ORDER BY event_time) equals the aggregate of the rows so far
        Spi::run(
            "CREATE TEMP TABLE bq AS
             SELECT timestamptz '2024-01-01' + (i * 97 % 60000) * interval '1 millisecond' AS t, i AS u,
                    (100 + (i % 5) * 0.01)::numeric AS b, (1 + i % 7)::numeric AS bq,
                    (100.05 + (i % 3) * 0.01)::numeric AS a, (i % 4)::numeric AS aq
               FROM generate_series(1, 3000) i",
        )
        .unwrap();
        let mismatches = text_of(
            "SELECT count(*)::text FROM (
               SELECT t, u, ta.book_features(t, u, b, bq, a, aq, '1 minute') OVER (ORDER BY t, u) AS w FROM bq) x
             WHERE w::text <> (SELECT ta.book_features(y.t, y.u, y.b, y.bq, y.a, y.aq, '1 minute')::text
                                 FROM bq y WHERE (y.t, y.u) <= (x.t, x.u))
               AND u % 50 = 0",
        );
        assert_eq!(mismatches, "0");
        assert_eq!(
            err("SELECT ta.book_features(now(), 1, 1, 1, 2, 1, NULL)"),
            "22023 ta.book_features: bucket_width must not be NULL"
        );
        assert!(err(
            "SELECT ta.book_features(t, 1, 1, 1, 2, 1, w) FROM (VALUES (now(), interval '1 minute'), (now(), interval '2 minutes')) v(t, w)"
        )
        .contains("bucket_width must be constant"));
        assert!(
            err("SELECT ta.book_features('infinity', 1, 1, 1, 2, 1, '1 minute')")
                .contains("event_time must be a finite timestamp")
        );
        assert!(
            err("SELECT ta.book_features(now(), 1, 1, -1, 2, 1, '1 minute')")
                .contains("best_bid_qty must be a finite number >= 0")
        );
        // NULL values: the row is skipped; all skipped: NULL
        assert_eq!(
            text_of("SELECT ta.book_features(now(), NULL, 1, 1, 2, 1, '1 minute')::text"),
            ""
        );
    }
}
