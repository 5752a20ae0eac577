//! The session side of the tick kinds: [`Handler`]s that parse `aggTrade` / `bookTicker`
//! messages, validate them and push them into the kind's bounded buffer without waiting, and
//! the [`HandlerFactory`] that makes one per session and reports the shard's connectivity to
//! the writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use metrics::Counter;
use tracing::{debug, info, warn};

use super::queue::{wall_ms, Item, Rejected, TickQueue};
use crate::binance::kind::agg_trade::{self, AggTrade};
use crate::binance::kind::book_ticker::{self, BookTicker};
use crate::binance::kind::{split_combined, StreamKind, Symbol};
use crate::binance::model::{parse_ws_message, ParseError, WsMessage};
use crate::binance::rest::truncate;
use crate::binance::ws::{Handled, Handler, HandlerFactory};
use crate::constants::metric;

/// A tick kind as the sessions see it.
pub trait IntakeKind: Send + Sync + Sized + 'static {
    const KIND: StreamKind;
    /// Parses and validates one payload (the `data` of a combined message) of a session
    /// whose symbols are `symbols`: Ok(row), or Err with the id when known.
    fn parse(
        payload: &str,
        symbols: &HashMap<Box<str>, Symbol>,
        received_ms: i64,
    ) -> Result<Self, Refused>;
    fn symbol(&self) -> &Symbol;
}

/// Why a payload was not turned into a row.
#[derive(Debug)]
pub enum Refused {
    /// Not JSON of the kind (missing or mistyped fields).
    Malformed(ParseError),
    /// Well formed, but a value the tables refuse (or a symbol the session did not ask for).
    Invalid {
        symbol: Option<Symbol>,
        id: Option<i64>,
        error: ParseError,
    },
}

fn lookup(symbols: &HashMap<Box<str>, Symbol>, s: &str) -> Result<Symbol, ParseError> {
    symbols.get(s).cloned().ok_or_else(|| ParseError::Field {
        field: "symbol",
        reason: format!(
            "{:?} is not a symbol of this connection",
            s.chars().take(48).collect::<String>()
        ),
    })
}

impl IntakeKind for AggTrade {
    const KIND: StreamKind = StreamKind::AggTrade;
    fn parse(
        payload: &str,
        symbols: &HashMap<Box<str>, Symbol>,
        _received_ms: i64,
    ) -> Result<Self, Refused> {
        let w = agg_trade::parse_ws(payload).map_err(Refused::Malformed)?;
        let invalid = |symbol: Option<Symbol>, error| Refused::Invalid {
            symbol,
            id: Some(w.agg_trade_id),
            error,
        };
        let sym = lookup(symbols, w.symbol).map_err(|e| invalid(None, e))?;
        AggTrade::from_wire(sym.clone(), &w.trade(), None).map_err(|e| invalid(Some(sym), e))
    }
    fn symbol(&self) -> &Symbol {
        &self.symbol
    }
}

impl IntakeKind for BookTicker {
    const KIND: StreamKind = StreamKind::BookTicker;
    fn parse(
        payload: &str,
        symbols: &HashMap<Box<str>, Symbol>,
        received_ms: i64,
    ) -> Result<Self, Refused> {
        let w = book_ticker::parse_ws(payload).map_err(Refused::Malformed)?;
        let invalid = |symbol: Option<Symbol>, error| Refused::Invalid {
            symbol,
            id: Some(w.update_id),
            error,
        };
        let sym = lookup(symbols, w.symbol).map_err(|e| invalid(None, e))?;
        BookTicker::from_wire(sym.clone(), &w, received_ms).map_err(|e| invalid(Some(sym), e))
    }
    fn symbol(&self) -> &Symbol {
        &self.symbol
    }
}

