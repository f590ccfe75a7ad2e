//! Retry timing: exponential backoff with jitter, configurable per kind.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long to wait before attempt `n + 1` after attempt `n` failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay after the first failure, in seconds.
    pub base_secs: f64,
    /// Growth per further failure.
    pub factor: f64,
    /// Upper bound of the delay, in seconds.
    pub max_secs: f64,
    /// Spread applied to the delay, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_secs: 2.0,
            factor: 2.0,
            max_secs: 3600.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before retrying after `attempt` (1-based) failed.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = (attempt.max(1) - 1).min(64);
        let raw = (self.base_secs * self.factor.powi(exp))
            .min(self.max_secs)
            .max(0.0);
        let spread = if self.jitter > 0.0 {
            rand::random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        Duration::from_secs_f64((raw * (1.0 + spread)).clamp(0.0, self.max_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_within_jitter() {
        let p = RetryPolicy {
            base_secs: 1.0,
            factor: 2.0,
            max_secs: 30.0,
            jitter: 0.1,
        };
        for (attempt, expect) in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (9, 30.0), (60, 30.0)] {
            for _ in 0..50 {
                let d = p.delay(attempt).as_secs_f64();
                assert!(
                    d >= expect * 0.9 - 1e-9 && d <= (expect * 1.1).min(30.0) + 1e-9,
                    "{attempt}: {d}"
                );
            }
        }
    }
}
