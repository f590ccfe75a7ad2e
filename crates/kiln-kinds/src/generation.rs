//! The payload of `generation` jobs: what to ask the model and the loop's limits.

use kiln_queue::JobKind;
use serde::{Deserialize, Serialize};

use crate::validation::Language;
use crate::{check_digest, Kind, Payload, PayloadError};

/// Longest prompt accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 200_000;
/// Most iterations of the generate → validate loop.
pub const MAX_ITERATIONS: u32 = 10;

/// Which route of models to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    /// The cheapest, quickest route.
    Fast,
    /// The default route.
    #[default]
    Balanced,
    /// The strongest route.
    Quality,
    /// Picked from the request's complexity.
    Auto,
}

impl Preference {
    /// The name in requests and `[llm.routes]` (`auto` is not a route).
    pub fn as_str(self) -> &'static str {
        match self {
            Preference::Fast => "fast",
            Preference::Balanced => "balanced",
            Preference::Quality => "quality",
            Preference::Auto => "auto",
        }
    }
}

/// An unknown preference name.
#[derive(Debug, thiserror::Error)]
#[error("preference must be one of fast, balanced, quality, auto (got {0:?})")]
pub struct BadPreference(pub String);

impl std::str::FromStr for Preference {
    type Err = BadPreference;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fast" => Ok(Preference::Fast),
            "balanced" => Ok(Preference::Balanced),
            "quality" => Ok(Preference::Quality),
            "auto" => Ok(Preference::Auto),
            other => Err(BadPreference(other.to_string())),
        }
    }
}

/// What a generation job asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationPayload {
    /// The instruction to the model.
    pub prompt: String,
    /// The workspace to start from (an artifact digest); empty when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The project's language, when the workspace does not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// Iterations of generate → validate allowed (1–10, default 5).
    #[serde(default = "default_iterations")]
    pub max_iterations: u32,
    /// Spending cap of the whole loop in USD (default from configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Which route of models to use.
    #[serde(default)]
    pub preference: Preference,
    /// Which iteration of its pipeline this job generates (1-based; 1 when absent).
    #[serde(default = "first_iteration")]
    pub iteration: u32,
}

fn first_iteration() -> u32 {
    1
}

fn default_iterations() -> u32 {
    5
}

impl Payload for GenerationPayload {
    fn check(&self) -> Result<(), PayloadError> {
        if self.prompt.trim().is_empty() {
            return Err(PayloadError::new("prompt", "must not be empty"));
        }
        if self.prompt.len() > MAX_PROMPT_BYTES {
            return Err(PayloadError::new(
                "prompt",
                format!(
                    "is {} bytes, over the cap of {MAX_PROMPT_BYTES}",
                    self.prompt.len()
                ),
            ));
        }
        if let Some(ws) = &self.workspace {
            check_digest("workspace", ws)?;
        }
        if !(1..=MAX_ITERATIONS).contains(&self.max_iterations) {
            return Err(PayloadError::new(
                "max_iterations",
                format!("must be between 1 and {MAX_ITERATIONS}"),
            ));
        }
        if !(1..=self.max_iterations).contains(&self.iteration) {
            return Err(PayloadError::new(
                "iteration",
                "must be between 1 and max_iterations",
            ));
        }
        if let Some(b) = self.budget_usd {
            if !(b.is_finite() && b > 0.0 && b <= 10_000.0) {
                return Err(PayloadError::new(
                    "budget_usd",
                    "must be above 0 and at most 10000",
                ));
            }
        }
        Ok(())
    }
}

/// The `generation` kind.
#[derive(Debug, Clone, Copy)]
pub struct Generation;

impl Kind for Generation {
    type Payload = GenerationPayload;
    const KINDS: &'static [JobKind] = &[JobKind::Generation];
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_are_named() {
        let e = GenerationPayload::from_json(&json!({"prompt": " "})).unwrap_err();
        assert_eq!(e.path, "prompt");
        let e = GenerationPayload::from_json(&json!({"prompt": "x", "max_iterations": 11})).unwrap_err();
        assert_eq!(e.path, "max_iterations");
        let e = GenerationPayload::from_json(&json!({"prompt": "x", "budget_usd": -1.0})).unwrap_err();
        assert_eq!(e.path, "budget_usd");
        let e = GenerationPayload::from_json(&json!({"prompt": "x", "preference": "cheap"})).unwrap_err();
        assert_eq!(e.path, "preference");
        let e = GenerationPayload::from_json(&json!({"prompt": "x", "max_iterations": 2, "iteration": 3}))
            .unwrap_err();
        assert_eq!(e.path, "iteration");
        let p = GenerationPayload::from_json(&json!({"prompt": "x"})).unwrap();
        assert_eq!(
            (p.max_iterations, p.preference, p.iteration),
            (5, Preference::Balanced, 1)
        );
        assert_eq!("auto".parse::<Preference>().unwrap(), Preference::Auto);
        assert!("smart"
            .parse::<Preference>()
            .unwrap_err()
            .to_string()
            .contains("\"smart\""));
    }
}
