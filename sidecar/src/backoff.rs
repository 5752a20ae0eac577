//! Exponential back-off with a cap and a reset, shared by the WebSocket reconnect loop,
//! REST retries, database reconnects and `listen`.
//!
//! Shape follows barter-rs' reconnecting stream: {initial, multiplier, max}, reset after a
//! success. Delays are slept with `tokio::time`, so tests drive them with
//! `tokio::time::pause()`.

use std::time::Duration;

/// Exponential back-off state.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// `initial` delay, multiplied by `multiplier` after each use, capped at `max`.
    pub fn new(initial: Duration, multiplier: f64, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            multiplier: multiplier.max(1.0),
            max,
            next: initial,
        }
    }

    /// Binance reconnect defaults: 1 s, ×2, at most 60 s.
    pub fn reconnect_default() -> Self {
        Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(60))
    }

    /// The delay to wait now; the following one grows.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.mul_f64(self.multiplier).min(self.max);
        d
    }

    /// Sleeps for the next delay and returns it.
    pub async fn wait(&mut self) -> Duration {
        let d = self.next_delay();
        tokio::time::sleep(d).await;
        d
    }

    /// Back to the initial delay (after a successful session).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The delay `next_delay` would return.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn doubles_to_cap_and_resets() {
        let mut b = Backoff::reconnect_default();
        let start = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(b.wait().await.as_secs());
        }
        // TC1: 1, 2, 4, ... capped at 60
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        // TC2: virtual time advanced by exactly the sum
        assert_eq!(start.elapsed(), Duration::from_secs(183));
        // TC3: reset after success
        b.reset();
        assert_eq!(b.wait().await, Duration::from_secs(1));
        assert_eq!(b.peek(), Duration::from_secs(2));
    }

    #[test]
    fn fractional_multiplier_and_initial_above_max() {
        let mut b = Backoff::new(Duration::from_millis(100), 1.5, Duration::from_millis(200));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.next_delay(), Duration::from_millis(150));
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        let mut b = Backoff::new(Duration::from_secs(90), 2.0, Duration::from_secs(60));
        assert_eq!(b.next_delay(), Duration::from_secs(60));
    }
}
