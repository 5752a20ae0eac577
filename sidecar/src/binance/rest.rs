//! Binance REST client (spot `/api/v3/*`, USD-M futures `/fapi/v1/*`): server time, 1m klines,
//! aggregate trades and exchangeInfo, inside the IP's request-weight budget: a per-minute
//! budget (UTC minute, as Binance counts) at `weight_soft_limit`, corrected by
//! `X-MBX-USED-WEIGHT-1M`; 429 waits `Retry-After`; 418 (IP ban) stops REST loudly until its
//! Retry-After. aggTrade gap fills may use only `trade_weight_share` of that budget in a
//! minute, so they never starve the kline backfill and gap fills that share it.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits>,
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info#limits>

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::backoff::Backoff;
use crate::binance::kind::agg_trade;
use crate::binance::kind::Symbol;
use crate::binance::model::{
    parse_rest_klines, ApiError, ExchangeInfo, Kline, ParseError, ServerTime,
};
use crate::constants::{metric, KLINE_INTERVAL, USED_WEIGHT_HEADER};
use crate::market::Market;

/// REST failures.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("rate limited (429) {attempts} times in a row, last Retry-After {retry_after:?}")]
    RateLimited {
        attempts: u32,
        retry_after: Duration,
    },
    #[error("IP banned by Binance (418); REST paused for {retry_after:?}")]
    Banned { retry_after: Duration },
    #[error("HTTP {status} from {url}: {body}")]
    Status {
        status: u16,
        url: String,
        body: String,
    },
    #[error("Binance API error {code} ({status}): {msg}")]
    Api { status: u16, code: i64, msg: String },
    #[error("bad response from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: ParseError,
    },
}

impl RestError {
    /// Worth retrying later (network trouble, rate limiting, server errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            RestError::Http { .. } | RestError::RateLimited { .. } => true,
            RestError::Status { status, .. } => *status >= 500,
            RestError::Banned { .. } | RestError::Api { .. } | RestError::Decode { .. } => false,
        }
    }
}

