//! The bounded buffer between the WebSocket sessions of one tick kind and its writer.
//!
//! Sessions push live ticks without waiting ([`TickQueue::push_live`]); when `cap` rows are
//! waiting the buffer is *full* and refuses live ticks (counted; the symbols are remembered)
//! until the writer has drained it to half the cap. That is how "stop taking the affected
//! streams" looks from the sessions: they keep reading their sockets (klines and pings keep
//! flowing, the socket never backs up) and drop the ticks. Dropped aggTrades come back over
//! REST by id (the writer sees the id jump); dropped book tickers are a recorded gap. The REST
//! filler waits for room ([`TickQueue::push_rest`]). Memory is therefore bounded by
//! `cap` + one REST page + the writer's batch.
//!
//! Every live row pushed gets a sequence number ([`TickQueue::pushed`]); the writer reports
//! how many it has committed, which is what the kline writer waits for before a candle
//! (`crate::ticks::TickBarrier`).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::binance::kind::Symbol;

/// Where a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A WebSocket session.
    Live,
    /// The REST gap filler.
    Rest,
}

/// A tick refused by validation (a sample for `data_quality_log`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The session's symbol it was for (None: not one of the session's symbols).
    pub symbol: Option<Symbol>,
    /// The id it carried, when known.
    pub id: Option<i64>,
    pub reason: String,
    pub raw: String,
}

/// What the REST filler reports when it is done with a range.
#[derive(Debug, Clone, PartialEq)]
pub struct GapDone {
    pub symbol: Symbol,
    pub lo: i64,
    pub hi: i64,
    pub trigger: &'static str,
    /// Trades pushed for this range.
    pub pushed: u64,
    /// REST requests made.
    pub pages: u64,
    /// Why ids were not filled (first reasons), empty when REST had everything.
    pub reasons: Vec<String>,
}

/// One item of the buffer, in arrival order.
#[derive(Debug)]
pub enum Item<R> {
    Row {
        row: R,
        received: Instant,
        source: Source,
    },
    /// A shard has a live session again (symbols it streams; wall ms).
    Connected {
        connection: usize,
        symbols: Vec<String>,
    },
    /// A shard lost its last live session.
    Disconnected {
        connection: usize,
        symbols: Vec<String>,
    },
    /// The filler finished a range.
    GapDone(GapDone),
    /// The buffer was full and refused live ticks of `symbols`.
    Overflow {
        symbols: Vec<Symbol>,
        dropped: u64,
        since_ms: i64,
        until_ms: i64,
    },
}

struct Inner<R> {
    items: VecDeque<Item<R>>,
    rows: usize,
    full: bool,
    /// Live ticks refused during the current full period, their symbols, and when it began.
    dropped: u64,
    dropped_symbols: HashSet<Symbol>,
    full_since_ms: i64,
    rejected: Vec<Rejected>,
    rejected_total: u64,
    max_rows: usize,
}

/// At most this many rejected samples are kept between two writer flushes.
pub const REJECTED_SAMPLES: usize = 32;

/// The bounded tick buffer of one kind.
pub struct TickQueue<R> {
    inner: Mutex<Inner<R>>,
    /// Wakes the writer.
    ready: Notify,
    /// Wakes the REST filler when the buffer is no longer full.
    room: Notify,
    cap: usize,
    /// Live rows pushed (their sequence numbers are 1..=pushed).
    pushed: AtomicU64,
    /// Live rows refused because the buffer was full (all time).
    dropped_total: AtomicU64,
}

impl<R> std::fmt::Debug for TickQueue<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickQueue")
            .field("cap", &self.cap)
            .field("pushed", &self.pushed)
            .finish_non_exhaustive()
    }
}

