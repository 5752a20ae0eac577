//! REST backfill of closed 1m klines: start-up catch-up and live gap fills. Every page is
//! written as one batch with `market.evaluate_alerts = off`, except the recent minutes of a
//! live gap (`hold_from`): those are handed back to the caller, which writes them one minute
//! per statement with alerts evaluated (`--alert-catchup-minutes`).
//!
//! Page size is the market's cheapest per candle ([`crate::market::Market::klines_page_limit`]),
//! and never more than the range needs (a 3-minute USD-M gap costs weight 1).
//!
//! Pagination advances to the last returned open_time + 60 s, so the page boundary is
//! never requested twice (the "pagination bug" seen in recorded data re-requested the last
//! open_time of every 1000-row page).

use serde_json::json;
use tracing::{info, warn};

use crate::binance::model::{from_ms, Kline};
use crate::binance::rest::{RestClient, RestError};
use crate::constants::{metric, quality_kind, MINUTE_MS};
use crate::sink::{AlertMode, QualityEvent, RetryingSink, SinkError};

/// Backfill failures.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl BackfillError {
    pub fn is_retryable(&self) -> bool {
        match self {
            BackfillError::Rest(e) => e.is_retryable(),
            BackfillError::Sink(e) => e.is_retryable(),
        }
    }
}

/// What a backfill of `[from, to]` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackfillOutcome {
    /// Closed klines received from REST inside the range.
    pub received: u64,
    /// Rows inserted or changed in the database.
    pub written: u64,
    /// Number of REST pages requested.
    pub pages: u64,
    /// Newest open_time received (epoch ms).
    pub last_open_ms: Option<i64>,
    /// Inclusive open-time ranges (epoch ms) that REST did not return.
    pub missing: Vec<(i64, i64)>,
    /// Closed klines at or after `hold_from`, not written (the caller writes them with
    /// alerts), oldest first.
    pub held: Vec<Kline>,
}

/// Start of the minute containing `ms`.
pub fn floor_minute(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Open time of the newest minute that is closed at exchange time `server_time_ms`
/// (its close_time, open + 59 999, is before server time).
pub fn last_closed_open_ms(server_time_ms: i64) -> i64 {
    floor_minute(server_time_ms) - MINUTE_MS
}

/// Keeps the klines of one page that belong to `[start, to]` and are closed at
/// `server_time_ms` (Binance returns the in-progress candle last: close_time ≥ serverTime).
pub fn closed_in_range(
    page: Vec<Kline>,
    start: i64,
    to: i64,
    server_time_ms: Option<i64>,
) -> Vec<Kline> {
    page.into_iter()
        .filter(|k| {
            let t = k.open_time_ms();
            t >= start && t <= to && server_time_ms.is_none_or(|now| k.close_time_ms() < now)
        })
        .collect()
}

/// Loads `[from_ms, to_ms]` (inclusive open times) of `symbol` over REST in pages of the
/// market's page limit and writes each page as one batch with alerts off; klines opening at
/// or after `hold_from` are returned in [`BackfillOutcome::held`] instead of written.
pub async fn backfill_range(
    rest: &RestClient,
    sink: &mut RetryingSink,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
    server_time_ms: Option<i64>,
    hold_from: Option<i64>,
) -> Result<BackfillOutcome, BackfillError> {
    let mut out = BackfillOutcome::default();
    let mut start = from_ms;
    let mut expected_next = from_ms;
    let page_limit = rest.market().klines_page_limit();
    while start <= to_ms {
        let needed = ((to_ms - start) / MINUTE_MS + 1).clamp(1, i64::from(page_limit)) as u32;
        let page = rest.klines(symbol, start, to_ms, needed).await?;
        out.pages += 1;
        let page = closed_in_range(page, start, to_ms, server_time_ms);
        let Some(last) = page.last().map(Kline::open_time_ms) else {
            break;
        };
        for k in &page {
            let t = k.open_time_ms();
            if t > expected_next {
                out.missing.push((expected_next, t - MINUTE_MS));
            }
            expected_next = expected_next.max(t + MINUTE_MS);
        }
        out.received += page.len() as u64;
        let (page, held): (Vec<Kline>, Vec<Kline>) = page
            .into_iter()
            .partition(|k| hold_from.is_none_or(|h| k.open_time_ms() < h));
        out.held.extend(held);
        let written = if page.is_empty() {
            0
        } else {
            sink.write_batch(&page, AlertMode::Suppress, None).await?
        };
        metrics::counter!(metric::BACKFILLED_ROWS).increment(written);
        out.written += written;
        out.last_open_ms = Some(last);
        // Next page starts after the last open_time: never re-request the boundary.
        start = last + MINUTE_MS;
    }
    if expected_next <= to_ms {
        out.missing.push((expected_next, to_ms));
    }
    Ok(out)
}

/// Why a gap was filled (goes into `detail.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapTrigger {
    /// Start-up catch-up after the last stored candle.
    Startup,
    /// A live kline arrived more than one minute after the last written one.
    Live,
    /// A symbol left the universe: its minutes closed since the last written one (its last
    /// kline may still have been in flight). A missing tail is the delisting, not a gap.
    Delisting,
}

