//! Message formats of the sinks, from the alert payload stored in `market.alert_history`.
//!
//! - Discord: one embed. Title = rule; description = symbol and market (and the alert id);
//!   inline fields Price, Change {window}, Volume {window}, VCP, Window, RSI(14), and a line
//!   with the change of every window; timestamp = the candle's close_time; green when the
//!   window's change is ≥ 0, red otherwise. `allowed_mentions` is empty (no pings).
//! - Telegram: MarkdownV2 text (the rule in bold, every other character escaped).
//! - Webhook: the payload JSON as stored, byte for byte (see `sink.rs` for the signature).
//!
//! The *window* of an alert is read from its rule's name: a suffix `_5`, `_15`, `_60`,
//! `_240`, `_480`, `_1440` (minutes, the presets' spelling) or `_1m` … `_1d`; the
//! `pioneer_*` and `*_hunter` presets are 5m, `*_whale` and `*_volume` 1m; any other rule 1h.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

/// The fields of the alert payload the formats use (versions 1 and 2; unknown fields are
/// ignored, missing metrics are `None`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AlertPayload {
    #[serde(default)]
    pub alert_id: Option<i64>,
    #[serde(default)]
    pub market: Option<String>,
    pub symbol: String,
    pub rule: String,
    pub open_time: String,
    pub close_time: String,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub changes: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    pub vcp: Option<f64>,
    #[serde(default)]
    pub rsi_14: Option<f64>,
    #[serde(default)]
    pub macd: Option<f64>,
}

/// Windows in display order.
pub const WINDOWS: [&str; 7] = ["1m", "5m", "15m", "1h", "4h", "8h", "1d"];

/// The window an alert is about (see the module doc).
pub fn rule_window(rule: &str) -> &'static str {
    if let Some((_, suffix)) = rule.rsplit_once('_') {
        let by_minutes = match suffix {
            "1" => Some("1m"),
            "5" => Some("5m"),
            "15" => Some("15m"),
            "60" => Some("1h"),
            "240" => Some("4h"),
            "480" => Some("8h"),
            "1440" => Some("1d"),
            _ => None,
        };
        if let Some(w) = by_minutes.or_else(|| WINDOWS.iter().copied().find(|w| *w == suffix)) {
            return w;
        }
    }
    if rule.starts_with("pioneer_") || rule.ends_with("_hunter") {
        "5m"
    } else if rule.ends_with("_whale") || rule.ends_with("_volume") {
        "1m"
    } else {
        "1h"
    }
}

/// A price as the exchange writes it: shortest exact decimal, no exponent.
pub fn fmt_price(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "n/a".to_string(),
    }
}

/// A percent change with its sign, 2 decimals: `+1.23 %`, `-0.40 %`.
pub fn fmt_change(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:+.2} %"),
        _ => "n/a".to_string(),
    }
}

/// A quote volume with K/M/B suffix, 2 decimals: `328.28M`.
pub fn fmt_volume(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            let a = x.abs();
            if a >= 1e9 {
                format!("{:.2}B", x / 1e9)
            } else if a >= 1e6 {
                format!("{:.2}M", x / 1e6)
            } else if a >= 1e3 {
                format!("{:.2}K", x / 1e3)
            } else {
                format!("{x:.2}")
            }
        }
        _ => "n/a".to_string(),
    }
}

fn fmt_fixed(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "n/a".to_string(),
    }
}

