//! Tick files: readers of Binance's aggTrades and futures bookTicker dumps (and of Tardis
//! best bid/ask CSVs, for the replay), and `ta-feed import` of the dumps into
//! `market.agg_trades` / `market.book_tickers`.
//!
//! | file (name) | layout |
//! |---|---|
//! | `SYMBOL-aggTrades-….csv[.gz\|.zip]`, spot | no header: `agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match`; `True`/`False`; µs from 2025 |
//! | `SYMBOL-aggTrades-….csv[.gz\|.zip]`, futures | header `agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker`; `true`/`false`; ms |
//! | `SYMBOL-bookTicker-….csv[.gz\|.zip]`, futures | header `update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time`; ms |
//! | `SYMBOL-quotes-….tardis.csv[.gz]` (replay only) | Tardis.dev `exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount`, µs; no update ids: row n gets `u = n` |
//!
//! Times are ms or µs by magnitude (≥ 1e15 is µs), a header row is recognised by its first
//! field not being a number, and every row goes through the same validation as the stream's
//! ([`AggTrade::from_wire`], [`BookTicker::from_wire`]), so an imported row and a streamed one
//! are the same bytes in the database. A `.zip` holds one CSV (Binance's dumps); `.gz` may be
//! multi-member.
//!
//! Import writes each file in one transaction (batches of `--batch-rows` copied into the
//! staging table and inserted with `ON CONFLICT DO NOTHING`): a failed file leaves nothing,
//! a re-import writes nothing.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use csv::StringRecord;
use flate2::read::MultiGzDecoder;
use tracing::debug;

use crate::binance::kind::agg_trade::{AggTrade, RestAggTrade};
use crate::binance::kind::book_ticker::{BookTicker, WsBookTicker};
use crate::binance::kind::{StreamKind, Symbol};
use crate::import::{join_workers, ImportError, ImportStats, Progress};
use crate::market::Market;
use crate::sink::CandleSink;

/// What a tick file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickFileKind {
    /// Binance aggTrades dump (spot or futures layout).
    AggTrades,
    /// Binance futures bookTicker dump.
    BookTicker,
    /// Tardis.dev best bid/ask CSV (no update ids; replay only).
    TardisQuotes,
}

impl TickFileKind {
    /// The stream kind its rows are.
    pub fn stream_kind(self) -> StreamKind {
        match self {
            TickFileKind::AggTrades => StreamKind::AggTrade,
            TickFileKind::BookTicker | TickFileKind::TardisQuotes => StreamKind::BookTicker,
        }
    }
}

/// The kind and symbol of a tick file from its name (`BTCUSDT-aggTrades-2026-05-08.csv.gz`,
/// `BTCUSD_PERP-aggTrades-….zip`, `BTCUSDT-bookTicker-2024-01-01.csv`,
/// `BTCUSDT-quotes-2020-02-22.tardis.csv.gz`); None for anything else (kline files).
pub fn detect(path: &Path) -> Option<(TickFileKind, String)> {
    let name = path.file_name()?.to_str()?;
    let (symbol, rest) = name.split_once('-')?;
    let kind = if rest.starts_with("aggTrades") {
        TickFileKind::AggTrades
    } else if rest.starts_with("bookTicker") {
        TickFileKind::BookTicker
    } else if rest.starts_with("quotes") && name.contains(".tardis.") {
        TickFileKind::TardisQuotes
    } else {
        return None;
    };
    Symbol::new(symbol).ok().map(|s| (kind, s.to_string()))
}

/// A reader that adds the bytes it reads to a shared counter (progress).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn io_err(file: &str) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        file: file.to_string(),
        source,
    }
}

/// Opens a plain, `.gz` or `.zip` file (the zip's first file) as text, adding the bytes read
/// from disk to `bytes_read`.
pub fn open_text(
    path: &Path,
    bytes_read: Arc<AtomicU64>,
) -> Result<Box<dyn Read + Send>, ImportError> {
    let file = path.display().to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if name.ends_with(".zip") {
        // a zip needs seeking: read it whole (Binance's daily dumps are tens of MB at most)
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(&file))?;
        bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| io_err(&file)(std::io::Error::other(e)))?;
        if archive.is_empty() {
            return Err(io_err(&file)(std::io::Error::other("empty zip archive")));
        }
        let mut entry = archive
            .by_index(0)
            .map_err(|e| io_err(&file)(std::io::Error::other(e)))?;
        let mut text = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut text).map_err(io_err(&file))?;
        return Ok(Box::new(std::io::Cursor::new(text)));
    }
    let f = File::open(path).map_err(io_err(&file))?;
    let f = Counting {
        inner: f,
        count: bytes_read,
    };
    Ok(if name.ends_with(".gz") {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, f)))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, f))
    })
}

