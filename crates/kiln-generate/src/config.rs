//! The generation module's configuration: the `[llm]` section of `workers.toml` (providers
//! and routes, parsed by `kiln-llm`) with the loop's own settings under `[llm.generation]`.

use kiln_llm::{Budgets, LlmConfig, Usd};
use serde::Deserialize;
use std::time::Duration;

/// `[llm.generation]`: the loop's limits; every key optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopSettings {
    /// Model turns per iteration (a turn is one call; the loop goes on while the model calls
    /// tools). Default 8.
    pub max_turns: u32,
    /// `max_tokens` of each call (its worst case for budgets). Default 8192.
    pub max_tokens: u32,
    /// Bytes of workspace file content put in the first message; the rest is listed by path
    /// and size. Default 100,000.
    pub context_bytes: usize,
    /// Largest file the model may write, in bytes. Default 1 MiB.
    pub max_file_bytes: usize,
    /// A pipeline's budget when its request names none, USD. Default 10.
    pub pipeline_budget_usd: f64,
    /// An API token's budget per calendar month (UTC), USD. Default 500.
    pub token_monthly_budget_usd: f64,
    /// How often the loop looks for pipelines to move on besides following job events, seconds.
    /// Default 2.
    pub poll_secs: f64,
    /// Per-attempt timeout of each iteration's validation jobs, seconds. Default 120.
    pub validation_timeout_secs: u64,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            max_turns: 8,
            max_tokens: 8192,
            context_bytes: 100_000,
            max_file_bytes: 1 << 20,
            pipeline_budget_usd: 10.0,
            token_monthly_budget_usd: 500.0,
            poll_secs: 2.0,
            validation_timeout_secs: 120,
        }
    }
}

impl LoopSettings {
    fn check(&self) -> Result<(), String> {
        let usd = |v: f64| v.is_finite() && v > 0.0 && v <= 1_000_000.0;
        if !(1..=50).contains(&self.max_turns) {
            return Err("llm.generation.max_turns: must be between 1 and 50".into());
        }
        if !(1..=1_000_000).contains(&self.max_tokens) {
            return Err("llm.generation.max_tokens: must be between 1 and 1000000".into());
        }
        if self.context_bytes > 10 << 20 {
            return Err("llm.generation.context_bytes: at most 10 MiB".into());
        }
        if !(1..=(50 << 20)).contains(&self.max_file_bytes) {
            return Err("llm.generation.max_file_bytes: must be between 1 and 50 MiB".into());
        }
        if !usd(self.pipeline_budget_usd) {
            return Err("llm.generation.pipeline_budget_usd: must be above 0".into());
        }
        if !usd(self.token_monthly_budget_usd) {
            return Err("llm.generation.token_monthly_budget_usd: must be above 0".into());
        }
        if !(self.poll_secs.is_finite() && (0.05..=3600.0).contains(&self.poll_secs)) {
            return Err("llm.generation.poll_secs: must be between 0.05 and 3600".into());
        }
        if !(1..=86_400).contains(&self.validation_timeout_secs) {
            return Err("llm.generation.validation_timeout_secs: must be between 1 and 86400".into());
        }
        Ok(())
    }

    /// The budgets of a call for a pipeline whose request asked for `budget_usd`.
    pub fn budgets(&self, budget_usd: Option<f64>) -> Budgets {
        let usd = |d: f64| Usd((d * Usd::SCALE as f64).round() as i64);
        Budgets {
            pipeline: usd(budget_usd.unwrap_or(self.pipeline_budget_usd)),
            token_monthly: usd(self.token_monthly_budget_usd),
        }
    }

    /// The poll interval.
    pub fn poll(&self) -> Duration {
        Duration::from_secs_f64(self.poll_secs)
    }
}

/// The whole `[llm]` section as the generation module reads it.
#[derive(Debug, Clone, Default)]
pub struct GenerationConfig {
    /// Providers and routes.
    pub llm: LlmConfig,
    /// The loop's settings.
    pub loop_settings: LoopSettings,
}

impl GenerationConfig {
    /// Parses `[llm]` (`None`: absent, so no providers and default settings); errors name the
    /// key (`llm.providers[0].base_url`, `llm.generation.max_turns`).
    pub fn parse(section: Option<&toml::Value>) -> Result<Self, String> {
        let Some(section) = section else {
            return Ok(Self::default());
        };
        let mut table = section
            .as_table()
            .cloned()
            .ok_or_else(|| "llm: must be a table".to_string())?;
        let loop_settings = match table.remove("generation") {
            None => LoopSettings::default(),
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| format!("llm.generation: {}", e.message().trim_end()))?,
        };
        loop_settings.check()?;
        let llm = LlmConfig::from_value(toml::Value::Table(table)).map_err(|e| e.to_string())?;
        Ok(GenerationConfig { llm, loop_settings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GenerationConfig, String> {
        let v: toml::Table = toml::from_str(text).unwrap();
        GenerationConfig::parse(v.get("llm"))
    }

    #[test]
    fn loop_settings_default_and_refusals_name_the_key() {
        let c = parse("").unwrap();
        assert_eq!(c.loop_settings, LoopSettings::default());
        assert_eq!(c.loop_settings.budgets(None).pipeline, Usd(10 * Usd::SCALE));
        assert_eq!(c.loop_settings.budgets(Some(0.5)).pipeline, Usd(Usd::SCALE / 2));
        let e = parse("[llm.generation]\nmax_turns = 0").unwrap_err();
        assert!(e.starts_with("llm.generation.max_turns"), "{e}");
        let e = parse("[llm.generation]\nmax_turn = 3").unwrap_err();
        assert!(e.contains("max_turn"), "{e}");
        let c = parse("[llm.generation]\nmax_turns = 3").unwrap();
        assert_eq!(c.loop_settings.max_turns, 3);
    }

    #[test]
    fn providers_are_parsed_by_kiln_llm_with_their_key_names() {
        let c = parse(
            r#"
[[llm.providers]]
name = "local"
api = "openai"
base_url = "http://127.0.0.1:11434/v1"
[[llm.providers.models]]
name = "m"
[llm.routes]
balanced = ["local/m"]
"#,
        )
        .unwrap();
        assert_eq!(c.llm.providers[0].name, "local");
        let e =
            parse("[[llm.providers]]\nname = \"x\"\napi = \"openai\"\nbase_url = \"ftp://x\"").unwrap_err();
        assert!(e.starts_with("llm.providers[0].base_url"), "{e}");
    }
}