impl AlertPayload {
    pub fn window(&self) -> &'static str {
        rule_window(&self.rule)
    }

    fn change(&self, w: &str) -> Option<f64> {
        self.changes.get(w).copied().flatten()
    }

    fn volume(&self, w: &str) -> Option<f64> {
        self.volumes.get(w).copied().flatten()
    }

    fn market_name(&self) -> &str {
        self.market.as_deref().unwrap_or("spot")
    }

    /// `2021-05-19 01:25 UTC` from the ISO open_time (as is when it does not parse).
    fn candle_minute(&self) -> String {
        chrono::DateTime::parse_from_rfc3339(&self.open_time)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M UTC")
                    .to_string()
            })
            .unwrap_or_else(|_| self.open_time.clone())
    }

    /// Every available window's change: `5m +0.37 % · 15m -1.70 % · …`.
    fn changes_line(&self) -> String {
        let parts: Vec<String> = WINDOWS
            .iter()
            .filter_map(|w| {
                self.change(w)
                    .map(|c| format!("{w} {}", fmt_change(Some(c))))
            })
            .collect();
        if parts.is_empty() {
            "n/a".to_string()
        } else {
            parts.join(" · ")
        }
    }

    /// The Discord webhook body.
    pub fn discord_body(&self) -> serde_json::Value {
        let w = self.window();
        let up = self.change(w).is_none_or(|c| c >= 0.0);
        let mut description = format!("**{}** · {}", self.symbol, self.market_name());
        if let Some(id) = self.alert_id {
            description.push_str(&format!(" · alert {id}"));
        }
        json!({
            "allowed_mentions": {"parse": []},
            "embeds": [{
                "title": self.rule,
                "description": description,
                "color": if up { 0x2E_CC71 } else { 0xE7_4C3C },
                "timestamp": self.close_time,
                "fields": [
                    {"name": "Price", "value": fmt_price(self.price), "inline": true},
                    {"name": format!("Change {w}"), "value": fmt_change(self.change(w)), "inline": true},
                    {"name": format!("Volume {w}"), "value": fmt_volume(self.volume(w)), "inline": true},
                    {"name": "VCP", "value": fmt_fixed(self.vcp, 3), "inline": true},
                    {"name": "Window", "value": w, "inline": true},
                    {"name": "RSI(14)", "value": fmt_fixed(self.rsi_14, 2), "inline": true},
                    {"name": "Changes", "value": self.changes_line(), "inline": false},
                ],
                "footer": {"text": format!("pg_ta · candle {}", self.candle_minute())},
            }],
        })
    }

    /// The Telegram message text (MarkdownV2).
    pub fn telegram_text(&self) -> String {
        let w = self.window();
        let up = self.change(w).is_none_or(|c| c >= 0.0);
        let mut lines = vec![format!(
            "{} *{}* {}",
            if up { "▲" } else { "▼" },
            escape_markdown_v2(&self.rule),
            escape_markdown_v2(&format!("{} ({})", self.symbol, self.market_name())),
        )];
        for line in [
            format!("Price: {}", fmt_price(self.price)),
            format!("Change {w}: {}", fmt_change(self.change(w))),
            format!("Volume {w}: {}", fmt_volume(self.volume(w))),
            format!(
                "VCP: {} · RSI(14): {}",
                fmt_fixed(self.vcp, 3),
                fmt_fixed(self.rsi_14, 2)
            ),
            format!("Changes: {}", self.changes_line()),
            format!("Window: {w} · candle {}", self.candle_minute()),
        ] {
            lines.push(escape_markdown_v2(&line));
        }
        lines.join("\n")
    }
}