/// A streaming reader of one tick file: yields validated rows ([`TickRow`] of the kind).
pub struct TickReader {
    file: String,
    kind: TickFileKind,
    symbol: Symbol,
    reader: csv::Reader<Box<dyn Read + Send>>,
    record: StringRecord,
    /// Tardis quotes: the update id of the next row.
    next_update: i64,
}

/// One row of a tick file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickRow {
    Trade(AggTrade),
    Book(BookTicker),
}

impl TickReader {
    /// Opens `path` of `kind` for `symbol`.
    pub fn open(
        path: &Path,
        kind: TickFileKind,
        symbol: &str,
        bytes_read: Arc<AtomicU64>,
    ) -> Result<Self, ImportError> {
        let raw = open_text(path, bytes_read)?;
        Self::from_reader(path.display().to_string(), kind, symbol, raw)
    }

    /// Reads CSV text from any reader (`name` is used in errors).
    pub fn from_reader(
        name: String,
        kind: TickFileKind,
        symbol: &str,
        raw: Box<dyn Read + Send>,
    ) -> Result<Self, ImportError> {
        let symbol = Symbol::new(symbol).map_err(|e| ImportError::BadRow {
            file: name.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(raw);
        Ok(TickReader {
            file: name,
            kind,
            symbol,
            reader,
            record: StringRecord::new(),
            next_update: 1,
        })
    }

    fn bad(&self, line: u64, reason: impl Into<String>) -> ImportError {
        ImportError::BadRow {
            file: self.file.clone(),
            line,
            reason: reason.into(),
        }
    }

    fn next_row(&mut self) -> Option<Result<TickRow, ImportError>> {
        loop {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    return Some(Err(self.bad(line, e.to_string())));
                }
            }
            let line = self.record.position().map(|p| p.line()).unwrap_or(0);
            if self.record.len() == 1 && self.record[0].is_empty() {
                continue;
            }
            if line == 1 {
                let first = self.record.get(0).unwrap_or_default();
                let numeric = first.parse::<i64>().is_ok();
                let tardis_header = self.kind == TickFileKind::TardisQuotes && first == "exchange";
                if !numeric && (self.kind != TickFileKind::TardisQuotes || tardis_header) {
                    continue; // header row
                }
            }
            return Some(self.parse(line));
        }
    }

