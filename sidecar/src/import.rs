//! `ta-feed import`: Binance public-data kline CSVs (data.binance.vision layout, 12
//! columns `open_time,open,high,low,close,volume,close_time,quote_volume,count,
//! taker_buy_volume,taker_buy_quote_volume,ignore`), plain or `.gz`, with or without a
//! header row, ms or µs timestamps. The same reader feeds the fake Binance (`replay`).
//!
//! Every row is checked by [`Kline::validate`], the mirror of the table's CHECK constraints
//! (a candle in the future is refused too), and each file is written in one transaction:
//! a bad row anywhere leaves nothing of its file in the database (files already imported
//! stay), and importing the corrected file again completes it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csv::StringRecord;
use flate2::read::MultiGzDecoder;
use tracing::debug;

use crate::binance::model::{Kline, KlineText};
use crate::sink::{AlertMode, CandleSink, SinkError};

/// Import failures. A bad row names the file, the line and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    BadRow {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("{file}: cannot tell the symbol from the file name (expected SYMBOL-1m-....csv[.gz]); pass --symbol")]
    Symbol { file: String },
    #[error("database: {0}")]
    Sink(#[from] SinkError),
}

impl ImportError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ImportError::Sink(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Symbol from a Binance dump file name: `BTCUSDT-1m-2024-01.csv[.gz]`,
/// `BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz`, `BTCUSDT-1m-2026-09-15.head.csv`.
/// Only 1m files are accepted.
pub fn symbol_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let (symbol, rest) = name.split_once('-')?;
    let interval_ok = rest.starts_with("1m-") || rest.starts_with("1m.");
    if symbol.is_empty() || !interval_ok || !symbol.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some(symbol.to_ascii_uppercase())
}

/// Streaming reader of one klines12 file.
pub struct Klines12Reader {
    file: String,
    symbol: String,
    reader: csv::Reader<Box<dyn Read + Send>>,
    record: StringRecord,
}

/// A reader that adds the bytes it reads to a shared counter.
struct CountingRead<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Klines12Reader {
    /// Opens `path` (gzip when it ends in `.gz`) for `symbol`.
    pub fn open(path: &Path, symbol: &str) -> Result<Self, ImportError> {
        Self::open_counting(path, symbol, Arc::default())
    }

    /// [`Klines12Reader::open`], adding the bytes read from the file (compressed, for `.gz`)
    /// to `bytes_read` as it goes (progress).
    pub fn open_counting(
        path: &Path,
        symbol: &str,
        bytes_read: Arc<AtomicU64>,
    ) -> Result<Self, ImportError> {
        let file = path.display().to_string();
        let f = File::open(path).map_err(|source| ImportError::Io {
            file: file.clone(),
            source,
        })?;
        let f = CountingRead {
            inner: f,
            count: bytes_read,
        };
        let raw: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, f)))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, f))
        };
        Ok(Self::from_reader(file, symbol, raw))
    }

    /// Reads CSV text from any reader (`name` is used in errors).
    pub fn from_reader(name: String, symbol: &str, raw: Box<dyn Read + Send>) -> Self {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(raw);
        Klines12Reader {
            file: name,
            symbol: symbol.to_ascii_uppercase(),
            reader,
            record: StringRecord::new(),
        }
    }

    fn bad(&self, line: u64, reason: impl Into<String>) -> ImportError {
        ImportError::BadRow {
            file: self.file.clone(),
            line,
            reason: reason.into(),
        }
    }

    /// Next kline, `None` at end of file.
    pub fn next_kline(&mut self) -> Option<Result<Kline, ImportError>> {
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
                continue; // blank line
            }
            // Header row (futures dumps): first line, first field not a number.
            if line == 1
                && self
                    .record
                    .get(0)
                    .is_some_and(|f| f.parse::<i64>().is_err())
            {
                continue;
            }
            return Some(self.parse_record(line));
        }
    }

    fn parse_record(&self, line: u64) -> Result<Kline, ImportError> {
        let r = &self.record;
        if r.len() < 11 || r.len() > 12 {
            return Err(self.bad(line, format!("expected 12 columns, found {}", r.len())));
        }
        let int = |i: usize, name: &str| -> Result<i64, ImportError> {
            r[i].parse::<i64>()
                .map_err(|_| self.bad(line, format!("{name}: not an integer: {:?}", &r[i])))
        };
        let text = KlineText {
            symbol: &self.symbol,
            open_time: int(0, "open_time")?,
            open: &r[1],
            high: &r[2],
            low: &r[3],
            close: &r[4],
            volume: &r[5],
            close_time: int(6, "close_time")?,
            quote_volume: &r[7],
            trades: int(8, "count")?,
            taker_buy_volume: &r[9],
            taker_buy_quote_volume: &r[10],
        };
        Kline::from_text(text).map_err(|e| self.bad(line, e.to_string()))
    }
}

