//! SQL surface of the feature engine (`crate::features`), used the ways the screener engine is:
//!
//! - `ta._features_state(...) OVER (...)`: window aggregate seeded with a day checkpoint, the
//!   screener engine's state plus the feature row and the rule row (`ta.feature_state`), for
//!   the rows asked for and the first candle of each UTC day (the data schema's recompute).
//! - `ta._signal_rows(...)` / `ta._feature_rows(...)`: the same run returning only the rule
//!   rows (`ta.signal_row`, backtests) or only the feature rows (`ta.feature_row`:
//!   `market.features_range`, training sets; no screener row is built and quote volumes stay
//!   doubles, so this path does no numeric arithmetic).
//! - `ta.features(...)`: the feature rows of any candle relation from its first row.
//! - `ta._features_cache_step/_load`: a per-session cache of each instrument's feature engine
//!   (the live path: one engine step per close); EXECUTE revoked from PUBLIC.
//! - `ta.feature_bytes(ta.feature_row)`: the feature columns as 336 bytes of doubles (training
//!   sets); `ta.feature_payloads(ta.feature_row[])`: the `ta_features` NOTIFY payloads, rows
//!   packed as those bytes in base64; `ta.feature_json(ta.feature_row)`: the row as JSON.
//!
//! The per-candle inputs are the screener's (times, open, high, low, close, quote_volume) plus
//! volume, taker_buy_volume and the minute's book features (imbalance, spread_bps,
//! wmid_offset_bps; NULL where the tick tables have no rows).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts, PgTupleDesc};

use super::common::{agg_context, composite_return, raise_msg, raw_datum_arg, RawNumeric};
use super::screener::{
    bound, check_shape, checkpoint_datum, decode_checkpoint, ok, price, push_row_cols,
    raise_engine, raise_null, row_types, text, time, CheckpointArg, Cols, NumBytes, RawText,
    CHECKPOINT_TYPES, ROW_COLUMNS,
};
use crate::features::{
    column_names, BookInput, Extra, FeatureEngine, FeatureRow, NoVolume, FEATURE_VERSION,
    N_FEATURES,
};
use crate::screener::{Candle, Checkpoint, Volume};

composite_return!(FeatureRowResult, "ta.feature_row");
composite_return!(SignalRowResult, "ta.signal_row");
composite_return!(FeatureStateResult, "ta.feature_state");

extension_sql_file!(
    "sql/feature_types.sql",
    name = "feature_types",
    requires = ["screener_types"]
);

/// Feature columns that are also screener columns (`rsi_14`, `macd_hist`): a rule row has
/// them once.
const IN_SCREENER: [usize; 2] = [12, 13];
const FEATURE_ROW_COLUMNS: usize = 4 + N_FEATURES;
const SIGNAL_COLUMNS: usize = ROW_COLUMNS + N_FEATURES - IN_SCREENER.len();

fn feature_row_types() -> [pg_sys::Oid; FEATURE_ROW_COLUMNS] {
    let mut t = [pg_sys::FLOAT8OID; FEATURE_ROW_COLUMNS];
    t[..4].copy_from_slice(&[
        pg_sys::TEXTOID,
        pg_sys::TEXTOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
    ]);
    t
}

fn signal_types() -> [pg_sys::Oid; SIGNAL_COLUMNS] {
    let mut t = [pg_sys::FLOAT8OID; SIGNAL_COLUMNS];
    t[..ROW_COLUMNS].copy_from_slice(&row_types());
    t
}

// ---------------------------------------------------------------------------------------
// inputs

/// The candle of a row, with the quote volume built by `qv` (NumBytes or NoVolume).
#[allow(clippy::too_many_arguments)]
fn candle_of<V>(
    fname: &str,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    quote_volume: V,
) -> Candle<V> {
    let p = |arg: &str, v: Option<RawNumeric>| price(v.unwrap_or_else(|| raise_null(fname, arg)));
    Candle {
        open_time: time(fname, "open_time", open_time),
        close_time: time(fname, "close_time", close_time),
        open: p("open", open),
        high: p("high", high),
        low: p("low", low),
        close: p("close", close),
        quote_volume,
    }
}

/// A volume argument as a finite double (NULL and NaN/±Infinity raise).
fn volume(fname: &str, arg: &str, v: Option<RawNumeric>) -> f64 {
    let x = v.unwrap_or_else(|| raise_null(fname, arg)).to_float8();
    if !x.is_finite() {
        raise_msg(fname, &format!("{arg} must be a finite number"));
    }
    x
}

fn qv_numeric(fname: &str, v: Option<RawNumeric>) -> NumBytes {
    let n =
        unsafe { NumBytes::from_datum(v.unwrap_or_else(|| raise_null(fname, "quote_volume")).0) };
    if n.is_special() {
        raise_msg(fname, "quote_volume must be a finite number");
    }
    n
}

/// The per-candle inputs of every feature aggregate, as SQL hands them over.
struct Inputs {
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    taker_buy_volume: Option<RawNumeric>,
    imbalance: Option<f64>,
    spread_bps: Option<f64>,
    wmid_offset_bps: Option<f64>,
}

impl Inputs {
    fn extra(&self, fname: &str) -> Extra {
        Extra {
            volume: volume(fname, "volume", self.volume),
            quote_volume: volume(fname, "quote_volume", self.quote_volume),
            taker_buy_volume: volume(fname, "taker_buy_volume", self.taker_buy_volume),
            book: BookInput {
                imbalance: self.imbalance,
                spread_bps: self.spread_bps,
                wmid_offset_bps: self.wmid_offset_bps,
            },
        }
    }
    fn candle_numeric(&self, fname: &str) -> Candle<NumBytes> {
        let qv = qv_numeric(fname, self.quote_volume);
        candle_of(
            fname,
            self.open_time,
            self.close_time,
            self.open,
            self.high,
            self.low,
            self.close,
            qv,
        )
    }
    fn candle_novolume(&self, fname: &str) -> Candle<NoVolume> {
        candle_of(
            fname,
            self.open_time,
            self.close_time,
            self.open,
            self.high,
            self.low,
            self.close,
            NoVolume,
        )
    }
}

/// Builds an engine from an optional `ta.screener_checkpoint` (checked by the engine).
trait StartFrom: Volume + Sized {
    fn start(fname: &str, cp: Option<CheckpointArg>) -> FeatureEngine<Self>;
}

impl StartFrom for NumBytes {
    fn start(fname: &str, cp: Option<CheckpointArg>) -> FeatureEngine<Self> {
        match cp {
            None => FeatureEngine::new(),
            Some(cp) => ok(
                fname,
                FeatureEngine::from_checkpoint(unsafe { decode_checkpoint(fname, "start", cp.0) }),
            ),
        }
    }
}