/// Escapes text for Telegram's MarkdownV2 outside entities: a backslash before every one of
/// `_ * [ ] ( ) ~ ` > # + - = | { } . !` and before `\` itself
/// (<https://core.telegram.org/bots/api#markdownv2-style>).
pub fn escape_markdown_v2(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(
            c,
            '_' | '*'
                | '['
                | ']'
                | '('
                | ')'
                | '~'
                | '`'
                | '>'
                | '#'
                | '+'
                | '-'
                | '='
                | '|'
                | '{'
                | '}'
                | '.'
                | '!'
                | '\\'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AlertPayload {
        serde_json::from_str(
            r#"{"version": 2, "alert_id": 42, "market": "usdm", "symbol": "BTCUSDT", "rule": "big_bear_60",
                "rule_id": 2, "open_time": "2021-05-19T01:25:00.000Z", "close_time": "2021-05-19T01:25:59.999Z",
                "price": 41695.93, "changes": {"1m": 0.4098, "5m": 0.3719, "15m": -1.6986, "1h": -3.4776,
                "4h": null, "8h": -4.1887, "1d": -7.5799},
                "volumes": {"1m": 6706216.2, "1h": 328283044.20430645, "1d": 5178900127.14},
                "vcp": 0.1234, "rsi_14": 36.78, "macd": -286.26, "extra": [1]}"#,
        )
        .unwrap()
    }

    #[test]
    fn windows_from_rule_names() {
        for (rule, w) in [
            ("big_bull_60", "1h"),
            ("big_bear_5", "5m"),
            ("big_bull_15", "15m"),
            ("flat_1m", "1m"),
            ("flat_8h", "8h"),
            ("pioneer_bull", "5m"),
            ("top_hunter", "5m"),
            ("bull_whale", "1m"),
            ("bear_volume", "1m"),
            ("my_rule", "1h"),
            ("x_1440", "1d"),
        ] {
            assert_eq!(rule_window(rule), w, "{rule}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_price(Some(41695.93)), "41695.93");
        assert_eq!(fmt_price(Some(0.00001234)), "0.00001234");
        assert_eq!(fmt_price(None), "n/a");
        assert_eq!(fmt_price(Some(f64::NAN)), "n/a");
        assert_eq!(fmt_change(Some(-3.4776)), "-3.48 %");
        assert_eq!(fmt_change(Some(0.4)), "+0.40 %");
        assert_eq!(fmt_volume(Some(328283044.2)), "328.28M");
        assert_eq!(fmt_volume(Some(5178900127.14)), "5.18B");
        assert_eq!(fmt_volume(Some(1500.0)), "1.50K");
        assert_eq!(fmt_volume(Some(12.0)), "12.00");
    }

    #[test]
    fn discord_embed() {
        let b = sample().discord_body();
        let e = &b["embeds"][0];
        assert_eq!(e["title"], "big_bear_60");
        assert_eq!(e["description"], "**BTCUSDT** · usdm · alert 42");
        assert_eq!(e["timestamp"], "2021-05-19T01:25:59.999Z");
        assert_eq!(e["color"], 0xE74C3C, "1h change is negative");
        let fields: Vec<(String, String)> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().into(),
                    f["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(fields[0], ("Price".into(), "41695.93".into()));
        assert_eq!(fields[1], ("Change 1h".into(), "-3.48 %".into()));
        assert_eq!(fields[2], ("Volume 1h".into(), "328.28M".into()));
        assert_eq!(fields[3], ("VCP".into(), "0.123".into()));
        assert_eq!(fields[4], ("Window".into(), "1h".into()));
        assert_eq!(
            fields[6].1,
            "1m +0.41 % · 5m +0.37 % · 15m -1.70 % · 1h -3.48 % · 8h -4.19 % · 1d -7.58 %"
        );
        assert_eq!(b["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn markdown_v2_escaping() {
        assert_eq!(
            escape_markdown_v2(r"a_b*c[d]e(f)g~h`i>j#k+l-m=n|o{p}q.r!s\t"),
            r"a\_b\*c\[d\]e\(f\)g\~h\`i\>j\#k\+l\-m\=n\|o\{p\}q\.r\!s\\t"
        );
        assert_eq!(escape_markdown_v2("plain ▲ text 123"), "plain ▲ text 123");
        let mut p = sample();
        p.symbol = "BTC_USDT-(TEST).X".into();
        let t = p.telegram_text();
        assert!(
            t.starts_with(r"▼ *big\_bear\_60* BTC\_USDT\-\(TEST\)\.X \(usdm\)"),
            "{t}"
        );
        assert!(t.contains(r"Price: 41695\.93"), "{t}");
        assert!(t.contains(r"Change 1h: \-3\.48 %"), "{t}");
        assert!(t.contains(r"candle 2021\-05\-19 01:25 UTC"), "{t}");
    }
}