impl Iterator for Klines12Reader {
    type Item = Result<Kline, ImportError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_kline()
    }
}

/// Resolves the symbol of `path`: `--symbol` wins, else the file name.
pub fn resolve_symbol(path: &Path, symbol: Option<&str>) -> Result<String, ImportError> {
    match symbol {
        Some(s) if !s.trim().is_empty() => Ok(s.trim().to_ascii_uppercase()),
        _ => symbol_from_file_name(path).ok_or_else(|| ImportError::Symbol {
            file: path.display().to_string(),
        }),
    }
}

/// Reads a whole file into memory (used by `replay`).
pub fn read_klines12(path: &Path, symbol: Option<&str>) -> Result<Vec<Kline>, ImportError> {
    let symbol = resolve_symbol(path, symbol)?;
    Klines12Reader::open(path, &symbol)?.collect()
}

/// Settings of `import`.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    pub database_url: String,
    pub files: Vec<PathBuf>,
    pub symbol: Option<String>,
    /// Rows per COPY + upsert statement (each file is one transaction).
    pub batch_rows: usize,
    /// Market written with every row.
    pub market: crate::market::Market,
    /// Connections importing different symbols in parallel (≥ 1).
    pub jobs: usize,
}

/// Per-file (and total) counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportStats {
    pub file: String,
    pub symbol: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub elapsed: Duration,
}

impl ImportStats {
    pub fn rows_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.rows_read as f64 / s
        } else {
            0.0
        }
    }

    /// One summary line, as printed to stdout.
    pub fn line(&self) -> String {
        format!(
            "{}: symbol={} rows_read={} rows_written={} elapsed={:.3}s rate={:.0} rows/s",
            self.file,
            self.symbol,
            self.rows_read,
            self.rows_written,
            self.elapsed.as_secs_f64(),
            self.rows_per_sec()
        )
    }
}

/// Imports `cfg.files` with up to `cfg.jobs` connections in parallel: files of one symbol are
/// imported one after another in the order given (the screener state of an instrument is
/// built in time order), different symbols concurrently. Prints one line per file as it
/// finishes and a total; shows a progress bar on a terminal.
pub async fn import_files(cfg: &ImportConfig) -> Result<Vec<ImportStats>, ImportError> {
    let started = Instant::now();
    let progress = Arc::new(Progress::new(&cfg.files));
    let mut groups: Vec<(String, Vec<(usize, PathBuf)>)> = Vec::new();
    for (i, path) in cfg.files.iter().enumerate() {
        let symbol = resolve_symbol(path, cfg.symbol.as_deref())?;
        match groups.iter_mut().find(|(s, _)| *s == symbol) {
            Some((_, files)) => files.push((i, path.clone())),
            None => groups.push((symbol, vec![(i, path.clone())])),
        }
    }
    let jobs = cfg.jobs.clamp(1, groups.len().max(1));
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        groups,
    )));
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
                let Some((_, files)) = next else { break };
                for (i, path) in files {
                    let stats = import_file_with_progress(
                        &mut sink,
                        &path,
                        cfg.symbol.as_deref(),
                        cfg.batch_rows.max(1),
                        &progress,
                    )
                    .await?;
                    progress.println(stats.line());
                    done.push((i, stats));
                }
            }
            Ok::<_, ImportError>(done)
        });
    }
    join_workers(workers, &progress, started).await
}

