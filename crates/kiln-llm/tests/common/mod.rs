//! What the provider tests share: the two-provider config, fast options and a request. The
//! loopback providers are kiln-testkit's [`kiln_testkit::llm::FakeModel`].

#![allow(dead_code)]

pub use kiln_testkit::llm::*;
use std::time::Duration;

/// A config with an Anthropic provider `a` (model `claude-test`) and an OpenAI provider `o`
/// (model `gpt-test`), `balanced` routed a → o; `extra` is appended to each provider.
pub fn config(anthropic_url: &str, openai_url: &str, extra: &str) -> kiln_llm::LlmConfig {
    let text = format!(
        r#"
[[llm.providers]]
name = "a"
api = "anthropic"
base_url = "{anthropic_url}"
api_key_env = "KILN_LLM_TEST_ANTHROPIC_KEY"
timeout_secs = 2
{extra}
[[llm.providers.models]]
name = "claude-test"
input_per_mtok = 3.0
output_per_mtok = 15.0
cache_write_per_mtok = 3.75
cache_read_per_mtok = 0.3

[[llm.providers]]
name = "o"
api = "openai"
base_url = "{openai_url}/v1"
api_key_env = "KILN_LLM_TEST_OPENAI_KEY"
timeout_secs = 2
{extra}
[[llm.providers.models]]
name = "gpt-test"
input_per_mtok = 2.5
output_per_mtok = 10.0
cache_read_per_mtok = 1.25

[llm.routes]
balanced = ["a/claude-test", "o/gpt-test"]
fast = ["o/gpt-test"]
"#
    );
    std::env::set_var("KILN_LLM_TEST_ANTHROPIC_KEY", "sk-ant-test-SECRET-1");
    std::env::set_var("KILN_LLM_TEST_OPENAI_KEY", "sk-test-SECRET-2");
    kiln_llm::LlmConfig::from_workers_toml(&text).unwrap()
}

/// Fast retries for tests.
pub fn options() -> kiln_llm::Options {
    kiln_llm::Options {
        retry: kiln_llm::RetryPolicy {
            tries: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_secs(30),
        },
        breaker: kiln_llm::BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(1),
            successes: 2,
        },
        redis_url: None,
    }
}

pub fn request(max_tokens: u32) -> kiln_llm::ChatRequest {
    kiln_llm::ChatRequest {
        system: Some("You edit a workspace.".into()),
        messages: vec![kiln_llm::Message::user("Write hello.py")],
        max_tokens,
        tools: true,
    }
}