impl StartFrom for NoVolume {
    fn start(fname: &str, cp: Option<CheckpointArg>) -> FeatureEngine<Self> {
        match cp {
            None => FeatureEngine::new(),
            Some(cp) => {
                let c = unsafe { decode_checkpoint(fname, "start", cp.0) };
                ok(
                    fname,
                    FeatureEngine::from_checkpoint(Checkpoint {
                        candles: c.candles,
                        open_time: c.open_time,
                        close: c.close,
                        cum_quote_volume: c.cum_quote_volume.map(|_| NoVolume),
                        sum_log_return_sq: c.sum_log_return_sq,
                        rsi_state: c.rsi_state,
                        macd_state: c.macd_state,
                    }),
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// results

/// Blessed TupleDescs of the result types (null when not needed).
#[derive(Clone, Copy)]
struct Tds {
    state: pg_sys::TupleDesc,
    row: pg_sys::TupleDesc,
    checkpoint: pg_sys::TupleDesc,
    features: pg_sys::TupleDesc,
    signal: pg_sys::TupleDesc,
}

#[derive(Clone, Copy, PartialEq)]
enum Want {
    State,
    Features,
    Signal,
}

/// The TupleDescs for a function returning `what`, copied into `ctx`; shapes checked.
unsafe fn lookup_tds(
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
    ctx: pg_sys::MemoryContext,
    what: Want,
) -> Tds {
    unsafe {
        let mut td: pg_sys::TupleDesc = std::ptr::null_mut();
        let class = pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut td);
        if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || td.is_null() {
            raise_msg(fname, "result type is not a composite type");
        }
        let old = pg_sys::MemoryContextSwitchTo(ctx);
        let outer = pg_sys::BlessTupleDesc(pg_sys::CreateTupleDescCopy(td));
        let null = std::ptr::null_mut();
        let mut tds = Tds {
            state: null,
            row: null,
            checkpoint: null,
            features: null,
            signal: null,
        };
        match what {
            Want::Features => tds.features = outer,
            Want::Signal => tds.signal = outer,
            Want::State => {
                let desc = PgTupleDesc::from_pg_unchecked(outer);
                let ids: Vec<(pg_sys::Oid, bool)> =
                    desc.iter().map(|a| (a.atttypid, a.attisdropped)).collect();
                drop(desc);
                if ids.len() != 5 || ids.iter().any(|x| x.1) || ids[1].0 != ids[2].0 {
                    raise_msg(
                        fname,
                        "ta.feature_state does not have the columns pg_ta expects",
                    );
                }
                let nested = |typid: pg_sys::Oid| {
                    pg_sys::BlessTupleDesc(pg_sys::lookup_rowtype_tupdesc_copy(typid, -1))
                };
                tds = Tds {
                    state: outer,
                    row: nested(ids[0].0),
                    checkpoint: nested(ids[1].0),
                    features: nested(ids[3].0),
                    signal: nested(ids[4].0),
                };
            }
        }
        pg_sys::MemoryContextSwitchTo(old);
        if !tds.row.is_null() {
            check_shape(fname, tds.row, &row_types(), "ta.screener_row");
        }
        if !tds.checkpoint.is_null() {
            check_shape(
                fname,
                tds.checkpoint,
                &CHECKPOINT_TYPES,
                "ta.screener_checkpoint",
            );
        }
        if !tds.features.is_null() {
            check_shape(fname, tds.features, &feature_row_types(), "ta.feature_row");
        }
        if !tds.signal.is_null() {
            check_shape(fname, tds.signal, &signal_types(), "ta.signal_row");
        }
        tds
    }
}

unsafe fn feature_datum(
    td: pg_sys::TupleDesc,
    market: &[u8],
    symbol: &[u8],
    f: &FeatureRow,
) -> pg_sys::Datum {
    let mut c = Cols::with_capacity(FEATURE_ROW_COLUMNS);
    c.t(market);
    c.t(symbol);
    c.i(Some(f.open_time));
    c.i(Some(f.close_time));
    for v in f.values {
        c.f(v);
    }
    unsafe { c.form(td) }
}

unsafe fn signal_datum(
    fname: &str,
    td: pg_sys::TupleDesc,
    market: &[u8],
    symbol: &[u8],
    e: &FeatureEngine<NumBytes>,
) -> pg_sys::Datum {
    let row = ok(fname, e.screener().row()).unwrap_or_else(|| raise_msg(fname, "no candle"));
    let f = e
        .features()
        .unwrap_or_else(|| raise_msg(fname, "no candle"));
    let mut c = Cols::with_capacity(SIGNAL_COLUMNS);
    push_row_cols(&mut c, market, symbol, &row);
    for (i, v) in f.values.iter().enumerate() {
        if !IN_SCREENER.contains(&i) {
            c.f(*v);
        }
    }
    unsafe { c.form(td) }
}

/// The ta.feature_state of the engine's newest candle. Without `with_features` (the live path
/// when nothing reads the features: no enabled rule names a feature column and
/// `live_features` is off) the features are not computed: `features` is NULL and so are the
/// feature columns of `signal` (the engine's state is stepped all the same).
unsafe fn state_datum(
    fname: &str,
    tds: &Tds,
    market: &[u8],
    symbol: &[u8],
    e: &FeatureEngine<NumBytes>,
    with_features: bool,
) -> pg_sys::Datum {
    let s = e.screener();
    let row = ok(fname, s.row()).unwrap_or_else(|| raise_msg(fname, "no candle"));
    let f = if with_features {
        Some(
            e.features()
                .unwrap_or_else(|| raise_msg(fname, "no candle")),
        )
    } else {
        None
    };
    unsafe {
        let mut rc = Cols::with_capacity(ROW_COLUMNS);
        push_row_cols(&mut rc, market, symbol, &row);
        // the rule row repeats the screener row's datums (texts and numerics built once)
        let mut sc = rc.copy_with_capacity(SIGNAL_COLUMNS);
        for i in 0..N_FEATURES {
            if !IN_SCREENER.contains(&i) {
                sc.f(f.as_ref().and_then(|f| f.values[i]));
            }
        }
        let mut c = Cols::with_capacity(5);
        c.push(Some(rc.form(tds.row)));
        c.push(Some(checkpoint_datum(tds.checkpoint, s.chain())));
        c.push(
            s.day_checkpoint()
                .map(|cp| checkpoint_datum(tds.checkpoint, cp)),
        );
        c.push(f.map(|f| feature_datum(tds.features, market, symbol, &f)));
        c.push(Some(sc.form(tds.signal)));
        c.form(tds.state)
    }
}

// ---------------------------------------------------------------------------------------
// the aggregates

/// Transition state of the feature aggregates.
struct FeatAgg<V> {
    engine: FeatureEngine<V>,
    market: Vec<u8>,
    symbol: Vec<u8>,
    emit_from: Option<i64>,
    emit_to: Option<i64>,
    tds: Option<Tds>,
    ctx: pg_sys::MemoryContext,
}

#[allow(clippy::too_many_arguments)]
unsafe fn feat_trans<V: StartFrom + 'static>(
    mut internal: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
    market: Option<RawText>,
    symbol: Option<RawText>,
    c: Candle<V>,
    x: Extra,
    start: Option<CheckpointArg>,
    emit: (Option<i64>, Option<i64>),
) -> Internal {
    let market = market
        .unwrap_or_else(|| raise_null(fname, "market"))
        .bytes();
    let symbol = symbol
        .unwrap_or_else(|| raise_null(fname, "symbol"))
        .bytes();
    let st = match unsafe { internal.get_mut::<FeatAgg<V>>() } {
        Some(st) => {
            if st.market != market || st.symbol != symbol {
                raise_msg(
                    fname,
                    &format!(
                        "market and symbol must be constant within a partition (PARTITION BY market, symbol): got ({}, {}) after ({}, {})",
                        String::from_utf8_lossy(market),
                        String::from_utf8_lossy(symbol),
                        String::from_utf8_lossy(&st.market),
                        String::from_utf8_lossy(&st.symbol)
                    ),
                );
            }
            st
        }
        None => {
            let engine = V::start(fname, start);
            let ctx = unsafe { agg_context(fcinfo, fname) };
            let p = PgMemoryContexts::For(ctx).leak_and_drop_on_delete(FeatAgg {
                engine,
                market: market.to_vec(),
                symbol: symbol.to_vec(),
                emit_from: None,
                emit_to: None,
                tds: None,
                ctx,
            });
            internal = Internal::from(Some(pg_sys::Datum::from(p)));
            unsafe { &mut *p }
        }
    };
    ok(fname, st.engine.push(c, &x));
    (st.emit_from, st.emit_to) = emit;
    internal
}

impl<V: Volume> FeatAgg<V> {
    /// The newest candle is inside the emit bounds.
    fn inside(&self) -> bool {
        let Some(f) = self.engine.features() else {
            return false;
        };
        let t = f.open_time;
        self.emit_from.is_none_or(|b| b <= t) && self.emit_to.is_none_or(|e| t <= e)
    }
}

macro_rules! inputs {
    ($ot:ident, $ct:ident, $o:ident, $h:ident, $l:ident, $c:ident, $v:ident, $qv:ident, $tb:ident,
     $im:ident, $sp:ident, $wm:ident) => {
        Inputs {
            open_time: $ot,
            close_time: $ct,
            open: $o,
            high: $h,
            low: $l,
            close: $c,
            volume: $v,
            quote_volume: $qv,
            taker_buy_volume: $tb,
            imbalance: $im,
            spread_bps: $sp,
            wmid_offset_bps: $wm,
        }
    };
}

/// Transition function of ta._features_state and ta._signal_rows (exact quote volumes).
#[pg_extern(immutable, parallel_safe, name = "_features_trans", requires = ["feature_types"])]
#[allow(clippy::too_many_arguments)]
fn features_state_trans(
    state: Internal,
    market: Option<RawText>,
    symbol: Option<RawText>,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    taker_buy_volume: Option<RawNumeric>,
    imbalance: Option<f64>,
    spread_bps: Option<f64>,
    wmid_offset_bps: Option<f64>,
    start: Option<CheckpointArg>,
    emit_from: Option<TimestampWithTimeZone>,
    emit_to: Option<TimestampWithTimeZone>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta._features_state";
    let i = inputs!(
        open_time,
        close_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        taker_buy_volume,
        imbalance,
        spread_bps,
        wmid_offset_bps
    );
    let (c, x) = (i.candle_numeric(F), i.extra(F));
    unsafe {
        feat_trans(
            state,
            fcinfo,
            F,
            market,
            symbol,
            c,
            x,
            start,
            (bound(emit_from), bound(emit_to)),
        )
    }
}

/// Transition function of ta._feature_rows (no screener row, no numeric arithmetic).
#[pg_extern(immutable, parallel_safe, name = "_feature_rows_trans", requires = ["feature_types"])]
#[allow(clippy::too_many_arguments)]
fn feature_rows_trans(
    state: Internal,
    market: Option<RawText>,
    symbol: Option<RawText>,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    taker_buy_volume: Option<RawNumeric>,
    imbalance: Option<f64>,
    spread_bps: Option<f64>,
    wmid_offset_bps: Option<f64>,
    start: Option<CheckpointArg>,
    emit_from: Option<TimestampWithTimeZone>,
    emit_to: Option<TimestampWithTimeZone>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta._feature_rows";
    let i = inputs!(
        open_time,
        close_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        taker_buy_volume,
        imbalance,
        spread_bps,
        wmid_offset_bps
    );
    let (c, x) = (i.candle_novolume(F), i.extra(F));
    unsafe {
        feat_trans(
            state,
            fcinfo,
            F,
            market,
            symbol,
            c,
            x,
            start,
            (bound(emit_from), bound(emit_to)),
        )
    }
}

/// Transition function of ta.features (from the first row of the series).
#[pg_extern(immutable, parallel_safe, name = "features_trans", requires = ["feature_types"])]
#[allow(clippy::too_many_arguments)]
fn features_public_trans(
    state: Internal,
    market: Option<RawText>,
    symbol: Option<RawText>,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    taker_buy_volume: Option<RawNumeric>,
    imbalance: Option<f64>,
    spread_bps: Option<f64>,
    wmid_offset_bps: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta.features";
    let i = inputs!(
        open_time,
        close_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        taker_buy_volume,
        imbalance,
        spread_bps,
        wmid_offset_bps
    );
    let (c, x) = (i.candle_novolume(F), i.extra(F));
    unsafe { feat_trans(state, fcinfo, F, market, symbol, c, x, None, (None, None)) }
}

/// Final function of ta._features_state: the state of the current row when it is inside the
/// emit bounds or the first candle of its UTC day, else NULL.
#[pg_extern(immutable, parallel_safe, name = "_features_state_final", requires = ["feature_types"])]
fn features_state_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<FeatureStateResult> {
    const F: &str = "ta._features_state";
    let st = unsafe { state.get_mut::<FeatAgg<NumBytes>>() }?;
    if !st.inside() && !st.engine.screener().is_day_first() {
        return None;
    }
    let tds = *st
        .tds
        .get_or_insert_with(|| unsafe { lookup_tds(fcinfo, F, st.ctx, Want::State) });
    Some(FeatureStateResult(unsafe {
        state_datum(F, &tds, &st.market, &st.symbol, &st.engine, true)
    }))
}

/// Final function of ta._signal_rows: the rule row of the current row inside the emit
/// bounds, else NULL.
#[pg_extern(immutable, parallel_safe, name = "_signal_rows_final", requires = ["feature_types"])]
fn signal_rows_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<SignalRowResult> {
    const F: &str = "ta._signal_rows";
    let st = unsafe { state.get_mut::<FeatAgg<NumBytes>>() }?;
    if !st.inside() {
        return None;
    }
    let tds = *st
        .tds
        .get_or_insert_with(|| unsafe { lookup_tds(fcinfo, F, st.ctx, Want::Signal) });
    Some(SignalRowResult(unsafe {
        signal_datum(F, tds.signal, &st.market, &st.symbol, &st.engine)
    }))
}

/// Final function of ta._feature_rows and ta.features: the feature row of the current row
/// inside the emit bounds (ta.features: every row), else NULL.
#[pg_extern(immutable, parallel_safe, name = "_feature_rows_final", requires = ["feature_types"])]
fn feature_rows_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<FeatureRowResult> {
    const F: &str = "ta._feature_rows";
    let st = unsafe { state.get_mut::<FeatAgg<NoVolume>>() }?;
    if !st.inside() {
        return None;
    }
    let f = st.engine.features()?;
    let tds = *st
        .tds
        .get_or_insert_with(|| unsafe { lookup_tds(fcinfo, F, st.ctx, Want::Features) });
    Some(FeatureRowResult(unsafe {
        feature_datum(tds.features, &st.market, &st.symbol, &f)
    }))
}

// ---------------------------------------------------------------------------------------
// the per-session cache of feature engines (the live path)

struct Entry {
    /// xmin of the instrument's head row when the engine was last stepped or loaded
    token: u32,
    engine: FeatureEngine<NumBytes>,
}

thread_local! {
    // boxed: a step takes the entry out of the map and puts it back (a pointer, not the
    // engine's state, moves)
    static CACHE: RefCell<HashMap<(String, String), Box<Entry>>> = RefCell::new(HashMap::new());
    static CACHE_TDS: RefCell<Option<(pg_sys::Oid, Tds)>> = const { RefCell::new(None) };
}

/// Drops the cached feature engines of (market, symbol) (NULL matches any); how many.
pub(crate) fn reset_cache(market: Option<&str>, symbol: Option<&str>) -> i64 {
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        let before = cache.len();
        cache.retain(|(m, s), _| !(market.is_none_or(|x| x == m) && symbol.is_none_or(|x| x == s)));
        (before - cache.len()) as i64
    })
}

fn token(fname: &str, head_xmin: Option<i64>) -> u32 {
    let x = head_xmin.unwrap_or_else(|| raise_null(fname, "head_xmin"));
    u32::try_from(x).unwrap_or_else(|_| raise_msg(fname, "head_xmin is not a transaction id"))
}

unsafe fn cache_tds(fcinfo: pg_sys::FunctionCallInfo) -> Tds {
    unsafe {
        let oid = pg_sys::get_fn_expr_rettype((*fcinfo).flinfo);
        if let Some((o, tds)) = CACHE_TDS.with(|c| *c.borrow()) {
            if o == oid {
                return tds;
            }
        }
        let tds = lookup_tds(
            fcinfo,
            "ta._features_cache_step",
            pg_sys::TopMemoryContext,
            Want::State,
        );
        CACHE_TDS.with(|c| *c.borrow_mut() = Some((oid, tds)));
        tds
    }
}

/// Step the cached feature engine of (market, symbol) by one candle when the cache ends where
/// the instrument's head row is (`head_candles`, written by transaction `head_xmin`); else
/// drop any entry and return NULL. `with_features` false (nothing reads the features; NULL
/// counts as true): only the screener engine is stepped, the features are NULL and the entry
/// has none from then on: a step with features drops it (NULL), and the caller reloads it.
#[pg_extern(volatile, parallel_unsafe, name = "_features_cache_step", requires = ["feature_types"])]
#[allow(clippy::too_many_arguments)]
fn features_cache_step(
    head_candles: Option<i64>,
    head_xmin: Option<i64>,
    market: Option<&str>,
    symbol: Option<&str>,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    taker_buy_volume: Option<RawNumeric>,
    imbalance: Option<f64>,
    spread_bps: Option<f64>,
    wmid_offset_bps: Option<f64>,
    with_features: Option<bool>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<FeatureStateResult> {
    const F: &str = "ta._features_cache_step";
    let with_features = with_features.unwrap_or(true);
    let head = head_candles.unwrap_or_else(|| raise_null(F, "head_candles"));
    let tok = token(F, head_xmin);
    let market = text(F, "market", market);
    let symbol = text(F, "symbol", symbol);
    let i = inputs!(
        open_time,
        close_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        taker_buy_volume,
        imbalance,
        spread_bps,
        wmid_offset_bps
    );
    let (c, x) = (i.candle_numeric(F), i.extra(F));
    let key = (market.to_owned(), symbol.to_owned());
    // the entry is out of the map while it is used: an error drops it
    let mut entry = CACHE.with(|m| m.borrow_mut().remove(&key))?;
    // an engine stepped without its features cannot give them: the caller reloads it
    if entry.engine.screener().candles() != head
        || entry.token != tok
        || (with_features && entry.engine.is_stale())
    {
        return None;
    }
    if with_features {
        ok(F, entry.engine.push(c, &x));
    } else {
        ok(F, entry.engine.push_screener(c));
    }
    entry.token = u32::from(unsafe { pg_sys::GetCurrentTransactionId() });
    let tds = unsafe { cache_tds(fcinfo) };
    let d = unsafe {
        state_datum(
            F,
            &tds,
            market.as_bytes(),
            symbol.as_bytes(),
            &entry.engine,
            with_features,
        )
    };
    CACHE.with(|m| m.borrow_mut().insert(key, entry));
    Some(FeatureStateResult(d))
}

/// Build the feature engine of (market, symbol) from `start` and the candles (oldest first;
/// the book arrays cover the last candles, aligned at the end) and cache it with token
/// `head_xmin` when it ends at `head_candles`; returns its candle count.
#[pg_extern(volatile, parallel_unsafe, name = "_features_cache_load", requires = ["feature_types"])]
#[allow(clippy::too_many_arguments)]
fn features_cache_load(
    head_candles: Option<i64>,
    head_xmin: Option<i64>,
    market: Option<&str>,
    symbol: Option<&str>,
    start: Option<CheckpointArg>,
    open_time: Option<Array<'_, TimestampWithTimeZone>>,
    close_time: Option<Array<'_, TimestampWithTimeZone>>,
    open: Option<Array<'_, RawNumeric>>,
    high: Option<Array<'_, RawNumeric>>,
    low: Option<Array<'_, RawNumeric>>,
    close: Option<Array<'_, RawNumeric>>,
    volume: Option<Array<'_, RawNumeric>>,
    quote_volume: Option<Array<'_, RawNumeric>>,
    taker_buy_volume: Option<Array<'_, RawNumeric>>,
    imbalance: Option<Array<'_, f64>>,
    spread_bps: Option<Array<'_, f64>>,
    wmid_offset_bps: Option<Array<'_, f64>>,
) -> i64 {
    const F: &str = "ta._features_cache_load";
    let head = head_candles.unwrap_or_else(|| raise_null(F, "head_candles"));
    let tok = token(F, head_xmin);
    let market = text(F, "market", market);
    let symbol = text(F, "symbol", symbol);
    let key = (market.to_owned(), symbol.to_owned());
    drop(CACHE.with(|m| m.borrow_mut().remove(&key)));
    let nums = |name: &str, a: Option<Array<'_, RawNumeric>>| {
        a.unwrap_or_else(|| raise_null(F, name))
            .iter()
            .collect::<Vec<Option<RawNumeric>>>()
    };
    let times = |name: &str, a: Option<Array<'_, TimestampWithTimeZone>>| {
        a.unwrap_or_else(|| raise_null(F, name))
            .iter()
            .collect::<Vec<Option<TimestampWithTimeZone>>>()
    };
    let floats = |name: &str, a: Option<Array<'_, f64>>| {
        a.unwrap_or_else(|| raise_null(F, name))
            .iter()
            .collect::<Vec<Option<f64>>>()
    };
    let (ot, ct) = (
        times("open_time", open_time),
        times("close_time", close_time),
    );
    let n_ = [
        nums("open", open),
        nums("high", high),
        nums("low", low),
        nums("close", close),
        nums("volume", volume),
        nums("quote_volume", quote_volume),
        nums("taker_buy_volume", taker_buy_volume),
    ];
    let b_ = [
        floats("imbalance", imbalance),
        floats("spread_bps", spread_bps),
        floats("wmid_offset_bps", wmid_offset_bps),
    ];
    let n = ot.len();
    if ct.len() != n || n_.iter().any(|p| p.len() != n) {
        raise_msg(F, "the candle arrays must have the same length");
    }
    // the book arrays belong to the last candles (aligned at the end): a load needs the book
    // features of the candles the next row's _z columns read only
    let nb = b_[0].len();
    if b_.iter().any(|p| p.len() != nb) || nb > n {
        raise_msg(
            F,
            "imbalance, spread_bps and wmid_offset_bps must have the same length, at most the candles'",
        );
    }
    let book_at = |k: usize, j: usize| {
        if k >= n - nb {
            b_[j][k - (n - nb)]
        } else {
            None
        }
    };
    let mut engine = <NumBytes as StartFrom>::start(F, start);
    for k in 0..n {
        let name = format!("{F}: candle {}", k + 1);
        let i = Inputs {
            open_time: ot[k],
            close_time: ct[k],
            open: n_[0][k],
            high: n_[1][k],
            low: n_[2][k],
            close: n_[3][k],
            volume: n_[4][k],
            quote_volume: n_[5][k],
            taker_buy_volume: n_[6][k],
            imbalance: book_at(k, 0),
            spread_bps: book_at(k, 1),
            wmid_offset_bps: book_at(k, 2),
        };
        let (c, x) = (i.candle_numeric(&name), i.extra(&name));
        if let Err(e) = engine.push(c, &x) {
            raise_engine(&name, e);
        }
    }
    let count = engine.screener().candles();
    if count == head {
        CACHE.with(|m| {
            m.borrow_mut()
                .insert(key, Box::new(Entry { token: tok, engine }))
        });
    }
    count
}

