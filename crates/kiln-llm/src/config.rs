//! The `[llm]` section of `workers.toml`: providers, their models and prices, and the routes
//! from a [`Preference`](crate::Preference) to an ordered chain of `provider/model`.

use crate::cost::Prices;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A refused `[llm]` section; the message names the key (`llm.providers[0].base_url`).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST {base_url}/chat/completions` (OpenAI, Ollama, vLLM, llama.cpp, Groq, ...).
    Openai,
    /// `POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version`.
    Anthropic,
}

/// The `[llm]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Configured providers, in file order.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Preference name (`fast`, `balanced`, `quality`) → chain of `provider/model`.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
}

/// One `[[llm.providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name routes refer to as `<name>/<model>`.
    pub name: String,
    /// Wire protocol.
    pub api: Api,
    /// e.g. `https://api.openai.com/v1` or `https://api.anthropic.com`.
    pub base_url: String,
    /// Environment variable holding the API key (the key itself is never in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Fleet-wide requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Fleet-wide tokens (input + max output) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Per-request timeout in seconds (default 120).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Models served by this provider.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
}

fn default_timeout() -> u64 {
    120
}

fn default_true() -> bool {
    true
}

/// One `[[llm.providers.models]]` entry; prices are USD per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model name sent to the provider.
    pub name: String,
    /// Input tokens.
    #[serde(default)]
    pub input_per_mtok: f64,
    /// Output tokens.
    #[serde(default)]
    pub output_per_mtok: f64,
    /// Tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write_per_mtok: f64,
    /// Tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_per_mtok: f64,
    /// Whether the model is offered the file tools (else it answers with `File: PATH` blocks).
    #[serde(default = "default_true")]
    pub tools: bool,
}

impl ProviderConfig {
    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

impl ModelConfig {
    /// This model's prices in exact integer units.
    pub fn prices(&self) -> Prices {
        // Validated by `LlmConfig::validate`, so the conversion cannot fail afterwards.
        Prices::from_per_mtok(
            self.input_per_mtok,
            self.output_per_mtok,
            self.cache_write_per_mtok,
            self.cache_read_per_mtok,
        )
        .unwrap_or_default()
    }
}

/// A route entry resolved to its provider and model.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The provider.
    pub provider: &'a ProviderConfig,
    /// The model.
    pub model: &'a ModelConfig,
}

impl fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider.name, self.model.name)
    }
}

const PREFERENCES: [&str; 3] = ["fast", "balanced", "quality"];

