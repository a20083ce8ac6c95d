//! A token bucket for `--rate`: each shard gets an equal share of the probes per second.

use std::time::{Duration, Instant};

/// Hands out probe starts at a fixed rate, with a burst of at most ~20 ms worth.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket that allows `per_sec` starts per second, starting empty at `now`.
    pub(crate) fn new(per_sec: f64, now: Instant) -> Self {
        TokenBucket {
            per_sec,
            burst: (per_sec / 50.0).max(1.0),
            tokens: 1.0f64.min(per_sec),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token is available.
    pub(crate) fn wait_time(&self) -> Duration {
        if self.tokens >= 1.0 || self.per_sec <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_tokens_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, t0);
        let mut taken = 0;
        // Simulated clock: one second in 1 ms steps.
        for ms in 0..=1000u64 {
            let now = t0 + Duration::from_millis(ms);
            while b.try_take(now) {
                taken += 1;
            }
        }
        assert!((995..=1005).contains(&taken), "took {taken}");
        assert!(b.wait_time() <= Duration::from_millis(1));
    }

    #[test]
    fn burst_is_bounded_after_idling() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, t0);
        let later = t0 + Duration::from_secs(10);
        let mut taken = 0;
        while b.try_take(later) {
            taken += 1;
        }
        assert_eq!(taken, 20);
    }
}