impl GapTrigger {
    fn as_str(self) -> &'static str {
        match self {
            GapTrigger::Startup => "startup",
            GapTrigger::Live => "live",
            GapTrigger::Delisting => "delisting",
        }
    }
}

/// Backfills the missing range `[from_ms, to_ms]` and logs `gap_filled` (rows = candles
/// written, held ones included) and one `gap_unfilled` per sub-range REST did not have (or
/// for the whole range when REST failed). Klines from `hold_from` on are returned in
/// `held`, for the caller to write with alerts. Returns the outcome; REST failures are
/// logged, not returned.
#[allow(clippy::too_many_arguments)]
pub async fn fill_gap(
    rest: &RestClient,
    sink: &mut RetryingSink,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
    server_time_ms: Option<i64>,
    trigger: GapTrigger,
    hold_from: Option<i64>,
) -> Result<BackfillOutcome, SinkError> {
    let expected = (to_ms - from_ms) / MINUTE_MS + 1;
    let mut events = Vec::new();
    let mut outcome = match backfill_range(
        rest,
        sink,
        symbol,
        from_ms,
        to_ms,
        server_time_ms,
        hold_from,
    )
    .await
    {
        Ok(o) => o,
        Err(BackfillError::Sink(e)) => return Err(e),
        Err(BackfillError::Rest(e)) => {
            warn!(symbol, from = %from_ms, to = %to_ms, error = %e, "gap could not be filled over REST");
            events.push(QualityEvent {
                symbol: Some(symbol.to_string()),
                kind: quality_kind::GAP_UNFILLED,
                from_time: Some(from_ms_dt(from_ms)),
                to_time: Some(from_ms_dt(to_ms)),
                rows: Some(0),
                detail: json!({"trigger": trigger.as_str(), "expected": expected, "error": e.to_string()}),
            });
            sink.log_quality(&events, None).await?;
            return Ok(BackfillOutcome {
                missing: vec![(from_ms, to_ms)],
                ..BackfillOutcome::default()
            });
        }
    };
    if outcome.received > 0 {
        events.push(QualityEvent {
            symbol: Some(symbol.to_string()),
            kind: quality_kind::GAP_FILLED,
            from_time: Some(from_ms_dt(from_ms)),
            to_time: Some(from_ms_dt(to_ms)),
            rows: Some((outcome.written + outcome.held.len() as u64) as i64),
            detail: json!({
                "trigger": trigger.as_str(),
                "expected": expected,
                "received": outcome.received,
                "written": outcome.written,
                "alert_catchup": outcome.held.len(),
                "pages": outcome.pages,
            }),
        });
    }
    if trigger == GapTrigger::Delisting {
        // the exchange has no klines after the delisting: that tail is not a gap
        outcome.missing.retain(|&(_, b)| b < to_ms);
    }
    for &(a, b) in &outcome.missing {
        events.push(QualityEvent {
            symbol: Some(symbol.to_string()),
            kind: quality_kind::GAP_UNFILLED,
            from_time: Some(from_ms_dt(a)),
            to_time: Some(from_ms_dt(b)),
            rows: Some(0),
            detail: json!({"trigger": trigger.as_str(), "minutes": (b - a) / MINUTE_MS + 1}),
        });
    }
    sink.log_quality(&events, None).await?;
    info!(
        symbol,
        from = %from_ms_dt(from_ms),
        to = %from_ms_dt(to_ms),
        expected,
        received = outcome.received,
        written = outcome.written,
        unfilled_ranges = outcome.missing.len(),
        trigger = trigger.as_str(),
        "gap backfilled"
    );
    Ok(outcome)
}

fn from_ms_dt(ms: i64) -> chrono::DateTime<chrono::Utc> {
    from_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::model::KlineText;

    fn k(open_ms: i64, close_ms: i64) -> Kline {
        Kline::from_text(KlineText {
            symbol: "BTCUSDT",
            open_time: open_ms,
            close_time: close_ms,
            open: "1",
            high: "1",
            low: "1",
            close: "1",
            volume: "0",
            quote_volume: "0",
            trades: 0,
            taker_buy_volume: "0",
            taker_buy_quote_volume: "0",
        })
        .unwrap()
    }

    #[test]
    fn minute_math() {
        // serverTime 2021-10-22 23:05:30.123 → last closed minute 23:04.
        let now = 1634943930123;
        assert_eq!(floor_minute(now), 1634943900000);
        assert_eq!(last_closed_open_ms(now), 1634943840000);
        // Exactly on the minute: the previous minute has closed.
        assert_eq!(last_closed_open_ms(1634943900000), 1634943840000);
    }

    #[test]
    fn in_progress_and_out_of_range_dropped() {
        let m = 1634943780000;
        let page = vec![
            k(m - MINUTE_MS, m - 1),                  // before start
            k(m, m + 59_999),                         // in range, closed
            k(m + MINUTE_MS, m + MINUTE_MS + 59_999), // in progress at now
        ];
        let now = m + MINUTE_MS + 30_000;
        let kept = closed_in_range(page, m, m + MINUTE_MS, Some(now));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].open_time_ms(), m);
    }
}