/// Knobs of the REST client.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Base URL, e.g. `https://api.binance.com`.
    pub base_url: String,
    /// Which API (paths, limits, weights).
    pub market: Market,
    /// Weight spent per UTC minute at most (Binance's limit: 6000 spot, 2400 USD-M); a
    /// request that would go past it waits for the next minute.
    pub weight_soft_limit: u32,
    /// Fraction of `weight_soft_limit` that aggTrade gap fills may spend in one minute (the
    /// rest stays for klines and exchangeInfo).
    pub trade_weight_share: f64,
    /// Attempts per request for 429 / 5xx / network errors before giving up.
    pub max_attempts: u32,
    /// Back-off for 5xx and network errors (429 uses Retry-After).
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl RestConfig {
    /// Spot defaults; see [`RestConfig::for_market`].
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::for_market(base_url, Market::Spot)
    }

    /// Defaults of `market`: soft limit 5/6 of its per-minute weight limit.
    pub fn for_market(base_url: impl Into<String>, market: Market) -> Self {
        RestConfig {
            base_url: base_url.into(),
            market,
            weight_soft_limit: market.default_weight_soft_limit(),
            trade_weight_share: 0.5,
            max_attempts: 8,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct WeightState {
    /// UTC minute (epoch minutes, wall clock) `used_weight` belongs to.
    minute: i64,
    /// Weight used in `minute`: requests sent plus the exchange's own count when higher.
    used_weight: u32,
    banned_until: Option<Instant>,
}

/// The current UTC minute of the wall clock and the time left in it.
fn wall_minute() -> (i64, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() as i64;
    (
        ms.div_euclid(60_000),
        Duration::from_millis((60_000 - ms.rem_euclid(60_000)) as u64),
    )
}

/// Shared, cheaply clonable REST client.
#[derive(Debug, Clone)]
pub struct RestClient {
    http: reqwest::Client,
    cfg: Arc<RestConfig>,
    state: Arc<Mutex<WeightState>>,
}

impl RestClient {
    pub fn new(mut cfg: RestConfig) -> Result<Self, RestError> {
        cfg.base_url = cfg.base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ta-feed/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(cfg.timeout)
            .build()
            .map_err(|source| RestError::Http {
                url: cfg.base_url.clone(),
                source,
            })?;
        Ok(RestClient {
            http,
            cfg: Arc::new(cfg),
            state: Arc::new(Mutex::new(WeightState::default())),
        })
    }

    /// Weight used in the current UTC minute (sent requests, or the exchange's
    /// `X-MBX-USED-WEIGHT-1M` when higher).
    pub fn used_weight(&self) -> u32 {
        let (minute, _) = wall_minute();
        self.state
            .lock()
            .map(|s| if s.minute == minute { s.used_weight } else { 0 })
            .unwrap_or(0)
    }

    /// The market this client speaks to.
    pub fn market(&self) -> Market {
        self.cfg.market
    }

    /// `GET /api/v3/time` | `/fapi/v1/time` → serverTime (epoch ms). The exchange's clock is
    /// "now".
    pub async fn server_time(&self) -> Result<i64, RestError> {
        let m = self.cfg.market;
        let url = format!("{}{}", self.cfg.base_url, m.rest_time_path());
        let body = self.get(&url, &[], m.time_weight()).await?;
        serde_json::from_str::<ServerTime>(&body)
            .map(|t| t.server_time)
            .map_err(|e| RestError::Decode {
                url,
                source: e.into(),
            })
    }

    /// `GET /api/v3/exchangeInfo` | `/fapi/v1/exchangeInfo`: every symbol with its status.
    pub async fn exchange_info(&self) -> Result<ExchangeInfo, RestError> {
        let m = self.cfg.market;
        let url = format!("{}{}", self.cfg.base_url, m.rest_exchange_info_path());
        let body = self.get(&url, &[], m.exchange_info_weight()).await?;
        serde_json::from_str::<ExchangeInfo>(&body).map_err(|e| RestError::Decode {
            url,
            source: e.into(),
        })
    }

    /// `GET /api/v3/klines` | `/fapi/v1/klines` `?symbol=&interval=1m&startTime=&endTime=&limit=`
    /// (inclusive open-time bounds in epoch ms, limit clamped to the market's maximum; weight
    /// by limit). Returns Binance's rows as-is, including a possibly still-open last kline:
    /// callers drop what is not closed.
    pub async fn klines(
        &self,
        symbol: &str,
        start_ms: i64,
        end_ms: i64,
        limit: u32,
    ) -> Result<Vec<Kline>, RestError> {
        let m = self.cfg.market;
        let url = format!("{}{}", self.cfg.base_url, m.rest_klines_path());
        let limit = limit.clamp(1, m.klines_max_limit());
        let query = [
            ("symbol", symbol.to_string()),
            ("interval", KLINE_INTERVAL.to_string()),
            ("startTime", start_ms.to_string()),
            ("endTime", end_ms.to_string()),
            ("limit", limit.to_string()),
        ];
        let body = self.get(&url, &query, m.klines_weight(limit)).await?;
        parse_rest_klines(symbol, &body).map_err(|source| RestError::Decode { url, source })
    }

    /// `GET /api/v3/aggTrades` | `/fapi/v1/aggTrades` `?symbol=&fromId=&limit=` (limit clamped
    /// to 1..=1000; weight 4 spot, 20 USD-M), inside `trade_weight_share` of the minute's
    /// budget. Returns Binance's rows in order; a row that fails validation comes back as its
    /// id and the reason.
    pub async fn agg_trades(
        &self,
        symbol: &Symbol,
        from_id: i64,
        limit: u32,
    ) -> Result<Vec<agg_trade::RestRow>, RestError> {
        let m = self.cfg.market;
        let url = format!("{}{}", self.cfg.base_url, m.rest_agg_trades_path());
        let limit = limit.clamp(1, m.agg_trades_max_limit());
        let query = [
            ("symbol", symbol.to_string()),
            ("fromId", from_id.to_string()),
            ("limit", limit.to_string()),
        ];
        let budget = ((f64::from(self.cfg.weight_soft_limit) * self.cfg.trade_weight_share) as u32)
            .clamp(
                m.agg_trades_weight(),
                self.cfg.weight_soft_limit.max(m.agg_trades_weight()),
            );
        let body = self
            .get_within(&url, &query, m.agg_trades_weight(), budget)
            .await?;
        agg_trade::parse_rest(symbol, &body).map_err(|source| RestError::Decode { url, source })
    }

    fn check_banned(&self) -> Result<(), RestError> {
        let mut st = self.state.lock().expect("rest state poisoned");
        if let Some(until) = st.banned_until {
            let now = Instant::now();
            if now < until {
                let retry_after = until - now;
                error!(
                    ?retry_after,
                    "REST is paused: Binance answered 418 (IP banned)"
                );
                return Err(RestError::Banned { retry_after });
            }
            st.banned_until = None;
        }
        Ok(())
    }

    /// Takes the exchange's count of this minute when it is higher than ours (other
    /// clients on the same IP, or requests before a restart).
    fn record_weight(&self, resp: &reqwest::Response) {
        if let Some(w) = resp
            .headers()
            .get(USED_WEIGHT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            let (minute, _) = wall_minute();
            if let Ok(mut st) = self.state.lock() {
                if st.minute != minute {
                    *st = WeightState {
                        minute,
                        used_weight: 0,
                        banned_until: st.banned_until,
                    };
                }
                st.used_weight = st.used_weight.max(w);
            }
            metrics::gauge!(metric::REST_USED_WEIGHT).set(f64::from(w));
        }
    }

    /// Reserves `weight` in the current UTC minute's budget, first waiting for the next
    /// minute when it would go past `budget` (at most `weight_soft_limit`).
    async fn reserve_weight(&self, weight: u32, budget: u32) {
        loop {
            let (minute, left) = wall_minute();
            let used = {
                let mut st = self.state.lock().expect("rest state poisoned");
                if st.minute != minute {
                    st.minute = minute;
                    st.used_weight = 0;
                }
                if st.used_weight + weight <= budget || st.used_weight == 0 {
                    st.used_weight += weight;
                    return;
                }
                st.used_weight
            };
            // Binance's window is the UTC minute; a little margin for clock skew.
            let wait = left + Duration::from_millis(250);
            warn!(
                used_weight = used,
                budget,
                soft_limit = self.cfg.weight_soft_limit,
                ?wait,
                "REST weight budget of this minute spent, waiting for the next minute"
            );
            metrics::counter!(metric::REST_WEIGHT_WAITS).increment(1);
            tokio::time::sleep(wait).await;
        }
    }

    async fn get(
        &self,
        url: &str,
        query: &[(&str, String)],
        weight: u32,
    ) -> Result<String, RestError> {
        self.get_within(url, query, weight, self.cfg.weight_soft_limit)
            .await
    }

    async fn get_within(
        &self,
        url: &str,
        query: &[(&str, String)],
        weight: u32,
        budget: u32,
    ) -> Result<String, RestError> {
        let mut backoff = Backoff::new(self.cfg.retry_initial, 2.0, self.cfg.retry_max);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.check_banned()?;
            self.reserve_weight(weight, budget).await;
            metrics::counter!(metric::REST_REQUESTS, "path" => path_of(url)).increment(1);
            let resp = match self.http.get(url).query(query).send().await {
                Ok(r) => r,
                Err(source) => {
                    let err = RestError::Http {
                        url: url.to_string(),
                        source,
                    };
                    if attempts >= self.cfg.max_attempts {
                        return Err(err);
                    }
                    let delay = backoff.next_delay();
                    warn!(error = %err, ?delay, attempts, "REST request failed, retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            self.record_weight(&resp);
            let status = resp.status();
            let retry_after = retry_after(&resp);
            if status.is_success() {
                let body = resp.text().await.map_err(|source| RestError::Http {
                    url: url.to_string(),
                    source,
                })?;
                debug!(
                    url,
                    bytes = body.len(),
                    used_weight = self.used_weight(),
                    "REST ok"
                );
                return Ok(body);
            }
            match status {
                StatusCode::TOO_MANY_REQUESTS => {
                    // Never ask again before Retry-After is over: that is how IPs get banned.
                    let delay =
                        retry_after.unwrap_or(Duration::from_secs(1)) + Duration::from_millis(250);
                    if attempts >= self.cfg.max_attempts {
                        return Err(RestError::RateLimited {
                            attempts,
                            retry_after: delay,
                        });
                    }
                    warn!(
                        url,
                        ?delay,
                        attempts,
                        "REST 429 Too Many Requests, backing off"
                    );
                    tokio::time::sleep(delay).await;
                }
                StatusCode::IM_A_TEAPOT => {
                    let delay = retry_after.unwrap_or(Duration::from_secs(120));
                    if let Ok(mut st) = self.state.lock() {
                        st.banned_until = Some(Instant::now() + delay);
                    }
                    error!(
                        url,
                        retry_after = ?delay,
                        "Binance answered 418: this IP is BANNED for ignoring 429s; REST stops until Retry-After"
                    );
                    return Err(RestError::Banned { retry_after: delay });
                }
                s if s.is_server_error() => {
                    let body = resp.text().await.unwrap_or_default();
                    let err = RestError::Status {
                        status: s.as_u16(),
                        url: url.to_string(),
                        body: truncate(&body, 200),
                    };
                    if attempts >= self.cfg.max_attempts {
                        return Err(err);
                    }
                    let delay = backoff.next_delay();
                    warn!(error = %err, ?delay, "REST server error, retrying");
                    tokio::time::sleep(delay).await;
                }
                s => {
                    let body = resp.text().await.unwrap_or_default();
                    return Err(match serde_json::from_str::<ApiError>(&body) {
                        Ok(api) => RestError::Api {
                            status: s.as_u16(),
                            code: api.code,
                            msg: api.msg,
                        },
                        Err(_) => RestError::Status {
                            status: s.as_u16(),
                            url: url.to_string(),
                            body: truncate(&body, 200),
                        },
                    });
                }
            }
        }
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn path_of(url: &str) -> String {
    for m in Market::ALL {
        for p in [
            m.rest_klines_path(),
            m.rest_agg_trades_path(),
            m.rest_time_path(),
            m.rest_exchange_info_path(),
        ] {
            if url.ends_with(p) {
                return p.to_string();
            }
        }
    }
    "other".to_string()
}

/// At most `max` characters of `s` on one line ([`crate::text::sanitize`]: control characters
/// and runs of whitespace become one space), with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    // remote text (Binance bodies, WebSocket messages) on one line: no forged log lines
    crate::text::sanitize(s, max)
}
