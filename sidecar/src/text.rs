//! Remote text made safe for a log line or a table cell.
//!
//! Every string that comes from outside the process — a sink's error message, a Binance
//! error body or WebSocket message, a NOTIFY payload — goes through [`sanitize`] before it is
//! logged or stored: a `\n` in it can no longer forge a log line, an ANSI escape can no longer
//! repaint a terminal, and a 20 MB message is stored as a few hundred characters.
//!
//! This module imports nothing from the crate (the lowest layer).

/// Longest remote message kept in a log line or `last_error`, characters.
pub const REMOTE_TEXT_MAX_CHARS: usize = 200;

/// True for characters that may not appear in a sanitized string: Unicode control characters
/// (C0, DEL, C1: `\n`, `\r`, `\t`, ESC, ...), the line and paragraph separators, and the
/// bidirectional formatting characters (which can make a log line read differently from what
/// it holds).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` on one line: every unsafe character (see [`is_unsafe`]) and every run of whitespace
/// becomes one space, leading and trailing spaces are removed, and the result is cut to
/// `max_chars` characters, ending in `…` when something was cut.
///
/// # Input   any text, of any length (reading stops once `max_chars` characters are kept).
/// # Output  at most `max_chars` + 1 characters, no control character.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(max_chars.min(text.len()) + 3);
    let mut chars = 0usize;
    let mut pending_space = false;
    let mut cut = false;
    for c in text.chars() {
        if is_unsafe(c) || c.is_whitespace() {
            pending_space = chars > 0;
            continue;
        }
        let needed = if pending_space { 2 } else { 1 };
        if chars + needed > max_chars {
            cut = true;
            break;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    if cut {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        // (case, input, max, expected)
        let long = "x".repeat(10_000);
        let cases: Vec<(&str, String, usize, String)> = vec![
            (
                "TC1 plain",
                "Unknown Webhook".into(),
                200,
                "Unknown Webhook".into(),
            ),
            ("TC2 empty", String::new(), 10, String::new()),
            (
                "TC3 newline cannot forge a log line",
                "boom\n2026-01-01T00:00:00Z ERROR ta_feed: FORGED LINE".into(),
                200,
                "boom 2026-01-01T00:00:00Z ERROR ta_feed: FORGED LINE".into(),
            ),
            (
                "TC4 CR, tab, ESC, DEL, NUL, C1",
                "a\r\tb\u{1b}[31mred\u{7f}\u{0}\u{85}c".into(),
                200,
                "a b [31mred c".into(),
            ),
            (
                "TC5 bidi override and line separator",
                "safe\u{202E}txt.exe\u{2028}next".into(),
                200,
                "safe txt.exe next".into(),
            ),
            ("TC6 capped", long.clone(), 5, "xxxxx…".into()),
            ("TC7 exactly max", "abcde".into(), 5, "abcde".into()),
            (
                "TC8 leading/trailing space",
                "  \n a  b \n ".into(),
                10,
                "a b".into(),
            ),
            (
                "TC9 multibyte counted as characters",
                "ééééé".into(),
                3,
                "ééé…".into(),
            ),
        ];
        for (name, input, max, want) in cases {
            let got = sanitize(&input, max);
            assert_eq!(got, want, "{name}");
            assert!(!got.chars().any(is_unsafe), "{name}");
            assert!(got.chars().count() <= max + 1, "{name}");
        }
    }
}
