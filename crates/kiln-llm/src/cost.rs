//! Exact cost arithmetic. Prices are held as integer pico-USD per token (a price per million
//! tokens with up to 6 decimals is exact), so a call's cost is an integer number of pico-USD:
//! no float rounding ever reaches the ledger.

use crate::wire::Usage;
use std::fmt;

/// An amount of money in pico-USD (10⁻¹² USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(pub i64);

impl Usd {
    /// Pico-USD per USD.
    pub const SCALE: i64 = 1_000_000_000_000;

    /// From a USD amount given in config or a request (rounded to the pico-dollar).
    pub fn from_dollars(dollars: f64) -> Option<Usd> {
        let pico = (dollars * Self::SCALE as f64).round();
        (dollars.is_finite() && dollars >= 0.0 && pico < i64::MAX as f64).then_some(Usd(pico as i64))
    }

    /// As USD (for display and metrics; the ledger keeps the integer).
    pub fn dollars(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    /// Pico-USD.
    pub fn pico(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::SCALE;
        let frac = (self.0 % Self::SCALE).abs();
        write!(f, "${whole}.{frac:012}")
    }
}

/// One price (USD per million tokens) as integer pico-USD per token, if it is representable.
pub(crate) fn price_units(per_mtok: f64) -> Option<i64> {
    if !per_mtok.is_finite() || !(0.0..1_000_000.0).contains(&per_mtok) {
        return None;
    }
    // USD/Mtok × 10¹² pico/USD ÷ 10⁶ tok/Mtok = pico/token = per_mtok × 10⁶.
    let scaled = per_mtok * 1_000_000.0;
    let units = scaled.round();
    ((scaled - units).abs() < 1e-6).then_some(units as i64)
}

/// A model's prices in pico-USD per token, by token type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prices {
    /// Per input token.
    pub input: i64,
    /// Per output token.
    pub output: i64,
    /// Per token written to the cache.
    pub cache_write: i64,
    /// Per token read from the cache.
    pub cache_read: i64,
}

impl Prices {
    /// From USD per million tokens; `None` when a price is negative, not finite, or has more
    /// than 6 decimals.
    pub fn from_per_mtok(input: f64, output: f64, cache_write: f64, cache_read: f64) -> Option<Prices> {
        Some(Prices {
            input: price_units(input)?,
            output: price_units(output)?,
            cache_write: price_units(cache_write)?,
            cache_read: price_units(cache_read)?,
        })
    }

    /// The exact cost of reported usage.
    pub fn cost(&self, usage: &Usage) -> Usd {
        let sum = self.input as i128 * usage.input as i128
            + self.output as i128 * usage.output as i128
            + self.cache_write as i128 * usage.cache_write as i128
            + self.cache_read as i128 * usage.cache_read as i128;
        Usd(sum.min(i64::MAX as i128) as i64)
    }

    /// The most a call can cost: all its input at the input price plus `max_tokens` of output.
    pub fn worst_case(&self, input_tokens: u64, max_tokens: u64) -> Usd {
        self.cost(&Usage {
            input: input_tokens,
            output: max_tokens,
            ..Usage::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_integers() {
        assert_eq!(price_units(3.0), Some(3_000_000));
        assert_eq!(price_units(0.075), Some(75_000));
        assert_eq!(price_units(0.0375), Some(37_500));
        assert_eq!(price_units(0.1234567), None);
        assert_eq!(price_units(-1.0), None);
        assert_eq!(price_units(f64::NAN), None);
    }

    #[test]
    fn cost_is_usage_times_price_by_type() {
        let p = Prices::from_per_mtok(3.0, 15.0, 3.75, 0.3).unwrap();
        let u = Usage {
            input: 1_000,
            output: 500,
            cache_write: 2_000,
            cache_read: 10_000,
        };
        // 1000×3 + 500×15 + 2000×3.75 + 10000×0.3 micro-USD = 3000+7500+7500+3000 = 21000 µ$.
        assert_eq!(p.cost(&u), Usd(21_000 * 1_000_000));
        assert_eq!(p.cost(&u).to_string(), "$0.021000000000");
        assert_eq!(p.worst_case(1_000, 4_096), Usd((3_000 + 61_440) * 1_000_000));
    }

    #[test]
    fn dollars_round_trip() {
        assert_eq!(Usd::from_dollars(10.0), Some(Usd(10 * Usd::SCALE)));
        assert_eq!(Usd::from_dollars(-1.0), None);
        assert_eq!(Usd(Usd::SCALE / 2).dollars(), 0.5);
    }
}