/// The import workers' results, each a list of (index of the file in the order given, its
/// stats): waits for every worker, ends the progress bar, prints the total line and returns the
/// files' stats in the order given. The first worker error (or a panicked worker) is returned.
pub(crate) async fn join_workers(
    mut workers: tokio::task::JoinSet<Result<Vec<(usize, ImportStats)>, ImportError>>,
    progress: &Progress,
    started: Instant,
) -> Result<Vec<ImportStats>, ImportError> {
    let mut all = Vec::new();
    while let Some(res) = workers.join_next().await {
        match res {
            Ok(Ok(done)) => all.extend(done),
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(ImportError::Io {
                    file: "import worker".into(),
                    source: std::io::Error::other(e),
                })
            }
        }
    }
    progress.finish();
    all.sort_by_key(|(i, _)| *i);
    let all: Vec<ImportStats> = all.into_iter().map(|(_, s)| s).collect();
    let total = ImportStats {
        file: "total".into(),
        symbol: {
            let mut s: Vec<&str> = all.iter().map(|s| s.symbol.as_str()).collect();
            s.sort_unstable();
            s.dedup();
            s.join(",")
        },
        rows_read: all.iter().map(|s| s.rows_read).sum(),
        rows_written: all.iter().map(|s| s.rows_written).sum(),
        elapsed: started.elapsed(),
    };
    println!("{}", total.line());
    Ok(all)
}

/// Progress of an import on stderr when it is a terminal (hidden otherwise): a bar over the
/// files' bytes (compressed size for `.gz`), with rows, rows/s and ETA.
pub struct Progress {
    bar: indicatif::ProgressBar,
    pub(crate) bytes_read: Arc<AtomicU64>,
    rows: AtomicU64,
    started: Instant,
}

