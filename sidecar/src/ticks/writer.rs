//! One writer per tick kind: takes rows from the kind's [`TickQueue`], drops what is already
//! stored or seen, finds gaps, and writes batches through the shared COPY core, flushed by
//! size (`batch_rows`) and by time (`flush`, from the first buffered row), or at once when the
//! kline writer asks for the ticks received before a candle ([`TickBarrier`]).
//!
//! **aggTrades** (ids contiguous per symbol). Per symbol the writer keeps the newest accepted
//! id and the set of ids known to be missing. A row is accepted when its id is newer than the
//! newest one (a jump `last+1 .. a-1` becomes missing, logged as `trade_gap` in the same
//! transaction as the row that revealed it) or when it is one of the missing ids (a lagging
//! connection during a rotation overlap, the REST filler); anything else is a duplicate
//! (rotation overlap, restart, repeated or backward ids) and is dropped and counted. Missing
//! ids still missing `gap_grace` later are handed to the REST filler ([`super::fill`]),
//! oldest first; what it cannot fill is logged as `trade_gap_unfilled` with the id range, what
//! it filled as `trade_gap_filled`. After the buffer was full, a symbol with refused trades
//! that has no live trade within `probe_delay` (a quiet one: no later trade reveals its
//! gap) is *probed*: REST pages from its newest accepted id on, until REST has no more. At
//! start the newest stored id of each symbol is the
//! "newest accepted", so the first live trade after a restart reveals the restart's gap; and
//! `trade_gap` records of the last 48 h whose ids are still not all stored (a fill cut short
//! by a shutdown or a crash) are filled again.
//!
//! **Book tickers** (a state stream, `u` increasing per symbol). A row is accepted when its
//! update id is newer than the newest accepted one. A disconnect, a restart or a full buffer
//! is recorded as `book_ticker_gap` from the last update received before it to the first one
//! after it (exchange time; spot: receive time).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::fill::FillJob;
use super::latency::LatencyHist;
use super::queue::{GapDone, Item, Source, TickQueue};
use super::ranges::RangeSet;
use super::TickRow;
use crate::binance::kind::{StreamKind, Symbol};
use crate::binance::model::from_ms;
use crate::constants::{metric, quality_kind, AGG_TRADES_TABLE, DATA_QUALITY_TABLE};
use crate::market::Market;
use crate::shutdown::Shutdown;
use crate::sink::{QualityEvent, RetryingSink, SinkError};

/// Most missing-id ranges kept per symbol; past it they are merged into one span (its ids
/// already stored are skipped by the insert).
pub const MAX_PENDING_RANGES: usize = 1000;
/// `trade_gap` records younger than this are checked (and filled again) at start.
pub const GAP_RESUME_WINDOW: &str = "48 hours";

/// Settings of a tick writer.
#[derive(Debug, Clone)]
pub struct TickWriterConfig {
    pub market: Market,
    /// Rows per COPY transaction at most.
    pub batch_rows: usize,
    /// Flush this long after the first buffered row.
    pub flush: Duration,
    /// Missing aggTrade ids are given to REST only when still missing this long after the
    /// jump (a lagging connection usually delivers them first).
    pub gap_grace: Duration,
    /// A gap of more ids than this is not filled (logged as unfilled).
    pub max_gap_ids: i64,
    /// Symbols streamed at start (their newest stored ids are read in one query).
    pub symbols: Vec<String>,
    /// Write connections (symbols are spread over them; each symbol's rows stay in order).
    pub writers: usize,
    /// Give up on the final flush at shutdown after this long.
    pub shutdown_grace: Duration,
    /// After a full buffer, a symbol with refused trades and no live trade since for this
    /// long is read over REST from its newest id on.
    pub probe_delay: Duration,
}

/// Counters of one tick writer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickSummary {
    /// Rows taken from the buffer (live and REST).
    pub received: u64,
    /// Rows inserted (new).
    pub written: u64,
    /// Rows dropped as already stored or seen.
    pub duplicates: u64,
    /// Rows refused by validation (in the sessions and in REST pages).
    pub rejected: u64,
    /// Live rows refused because the buffer was full.
    pub dropped: u64,
    pub batches: u64,
    /// Id jumps seen (aggTrades).
    pub gaps: u64,
    /// aggTrades recovered over REST.
    pub filled: u64,
    /// aggTrade ids given up.
    pub unfilled: u64,
    /// Book-ticker gaps recorded.
    pub book_gaps: u64,
    /// Most rows waiting in the buffer at once.
    pub max_buffered: u64,
    /// Receive → commit latency of live rows, ms.
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub latency_max_ms: u64,
}

/// What the kline writer holds to wait, before a candle, for the ticks received so far.
#[derive(Clone)]
pub struct TickBarrier {
    pub kind: StreamKind,
    pushed: Arc<dyn Fn() -> u64 + Send + Sync>,
    request: Arc<watch::Sender<u64>>,
    committed: watch::Receiver<u64>,
}

impl std::fmt::Debug for TickBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickBarrier")
            .field("kind", &self.kind)
            .field("pushed", &(self.pushed)())
            .field("committed", &*self.committed.borrow())
            .finish()
    }
}