// ---------------------------------------------------------------------------------------
// ta.feature_json, ta.feature_version

raw_datum_arg!(
    /// A `ta.feature_row` argument taken as its raw composite datum (deformed once by
    /// [`deform_feature_row`]).
    FeatureRowArg,
    "ta.feature_row"
);

/// The datums of a `ta.feature_row`, deformed once; the row type's shape is checked once per
/// session (errors name `fname`).
fn deform_feature_row(
    fname: &str,
    row: FeatureRowArg,
) -> (
    [pg_sys::Datum; FEATURE_ROW_COLUMNS],
    [bool; FEATURE_ROW_COLUMNS],
) {
    thread_local! {
        /// The row type (type id, typmod) whose shape was checked.
        static CHECKED: std::cell::Cell<Option<(pg_sys::Oid, i32)>> =
            const { std::cell::Cell::new(None) };
    }
    let mut values = [pg_sys::Datum::from(0usize); FEATURE_ROW_COLUMNS];
    let mut nulls = [true; FEATURE_ROW_COLUMNS];
    unsafe {
        let th =
            pg_sys::pg_detoast_datum(row.0.cast_mut_ptr()).cast::<pg_sys::HeapTupleHeaderData>();
        let typid = (*th).t_choice.t_datum.datum_typeid;
        let typmod = (*th).t_choice.t_datum.datum_typmod;
        let td = pg_sys::lookup_rowtype_tupdesc(typid, typmod);
        if CHECKED.get() != Some((typid, typmod)) {
            check_shape(fname, td, &feature_row_types(), "ta.feature_row");
            CHECKED.set(Some((typid, typmod)));
        }
        let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
        tuple.t_len = pgrx::varlena::varsize(th.cast()) as u32;
        tuple.t_data = th;
        pg_sys::heap_deform_tuple(&mut tuple, td, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::DecrTupleDescRefCount(td);
    }
    (values, nulls)
}

/// The feature columns of a `ta.feature_row` (in column order, [`N_FEATURES`] of them) as
/// little-endian IEEE 754 doubles, NULL as NaN: one row of a training-set matrix, read with
/// `numpy.frombuffer(b, "<f8")`. Market, symbol and times are left out (select them beside
/// it). The row is deformed once; its type's shape is checked once per session.
#[pg_extern(immutable, parallel_safe, strict, name = "feature_bytes", requires = ["feature_types"])]
fn feature_bytes(row: FeatureRowArg) -> Vec<u8> {
    let (values, nulls) = deform_feature_row("ta.feature_bytes", row);
    le_doubles(&values, &nulls).to_vec()
}

/// The feature columns of a deformed `ta.feature_row` as little-endian doubles, NULL as NaN
/// (the layout of `ta.feature_bytes` and of the `ta_features` payload's `features`).
fn le_doubles(values: &[pg_sys::Datum], nulls: &[bool]) -> [u8; 8 * N_FEATURES] {
    let mut b = [0u8; 8 * N_FEATURES];
    for (j, i) in (4..FEATURE_ROW_COLUMNS).enumerate() {
        let v = if nulls[i] {
            f64::NAN
        } else {
            f64::from_bits(values[i].value() as u64)
        };
        b[8 * j..8 * j + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

raw_datum_arg!(
    /// A `ta.feature_row[]` argument taken as its raw array datum (deconstructed once by
    /// [`feature_payloads`]).
    FeatureRowsArg,
    "ta.feature_row[]"
);

/// Longest NOTIFY payload PostgreSQL takes, in bytes: `NOTIFY_PAYLOAD_MAX_LENGTH` (BLCKSZ −
/// NAMEDATALEN − 128 = 8000 with the default 8 kB pages and 64-byte names) less one.
const NOTIFY_PAYLOAD_MAX: usize = 7_999;

/// One row of a `ta_features` payload: `{"market","symbol","open_time","features"}` with
/// `features` the row's [`feature_bytes`] in standard base64 (RFC 4648 §4, padded).
fn payload_entry(s: &mut String, values: &[pg_sys::Datum], nulls: &[bool]) {
    use base64::Engine as _;
    s.push('{');
    for (k, i) in [("market", 0), ("symbol", 1)] {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        s.push_str(k);
        s.push_str("\":");
        json_text(s, values[i], nulls[i]);
    }
    s.push_str(",\"open_time\":\"");
    // finite: feature_payloads skips the others
    iso_ms(s, values[2].value() as i64);
    s.push_str("\",\"features\":\"");
    base64::engine::general_purpose::STANDARD.encode_string(le_doubles(values, nulls), s);
    s.push_str("\"}");
}

/// The `NOTIFY ta_features` payloads of some feature rows, in order: JSON texts
/// `{"version": FEATURE_VERSION, "rows": [{"market", "symbol", "open_time", "features"}, ...]}`,
/// each holding as many consecutive rows as fit in a NOTIFY payload (about 14), `features` the
/// 42 columns as [`feature_bytes`] in base64. NULL elements and rows without an open_time
/// are skipped; a row whose entry alone does not fit (a market and symbol over ~7,300 bytes)
/// is skipped with a WARNING (it stays in `market.features`).
#[pg_extern(immutable, parallel_safe, strict, name = "feature_payloads", requires = ["feature_types"])]
fn feature_payloads(rows: FeatureRowsArg) -> Vec<String> {
    let head = format!("{{\"version\":{FEATURE_VERSION},\"rows\":[");
    const TAIL: &str = "]}";
    let (elems, elem_nulls) = unsafe {
        let arr = pg_sys::pg_detoast_datum(rows.0.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
        let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut enulls: *mut bool = std::ptr::null_mut();
        let mut n: i32 = 0;
        pg_sys::deconstruct_array(
            arr,
            (*arr).elemtype,
            -1,
            false,
            pg_sys::TYPALIGN_DOUBLE as std::ffi::c_char,
            &mut elems,
            &mut enulls,
            &mut n,
        );
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return Vec::new();
        }
        (
            std::slice::from_raw_parts(elems, n),
            std::slice::from_raw_parts(enulls, n),
        )
    };
    let mut out = Vec::new();
    let mut cur = String::with_capacity(NOTIFY_PAYLOAD_MAX + 1);
    let mut entry = String::with_capacity(600);
    for (&d, &null) in elems.iter().zip(elem_nulls) {
        if null {
            continue;
        }
        let (values, nulls) = deform_feature_row("ta.feature_payloads", FeatureRowArg(d));
        if finite_time(values[2], nulls[2]).is_none() {
            continue;
        }
        entry.clear();
        payload_entry(&mut entry, &values, &nulls);
        if head.len() + entry.len() + TAIL.len() > NOTIFY_PAYLOAD_MAX {
            pgrx::warning!(
                "pg_ta: feature row of {:.60} not sent on NOTIFY ta_features: alone it exceeds \
                 PostgreSQL's 8000-byte payload limit (the row stays in market.features)",
                entry
            );
            continue;
        }
        if !cur.is_empty() && cur.len() + 1 + entry.len() + TAIL.len() > NOTIFY_PAYLOAD_MAX {
            cur.push_str(TAIL);
            out.push(std::mem::replace(
                &mut cur,
                String::with_capacity(NOTIFY_PAYLOAD_MAX + 1),
            ));
        }
        if cur.is_empty() {
            cur.push_str(&head);
        } else {
            cur.push(',');
        }
        cur.push_str(&entry);
    }
    if !cur.is_empty() {
        cur.push_str(TAIL);
        out.push(cur);
    }
    out
}

/// `ta.feature_row` as JSON: {"version", "market", "symbol", "open_time", "close_time", and
/// every feature column}; times ISO 8601 UTC with milliseconds, numbers in the shortest form
/// that reads back as the same double, NULL as null. The row is deformed once and the row
/// type's shape is checked once per session (the live path calls this for every instrument
/// at every close).
#[pg_extern(immutable, parallel_safe, strict, name = "feature_json", requires = ["feature_types"])]
fn feature_json(row: FeatureRowArg) -> String {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let (values, nulls) = deform_feature_row("ta.feature_json", row);
    let mut s = String::with_capacity(1600);
    s.push_str("{\"version\":");
    let _ = write!(s, "{FEATURE_VERSION}");
    for (k, i) in [("market", 0), ("symbol", 1)] {
        s.push_str(",\"");
        s.push_str(k);
        s.push_str("\":");
        json_text(&mut s, values[i], nulls[i]);
    }
    for (k, i) in [("open_time", 2), ("close_time", 3)] {
        s.push_str(",\"");
        s.push_str(k);
        s.push_str("\":");
        if let Some(t) = finite_time(values[i], nulls[i]) {
            s.push('"');
            iso_ms(&mut s, t);
            s.push('"');
        } else {
            s.push_str("null");
        }
    }
    let keys = KEYS.get_or_init(|| {
        column_names()
            .iter()
            .map(|n| format!(",\"{n}\":"))
            .collect()
    });
    for (j, key) in keys.iter().enumerate() {
        let i = 4 + j;
        s.push_str(key);
        json_f64(
            &mut s,
            (!nulls[i]).then(|| f64::from_bits(values[i].value() as u64)),
        );
    }
    s.push('}');
    s
}

/// A double as the shortest decimal that reads back as the same double (the digits of Ryu:
/// of two equally near, the even one, as Python's `repr`; laid out as Rust's `{}`, exponent
/// form as `{:e}` outside 1e-5..1e16); non-finite as null.
pub(crate) fn json_f64(s: &mut String, v: Option<f64>) {
    let Some(x) = v.filter(|x| x.is_finite()) else {
        s.push_str("null");
        return;
    };
    let mut buf = ryu::Buffer::new();
    let r = buf.format_finite(x);
    // r = [-]int[.frac][e[-]exp]: the value is ±D·10^E with D the digits of int and frac
    let (neg, r) = match r.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, r),
    };
    let (mant, exp) = match r.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (r, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    // at most 17 significant digits (plus leading zeros of a fraction): a stack buffer
    let mut buf = [0u8; 48];
    let mut len = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if len == 0 && b == b'0' {
            continue;
        }
        buf[len] = b;
        len += 1;
    }
    let mut e = exp - frac.len() as i32;
    while len > 0 && buf[len - 1] == b'0' {
        len -= 1;
        e += 1;
    }
    let digits = &buf[..len];
    if neg {
        s.push('-');
    }
    if digits.is_empty() {
        s.push('0');
        return;
    }
    let n = digits.len() as i32;
    let a = x.abs();
    // ASCII digits
    let push = |s: &mut String, d: &[u8]| s.push_str(std::str::from_utf8(d).unwrap_or_default());
    if !(1e-5..1e16).contains(&a) {
        // d.ddd e exp, as {:e}
        push(s, &digits[..1]);
        if n > 1 {
            s.push('.');
            push(s, &digits[1..]);
        }
        let _ = write!(s, "e{}", e + n - 1);
    } else if e >= 0 {
        push(s, digits);
        s.extend(std::iter::repeat_n('0', e as usize));
    } else if -e < n {
        let p = (n + e) as usize;
        push(s, &digits[..p]);
        s.push('.');
        push(s, &digits[p..]);
    } else {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-e - n) as usize));
        push(s, digits);
    }
}