impl Progress {
    /// A bar for importing `files` (hidden unless stderr is a terminal).
    pub fn new(files: &[std::path::PathBuf]) -> Self {
        let total: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {percent:>3}% {msg} elapsed {elapsed} ETA {eta}",
            )
            .expect("valid template"),
        );
        Progress {
            bar,
            bytes_read: Arc::default(),
            rows: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// No bar (library callers).
    pub fn hidden() -> Self {
        let mut p = Self::new(&[]);
        p.bar = indicatif::ProgressBar::hidden();
        p
    }

    pub(crate) fn add_rows(&self, rows: u64) {
        let total = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar
            .set_position(self.bytes_read.load(Ordering::Relaxed));
        self.bar
            .set_message(format!("{total} rows, {:.0} rows/s", total as f64 / secs));
    }

    /// Prints a line above the bar (stdout).
    pub(crate) fn println(&self, line: String) {
        self.bar.suspend(|| println!("{line}"));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Imports one file through `sink` in batches of `batch_rows`, all in one transaction: the
/// file is stored whole or, on any error, not at all.
pub async fn import_file(
    sink: &mut CandleSink,
    path: &Path,
    symbol: Option<&str>,
    batch_rows: usize,
) -> Result<ImportStats, ImportError> {
    import_file_with_progress(sink, path, symbol, batch_rows, &Progress::hidden()).await
}

/// [`import_file`], reporting to `progress`.
pub async fn import_file_with_progress(
    sink: &mut CandleSink,
    path: &Path,
    symbol: Option<&str>,
    batch_rows: usize,
    progress: &Progress,
) -> Result<ImportStats, ImportError> {
    let started = Instant::now();
    let symbol = resolve_symbol(path, symbol)?;
    let mut reader = Klines12Reader::open_counting(path, &symbol, progress.bytes_read.clone())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Kline>, ImportError>>(2);
    let parser = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(batch_rows);
        for item in reader.by_ref() {
            match item {
                Ok(k) => {
                    batch.push(k);
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
        symbol: symbol.clone(),
        ..ImportStats::default()
    };
    // one transaction for the whole file: a bad row (or a row the table refuses) anywhere in
    // it leaves nothing of the file behind, and a re-run after the fix imports it whole
    let mut tx = sink.begin(AlertMode::Suppress).await?;
    let mut failed = None;
    while let Some(batch) = rx.recv().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        match tx.write(&batch).await {
            Ok(written) => {
                stats.rows_read += batch.len() as u64;
                progress.add_rows(batch.len() as u64);
                debug!(file = %stats.file, rows = batch.len(), written, "copied batch");
            }
            Err(e) => {
                failed = Some(e.into());
                break;
            }
        }
    }
    drop(rx); // stops the parser at its next batch
    let _ = parser.await;
    if let Some(e) = failed {
        if let Err(rollback) = tx.rollback().await {
            debug!(error = %rollback, "rollback after a failed import");
        }
        return Err(e);
    }
    stats.rows_written = tx.commit().await?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str, symbol: &str) -> Klines12Reader {
        Klines12Reader::from_reader(
            "inline.csv".into(),
            symbol,
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        )
    }

    #[test]
    fn symbol_from_names() {
        // (TC, name, expected)
        let cases = [
            ("TC1 monthly", "BTCUSDT-1m-2024-01.csv", Some("BTCUSDT")),
            (
                "TC2 gz range",
                "/x/BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz",
                Some("BTCUSDT"),
            ),
            (
                "TC3 head sample",
                "BTCUSDT-1m-2026-09-15.head.csv",
                Some("BTCUSDT"),
            ),
            ("TC4 lower case", "ethusdt-1m-2024-01.csv", Some("ETHUSDT")),
            ("TC5 5m file", "BTCUSDT-5m-2024-01.csv", None),
            ("TC6 no dash", "klines.csv", None),
            ("TC7 1m prefix only", "BTCUSDT-1mx.csv", None),
            ("TC8 underscore symbol", "BTC_USDT-1m.json", None),
        ];
        for (tc, name, want) in cases {
            assert_eq!(
                symbol_from_file_name(Path::new(name)).as_deref(),
                want,
                "{tc}"
            );
        }
        assert_eq!(
            resolve_symbol(Path::new("x.csv"), Some("solusdt")).unwrap(),
            "SOLUSDT"
        );
        assert!(resolve_symbol(Path::new("x.csv"), None).is_err());
    }

    #[test]
    fn ms_us_header_and_bad_rows() {
        // TC1: spot, ms, no header
        let ms = "1633910400000,54659.01,54670.0,54596.63,54631.19,68.54042,1633910459999,3744747.3848163,1980,28.46837,1555449.0674363,0\n";
        let ks: Vec<Kline> = reader(ms, "BTCUSDT").collect::<Result<_, _>>().unwrap();
        assert_eq!(ks.len(), 1);
        assert_eq!(ks[0].open_time_ms(), 1633910400000);
        assert_eq!(ks[0].open.to_string(), "54659.01");
        // TC2: µs (2025+ spot dumps)
        let us = "1789430400000000,78189.20000000,78200.23000000,78176.65000000,78199.66000000,3.48107000,1789430459999999,272165.78776570,1076,1.44229000,112765.69532040,0\n";
        let ks: Vec<Kline> = reader(us, "BTCUSDT").collect::<Result<_, _>>().unwrap();
        assert_eq!(ks[0].open_time_ms(), 1789430400000);
        assert_eq!(ks[0].close_time.timestamp_micros(), 1789430459999999);
        assert!(!ks[0].is_truncated());
        // TC3: header row (futures dumps)
        let hdr = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n\
                   1690848000000,4.255,4.256,4.252,4.252,25259.1,1690848059999,107451.0165,208,5452.3,23199.1103,0\n";
        let ks: Vec<Kline> = reader(hdr, "FILUSDT").collect::<Result<_, _>>().unwrap();
        assert_eq!(ks.len(), 1);
        assert_eq!(ks[0].trades, 208);
        // TC4: a bad row names the line and reason
        let bad = format!("{ms}{}", ms.replace("54596.63", "x1"));
        let err = reader(&bad, "BTCUSDT")
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("inline.csv:2:"), "{msg}");
        assert!(msg.contains("low"), "{msg}");
        // TC5: too few columns
        let err = reader("1,2,3\n", "BTCUSDT").next().unwrap().unwrap_err();
        assert!(err.to_string().contains("expected 12 columns"), "{err}");
        // TC6: header-like text after line 1 is an error
        let err = reader(&format!("{ms}{hdr}"), "BTCUSDT")
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(err.to_string().starts_with("inline.csv:2:"), "{err}");
        // TC7: low > high is rejected
        let err = reader(&ms.replace("54670.0", "54000"), "BTCUSDT")
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("inline.csv:1:"), "{err}");
    }
}