/// Wall-clock epoch ms.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<R> TickQueue<R> {
    /// A buffer refusing live rows once `cap` (≥ 2) rows wait.
    pub fn new(cap: usize) -> Self {
        TickQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                rows: 0,
                full: false,
                dropped: 0,
                dropped_symbols: HashSet::new(),
                full_since_ms: 0,
                rejected: Vec::new(),
                rejected_total: 0,
                max_rows: 0,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            cap: cap.max(2),
            pushed: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes a live row; false (and the row is dropped) while the buffer is full.
    pub fn push_live(&self, row: R, symbol: &Symbol) -> bool {
        let mut g = self.lock();
        if g.full {
            g.dropped += 1;
            if !g.dropped_symbols.contains(symbol) {
                g.dropped_symbols.insert(symbol.clone());
            }
            drop(g);
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        g.items.push_back(Item::Row {
            row,
            received: Instant::now(),
            source: Source::Live,
        });
        g.rows += 1;
        g.max_rows = g.max_rows.max(g.rows);
        if g.rows >= self.cap {
            g.full = true;
            g.full_since_ms = wall_ms();
        }
        // the sequence number is taken under the lock: FIFO order = sequence order
        self.pushed.fetch_add(1, Ordering::Release);
        drop(g);
        self.ready.notify_one();
        true
    }

    /// Pushes REST rows, first waiting while the buffer is full or at its cap (it may exceed
    /// the cap by one page).
    pub async fn push_rest(&self, rows: Vec<R>) {
        loop {
            let wait = self.room.notified();
            {
                let g = self.lock();
                if !g.full && g.rows < self.cap {
                    break;
                }
            }
            wait.await;
        }
        let mut g = self.lock();
        let now = Instant::now();
        g.rows += rows.len();
        g.max_rows = g.max_rows.max(g.rows);
        g.items.extend(rows.into_iter().map(|row| Item::Row {
            row,
            received: now,
            source: Source::Rest,
        }));
        drop(g);
        self.ready.notify_one();
    }

    /// Pushes a control item (never refused; a handful per connection event or gap).
    pub fn push_control(&self, item: Item<R>) {
        self.lock().items.push_back(item);
        self.ready.notify_one();
    }

    /// Records a tick refused by validation (a bounded sample is kept).
    pub fn reject(&self, r: Rejected) {
        let mut g = self.lock();
        g.rejected_total += 1;
        if g.rejected.len() < REJECTED_SAMPLES {
            g.rejected.push(r);
        }
    }

    /// Takes the rejected samples and how many were refused since the last call.
    pub fn take_rejected(&self) -> (Vec<Rejected>, u64) {
        let mut g = self.lock();
        let n = std::mem::take(&mut g.rejected_total);
        (std::mem::take(&mut g.rejected), n)
    }

    /// Live rows pushed so far (the sequence number of the newest).
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Acquire)
    }

    /// Live rows refused because the buffer was full, all time.
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Rows waiting now.
    pub fn rows(&self) -> usize {
        self.lock().rows
    }

    /// Most rows that waited at once.
    pub fn max_rows(&self) -> usize {
        self.lock().max_rows
    }

    /// Waits until something was pushed (returns at once when a push happened since the last
    /// wait).
    pub async fn wait(&self) {
        self.ready.notified().await;
    }

    /// Moves up to `max_rows` rows (and the control items between them) into `out`; returns
    /// how many live rows were taken. Ends a full period once at most half the cap waits
    /// (and queues its [`Item::Overflow`] report).
    pub fn take(&self, max_rows: usize, out: &mut Vec<Item<R>>) -> u64 {
        let mut g = self.lock();
        let mut rows = 0usize;
        let mut live = 0u64;
        while rows < max_rows {
            let Some(item) = g.items.pop_front() else {
                break;
            };
            if let Item::Row { source, .. } = &item {
                rows += 1;
                if *source == Source::Live {
                    live += 1;
                }
            }
            out.push(item);
        }
        g.rows -= rows;
        let room = g.rows < self.cap;
        if g.full && g.rows <= self.cap / 2 {
            g.full = false;
            let symbols: Vec<Symbol> = g.dropped_symbols.drain().collect();
            let dropped = std::mem::take(&mut g.dropped);
            let since_ms = g.full_since_ms;
            if dropped > 0 {
                g.items.push_back(Item::Overflow {
                    symbols,
                    dropped,
                    since_ms,
                    until_ms: wall_ms(),
                });
            }
            drop(g);
            self.room.notify_waiters();
        } else if room && rows > 0 {
            drop(g);
            self.room.notify_waiters();
        }
        live
    }

    /// True when items wait.
    pub fn has_items(&self) -> bool {
        !self.lock().items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(items: &[Item<u32>]) -> Vec<u32> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Row { row, .. } => Some(*row),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn cap_hysteresis_and_overflow_report() {
        let q: TickQueue<u32> = TickQueue::new(4);
        let s = Symbol::new("BTCUSDT").unwrap();
        for i in 0..4 {
            assert!(q.push_live(i, &s));
        }
        assert!(!q.push_live(99, &s), "full at the cap");
        assert_eq!((q.pushed(), q.dropped()), (4, 1));
        let mut out = Vec::new();
        assert_eq!(q.take(1, &mut out), 1);
        assert!(!q.push_live(98, &s), "still full above half the cap");
        assert_eq!(q.take(1, &mut out), 1);
        // 2 left = half the cap: no longer full, the overflow is reported after the rows
        assert!(q.push_live(4, &s));
        let mut rest = Vec::new();
        q.take(10, &mut rest);
        assert_eq!(rows(&out), vec![0, 1]);
        assert_eq!(rows(&rest), vec![2, 3, 4]);
        let overflow = rest.iter().find_map(|i| match i {
            Item::Overflow {
                symbols, dropped, ..
            } => Some((symbols.clone(), *dropped)),
            _ => None,
        });
        assert_eq!(overflow, Some((vec![s.clone()], 2)));
        assert_eq!(q.max_rows(), 4);
    }

    #[tokio::test]
    async fn rest_rows_wait_for_room() {
        let q = std::sync::Arc::new(TickQueue::<u32>::new(2));
        let s = Symbol::new("X").unwrap();
        q.push_live(1, &s);
        q.push_live(2, &s);
        let q2 = q.clone();
        let filler = tokio::spawn(async move { q2.push_rest(vec![10, 11, 12]).await });
        tokio::task::yield_now().await;
        assert!(!filler.is_finished(), "waits while full");
        let mut out = Vec::new();
        q.take(2, &mut out);
        filler.await.unwrap();
        q.take(10, &mut out);
        assert_eq!(rows(&out), vec![1, 2, 10, 11, 12]);
        assert_eq!(q.pushed(), 2, "REST rows have no live sequence number");
    }

    /// REST pages never take the buffer past its cap by more than a page.
    #[tokio::test]
    async fn rest_rows_respect_the_cap() {
        let q = std::sync::Arc::new(TickQueue::<u32>::new(4));
        q.push_rest(vec![1, 2, 3]).await;
        q.push_rest(vec![4, 5, 6]).await; // 3 < 4: allowed, now 6 rows
        let q2 = q.clone();
        let third = tokio::spawn(async move { q2.push_rest(vec![7]).await });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "at the cap: waits");
        let mut out = Vec::new();
        q.take(3, &mut out);
        third.await.unwrap();
        assert_eq!(q.max_rows(), 6);
    }

    #[test]
    fn rejected_samples_are_bounded() {
        let q: TickQueue<u32> = TickQueue::new(10);
        for i in 0..100 {
            q.reject(Rejected {
                symbol: None,
                id: Some(i),
                reason: "x".into(),
                raw: String::new(),
            });
        }
        let (samples, n) = q.take_rejected();
        assert_eq!((samples.len(), n), (REJECTED_SAMPLES, 100));
        assert_eq!(q.take_rejected().1, 0);
    }
}