/// A `timestamptz` datum's µs since 2000-01-01 UTC; None for NULL and ±infinity (i64::MIN /
/// i64::MAX).
fn finite_time(d: pg_sys::Datum, null: bool) -> Option<i64> {
    let t = d.value() as i64;
    (!null && t != i64::MIN && t != i64::MAX).then_some(t)
}

/// A `text` datum as a JSON string (its bytes read in place; not UTF-8: their lossy form), or
/// null.
fn json_text(s: &mut String, d: pg_sys::Datum, null: bool) {
    if null {
        s.push_str("null");
        return;
    }
    let bytes = unsafe {
        pgrx::varlena::varlena_to_byte_slice(pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr()))
    };
    json_str(s, &String::from_utf8_lossy(bytes));
}

fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for ch in v.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// µs since 2000-01-01 UTC as `YYYY-MM-DDTHH:MI:SS.mmmZ` (milliseconds truncated, as
/// `to_char(.., 'MS')`).
fn iso_ms(s: &mut String, us: i64) {
    const DAY: i64 = 86_400_000_000;
    let days = us.div_euclid(DAY) + 10_957; // days since 1970-01-01
    let rem = us.rem_euclid(DAY);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, sec, ms) = (
        rem / 3_600_000_000,
        rem / 60_000_000 % 60,
        rem / 1_000_000 % 60,
        rem / 1_000 % 1_000,
    );
    let _ = write!(s, "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{ms:03}Z");
}