    fn parse(&mut self, line: u64) -> Result<TickRow, ImportError> {
        let r = &self.record;
        let int = |i: usize, name: &str| -> Result<i64, ImportError> {
            r.get(i).unwrap_or_default().parse::<i64>().map_err(|_| {
                self.bad(
                    line,
                    format!("{name}: not an integer: {:?}", r.get(i).unwrap_or_default()),
                )
            })
        };
        let boolean = |i: usize, name: &str| -> Result<bool, ImportError> {
            match r.get(i).unwrap_or_default() {
                "true" | "True" | "TRUE" => Ok(true),
                "false" | "False" | "FALSE" => Ok(false),
                v => Err(self.bad(line, format!("{name}: not a boolean: {v:?}"))),
            }
        };
        match self.kind {
            TickFileKind::AggTrades => {
                if r.len() != 7 && r.len() != 8 {
                    return Err(
                        self.bad(line, format!("expected 7 or 8 columns, found {}", r.len()))
                    );
                }
                let wire = RestAggTrade {
                    agg_trade_id: int(0, "agg_trade_id")?,
                    price: &r[1],
                    quantity: &r[2],
                    first_trade_id: int(3, "first_trade_id")?,
                    last_trade_id: int(4, "last_trade_id")?,
                    trade_time: int(5, "transact_time")?,
                    is_buyer_maker: boolean(6, "is_buyer_maker")?,
                    is_best_match: if r.len() == 8 {
                        Some(boolean(7, "is_best_match")?)
                    } else {
                        None
                    },
                };
                AggTrade::from_wire(self.symbol.clone(), &wire, None)
                    .map(TickRow::Trade)
                    .map_err(|e| self.bad(line, e.to_string()))
            }
            TickFileKind::BookTicker => {
                if r.len() != 7 {
                    return Err(self.bad(line, format!("expected 7 columns, found {}", r.len())));
                }
                let event = int(6, "event_time")?;
                let wire = WsBookTicker {
                    event_type: None,
                    update_id: int(0, "update_id")?,
                    symbol: self.symbol.as_str(),
                    best_bid_price: &r[1],
                    best_bid_qty: &r[2],
                    best_ask_price: &r[3],
                    best_ask_qty: &r[4],
                    transaction_time: Some(int(5, "transaction_time")?),
                    event_time: Some(event),
                };
                BookTicker::from_wire(self.symbol.clone(), &wire, event)
                    .map(TickRow::Book)
                    .map_err(|e| self.bad(line, e.to_string()))
            }
            TickFileKind::TardisQuotes => {
                if r.len() != 8 {
                    return Err(self.bad(line, format!("expected 8 columns, found {}", r.len())));
                }
                let t = int(2, "timestamp")?;
                let wire = WsBookTicker {
                    event_type: None,
                    update_id: self.next_update,
                    symbol: self.symbol.as_str(),
                    best_bid_price: &r[6],
                    best_bid_qty: &r[7],
                    best_ask_price: &r[5],
                    best_ask_qty: &r[4],
                    transaction_time: Some(t),
                    event_time: Some(t),
                };
                self.next_update += 1;
                BookTicker::from_wire(self.symbol.clone(), &wire, t)
                    .map(TickRow::Book)
                    .map_err(|e| self.bad(line, e.to_string()))
            }
        }
    }
}

impl Iterator for TickReader {
    type Item = Result<TickRow, ImportError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_row()
    }
}

/// The kind and symbol of `path`: `--kind`/`--symbol` win over the file name.
pub fn resolve(
    path: &Path,
    kind: Option<StreamKind>,
    symbol: Option<&str>,
) -> Result<(TickFileKind, String), ImportError> {
    let detected = detect(path);
    let kind = match (kind, detected.as_ref().map(|d| d.0)) {
        (Some(StreamKind::AggTrade), _) => TickFileKind::AggTrades,
        (Some(StreamKind::BookTicker), Some(TickFileKind::TardisQuotes)) => {
            TickFileKind::TardisQuotes
        }
        (Some(StreamKind::BookTicker), _) => TickFileKind::BookTicker,
        (_, Some(k)) => k,
        _ => {
            return Err(ImportError::Symbol {
                file: path.display().to_string(),
            })
        }
    };
    let symbol = match symbol {
        Some(s) if !s.trim().is_empty() => s.trim().to_ascii_uppercase(),
        _ => detected.map(|d| d.1).ok_or_else(|| ImportError::Symbol {
            file: path.display().to_string(),
        })?,
    };
    Ok((kind, symbol))
}

/// Reads a whole tick file into memory (the replay).
pub fn read_all(
    path: &Path,
    kind: TickFileKind,
    symbol: &str,
) -> Result<Vec<TickRow>, ImportError> {
    TickReader::open(path, kind, symbol, Arc::default())?.collect()
}

/// Settings of a tick import.
#[derive(Debug, Clone)]
pub struct TickImportConfig {
    pub database_url: String,
    pub files: Vec<PathBuf>,
    pub kind: Option<StreamKind>,
    pub symbol: Option<String>,
    pub batch_rows: usize,
    pub market: Market,
    /// Connections importing files in parallel.
    pub jobs: usize,
}