impl LlmConfig {
    /// Parses a whole `workers.toml` and returns its `[llm]` section (empty when absent);
    /// other sections are left to their owners.
    pub fn from_workers_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::new("workers.toml", e.message()))?;
        match table.get("llm") {
            None => Ok(LlmConfig::default()),
            Some(v) => Self::from_value(v.clone()),
        }
    }

    /// Parses and validates the `[llm]` table itself.
    pub fn from_value(value: toml::Value) -> Result<Self, ConfigError> {
        check_keys(&value)?;
        let mut cfg = LlmConfig::default();
        if let Some(providers) = value.get("providers") {
            let list = providers
                .as_array()
                .ok_or_else(|| ConfigError::new("llm.providers", "must be an array of tables"))?;
            for (i, p) in list.iter().enumerate() {
                let provider = ProviderConfig::deserialize(p.clone())
                    .map_err(|e| ConfigError::new(format!("llm.providers[{i}]"), e.message()))?;
                cfg.providers.push(provider);
            }
        }
        if let Some(routes) = value.get("routes") {
            cfg.routes = BTreeMap::deserialize(routes.clone())
                .map_err(|e| ConfigError::new("llm.routes", e.message()))?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks names, URLs, prices and that every route resolves.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = format!("llm.providers[{i}]");
            if p.name.is_empty() || p.name.contains('/') || !names.insert(&p.name) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    "must be non-empty, unique and without '/'",
                ));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://"))
                || reqwest::Url::parse(&p.base_url).is_err()
            {
                return Err(ConfigError::new(
                    format!("{key}.base_url"),
                    "must be an http(s) URL",
                ));
            }
            if p.timeout_secs == 0 || p.timeout_secs > 3600 {
                return Err(ConfigError::new(
                    format!("{key}.timeout_secs"),
                    "must be 1..=3600",
                ));
            }
            if p.requests_per_minute == Some(0) {
                return Err(ConfigError::new(
                    format!("{key}.requests_per_minute"),
                    "must be > 0",
                ));
            }
            if p.tokens_per_minute == Some(0) {
                return Err(ConfigError::new(
                    format!("{key}.tokens_per_minute"),
                    "must be > 0",
                ));
            }
            for (j, m) in p.models.iter().enumerate() {
                let mkey = format!("{key}.models[{j}]");
                if m.name.is_empty() {
                    return Err(ConfigError::new(format!("{mkey}.name"), "must be non-empty"));
                }
                for (field, v) in [
                    ("input_per_mtok", m.input_per_mtok),
                    ("output_per_mtok", m.output_per_mtok),
                    ("cache_write_per_mtok", m.cache_write_per_mtok),
                    ("cache_read_per_mtok", m.cache_read_per_mtok),
                ] {
                    if crate::cost::price_units(v).is_none() {
                        return Err(ConfigError::new(
                            format!("{mkey}.{field}"),
                            "must be a finite USD amount >= 0 with at most 6 decimals, below 1000000",
                        ));
                    }
                }
            }
        }
        for (pref, chain) in &self.routes {
            let key = format!("llm.routes.{pref}");
            if !PREFERENCES.contains(&pref.as_str()) {
                return Err(ConfigError::new(
                    key,
                    "unknown preference (fast, balanced, quality)",
                ));
            }
            if chain.is_empty() {
                return Err(ConfigError::new(key, "must name at least one provider/model"));
            }
            for (i, entry) in chain.iter().enumerate() {
                self.target(entry)
                    .map_err(|m| ConfigError::new(format!("{key}[{i}]"), m))?;
            }
        }
        Ok(())
    }

    /// Resolves `provider/model` (the model name may itself hold '/').
    pub fn target(&self, entry: &str) -> Result<Target<'_>, String> {
        let (provider, model) = entry
            .split_once('/')
            .ok_or_else(|| format!("{entry:?} is not provider/model"))?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.name == provider)
            .ok_or_else(|| format!("no provider named {provider:?}"))?;
        let model = provider
            .models
            .iter()
            .find(|m| m.name == model)
            .ok_or_else(|| format!("provider {:?} has no model {model:?}", provider.name))?;
        Ok(Target { provider, model })
    }

    /// The chain for a concrete preference; a preference without a route falls back to
    /// `balanced`, then to every configured model in file order.
    pub fn chain(&self, preference: crate::route::Tier) -> Vec<Target<'_>> {
        let routed = self
            .routes
            .get(preference.as_str())
            .or_else(|| self.routes.get("balanced"));
        match routed {
            Some(entries) => entries.iter().filter_map(|e| self.target(e).ok()).collect(),
            None => self
                .providers
                .iter()
                .flat_map(|p| {
                    p.models.iter().map(move |m| Target {
                        provider: p,
                        model: m,
                    })
                })
                .collect(),
        }
    }
}

const LLM_KEYS: &[&str] = &["providers", "routes"];
const PROVIDER_KEYS: &[&str] = &[
    "name",
    "api",
    "base_url",
    "api_key_env",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout_secs",
    "models",
];
const MODEL_KEYS: &[&str] = &[
    "name",
    "input_per_mtok",
    "output_per_mtok",
    "cache_write_per_mtok",
    "cache_read_per_mtok",
    "tools",
];