/// The feature set version (the `version` of `ta.feature_json` and of the `ta_features`
/// NOTIFY payload).
#[pg_extern(immutable, parallel_safe, name = "feature_version")]
fn feature_version() -> i32 {
    FEATURE_VERSION
}

extension_sql_file!(
    "sql/features.sql",
    name = "features_sql",
    requires = [
        "feature_types",
        features_state_trans,
        feature_rows_trans,
        features_public_trans,
        features_state_final,
        signal_rows_final,
        feature_rows_final,
        features_cache_step,
        features_cache_load,
        feature_bytes,
        feature_json,
        feature_payloads,
        feature_version
    ]
);

#[cfg(test)]
mod unit {
    #[test]
    fn iso_and_numbers() {
        let mut s = String::new();
        super::iso_ms(&mut s, 0);
        assert_eq!(s, "2000-01-01T00:00:00.000Z");
        s.clear();
        // 2021-05-19 12:34:56.789 UTC
        super::iso_ms(&mut s, 674_742_896_789_000);
        assert_eq!(s, "2021-05-19T12:34:56.789Z");
        s.clear();
        super::iso_ms(&mut s, -1);
        assert_eq!(s, "1999-12-31T23:59:59.999Z");
        for x in [0.1, -2.5e-7, 1e300, 123456.789, 0.0, -0.0, 1e-5, 9.999e15] {
            let mut t = String::new();
            super::json_f64(&mut t, Some(x));
            assert_eq!(t.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{t}");
        }
        let mut t = String::new();
        super::json_f64(&mut t, Some(f64::NAN));
        assert_eq!(t, "null");
    }

    #[test]
    fn numbers_as_rust_formats_them() {
        // json_f64 lays Ryu's digits out as Rust's own shortest formatting ({} inside
        // 1e-5..1e16, {:e} outside): for edge values and 200,000 random bit patterns of every
        // magnitude it reads back bit for bit, has as few characters as Rust's text, and the
        // same text but where two shortest decimals are equally near (Ryu then takes the
        // even digit, as Python's repr; Rust the upper)
        let rust = |x: f64| {
            let a = x.abs();
            if a != 0.0 && !(1e-5..1e16).contains(&a) {
                format!("{x:e}")
            } else {
                format!("{x}")
            }
        };
        let mut xs = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1e-5,
            9.99999e-6,
            1e16,
            9999999999999998.0,
            1e15,
            123.0,
            1.5e-7,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            0.30000000000000004,
            100.0,
            1e21,
        ];
        let mut z = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            xs.push(f64::from_bits(z));
            // and values of market scale
            xs.push((z >> 11) as f64 / (1u64 << 53) as f64 * 1e5);
        }
        for x in xs.into_iter().filter(|x| x.is_finite()) {
            let mut t = String::new();
            super::json_f64(&mut t, Some(x));
            let r = rust(x);
            assert_eq!(t.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{t}");
            assert_eq!(t.len(), r.len(), "{t} {r}");
            assert_eq!(t.contains('e'), r.contains('e'), "{t} {r}");
            let differ = t.bytes().zip(r.bytes()).filter(|(a, b)| a != b).count();
            assert!(differ <= 1, "{t} {r}");
        }
    }
}

