//! The REST filler of aggTrade gaps: one task that takes id ranges from the trade writer,
//! oldest first, and reads them with `aggTrades?symbol=&fromId=&limit=1000` pages inside the
//! trade share of the one REST weight budget (`RestClient::agg_trades`). Pages go into the
//! trade buffer (waiting while it is full), so the writer checks and writes them like live
//! rows; the live stream is never blocked by a fill. When a range is done the filler tells
//! the writer ([`GapDone`]), which gives up the ids still missing (logged with the reasons:
//! REST refused, returned nothing from that id on — a delisted symbol —, skipped ids, or rows
//! that fail validation).
//!
//! Pages are read as Binance serves them: rows before `fromId`, repeated rows and rows past
//! the range are ignored (overlapping pages), a page that does not advance ends the range.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

use super::queue::{GapDone, Item, Rejected, TickQueue};
use crate::binance::kind::agg_trade::AggTrade;
use crate::binance::kind::Symbol;
use crate::binance::rest::{RestClient, RestError};
use crate::shutdown::Shutdown;

/// A range of missing aggTrade ids of one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillJob {
    pub symbol: Symbol,
    pub lo: i64,
    pub hi: i64,
    /// Why the ids went missing (reconnect, restart, overflow, jump, rejected, resume).
    pub trigger: &'static str,
    /// A probe after a full buffer: ids past the newest accepted one, which no live trade
    /// has revealed yet (a quiet symbol); REST answering with fewer rows is no failure.
    pub probe: bool,
}

/// Rows per aggTrades request (Binance's maximum).
pub const PAGE: u32 = 1000;

/// Runs until `shutdown` or until the writer drops its end of `jobs`.
pub async fn run_filler(
    rest: RestClient,
    queue: Arc<TickQueue<AggTrade>>,
    mut jobs: UnboundedReceiver<FillJob>,
    mut shutdown: Shutdown,
) {
    loop {
        let job = tokio::select! {
            j = jobs.recv() => match j { Some(j) => j, None => return },
            _ = shutdown.recv() => return,
        };
        let mut sd = shutdown.clone();
        tokio::select! {
            done = fill(&rest, &queue, &job) => queue.push_control(Item::GapDone(done)),
            _ = sd.recv() => return,
        }
    }
}

/// Fills one range; what it could not fill is left missing (the writer gives it up).
pub async fn fill(rest: &RestClient, queue: &TickQueue<AggTrade>, job: &FillJob) -> GapDone {
    let mut next = job.lo;
    let mut done = GapDone {
        symbol: job.symbol.clone(),
        lo: job.lo,
        hi: job.hi,
        trigger: job.trigger,
        pushed: 0,
        pages: 0,
        reasons: Vec::new(),
    };
    let mut attempts = 0u32;
    while next <= job.hi {
        let limit = (job.hi - next + 1).clamp(1, i64::from(PAGE)) as u32;
        let page = match rest.agg_trades(&job.symbol, next, limit).await {
            Ok(p) => p,
            Err(e) => {
                attempts += 1;
                let wait = match &e {
                    RestError::Banned { retry_after } => Some(*retry_after),
                    e if e.is_retryable() => Some(Duration::from_secs(5)),
                    _ => None,
                };
                match wait {
                    Some(w) if attempts < 3 => {
                        warn!(symbol = %job.symbol, from_id = next, error = %e, wait = ?w, "aggTrades request failed; trying again");
                        tokio::time::sleep(w).await;
                        continue;
                    }
                    _ => {
                        warn!(symbol = %job.symbol, from_id = next, error = %e, "aggTrades request failed; giving up this range");
                        done.reasons.push(format!("REST: {e}"));
                        break;
                    }
                }
            }
        };
        done.pages += 1;
        attempts = 0;
        if page.is_empty() {
            done.reasons.push(format!(
                "REST returned no trades from id {next} (delisted symbol, or ids the exchange does not have)"
            ));
            break;
        }
        let mut rows = Vec::with_capacity(page.len());
        let mut newest = next - 1;
        let mut expected = next;
        let mut skipped = false;
        let mut sorted = page;
        sorted.sort_by_key(|r| match r {
            Ok(t) => t.agg_trade_id,
            Err((id, _)) => *id,
        });
        for r in sorted {
            let id = match &r {
                Ok(t) => t.agg_trade_id,
                Err((id, _)) => *id,
            };
            if id < expected || id > job.hi {
                continue; // overlap with an earlier page, a repeat, or past the range
            }
            if id > expected {
                skipped = true;
            }
            expected = id + 1;
            newest = newest.max(id);
            match r {
                Ok(t) => rows.push(t),
                Err((id, e)) => {
                    queue.reject(Rejected {
                        symbol: Some(job.symbol.clone()),
                        id: Some(id),
                        reason: format!("REST row: {e}"),
                        raw: String::new(),
                    });
                    if done.reasons.len() < 5 {
                        done.reasons.push(format!("id {id} refused: {e}"));
                    }
                }
            }
        }
        if skipped && done.reasons.len() < 5 {
            done.reasons
                .push(format!("REST skipped ids between {next} and {newest}"));
        }
        if newest < next {
            done.reasons
                .push(format!("REST page from id {next} did not advance"));
            break;
        }
        done.pushed += rows.len() as u64;
        debug!(symbol = %job.symbol, from_id = next, rows = rows.len(), newest, "aggTrades page");
        queue.push_rest(rows).await;
        next = newest + 1;
    }
    done
}
