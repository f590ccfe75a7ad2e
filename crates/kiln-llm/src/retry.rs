//! Retry timing for transient provider failures: exponential backoff with jitter.

use std::time::Duration;

/// Tries per model and their backoff (3 tries, 1 s base, 30 s cap by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// HTTP tries per model before failing over (at least 1).
    pub tries: u32,
    /// The first backoff.
    pub base: Duration,
    /// The longest backoff, and the longest `retry-after` honoured (a longer one fails over).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            tries: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): `base × 2^retry`, capped, with
    /// jitter drawing from the upper half so waits stay ordered but spread across workers.
    pub fn backoff(&self, retry: u32) -> Duration {
        let full = self.base.saturating_mul(1u32 << retry.min(16)).min(self.cap);
        let jitter: f64 = rand::random_range(0.5..=1.0);
        full.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let b0 = p.backoff(0);
            assert!(b0 >= Duration::from_millis(500) && b0 <= Duration::from_secs(1));
            let b2 = p.backoff(2);
            assert!(b2 >= Duration::from_secs(2) && b2 <= Duration::from_secs(4));
            assert!(p.backoff(10) <= Duration::from_secs(30));
            assert!(p.backoff(10) >= Duration::from_secs(15));
        }
    }
}