/// Imports tick files (each in one transaction), `jobs` files at a time; one line per file
/// and a total on stdout, a progress bar on a terminal.
pub async fn import_tick_files(cfg: &TickImportConfig) -> Result<Vec<ImportStats>, ImportError> {
    let started = Instant::now();
    let mut work = Vec::new();
    for (i, path) in cfg.files.iter().enumerate() {
        let (kind, symbol) = resolve(path, cfg.kind, cfg.symbol.as_deref())?;
        if kind == TickFileKind::TardisQuotes {
            return Err(ImportError::BadRow {
                file: path.display().to_string(),
                line: 0,
                reason: "Tardis quotes have no Binance update ids: replay them, do not import them"
                    .into(),
            });
        }
        work.push((i, path.clone(), kind, symbol));
    }
    let progress = Arc::new(Progress::new(&cfg.files));
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        work,
    )));
    let jobs = cfg.jobs.clamp(1, cfg.files.len().max(1));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs {
        let (queue, progress, cfg) = (queue.clone(), progress.clone(), cfg.clone());
        workers.spawn(async move {
            let mut sink = CandleSink::connect(&cfg.database_url)
                .await?
                .with_market(cfg.market);
            let mut done = Vec::new();
            loop {
                let next = queue.lock().expect("import queue").pop_front();
                let Some((i, path, kind, symbol)) = next else {
                    break;
                };
                let stats = import_tick_file(
                    &mut sink,
                    &path,
                    kind,
                    &symbol,
                    cfg.batch_rows.max(1),
                    &progress,
                )
                .await?;
                progress.println(stats.line());
                done.push((i, stats));
            }
            Ok::<_, ImportError>(done)
        });
    }
    join_workers(workers, &progress, started).await
}

