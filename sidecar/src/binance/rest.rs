//! Binance spot REST client: server time and 1m klines, with request-weight tracking,
//! 429 back-off (Retry-After) and a loud stop on 418 (IP ban).
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits>

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::backoff::Backoff;
use crate::binance::model::{parse_rest_klines, ApiError, Kline, ParseError, ServerTime};
use crate::constants::{
    metric, KLINE_INTERVAL, REST_KLINES_MAX_LIMIT, REST_KLINES_PATH, REST_KLINES_WEIGHT,
    REST_TIME_PATH, REST_TIME_WEIGHT, REST_WEIGHT_LIMIT_1M, USED_WEIGHT_HEADER,
};

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
    /// Slow down when `X-MBX-USED-WEIGHT-1M` reaches this (Binance's limit is 6000).
    pub weight_soft_limit: u32,
    /// How long to pause before re-checking the used weight when near the limit.
    pub weight_pause: Duration,
    /// Attempts per request for 429 / 5xx / network errors before giving up.
    pub max_attempts: u32,
    /// Back-off for 5xx and network errors (429 uses Retry-After).
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl RestConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        RestConfig {
            base_url: base_url.into(),
            weight_soft_limit: REST_WEIGHT_LIMIT_1M * 8 / 10,
            weight_pause: Duration::from_secs(1),
            max_attempts: 8,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct WeightState {
    used_weight: u32,
    banned_until: Option<Instant>,
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

    /// Last `X-MBX-USED-WEIGHT-1M` seen.
    pub fn used_weight(&self) -> u32 {
        self.state.lock().map(|s| s.used_weight).unwrap_or(0)
    }

    /// `GET /api/v3/time` → serverTime (epoch ms). The exchange's clock is "now".
    pub async fn server_time(&self) -> Result<i64, RestError> {
        let url = format!("{}{}", self.cfg.base_url, REST_TIME_PATH);
        let body = self.get(&url, &[], REST_TIME_WEIGHT).await?;
        serde_json::from_str::<ServerTime>(&body)
            .map(|t| t.server_time)
            .map_err(|e| RestError::Decode {
                url,
                source: e.into(),
            })
    }

    /// `GET /api/v3/klines?symbol=&interval=1m&startTime=&endTime=&limit=` (inclusive
    /// open-time bounds in epoch ms, limit ≤ 1000). Returns Binance's rows as-is,
    /// including a possibly still-open last kline: callers drop what is not closed.
    pub async fn klines(
        &self,
        symbol: &str,
        start_ms: i64,
        end_ms: i64,
        limit: u32,
    ) -> Result<Vec<Kline>, RestError> {
        let url = format!("{}{}", self.cfg.base_url, REST_KLINES_PATH);
        let limit = limit.clamp(1, REST_KLINES_MAX_LIMIT);
        let query = [
            ("symbol", symbol.to_string()),
            ("interval", KLINE_INTERVAL.to_string()),
            ("startTime", start_ms.to_string()),
            ("endTime", end_ms.to_string()),
            ("limit", limit.to_string()),
        ];
        let body = self.get(&url, &query, REST_KLINES_WEIGHT).await?;
        parse_rest_klines(symbol, &body).map_err(|source| RestError::Decode { url, source })
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

    fn record_weight(&self, resp: &reqwest::Response) {
        if let Some(w) = resp
            .headers()
            .get(USED_WEIGHT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            if let Ok(mut st) = self.state.lock() {
                st.used_weight = w;
            }
            metrics::gauge!(metric::REST_USED_WEIGHT).set(f64::from(w));
        }
    }

    /// Pauses while the used weight is at the soft limit, re-checking with the cheapest
    /// request (`/api/v3/time`, weight 1) so the header reflects the exchange's window.
    async fn wait_for_weight(&self, weight: u32) -> Result<(), RestError> {
        let mut warned = false;
        while self.used_weight() + weight > self.cfg.weight_soft_limit {
            if !warned {
                warn!(
                    used_weight = self.used_weight(),
                    soft_limit = self.cfg.weight_soft_limit,
                    "REST weight near the limit, slowing down"
                );
                warned = true;
            }
            tokio::time::sleep(self.cfg.weight_pause).await;
            let url = format!("{}{}", self.cfg.base_url, REST_TIME_PATH);
            match self.http.get(&url).send().await {
                Ok(resp) => self.record_weight(&resp),
                Err(source) => return Err(RestError::Http { url, source }),
            }
        }
        Ok(())
    }

    async fn get(
        &self,
        url: &str,
        query: &[(&str, String)],
        weight: u32,
    ) -> Result<String, RestError> {
        let mut backoff = Backoff::new(self.cfg.retry_initial, 2.0, self.cfg.retry_max);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.check_banned()?;
            self.wait_for_weight(weight).await?;
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
                    let delay = retry_after.unwrap_or(Duration::from_secs(1));
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
    if url.ends_with(REST_KLINES_PATH) {
        REST_KLINES_PATH.to_string()
    } else if url.ends_with(REST_TIME_PATH) {
        REST_TIME_PATH.to_string()
    } else {
        "other".to_string()
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}