// The SQL glue of the feature engine: the three window aggregates agree with each other and
// with the screener, a run from a day checkpoint equals the full run, the cache equals the
// window aggregate, ta.feature_json reads back bit for bit, errors and privileges.
#[cfg(feature = "pg_test")]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn text_of(q: &str) -> String {
        Spi::get_one::<String>(q)
            .expect("query")
            .unwrap_or_default()
    }

    fn i64_of(q: &str) -> i64 {
        Spi::get_one::<i64>(q).expect("query").expect("not null")
    }

    fn err(q: &str) -> String {
        text_of(&format!("SELECT pg_temp.err($q${q}$q$)"))
    }

    const ARGS: &str = "market, symbol, open_time, close_time, open, high, low, close, volume, \
                        quote_volume, taker_buy_volume, imb, spr, wmo";

    /// 2 instruments × 3,200 candles with book features on part of the minutes; the full runs
    /// of the three aggregates and of ta.screener.
    fn setup() {
        Spi::run(&format!(
            "CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$;
             CREATE TEMP TABLE c AS
             SELECT 'spot'::text AS market, s.symbol, t AS open_time, t + interval '59.999 seconds' AS close_time,
                    (s.k * (100 + (i * 37 % 23) * 0.25 - (i % 7) * 0.5))::numeric(20, 8) AS open,
                    (s.k * (101 + (i * 37 % 23) * 0.25 + (i % 3) * 0.25))::numeric(20, 8) AS high,
                    (s.k * (99 - (i % 7) * 0.5 - (i % 4) * 0.25))::numeric(20, 8) AS low,
                    (s.k * (100 + ((i + 1) * 37 % 23) * 0.25 - ((i + 1) % 7) * 0.5))::numeric(20, 8) AS close,
                    (CASE WHEN i % 11 = 0 THEN 0 ELSE 10 + (i * 7919 % 1007) * 0.01 END)::numeric AS volume,
                    (CASE WHEN i % 11 = 0 THEN 0 ELSE 1000 + (i * 7919 % 10007) * 0.01 END)::numeric AS quote_volume,
                    (CASE WHEN i % 11 = 0 THEN 0 ELSE 5 + (i * 13 % 501) * 0.01 END)::numeric AS taker_buy_volume,
                    CASE WHEN i % 5 = 0 THEN NULL ELSE ((i * 31 % 200) - 100) / 100.0 END::float8 AS imb,
                    CASE WHEN i % 5 = 0 THEN NULL ELSE 1 + (i % 9) * 0.1 END::float8 AS spr,
                    CASE WHEN i % 5 = 0 THEN NULL ELSE ((i * 7 % 21) - 10) / 10.0 END::float8 AS wmo
             FROM (VALUES ('AAA', 1), ('BBB', 3)) s(symbol, k), generate_series(0, 3199) i,
                  LATERAL (SELECT timestamptz '2024-01-01 20:00+00' + i * interval '1 minute' AS t) tt;
             CREATE TEMP TABLE full_run AS
             SELECT market, symbol, open_time,
                    ta._features_state({ARGS}, NULL, NULL, NULL) OVER w AS st,
                    ta._feature_rows({ARGS}, NULL, NULL, NULL) OVER w AS fr,
                    ta._signal_rows({ARGS}, NULL, NULL, NULL) OVER w AS sg,
                    ta.features({ARGS}) OVER w AS pf,
                    ta.screener(market, symbol, open_time, close_time, open, high, low, close, quote_volume) OVER w AS sr,
                    row_number() OVER w AS n
             FROM c
             WINDOW w AS (PARTITION BY market, symbol ORDER BY open_time
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);"
        ))
        .expect("setup");
    }

    #[pg_test]
    fn aggregates_agree() {
        setup();
        let n = i64_of("SELECT count(*) FROM full_run");
        assert_eq!(n, 6400);
        // the feature row of the state = _feature_rows = ta.features; the screener row = ta.screener
        assert_eq!(
            i64_of(
                "SELECT count(*) FROM full_run WHERE (st).features::text = fr::text
                      AND fr::text = pf::text AND (st).\"row\"::text = sr::text"
            ),
            n
        );
        // the rule row: the screener row's columns, then the feature columns but rsi_14/macd_hist
        assert_eq!(
            i64_of("SELECT count(*) FROM full_run WHERE (sg).change_5m IS NOT DISTINCT FROM (sr).change_5m
                      AND (sg).vol_1d IS NOT DISTINCT FROM (sr).vol_1d
                      AND (sg).rsi_14 IS NOT DISTINCT FROM (fr).rsi_14
                      AND (sg).imbalance_1m_z IS NOT DISTINCT FROM (fr).imbalance_1m_z
                      AND (sg).ret_1d IS NOT DISTINCT FROM (fr).ret_1d
                      AND (sg)::text = (st).signal::text"),
            n
        );
        assert!(i64_of("SELECT count(*) FROM full_run WHERE (fr).imbalance_1m_z IS NOT NULL") == 0);
        assert!(
            i64_of("SELECT count(*) FROM full_run WHERE (fr).spread_bps_1m IS NOT NULL") > 4000
        );
        assert!(i64_of("SELECT count(*) FROM full_run WHERE (fr).ret_1d_z IS NOT NULL") > 3000);
    }

    #[pg_test]
    fn from_a_day_checkpoint_equals_the_full_run() {
        setup();
        // the checkpoint before 2024-01-02 00:00 (candle 241), then the rows after 2,879 more
        Spi::run(&format!(
            "CREATE TEMP TABLE resumed AS
             SELECT c.open_time, ta._feature_rows({ARGS}, cp.day, '2024-01-04 00:00+00', NULL)
                                   OVER (ORDER BY c.open_time) AS fr,
                                 ta._features_state({ARGS}, cp.day, '2024-01-04 00:00+00', NULL)
                                   OVER (ORDER BY c.open_time) AS st
             FROM c, (SELECT (st).day_checkpoint AS day FROM full_run
                       WHERE symbol = 'BBB' AND open_time = '2024-01-02 00:00+00') cp
             WHERE symbol = 'BBB' AND c.open_time >= '2024-01-02 00:00+00'"
        ))
        .unwrap();
        let emitted = i64_of("SELECT count(*) FROM resumed WHERE (fr).open_time IS NOT NULL");
        assert_eq!(
            emitted,
            i64_of("SELECT count(*) FROM c WHERE symbol = 'BBB' AND open_time >= '2024-01-04'")
        );
        assert_eq!(
            i64_of("SELECT count(*) FROM resumed r JOIN full_run f ON f.symbol = 'BBB' AND f.open_time = r.open_time
                    WHERE (r.fr).open_time IS NOT NULL AND r.fr::text = f.fr::text AND (r.st)::text = (f.st)::text"),
            emitted
        );
    }

    #[pg_test]
    fn cache_equals_the_window_aggregate() {
        setup();
        let load = |upto: i64| {
            i64_of(&format!(
                "SELECT ta._features_cache_load({upto}, 77, 'spot', 'AAA', NULL,
                        array_agg(open_time ORDER BY open_time), array_agg(close_time ORDER BY open_time),
                        array_agg(open ORDER BY open_time), array_agg(high ORDER BY open_time),
                        array_agg(low ORDER BY open_time), array_agg(close ORDER BY open_time),
                        array_agg(volume ORDER BY open_time), array_agg(quote_volume ORDER BY open_time),
                        array_agg(taker_buy_volume ORDER BY open_time), array_agg(imb ORDER BY open_time),
                        array_agg(spr ORDER BY open_time), array_agg(wmo ORDER BY open_time))
                   FROM (SELECT c.*, row_number() OVER (ORDER BY open_time) AS n FROM c WHERE symbol = 'AAA') x
                  WHERE n <= {upto}"
            ))
        };
        // with_features = false: the same screener row, chain and rule row but for its feature
        // columns (NULL), no feature row; the features' state is stepped all the same
        let step_as = |head: i64, xmin: &str, n: i64, wf: bool| {
            let same = if wf {
                "s::text = f.st::text"
            } else {
                "(s).\"row\"::text = (f.st).\"row\"::text AND (s).chain::text = (f.st).chain::text
                 AND (s).features IS NULL AND ((s).signal).ret_1m IS NULL
                 AND ((s).signal).imbalance_1m_z IS NULL
                 AND ((s).signal).price = ((f.st).signal).price
                 AND ((s).signal).rsi_14 IS NOT DISTINCT FROM ((f.st).signal).rsi_14
                 AND ((f.st).signal).ret_1m IS NOT NULL"
            };
            text_of(&format!(
                "SELECT ({same})::text FROM full_run f,
                        LATERAL (SELECT ta._features_cache_step({head}, {xmin}, 'spot', 'AAA', c.open_time,
                                 c.close_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
                                 c.taker_buy_volume, c.imb, c.spr, c.wmo, {wf}) AS s
                                 FROM c WHERE c.symbol = 'AAA' AND c.open_time = f.open_time) x
                 WHERE f.symbol = 'AAA' AND f.n = {n}"
            ))
        };
        let step = |head: i64, xmin: &str, n: i64| step_as(head, xmin, n, true);
        let xid = "(pg_current_xact_id()::text::bigint % 4294967296)";
        assert_eq!(load(3000), 3000);
        assert_eq!(step(3000, "77", 3001), "true");
        assert_eq!(step(3001, xid, 3002), "true");
        assert_eq!(step_as(3002, xid, 3003, false), "true");
        assert_eq!(step_as(3003, xid, 3004, false), "true");
        // an engine stepped without features has none: a step with features drops it (NULL:
        // the live path reloads it), and the reloaded engine steps exactly again
        assert_eq!(step(3004, xid, 3005), "");
        assert_eq!(step(3004, xid, 3005), "");
        assert_eq!(load(3004), 3004);
        assert_eq!(step(3004, "77", 3005), "true");
        // a head mismatch drops the entry
        assert_eq!(step(3004, xid, 3006), "");
        assert_eq!(step(3005, xid, 3006), "");
        // the shared reset drops feature engines too
        assert_eq!(load(10), 10);
        assert!(i64_of("SELECT ta._screener_cache_reset('spot', 'AAA')") >= 1);
        assert!(err(
            "SELECT ta._features_cache_load(1, 1, 'spot', 'AAA', NULL, ARRAY[now()], ARRAY[now()],
             ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1],
             ARRAY[NULL::float8, NULL], ARRAY[NULL::float8, NULL], ARRAY[NULL::float8, NULL])"
        )
        .contains("must have the same length, at most the candles'"));
    }

    #[pg_test]
    fn json_reads_back_bit_for_bit() {
        setup();
        // every number of the payload, read back as double precision, prints the same
        let bad = i64_of(
            "SELECT count(*) FROM full_run f, jsonb_each(ta.feature_json(f.fr)::jsonb) j
              WHERE j.key NOT IN ('version', 'market', 'symbol', 'open_time', 'close_time')
                AND (j.value::text)::float8::text IS DISTINCT FROM
                    (to_jsonb(f.fr) ->> j.key)::float8::text
                AND jsonb_typeof(j.value) <> 'null'",
        );
        assert_eq!(bad, 0);
        assert_eq!(
            text_of(
                "SELECT (ta.feature_json(fr)::jsonb ->> 'open_time') FROM full_run
                      WHERE symbol = 'AAA' AND n = 1"
            ),
            "2024-01-01T20:00:00.000Z"
        );
        assert_eq!(
            i64_of(
                "SELECT count(*) FROM full_run, jsonb_each(ta.feature_json(fr)::jsonb) j
                     WHERE n = 5 AND symbol = 'AAA'"
            ),
            47
        );
    }

    #[pg_test]
    fn errors_and_privileges() {
        setup();
        assert_eq!(
            err("SELECT ta.features('spot', 'X', now(), now(), 1, 1, 1, NULL, 1, 1, 1, NULL, NULL, NULL)"),
            "22004 ta.features: close must not be NULL"
        );
        assert_eq!(
            err("SELECT ta.features('spot', 'X', now(), now(), 1, 1, 1, 1, 'NaN', 1, 1, NULL, NULL, NULL)"),
            "22023 ta.features: volume must be a finite number"
        );
        assert_eq!(
            err("SELECT ta.features('spot', 'X', now(), now(), 1, 1, 1, 1, 1, 1, NULL, NULL, NULL, NULL)"),
            "22004 ta.features: taker_buy_volume must not be NULL"
        );
        assert!(err(
            "SELECT ta.features('spot', 'X', t, t, 1, 1, 1, 1, 1, 1, 1, NULL, NULL, NULL) OVER (ORDER BY i)
             FROM (VALUES (1, now()), (2, now() - interval '1 minute')) v(i, t)"
        )
        .starts_with("22023 ta.features: rows must be in strictly increasing open_time"));
        Spi::run(
            "DO $$ BEGIN CREATE ROLE ta_feat_tester NOLOGIN;
                  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT USAGE ON SCHEMA ta TO ta_feat_tester;
             SET LOCAL ROLE ta_feat_tester",
        )
        .unwrap();
        assert_eq!(
            err("SELECT ta._features_cache_step(0, 1, 'spot', 'X', now(), now(), 1, 1, 1, 1, 1, 1, 1, NULL, NULL, NULL, NULL)"),
            "42501 permission denied for function _features_cache_step"
        );
        assert_eq!(
            err("SELECT ta.features('spot', 'X', now(), now(), 1, 1, 1, 1, 1, 1, 1, NULL, NULL, NULL)"),
            "ok"
        );
        Spi::run("RESET ROLE").unwrap();
    }
}