impl TickBarrier {
    /// Waits until every live tick received before this call is committed, at most `limit`;
    /// false on timeout.
    pub async fn wait(&mut self, limit: Duration) -> bool {
        let target = (self.pushed)();
        if *self.committed.borrow() >= target {
            return true;
        }
        self.request.send_if_modified(|r| {
            let changed = *r < target;
            *r = (*r).max(target);
            changed
        });
        let wait = self.committed.wait_for(|c| *c >= target);
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
    }
}

/// Per-symbol state.
#[derive(Debug, Default)]
struct SymState {
    /// Newest accepted id (stored or in this batch).
    last_id: Option<i64>,
    /// Exchange time of that row (ms).
    last_time_ms: Option<i64>,
    /// aggTrades: ids known missing.
    pending: RangeSet,
    /// Why the next jump happens, if known (reconnect, overflow, restart, rejected).
    hint: Option<&'static str>,
    /// Book tickers: a gap that began at this time (ms) for this reason, closed by the next
    /// accepted row.
    gap_open: Option<(i64, &'static str)>,
    /// After a full buffer: probe over REST at this instant unless a live trade came first.
    probe_at: Option<Instant>,
}

/// A gap handed to the filler: counters at hand-over.
#[derive(Debug)]
struct Job {
    probe: bool,
    /// Last id of the range.
    hi: i64,
    /// REST rows of the range accepted so far.
    accepted: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    before_ms: Option<i64>,
    after_ms: Option<i64>,
}

/// A detected gap waiting for its grace period.
#[derive(Debug)]
struct Ripening {
    at: Instant,
    symbol: Symbol,
    lo: i64,
    hi: i64,
    trigger: &'static str,
    before_ms: Option<i64>,
    after_ms: Option<i64>,
}

/// One write connection of a tick writer and the batch it collects. A symbol always goes to
/// the same slot, so each symbol's rows are committed in order (a crash loses at most a tail,
/// which the next live trade reveals), while different symbols are written in parallel.
struct Slot<R> {
    /// The connection, None while a batch of this slot is being written.
    sink: Option<RetryingSink>,
    rows: Vec<R>,
    /// Receive instants of the live rows of `rows`.
    received: Vec<Instant>,
    events: Vec<QualityEvent>,
    first_at: Option<Instant>,
    /// Sequence number of the first row of `rows`, and of the batch being written.
    first_seq: Option<u64>,
    flight_seq: Option<u64>,
}

/// A batch written by a slot's task.
struct Flight {
    slot: usize,
    rows: usize,
    started: Instant,
    sink: RetryingSink,
    result: Result<(u64, u64), SinkError>,
    received: Vec<Instant>,
}

/// The slot of a symbol among `n` (FNV-1a of its name).
fn slot_of(symbol: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in symbol.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

/// Writes one batch and its events in one transaction; a batch the database refuses is
/// written row by row (the refused rows left out and logged). Returns the connection, and
/// (rows inserted, rows refused).
async fn write_slot<R: TickRow>(
    mut sink: RetryingSink,
    rows: Vec<R>,
    mut events: Vec<QualityEvent>,
    give_up_after: Option<Duration>,
) -> (RetryingSink, Result<(u64, u64), SinkError>) {
    let kind = R::KIND.as_str();
    match sink.write_ticks(&rows, &events, give_up_after).await {
        Ok(n) => (sink, Ok((n, 0))),
        Err(e) if !e.is_retryable() => {
            error!(kind, error = %e, rows = rows.len(), "tick batch refused by the database; writing its rows one by one");
            let mut written = 0u64;
            let mut refused = Vec::new();
            let mut n_refused = 0u64;
            for row in &rows {
                match sink
                    .write_ticks(std::slice::from_ref(row), &[], give_up_after)
                    .await
                {
                    Ok(n) => written += n,
                    Err(e) if !e.is_retryable() => {
                        n_refused += 1;
                        if refused.len() < 32 {
                            refused.push(json!({"id": row.id(), "symbol": row.symbol().as_str(),
                                                "reason": e.to_string()}));
                        }
                    }
                    Err(e) => return (sink, Err(e)),
                }
            }
            if !refused.is_empty() {
                events.push(QualityEvent {
                    symbol: None,
                    kind: quality_kind::TICK_REJECTED,
                    from_time: None,
                    to_time: None,
                    rows: Some(n_refused as i64),
                    detail: json!({"kind": kind, "by": "database", "samples": refused}),
                });
            }
            let logged = sink.log_quality(&events, give_up_after).await;
            (sink, logged.map(|()| (written, n_refused)))
        }
        Err(e) => (sink, Err(e)),
    }
}

/// One tick kind's writer.
pub struct TickWriter<R: TickRow> {
    cfg: TickWriterConfig,
    queue: Arc<TickQueue<R>>,
    /// For reading (newest stored ids, gaps to resume); the slots write.
    sink: RetryingSink,
    states: HashMap<Symbol, SymState>,
    slots: Vec<Slot<R>>,
    flights: tokio::task::JoinSet<Flight>,
    /// Events not yet given to a slot.
    events: Vec<QualityEvent>,
    /// Live rows taken from the queue (each one's sequence number).
    taken: u64,
    committed_seq: u64,
    committed_tx: watch::Sender<u64>,
    committed_rx: watch::Receiver<u64>,
    request_tx: Arc<watch::Sender<u64>>,
    request_rx: watch::Receiver<u64>,
    ripening: VecDeque<Ripening>,
    /// Symbols to probe after a full buffer, by time.
    probes: VecDeque<(Instant, Symbol)>,
    filler: Option<UnboundedSender<FillJob>>,
    /// Gaps at the filler, per symbol by first id.
    jobs: HashMap<Symbol, std::collections::BTreeMap<i64, Job>>,
    summary: TickSummary,
    latency: LatencyHist,
    loaded: bool,
}

impl<R: TickRow> TickWriter<R> {
    /// A writer of `queue` with `cfg.writers` write connections and one for reading, all made
    /// by `sink`.
    pub fn new(
        cfg: TickWriterConfig,
        queue: Arc<TickQueue<R>>,
        sink: impl Fn() -> RetryingSink,
        filler: Option<UnboundedSender<FillJob>>,
    ) -> Self {
        let (committed_tx, committed_rx) = watch::channel(0u64);
        let (request_tx, request_rx) = watch::channel(0u64);
        let slots = (0..cfg.writers.max(1))
            .map(|_| Slot {
                sink: Some(sink()),
                rows: Vec::new(),
                received: Vec::new(),
                events: Vec::new(),
                first_at: None,
                first_seq: None,
                flight_seq: None,
            })
            .collect();
        TickWriter {
            cfg,
            queue,
            sink: sink(),
            states: HashMap::new(),
            slots,
            flights: tokio::task::JoinSet::new(),
            events: Vec::new(),
            taken: 0,
            committed_seq: 0,
            committed_tx,
            committed_rx,
            request_tx: Arc::new(request_tx),
            request_rx,
            ripening: VecDeque::new(),
            probes: VecDeque::new(),
            filler,
            jobs: HashMap::new(),
            summary: TickSummary::default(),
            latency: LatencyHist::default(),
            loaded: false,
        }
    }

    /// The barrier the kline writer waits on.
    pub fn barrier(&self) -> TickBarrier {
        let q = self.queue.clone();
        TickBarrier {
            kind: R::KIND,
            pushed: Arc::new(move || q.pushed()),
            request: self.request_tx.clone(),
            committed: self.committed_rx.clone(),
        }
    }

    fn kind(&self) -> &'static str {
        R::KIND.as_str()
    }

    /// Reads the newest stored id (and time) of every configured symbol, and (aggTrades)
    /// the recent `trade_gap` records whose ids are not all stored.
    async fn load(&mut self) -> Result<(), SinkError> {
        let market = self.cfg.market.as_str();
        let symbols = self.cfg.symbols.clone();
        let (table, id_col, time_col) = R::stored_columns();
        let sql = format!(
            "SELECT s, (SELECT max({id_col}) FROM {table} t WHERE t.market = $1 AND t.symbol = s), \
                    (SELECT max({time_col}) FROM {table} t WHERE t.market = $1 AND t.symbol = s) \
             FROM unnest($2::text[]) AS s"
        );
        let rows = self
            .sink
            .query("newest stored ticks", &sql, &[&market, &symbols])
            .await?;
        for r in rows {
            let (sym, id, t): (String, Option<i64>, Option<DateTime<Utc>>) =
                (r.get(0), r.get(1), r.get(2));
            let Ok(sym) = Symbol::new(&sym) else { continue };
            let st = self.states.entry(sym).or_default();
            if let Some(id) = id {
                st.last_id = Some(id);
                st.last_time_ms = t.map(|t| t.timestamp_millis());
                st.hint = Some("restart");
                if !R::CONTIGUOUS {
                    st.gap_open = st.last_time_ms.map(|t| (t, "restart"));
                }
            }
        }
        if R::CONTIGUOUS {
            self.resume_gaps().await?;
        }
        self.loaded = true;
        Ok(())
    }

    /// The newest stored id of one symbol not read at start (a listing).
    async fn load_symbol(&mut self, symbol: &Symbol) -> Result<(), SinkError> {
        let market = self.cfg.market.as_str();
        let name = symbol.as_str().to_string();
        let (table, id_col, time_col) = R::stored_columns();
        let sql = format!(
            "SELECT max({id_col}), max({time_col}) FROM {table} WHERE market = $1 AND symbol = $2"
        );
        let rows = self
            .sink
            .query("newest stored ticks", &sql, &[&market, &name])
            .await?;
        let (id, t): (Option<i64>, Option<DateTime<Utc>>) = rows
            .first()
            .map_or((None, None), |row| (row.get(0), row.get(1)));
        let st = self.states.entry(symbol.clone()).or_default();
        if let Some(id) = id {
            st.last_id = Some(id);
            st.last_time_ms = t.map(|t| t.timestamp_millis());
            st.hint = Some("restart");
            if !R::CONTIGUOUS {
                st.gap_open = st.last_time_ms.map(|t| (t, "restart"));
            }
        }
        Ok(())
    }

    /// `trade_gap` records of the last [`GAP_RESUME_WINDOW`] whose ids are not all stored
    /// (and not given up already: `trade_gap_unfilled`): their holes become missing again
    /// (filled at once).
    async fn resume_gaps(&mut self) -> Result<(), SinkError> {
        let market = self.cfg.market.as_str();
        let sql = format!(
            "WITH g AS (SELECT DISTINCT symbol, (detail->>'first_id')::bigint AS lo, \
                                       (detail->>'last_id')::bigint AS hi \
                          FROM {DATA_QUALITY_TABLE} \
                         WHERE market = $1 AND kind = '{}' \
                           AND logged_at > now() - interval '{GAP_RESUME_WINDOW}' \
                           AND detail ? 'first_id' AND detail ? 'last_id') \
             SELECT g.symbol, h.lo, h.hi \
               FROM g, LATERAL ( \
                 SELECT x.id + 1 AS lo, x.next_id - 1 AS hi FROM ( \
                   SELECT id, lead(id) OVER (ORDER BY id) AS next_id FROM ( \
                     SELECT g.lo - 1 AS id UNION ALL SELECT g.hi + 1 UNION ALL \
                     SELECT agg_trade_id FROM {AGG_TRADES_TABLE} t \
                      WHERE t.market = $1 AND t.symbol = g.symbol \
                        AND t.agg_trade_id BETWEEN g.lo AND g.hi) ids) x \
                  WHERE x.next_id > x.id + 1) h \
              WHERE g.hi >= g.lo AND g.hi - g.lo < $2 \
                AND NOT EXISTS (SELECT 1 FROM {DATA_QUALITY_TABLE} u \
                                 WHERE u.market = $1 AND u.symbol = g.symbol AND u.kind = '{}' \
                                   AND (u.detail->>'first_id')::bigint <= h.lo \
                                   AND (u.detail->>'last_id')::bigint >= h.hi) \
              ORDER BY 1, 2",
            quality_kind::TRADE_GAP,
            quality_kind::TRADE_GAP_UNFILLED
        );
        let max = self.cfg.max_gap_ids;
        let rows = self
            .sink
            .query("resume trade gaps", &sql, &[&market, &max])
            .await?;
        let now = Instant::now();
        for r in rows {
            let (sym, lo, hi): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
            let Ok(symbol) = Symbol::new(&sym) else {
                continue;
            };
            info!(kind = self.kind(), %symbol, lo, hi, "trade gap of an earlier run is not filled yet: filling it");
            let st = self.states.entry(symbol.clone()).or_default();
            st.pending.insert(lo, hi);
            self.ripening.push_back(Ripening {
                at: now,
                symbol,
                lo,
                hi,
                trigger: "resume",
                before_ms: None,
                after_ms: None,
            });
        }
        Ok(())
    }

    /// Runs until `shutdown`: load, then take, check and write rows; a final flush gets
    /// `shutdown_grace`.
    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<TickSummary, SinkError> {
        let mut sd = shutdown.clone();
        tokio::select! {
            r = self.load() => r?,
            _ = sd.recv() => return Ok(self.finish()),
        }
        // the reading connection is needed again only for a symbol listed later
        self.sink.reset_connection();
        let mut items = Vec::new();
        loop {
            while let Some(f) = self.flights.try_join_next() {
                self.land(f)?;
            }
            let room = self.room();
            if room == 0 || !self.queue.has_items() {
                let deadline = self.next_deadline();
                let mut request = self.request_rx.clone();
                let target = *request.borrow_and_update();
                let barrier_due = target > self.committed_seq
                    && self.taken >= target
                    && self
                        .slots
                        .iter()
                        .any(|s| s.sink.is_some() && s.first_seq.is_some_and(|q| q <= target));
                if !barrier_due {
                    tokio::select! {
                        biased;
                        _ = shutdown.recv() => break,
                        f = self.flights.join_next(), if !self.flights.is_empty() => {
                            if let Some(f) = f {
                                self.land(f)?;
                            }
                        }
                        _ = self.queue.wait(), if room > 0 => {}
                        _ = request.changed() => {}
                        _ = sleep_until_opt(deadline), if deadline.is_some() => {}
                    }
                }
            }
            if shutdown.is_shutdown() {
                break;
            }
            // take what fits (the slots hold at most one batch each), then check it
            let room = self.room();
            if room > 0 {
                items.clear();
                self.queue.take(room, &mut items);
                for item in items.drain(..) {
                    self.process(item).await?;
                }
            }
            self.ripen();
            self.take_rejected();
            self.route_events();
            self.dispatch_due(None);
            self.update_committed();
        }
        // final flush: what was taken, then what is still buffered (bounded time)
        let deadline = Instant::now() + self.cfg.shutdown_grace;
        loop {
            while let Some(f) = self.flights.try_join_next() {
                self.land(f)?;
            }
            let room = self.room();
            if room > 0 {
                items.clear();
                self.queue.take(room, &mut items);
                for item in items.drain(..) {
                    self.process(item).await?;
                }
            }
            self.take_rejected();
            self.route_events();
            let left = deadline.saturating_duration_since(Instant::now());
            for i in 0..self.slots.len() {
                self.dispatch(i, Some(left.max(Duration::from_millis(1))));
            }
            let pending = self
                .slots
                .iter()
                .any(|s| !s.rows.is_empty() || !s.events.is_empty());
            if self.flights.is_empty() && !pending && !self.queue.has_items() {
                break;
            }
            if left.is_zero() {
                let rows: usize = self.slots.iter().map(|s| s.rows.len()).sum();
                warn!(kind = self.kind(), rows, in_flight = self.flights.len(),
                      "shutdown: ticks not written in time (aggTrades come back over REST at the next start)");
                self.flights.abort_all();
                break;
            }
            match tokio::time::timeout(left, self.flights.join_next()).await {
                Ok(Some(f)) => {
                    if let Err(e) = self.land(f) {
                        warn!(kind = self.kind(), error = %e, "shutdown: a final tick batch was not written");
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => {}
            }
        }
        Ok(self.finish())
    }

    /// Rows the slots may still take from the buffer (each holds at most one batch).
    fn room(&self) -> usize {
        let held: usize = self.slots.iter().map(|s| s.rows.len()).sum();
        (self.slots.len() * self.cfg.batch_rows).saturating_sub(held)
    }

    /// Gives each event to the slot of its symbol (the slot of the row that caused it, so a
    /// `trade_gap` is written with the trade that revealed it).
    fn route_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let n = self.slots.len();
        for ev in std::mem::take(&mut self.events) {
            let i = ev.symbol.as_deref().map_or(0, |s| slot_of(s, n));
            let slot = &mut self.slots[i];
            slot.first_at.get_or_insert_with(Instant::now);
            slot.events.push(ev);
        }
    }

    /// Starts writing every slot whose batch is full or old enough, or every slot with rows
    /// when the kline writer waits for them.
    fn dispatch_due(&mut self, give_up_after: Option<Duration>) {
        let target = *self.request_rx.borrow();
        let barrier = target > self.committed_seq && self.taken >= target;
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            let full = s.rows.len() >= self.cfg.batch_rows;
            let timed = s.first_at.is_some_and(|t| t.elapsed() >= self.cfg.flush);
            let asked = barrier && s.first_seq.is_some_and(|q| q <= target);
            if full || timed || asked {
                self.dispatch(i, give_up_after);
            }
        }
    }

    /// Starts writing slot `i`'s batch on its connection (nothing while it is busy).
    fn dispatch(&mut self, i: usize, give_up_after: Option<Duration>) {
        let slot = &mut self.slots[i];
        if slot.rows.is_empty() && slot.events.is_empty() {
            slot.first_at = None;
            return;
        }
        let Some(sink) = slot.sink.take() else {
            return;
        };
        let rows = std::mem::take(&mut slot.rows);
        let events = std::mem::take(&mut slot.events);
        let received = std::mem::take(&mut slot.received);
        slot.flight_seq = slot.first_seq.take();
        slot.first_at = None;
        let started = Instant::now();
        let n = rows.len();
        self.flights.spawn(async move {
            let (sink, result) = write_slot(sink, rows, events, give_up_after).await;
            Flight {
                slot: i,
                rows: n,
                started,
                sink,
                result,
                received,
            }
        });
    }

    /// A slot's batch is written (or failed for good).
    fn land(&mut self, f: Result<Flight, tokio::task::JoinError>) -> Result<(), SinkError> {
        let f = match f {
            Ok(f) => f,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Ok(()), // aborted at shutdown
        };
        let slot = &mut self.slots[f.slot];
        slot.sink = Some(f.sink);
        slot.flight_seq = None;
        let (written, refused) = f.result?;
        let now = Instant::now();
        let mut worst = Duration::ZERO;
        for r in &f.received {
            let d = now.saturating_duration_since(*r);
            worst = worst.max(d);
            self.latency.record(d.as_millis() as u64);
        }
        if !f.received.is_empty() {
            metrics::histogram!(metric::TICK_COMMIT_LATENCY, "kind" => self.kind())
                .record(worst.as_secs_f64());
        }
        self.summary.written += written;
        self.summary.rejected += refused;
        self.summary.batches += 1;
        metrics::counter!(metric::TICKS_WRITTEN, "kind" => self.kind()).increment(written);
        metrics::gauge!(metric::TICKS_BUFFERED, "kind" => self.kind())
            .set(self.queue.rows() as f64);
        debug!(
            kind = self.kind(),
            slot = f.slot,
            rows = f.rows,
            written,
            ms = f.started.elapsed().as_millis() as u64,
            "wrote tick batch"
        );
        self.update_committed();
        Ok(())
    }

    /// Every live row taken up to the first one not yet committed is committed: tell the
    /// kline writer.
    fn update_committed(&mut self) {
        let first_open = self
            .slots
            .iter()
            .filter_map(|s| [s.first_seq, s.flight_seq].into_iter().flatten().min())
            .min();
        let c = first_open.map_or(self.taken, |q| q.saturating_sub(1));
        if c > self.committed_seq {
            self.committed_seq = c;
            self.committed_tx.send_replace(c);
        }
    }

    fn finish(&mut self) -> TickSummary {
        let mut s = self.summary.clone();
        s.dropped = self.queue.dropped();
        s.max_buffered = self.queue.max_rows() as u64;
        s.latency_p50_ms = self.latency.quantile(0.5);
        s.latency_p99_ms = self.latency.quantile(0.99);
        s.latency_max_ms = self.latency.max_ms();
        info!(kind = self.kind(), summary = ?s, "tick writer stopped");
        s
    }

    fn next_deadline(&self) -> Option<Instant> {
        let flush = self
            .slots
            .iter()
            .filter(|s| s.sink.is_some())
            .filter_map(|s| s.first_at)
            .min()
            .map(|t| t + self.cfg.flush);
        let ripe = self.ripening.front().map(|r| r.at);
        let probe = self.probes.front().map(|p| p.0);
        [flush, ripe, probe].into_iter().flatten().min()
    }

    fn state(&mut self, symbol: &Symbol) -> &mut SymState {
        if !self.states.contains_key(symbol) {
            self.states.insert(symbol.clone(), SymState::default());
        }
        self.states.get_mut(symbol).expect("just inserted")
    }

    async fn process(&mut self, item: Item<R>) -> Result<(), SinkError> {
        match item {
            Item::Row {
                row,
                received,
                source,
            } => {
                self.summary.received += 1;
                if source == Source::Live {
                    self.taken += 1;
                }
                if self.loaded && !self.states.contains_key(row.symbol()) {
                    let sym = row.symbol().clone();
                    self.load_symbol(&sym).await?;
                }
                if self.accept(&row, source) {
                    let i = slot_of(row.symbol().as_str(), self.slots.len());
                    let seq = self.taken;
                    let slot = &mut self.slots[i];
                    slot.first_at.get_or_insert_with(Instant::now);
                    slot.first_seq.get_or_insert(seq);
                    if source == Source::Live {
                        slot.received.push(received);
                    }
                    slot.rows.push(row);
                } else {
                    self.summary.duplicates += 1;
                    metrics::counter!(metric::TICKS_DUPLICATE, "kind" => self.kind()).increment(1);
                }
            }
            Item::Connected { connection, .. } => {
                debug!(kind = self.kind(), connection, "tick connection up");
            }
            Item::Disconnected {
                connection,
                symbols,
            } => {
                debug!(
                    kind = self.kind(),
                    connection,
                    symbols = symbols.len(),
                    "tick connection down"
                );
                for s in symbols {
                    let Ok(sym) = Symbol::new(&s) else { continue };
                    let st = self.state(&sym);
                    st.hint = Some("reconnect");
                    if !R::CONTIGUOUS && st.gap_open.is_none() {
                        if let Some(t) = st.last_time_ms {
                            st.gap_open = Some((t, "disconnect"));
                        }
                    }
                }
            }
            Item::Overflow {
                symbols,
                dropped,
                since_ms,
                until_ms,
            } => {
                warn!(
                    kind = self.kind(),
                    dropped,
                    symbols = symbols.len(),
                    cap = self.queue.cap(),
                    "tick buffer was full: live ticks were refused (aggTrades are recovered by id)"
                );
                self.events.push(QualityEvent {
                    symbol: None,
                    kind: quality_kind::TICK_OVERFLOW,
                    from_time: Some(from_ms(since_ms)),
                    to_time: Some(from_ms(until_ms)),
                    rows: Some(dropped as i64),
                    detail: json!({"kind": self.kind(), "dropped": dropped, "cap": self.queue.cap(),
                                   "symbols": symbols.len(), "clock": "wall"}),
                });
                let probe_at = Instant::now() + self.cfg.probe_delay;
                let can_probe = R::CONTIGUOUS && self.filler.is_some();
                for sym in symbols {
                    let st = self.state(&sym);
                    st.hint = Some("overflow");
                    if !R::CONTIGUOUS && st.gap_open.is_none() {
                        if let Some(t) = st.last_time_ms {
                            st.gap_open = Some((t, "overflow"));
                        }
                    }
                    if can_probe {
                        st.probe_at = Some(probe_at);
                        self.probes.push_back((probe_at, sym));
                    }
                }
            }
            Item::GapDone(done) => self.gap_done(done),
        }
        Ok(())
    }

    /// The duplicate check and gap bookkeeping of one row; true when it is to be written.
    fn accept(&mut self, row: &R, source: Source) -> bool {
        let id = row.id();
        let t = row.time_ms();
        let max_gap = self.cfg.max_gap_ids;
        let grace = self.cfg.gap_grace;
        let kind = self.kind();
        let symbol = row.symbol();
        let st = match self.states.get_mut(symbol) {
            Some(st) => st,
            None => {
                self.states.insert(symbol.clone(), SymState::default());
                self.states.get_mut(symbol).expect("just inserted")
            }
        };
        if !R::CONTIGUOUS {
            if st.last_id.is_some_and(|l| id <= l) {
                return false;
            }
            st.last_id = Some(id);
            if let Some((from, reason)) = st.gap_open.take() {
                if t > from {
                    self.summary.book_gaps += 1;
                    self.events.push(QualityEvent {
                        symbol: Some(symbol.to_string()),
                        kind: quality_kind::BOOK_TICKER_GAP,
                        from_time: Some(from_ms(from)),
                        to_time: Some(from_ms(t)),
                        rows: None,
                        detail: json!({"reason": reason, "seconds": (t - from) as f64 / 1000.0}),
                    });
                }
            }
            st.last_time_ms = Some(t);
            return true;
        }
        let accepted = match st.last_id {
            None => {
                st.last_id = Some(id);
                true
            }
            Some(last) if id > last => {
                if id > last + 1 {
                    let (lo, hi) = (last + 1, id - 1);
                    let trigger = st.hint.unwrap_or("jump");
                    self.summary.gaps += 1;
                    debug!(kind, %symbol, lo, hi, trigger, "aggTrade id jump");
                    st.pending.insert(lo, hi);
                    let before_ms = st.last_time_ms;
                    let mut ripe = Ripening {
                        at: Instant::now() + grace,
                        symbol: symbol.clone(),
                        lo,
                        hi,
                        trigger,
                        before_ms,
                        after_ms: Some(t),
                    };
                    if st.pending.len() > MAX_PENDING_RANGES {
                        // a hostile or broken feed: one span instead of many ranges
                        let (a, b) = st.pending.span().expect("not empty");
                        st.pending.insert(a, b);
                        ripe.lo = a;
                        ripe.hi = b;
                    }
                    self.events.push(QualityEvent {
                        symbol: Some(symbol.to_string()),
                        kind: quality_kind::TRADE_GAP,
                        from_time: before_ms.map(from_ms),
                        to_time: Some(from_ms(t)),
                        rows: Some(hi - lo + 1),
                        detail: json!({"first_id": lo, "last_id": hi, "trigger": trigger,
                                       "too_large": hi - lo + 1 > max_gap}),
                    });
                    self.ripening.push_back(ripe);
                }
                st.hint = None;
                st.last_id = Some(id);
                true
            }
            Some(_) => st.pending.remove(id),
        };
        if accepted {
            if st.last_id == Some(id) {
                st.last_time_ms = Some(t);
            }
            if source == Source::Live {
                st.probe_at = None;
            }
            if source == Source::Rest {
                if let Some(job) = self
                    .jobs
                    .get_mut(symbol)
                    .and_then(|m| m.range_mut(..=id).next_back())
                    .map(|(_, j)| j)
                    .filter(|j| id <= j.hi)
                {
                    job.accepted += 1;
                    job.first_ms = Some(job.first_ms.map_or(t, |f| f.min(t)));
                    job.last_ms = Some(job.last_ms.map_or(t, |l| l.max(t)));
                }
            }
        }
        accepted
    }

    /// Hands gaps whose grace period is over to the filler (or gives up too large ones), and
    /// the due probes.
    fn ripen(&mut self) {
        let now = Instant::now();
        while self.probes.front().is_some_and(|p| p.0 <= now) {
            let (at, symbol) = self.probes.pop_front().expect("front");
            let Some(st) = self.states.get_mut(&symbol) else {
                continue;
            };
            if st.probe_at != Some(at) {
                continue; // a live trade came first (or a newer probe is planned)
            }
            st.probe_at = None;
            let Some(last) = st.last_id else { continue };
            let lo = last + 1;
            let jobs = self.jobs.entry(symbol.clone()).or_default();
            if jobs.contains_key(&lo) {
                continue;
            }
            jobs.insert(
                lo,
                Job {
                    probe: true,
                    hi: lo + i64::from(super::fill::PAGE) - 1,
                    accepted: 0,
                    first_ms: None,
                    last_ms: None,
                    before_ms: st.last_time_ms,
                    after_ms: None,
                },
            );
            debug!(%symbol, from_id = lo, "probing a quiet symbol after a full buffer");
            if let Some(f) = &self.filler {
                let _ = f.send(FillJob {
                    symbol,
                    lo,
                    hi: lo + i64::from(super::fill::PAGE) - 1,
                    trigger: "overflow",
                    probe: true,
                });
            }
        }
        while self.ripening.front().is_some_and(|r| r.at <= now) {
            let r = self.ripening.pop_front().expect("front");
            let Some(st) = self.states.get_mut(&r.symbol) else {
                continue;
            };
            for (lo, hi) in st.pending.within(r.lo, r.hi) {
                let ids = hi - lo + 1;
                let too_large = ids > self.cfg.max_gap_ids;
                if too_large || self.filler.is_none() {
                    st.pending.take(lo, hi);
                    let reason = if too_large {
                        format!(
                            "{ids} ids: more than --trade-gap-max-ids {}",
                            self.cfg.max_gap_ids
                        )
                    } else {
                        "no REST filler".to_string()
                    };
                    self.summary.unfilled += ids as u64;
                    metrics::counter!(metric::TRADES_UNFILLED).increment(ids as u64);
                    warn!(symbol = %r.symbol, lo, hi, %reason, "aggTrade gap not filled");
                    self.events.push(QualityEvent {
                        symbol: Some(r.symbol.to_string()),
                        kind: quality_kind::TRADE_GAP_UNFILLED,
                        from_time: r.before_ms.map(from_ms),
                        to_time: r.after_ms.map(from_ms),
                        rows: Some(ids),
                        detail: json!({"first_id": lo, "last_id": hi, "ids": ids,
                                       "trigger": r.trigger, "reason": reason}),
                    });
                    continue;
                }
                let jobs = self.jobs.entry(r.symbol.clone()).or_default();
                if jobs.contains_key(&lo) {
                    continue;
                }
                jobs.insert(
                    lo,
                    Job {
                        probe: false,
                        hi,
                        accepted: 0,
                        first_ms: None,
                        last_ms: None,
                        before_ms: r.before_ms,
                        after_ms: r.after_ms,
                    },
                );
                debug!(symbol = %r.symbol, lo, hi, trigger = r.trigger, "aggTrade gap to REST");
                let job = FillJob {
                    symbol: r.symbol.clone(),
                    lo,
                    hi,
                    trigger: r.trigger,
                    probe: false,
                };
                if let Some(f) = &self.filler {
                    let _ = f.send(job);
                }
            }
        }
    }

    /// The filler is done with `[lo, hi]`: ids still missing there are given up.
    fn gap_done(&mut self, d: GapDone) {
        let job = self.jobs.get_mut(&d.symbol).and_then(|m| m.remove(&d.lo));
        let Some(st) = self.states.get_mut(&d.symbol) else {
            return;
        };
        let filled = job.as_ref().map_or(0, |j| j.accepted);
        let probe = job.as_ref().is_some_and(|j| j.probe);
        // a probe leaves nothing missing; a full page means there may be more: probe on
        let left = if probe {
            if d.pushed >= u64::from(super::fill::PAGE) {
                let at = Instant::now();
                st.probe_at = Some(at);
                self.probes.push_back((at, d.symbol.clone()));
            }
            Vec::new()
        } else {
            st.pending.take(d.lo, d.hi)
        };
        let (before_ms, after_ms) = job
            .as_ref()
            .map_or((None, None), |j| (j.before_ms, j.after_ms));
        if filled > 0 {
            self.summary.filled += filled;
            metrics::counter!(metric::TRADES_FILLED).increment(filled);
            info!(symbol = %d.symbol, lo = d.lo, hi = d.hi, filled, pages = d.pages, trigger = d.trigger, "aggTrade gap filled over REST");
            self.events.push(QualityEvent {
                symbol: Some(d.symbol.to_string()),
                kind: quality_kind::TRADE_GAP_FILLED,
                from_time: job.as_ref().and_then(|j| j.first_ms).map(from_ms),
                to_time: job.as_ref().and_then(|j| j.last_ms).map(from_ms),
                rows: Some(filled as i64),
                detail: json!({"first_id": d.lo, "last_id": d.hi, "trigger": d.trigger,
                               "pages": d.pages, "received": d.pushed}),
            });
        }
        for (lo, hi) in left {
            let ids = hi - lo + 1;
            self.summary.unfilled += ids as u64;
            metrics::counter!(metric::TRADES_UNFILLED).increment(ids as u64);
            let reason = if d.reasons.is_empty() {
                "REST did not return these ids".to_string()
            } else {
                d.reasons.join("; ")
            };
            error!(symbol = %d.symbol, lo, hi, %reason, "aggTrade ids could not be filled");
            self.events.push(QualityEvent {
                symbol: Some(d.symbol.to_string()),
                kind: quality_kind::TRADE_GAP_UNFILLED,
                from_time: before_ms.map(from_ms),
                to_time: after_ms.map(from_ms),
                rows: Some(ids),
                detail: json!({"first_id": lo, "last_id": hi, "ids": ids,
                               "trigger": d.trigger, "reason": reason}),
            });
        }
    }

    /// Turns the sessions' rejected samples into `tick_rejected` events (one per symbol).
    fn take_rejected(&mut self) {
        let (samples, n) = self.queue.take_rejected();
        if n == 0 {
            return;
        }
        self.summary.rejected += n;
        let mut by_symbol: HashMap<Option<Symbol>, Vec<serde_json::Value>> = HashMap::new();
        for s in &samples {
            if let (Some(sym), true) = (&s.symbol, R::CONTIGUOUS) {
                if let Some(st) = self.states.get_mut(sym) {
                    st.hint = Some("rejected");
                }
            }
            by_symbol
                .entry(s.symbol.clone())
                .or_default()
                .push(json!({"id": s.id, "reason": s.reason, "raw": s.raw}));
        }
        let sampled: u64 = samples.len() as u64;
        for (sym, list) in by_symbol {
            self.events.push(QualityEvent {
                symbol: sym.map(|s| s.to_string()),
                kind: quality_kind::TICK_REJECTED,
                from_time: None,
                to_time: None,
                rows: Some(list.len() as i64),
                detail: json!({"kind": self.kind(), "samples": list}),
            });
        }
        if n > sampled {
            self.events.push(QualityEvent {
                symbol: None,
                kind: quality_kind::TICK_REJECTED,
                from_time: None,
                to_time: None,
                rows: Some((n - sampled) as i64),
                detail: json!({"kind": self.kind(), "note": "not sampled"}),
            });
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