/// Refuses the first unknown key with its full path (serde names the field, not where it is).
fn check_keys(value: &toml::Value) -> Result<(), ConfigError> {
    fn table<'a>(v: &'a toml::Value, key: &str) -> Result<&'a toml::Table, ConfigError> {
        v.as_table()
            .ok_or_else(|| ConfigError::new(key, "must be a table"))
    }
    fn known(t: &toml::Table, key: &str, allowed: &[&str]) -> Result<(), ConfigError> {
        match t.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ConfigError::new(format!("{key}.{k}"), "unknown key")),
            None => Ok(()),
        }
    }
    let llm = table(value, "llm")?;
    known(llm, "llm", LLM_KEYS)?;
    if let Some(providers) = llm.get("providers").and_then(|p| p.as_array()) {
        for (i, p) in providers.iter().enumerate() {
            let key = format!("llm.providers[{i}]");
            let p = table(p, &key)?;
            known(p, &key, PROVIDER_KEYS)?;
            if let Some(models) = p.get("models").and_then(|m| m.as_array()) {
                for (j, m) in models.iter().enumerate() {
                    let key = format!("{key}.models[{j}]");
                    known(table(m, &key)?, &key, MODEL_KEYS)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Tier;

    const EXAMPLE: &str = r#"
[[llm.providers]]
name = "local"                 # referenced by routes as "local/<model>"
api = "openai"                 # or "anthropic"
base_url = "http://127.0.0.1:11434/v1"
api_key_env = "OLLAMA_API_KEY" # the key is read from this variable; optional
requests_per_minute = 60       # fleet-wide; optional
tokens_per_minute = 200000     # fleet-wide; optional
timeout_secs = 120
[[llm.providers.models]]
name = "qwen2.5-coder:7b"
input_per_mtok = 0.0           # USD per million tokens; also cache_write_per_mtok, cache_read_per_mtok
output_per_mtok = 0.0
[llm.routes]                   # preference -> ordered chain of provider/model
balanced = ["local/qwen2.5-coder:7b"]
"#;

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let cfg = LlmConfig::from_workers_toml(EXAMPLE).unwrap();
        let p = &cfg.providers[0];
        assert_eq!(
            (p.api, p.requests_per_minute, p.tokens_per_minute),
            (Api::Openai, Some(60), Some(200000))
        );
        assert_eq!(p.api_key_env.as_deref(), Some("OLLAMA_API_KEY"));
        assert!(p.models[0].tools, "tools default to on");
        // fast and quality have no route: they fall back to balanced.
        assert_eq!(format!("{:?}", cfg.chain(Tier::Fast)), "[local/qwen2.5-coder:7b]");
        let minimal = LlmConfig::from_workers_toml(
            "[[llm.providers]]\nname = \"a\"\napi = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\n\
             [[llm.providers.models]]\nname = \"claude\"\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n\
             cache_write_per_mtok = 3.75\ncache_read_per_mtok = 0.3\ntools = false\n",
        )
        .unwrap();
        assert_eq!(minimal.providers[0].timeout_secs, 120);
        assert!(!minimal.providers[0].models[0].tools);
        assert_eq!(minimal.providers[0].models[0].prices().cache_read, 300_000);
        assert_eq!(format!("{:?}", minimal.chain(Tier::Quality)), "[a/claude]");
        assert!(LlmConfig::from_workers_toml("[other]\nx = 1\n")
            .unwrap()
            .providers
            .is_empty());
    }

    fn refused(text: &str) -> String {
        LlmConfig::from_workers_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn refusals_name_the_key() {
        let unknown = EXAMPLE.replace("output_per_mtok = 0.0", "output_per_mtk = 0.0");
        assert_eq!(
            refused(&unknown),
            "llm.providers[0].models[0].output_per_mtk: unknown key"
        );
        let unknown = EXAMPLE.replace("timeout_secs = 120", "timeout = 120");
        assert_eq!(refused(&unknown), "llm.providers[0].timeout: unknown key");
        assert!(refused(&format!("{EXAMPLE}\n[llm.extra]\n")).starts_with("llm.extra: unknown key"));
        let route = EXAMPLE.replace(
            "[\"local/qwen2.5-coder:7b\"]",
            "[\"local/qwen2.5-coder:7b\", \"cloud/gpt\"]",
        );
        assert_eq!(
            refused(&route),
            "llm.routes.balanced[1]: no provider named \"cloud\""
        );
        let pref = EXAMPLE.replace("balanced =", "cheap =");
        assert!(refused(&pref).starts_with("llm.routes.cheap: unknown preference"));
        let price = EXAMPLE.replace("input_per_mtok = 0.0", "input_per_mtok = -1.0");
        assert!(refused(&price).starts_with("llm.providers[0].models[0].input_per_mtok: "));
        let url = EXAMPLE.replace("http://127.0.0.1:11434/v1", "ftp://x");
        assert!(refused(&url).starts_with("llm.providers[0].base_url: "));
        let api = EXAMPLE.replace("api = \"openai\"", "api = \"gemini\"");
        assert!(
            refused(&api).starts_with("llm.providers[0]: unknown variant `gemini`"),
            "{}",
            refused(&api)
        );
        let ty = EXAMPLE.replace("timeout_secs = 120", "timeout_secs = \"soon\"");
        assert!(refused(&ty).starts_with("llm.providers[0]: "), "{}", refused(&ty));
    }
}