/// Per-kind counters and a log limiter shared by the sessions.
struct Shared<R> {
    queue: Arc<TickQueue<R>>,
    received: Counter,
    rejected: Counter,
    dropped: Counter,
    malformed: Counter,
    /// Wall ms of the last warning, and the warnings suppressed since.
    last_warn_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl<R> Shared<R> {
    /// At most one warning per second per kind; the others are counted.
    fn warn_allowed(&self) -> Option<u64> {
        let now = wall_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Makes the sessions' handlers of tick kind `R` and forwards connectivity to its writer.
pub struct TickIntake<R> {
    shared: Arc<Shared<R>>,
}

impl<R: IntakeKind> TickIntake<R> {
    pub fn new(queue: Arc<TickQueue<R>>) -> Self {
        let k = R::KIND.as_str();
        TickIntake {
            shared: Arc::new(Shared {
                queue,
                received: metrics::counter!(metric::TICKS_RECEIVED, "kind" => k),
                rejected: metrics::counter!(metric::TICKS_REJECTED, "kind" => k),
                dropped: metrics::counter!(metric::TICKS_DROPPED, "kind" => k),
                malformed: metrics::counter!(metric::MALFORMED_MESSAGES),
                last_warn_ms: AtomicI64::new(0),
                suppressed: AtomicU64::new(0),
            }),
        }
    }
}

impl<R: IntakeKind> HandlerFactory for TickIntake<R> {
    fn session(&self, symbols: &[String]) -> Arc<dyn Handler> {
        let map = symbols
            .iter()
            .filter_map(|s| Symbol::new(s).ok())
            .map(|s| (Box::<str>::from(s.as_str()), s))
            .collect();
        Arc::new(TickHandler {
            shared: self.shared.clone(),
            symbols: map,
        })
    }

    fn connected(&self, connection: usize, symbols: &[String]) {
        self.shared.queue.push_control(Item::Connected {
            connection,
            symbols: symbols.to_vec(),
        });
    }

    fn disconnected(&self, connection: usize, symbols: &[String]) {
        self.shared.queue.push_control(Item::Disconnected {
            connection,
            symbols: symbols.to_vec(),
        });
    }
}

/// The handler of one session of tick kind `R`.
struct TickHandler<R> {
    shared: Arc<Shared<R>>,
    /// The session's symbols (upper case).
    symbols: HashMap<Box<str>, Symbol>,
}

impl<R: IntakeKind> Handler for TickHandler<R> {
    fn handle(&self, text: &str) -> Handled {
        let sh = &self.shared;
        let Some((stream, payload)) = split_combined(text) else {
            return other_message(text, sh);
        };
        match StreamKind::of_stream(stream) {
            Some((k, _)) if k == R::KIND => {}
            _ => {
                debug!(stream, "message of another stream: ignored");
                return Handled::Other;
            }
        }
        sh.received.increment(1);
        match R::parse(payload, &self.symbols, wall_ms()) {
            Ok(row) => {
                let symbol = row.symbol().clone();
                if !sh.queue.push_live(row, &symbol) {
                    sh.dropped.increment(1);
                }
                Handled::Data { delivered: true }
            }
            Err(Refused::Malformed(error)) => {
                sh.malformed.increment(1);
                if let Some(suppressed) = sh.warn_allowed() {
                    warn!(kind = %R::KIND, %error, raw = %truncate(text, 256), suppressed, "malformed tick message");
                }
                sh.queue.reject(Rejected {
                    symbol: None,
                    id: None,
                    reason: format!("malformed: {error}"),
                    raw: truncate(text, 500),
                });
                Handled::Data { delivered: false }
            }
            Err(Refused::Invalid { symbol, id, error }) => {
                sh.rejected.increment(1);
                if let Some(suppressed) = sh.warn_allowed() {
                    warn!(kind = %R::KIND, %error, raw = %truncate(text, 256), suppressed, "rejected tick");
                }
                sh.queue.reject(Rejected {
                    symbol,
                    id,
                    reason: error.to_string(),
                    raw: truncate(text, 500),
                });
                Handled::Data { delivered: false }
            }
        }
    }
}

/// Anything that is not a combined-stream message: `serverShutdown` reconnects, the rest is
/// ignored (or counted as malformed).
fn other_message<R>(text: &str, sh: &Shared<R>) -> Handled {
    match parse_ws_message(text) {
        Ok(WsMessage::ServerShutdown { event_time }) => {
            info!(?event_time, "serverShutdown received");
            Handled::Reconnect("serverShutdown".into())
        }
        Ok(_) => {
            debug!(raw = %truncate(text, 200), "ignored stream message");
            Handled::Other
        }
        Err(error) => {
            sh.malformed.increment(1);
            if let Some(suppressed) = sh.warn_allowed() {
                warn!(%error, raw = %truncate(text, 256), suppressed, "malformed stream message");
            }
            Handled::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(q: &TickQueue<AggTrade>) -> Vec<i64> {
        let mut out = Vec::new();
        q.take(1000, &mut out);
        out.into_iter()
            .filter_map(|i| match i {
                Item::Row { row, .. } => Some(row.agg_trade_id),
                _ => None,
            })
            .collect()
    }

    /// (TC, message, handled, pushed id or none)
    #[test]
    fn agg_trade_messages_table() {
        let q = Arc::new(TickQueue::<AggTrade>::new(100));
        let intake = TickIntake::new(q.clone());
        let h = intake.session(&["CTKUSDT".to_string()]);
        let good = r#"{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}"#;
        let cases: Vec<(&str, String, Handled, Option<i64>)> = vec![
            (
                "TC1 valid",
                good.into(),
                Handled::Data { delivered: true },
                Some(16599292),
            ),
            (
                "TC2 other symbol",
                good.replace(r#""s":"CTKUSDT""#, r#""s":"BTCUSDT""#),
                Handled::Data { delivered: false },
                None,
            ),
            (
                "TC3 zero quantity",
                good.replace(r#""q":"10""#, r#""q":"0""#),
                Handled::Data { delivered: false },
                None,
            ),
            (
                "TC4 malformed data",
                good.replace(r#""a":16599292"#, r#""a":"x""#),
                Handled::Data { delivered: false },
                None,
            ),
            (
                "TC5 another stream",
                good.replace("ctkusdt@aggTrade", "ctkusdt@kline_1m"),
                Handled::Other,
                None,
            ),
            (
                "TC6 subscribe reply",
                r#"{"result":null,"id":1}"#.into(),
                Handled::Other,
                None,
            ),
            (
                "TC7 serverShutdown",
                r#"{"e":"serverShutdown","E":1}"#.into(),
                Handled::Reconnect("serverShutdown".into()),
                None,
            ),
            ("TC8 not JSON", "}{".into(), Handled::Other, None),
        ];
        for (tc, msg, want, pushed) in cases {
            assert_eq!(h.handle(&msg), want, "{tc}");
            assert_eq!(take(&q), pushed.into_iter().collect::<Vec<_>>(), "{tc}");
        }
        let (samples, n) = q.take_rejected();
        assert_eq!(n, 3, "other symbol, zero quantity, malformed");
        assert!(samples[1].reason.contains("zero"), "{:?}", samples[1]);
    }

    #[test]
    fn spot_book_ticker_gets_receive_time() {
        let q = Arc::new(TickQueue::<BookTicker>::new(100));
        let intake = TickIntake::new(q.clone());
        let h = intake.session(&["NKNUSDT".to_string()]);
        let msg = r#"{"stream":"nknusdt@bookTicker","data":{"u":499869768,"s":"NKNUSDT","b":"0.35210000","B":"672.00000000","a":"0.35260000","A":"3199.00000000"}}"#;
        let before = wall_ms();
        assert_eq!(h.handle(msg), Handled::Data { delivered: true });
        let mut out = Vec::new();
        q.take(10, &mut out);
        let Some(Item::Row { row, .. }) = out.pop() else {
            panic!("no row")
        };
        assert!(row.time_ms() >= before && row.time_ms() <= wall_ms());
        let crossed = msg.replace(r#""b":"0.35210000""#, r#""b":"0.36000000""#);
        assert_eq!(h.handle(&crossed), Handled::Data { delivered: false });
        assert_eq!(q.take_rejected().1, 1);
    }
}