/// Imports one tick file in one transaction; returns its counts.
pub async fn import_tick_file(
    sink: &mut CandleSink,
    path: &Path,
    kind: TickFileKind,
    symbol: &str,
    batch_rows: usize,
    progress: &Progress,
) -> Result<ImportStats, ImportError> {
    let started = Instant::now();
    let mut reader = TickReader::open(path, kind, symbol, progress.bytes_read.clone())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<TickRow>, ImportError>>(2);
    let parser = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(batch_rows);
        for item in reader.by_ref() {
            match item {
                Ok(r) => {
                    batch.push(r);
                    if batch.len() >= batch_rows {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                        if tx.blocking_send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
    });
    let mut stats = ImportStats {
        file: path.display().to_string(),
        symbol: symbol.to_string(),
        ..ImportStats::default()
    };
    let result = async {
        let mut tx = sink.begin_import(kind.stream_kind()).await?;
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            let n = batch.len() as u64;
            let written = match kind.stream_kind() {
                StreamKind::AggTrade => {
                    let rows: Vec<AggTrade> = batch
                        .into_iter()
                        .filter_map(|r| match r {
                            TickRow::Trade(t) => Some(t),
                            TickRow::Book(_) => None,
                        })
                        .collect();
                    tx.add(&rows).await?
                }
                _ => {
                    let rows: Vec<BookTicker> = batch
                        .into_iter()
                        .filter_map(|r| match r {
                            TickRow::Book(b) => Some(b),
                            TickRow::Trade(_) => None,
                        })
                        .collect();
                    tx.add(&rows).await?
                }
            };
            stats.rows_read += n;
            stats.rows_written += written;
            progress.add_rows(n);
            debug!(file = %stats.file, rows = n, written, "copied tick batch");
        }
        tx.commit().await?;
        Ok::<(), ImportError>(())
    }
    .await;
    let _ = parser.await;
    result?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str, kind: TickFileKind, symbol: &str) -> TickReader {
        TickReader::from_reader(
            "inline.csv".into(),
            kind,
            symbol,
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        )
        .unwrap()
    }

    fn trades(text: &str) -> Result<Vec<AggTrade>, ImportError> {
        reader(text, TickFileKind::AggTrades, "BTCUSDT")
            .map(|r| {
                r.map(|t| match t {
                    TickRow::Trade(t) => t,
                    TickRow::Book(_) => unreachable!(),
                })
            })
            .collect()
    }

    #[test]
    fn file_names() {
        let cases = [
            (
                "BTCUSD_PERP-aggTrades-2026-05-08.csv.gz",
                Some((TickFileKind::AggTrades, "BTCUSD_PERP")),
            ),
            (
                "XRPETH-aggTrades-2019-10-11_2019-10-13.csv.gz",
                Some((TickFileKind::AggTrades, "XRPETH")),
            ),
            (
                "btcusdt-aggTrades-2024-01.zip",
                Some((TickFileKind::AggTrades, "BTCUSDT")),
            ),
            (
                "BTCUSDT-bookTicker-2024-01-01.csv",
                Some((TickFileKind::BookTicker, "BTCUSDT")),
            ),
            (
                "BTCUSDT-quotes-2020-02-22.tardis.csv.gz",
                Some((TickFileKind::TardisQuotes, "BTCUSDT")),
            ),
            ("BTCUSDT-trades-2020-02-22.tardis.csv.gz", None),
            ("BTCUSDT-1m-2024-01.csv", None),
        ];
        for (name, want) in cases {
            let got = detect(Path::new(name));
            assert_eq!(got.as_ref().map(|(k, s)| (*k, s.as_str())), want, "{name}");
        }
        let (k, s) = resolve(
            Path::new("x.csv"),
            Some(StreamKind::AggTrade),
            Some("ethusdt"),
        )
        .unwrap();
        assert_eq!((k, s.as_str()), (TickFileKind::AggTrades, "ETHUSDT"));
        assert!(resolve(Path::new("x.csv"), None, None).is_err());
    }

    /// (TC) layouts of the real dumps, ms and µs, headers, booleans, bad rows
    #[test]
    fn agg_trade_layouts() {
        // TC1 futures: header, ms, lower-case booleans, no M
        let fut = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n\
                   480537903,79972.8,542.0,1123474160,1123474164,1778198400020,false\n";
        let t = trades(fut).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].price.to_string(), t[0].quantity.to_string()),
            ("79972.8".into(), "542.0".into())
        );
        assert_eq!(
            (t[0].time_ms(), t[0].is_best_match, t[0].trades()),
            (1778198400020, None, 5)
        );
        // TC2 spot: no header, ms, True/False, M
        let spot = "13519807,0.00141342,23.00000000,15373518,15373518,1570752011620,True,True\n";
        let t = trades(spot).unwrap();
        assert_eq!(
            (t[0].is_buyer_maker, t[0].is_best_match),
            (true, Some(true))
        );
        // TC3 spot from 2025: µs kept exactly
        let us = "1,1.5,2,1,1,1735689600123456,False,True\n";
        let t = trades(us).unwrap();
        assert_eq!(t[0].transact_time.timestamp_micros(), 1735689600123456);
        // TC4 bad rows name file and line
        for (bad, what) in [
            ("1,1.5,2,1,1,1735689600123,maybe,True\n", "boolean"),
            ("1,1.5,0,1,1,1735689600123,false\n", "zero"),
            ("1,1.5,2,3,1,1735689600123,false\n", "f <= l"),
            ("1,1.5,2\n", "columns"),
            ("x,1.5,2,1,1,1735689600123,false\n", "agg_trade_id"),
        ] {
            let text = format!("{spot}{bad}");
            let e = trades(&text).unwrap_err().to_string();
            assert!(
                e.starts_with("inline.csv:2:") && e.contains(what),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn book_ticker_and_tardis() {
        let dump = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n\
                    600859600576,7.6110,2,7.6120,297,1626992741012,1626992741017\n";
        let rows: Vec<TickRow> = reader(dump, TickFileKind::BookTicker, "SUSHIUSDT")
            .collect::<Result<_, _>>()
            .unwrap();
        let TickRow::Book(b) = &rows[0] else { panic!() };
        assert_eq!((b.update_id, b.time_ms()), (600859600576, 1626992741017));
        assert_eq!(
            b.transaction_time.map(|t| t.timestamp_millis()),
            Some(1626992741012)
        );
        let tardis = "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n\
                      binance-futures,BTCUSDT,1582329601096000,1582329603502092,0.84,9682,9681.92,0.67\n\
                      binance-futures,BTCUSDT,1582329603401000,1582329603522418,0.84,9682,9681.83,0.003\n";
        let rows: Vec<TickRow> = reader(tardis, TickFileKind::TardisQuotes, "BTCUSDT")
            .collect::<Result<_, _>>()
            .unwrap();
        let TickRow::Book(b) = &rows[1] else { panic!() };
        assert_eq!(b.update_id, 2, "row number");
        assert_eq!(
            (b.best_bid_price.to_string(), b.best_bid_qty.to_string()),
            ("9681.83".into(), "0.003".into())
        );
        assert_eq!(
            (b.best_ask_price.to_string(), b.best_ask_qty.to_string()),
            ("9682".into(), "0.84".into())
        );
        assert_eq!(b.time_ms(), 1582329603401);
        let crossed = dump.replace("7.6110,2,7.6120", "7.7,2,7.6120");
        let e = reader(&crossed, TickFileKind::BookTicker, "SUSHIUSDT")
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("crossed"), "{e}");
    }
}
