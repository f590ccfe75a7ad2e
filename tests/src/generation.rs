//! Support for the generation tests: a generation worker (the real module, its advancer)
//! talking to a loopback model, the `[llm]` sections they use, and a small python project.

use std::path::Path;
use std::time::Duration;

use kiln_generate::GenerationModule;
use kiln_queue::JobKind;
use kiln_testkit::llm::Tokens;
use kiln_worker::{FleetContext, QueueConfig, Registry, Services, WorkerConfig};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Provider-layer options for tests: quick retries, a breaker with a 1 s cool-down.
pub fn fast_options() -> kiln_llm::Options {
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

/// An `[llm]` section with one OpenAI-compatible provider `o` (model `gpt-test`, $2.50 in and
/// $10 out per million tokens) at `openai_url`, routed for `balanced`; `generation` is
/// appended under `[llm.generation]`.
pub fn openai_section(openai_url: &str, generation: &str) -> String {
    format!(
        r#"
[[llm.providers]]
name = "o"
api = "openai"
base_url = "{openai_url}/v1"
timeout_secs = 10
[[llm.providers.models]]
name = "gpt-test"
input_per_mtok = 2.5
output_per_mtok = 10.0
cache_read_per_mtok = 1.25

[llm.routes]
balanced = ["o/gpt-test"]

[llm.generation]
poll_secs = 0.2
{generation}
"#
    )
}

/// A generation worker (the registry's module, its advancer) until [`GenRig::stop`].
pub struct GenRig {
    stop: CancellationToken,
    worker: JoinHandle<()>,
    services: Services,
}

impl GenRig {
    /// Starts it with the fleet file `text` (its `[llm]` section).
    pub async fn start(pool: &PgPool, text: &str) -> GenRig {
        let sections: toml::Table = toml::from_str(text).expect("fleet file");
        let registry = Registry::new().with(GenerationModule {
            options: fast_options(),
        });
        let config = WorkerConfig {
            id: Some(format!("gen-{}", std::process::id())),
            kinds: Some(vec![JobKind::Generation]),
            queues: vec![QueueConfig::new("generation").concurrency(2).batch(2)],
            poll_every: Duration::from_millis(200),
            maintenance_every: Duration::from_millis(500),
            ..WorkerConfig::default()
        };
        let stop = CancellationToken::new();
        let listener = kiln_queue::Listener::start(pool.clone(), stop.clone());
        let (worker, services) = registry
            .build_worker(
                pool.clone(),
                config,
                &sections,
                FleetContext {
                    listener,
                    images: vec![],
                    warm_pool: 0,
                },
            )
            .await
            .expect("generation worker");
        let s = stop.clone();
        let worker = tokio::spawn(async move { worker.run(s.cancelled_owned()).await.expect("worker runs") });
        GenRig {
            stop,
            worker,
            services,
        }
    }

    /// Stops the worker and the loop's advancer.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.worker.await;
        self.services.shutdown().await;
    }
}

/// A python project whose test needs `calc.add`, which the model must write.
pub fn calc_project(dir: &Path) {
    std::fs::write(
        dir.join("pyproject.toml"),
        "[project]\nname = \"calc\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("test_calc.py"),
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    )
    .unwrap();
}

/// The buggy `calc.py` the scripted model writes first.
pub const BUGGY: &str = "def add(a, b):\n    return a - b\n";
/// The fix it writes once the feedback names the failing test.
pub const FIXED: &str = "def add(a, b):\n    return a + b\n";

/// The scripted model: `write_file calc.py` (buggy, 1000 in / 60 out tokens) on a first
/// message without feedback, the fix (1200 in / 80 out) when the feedback names
/// `test_add` as failing, and a final "Done." (50 in / 5 out) after tool results.
pub fn scripted(seen: &kiln_testkit::llm::Seen) -> kiln_testkit::llm::Reply {
    scripted_with((1000, 60, 0, 0), (1200, 80, 0, 0), (50, 5, 0, 0))(seen)
}

/// The scripted model with the token counts of its buggy write, its fix and its "Done.".
pub fn scripted_with(
    buggy: Tokens,
    fixed: Tokens,
    done: Tokens,
) -> impl Fn(&kiln_testkit::llm::Seen) -> kiln_testkit::llm::Reply + Send + Sync + 'static {
    use kiln_testkit::llm::{text, write_file};
    move |seen| {
        if seen.answers_tools() {
            return text(seen, "Done.", done);
        }
        if names_the_failing_test(seen) {
            write_file(seen, "calc.py", FIXED, fixed)
        } else {
            write_file(seen, "calc.py", BUGGY, buggy)
        }
    }
}

/// True when the first message carries the feedback naming `test_add` as failing.
pub fn names_the_failing_test(seen: &kiln_testkit::llm::Seen) -> bool {
    let first = seen.first_text();
    first.contains("Failing tests:") && first.contains("test_add")
}

/// The same model configured with `tools = false`: it answers once per iteration, with the
/// file as a `File: calc.py` line and a fenced block.
pub fn scripted_without_tools(seen: &kiln_testkit::llm::Seen) -> kiln_testkit::llm::Reply {
    let body = if names_the_failing_test(seen) {
        FIXED
    } else {
        BUGGY
    };
    let reply = format!("Here is calc.py.\n\nFile: calc.py\n```python\n{body}```\n");
    kiln_testkit::llm::text(seen, &reply, (900, 40, 0, 0))
}

/// An `[llm]` section with one Anthropic provider `a` (model `claude-test`: $3 in, $15 out,
/// $3.75 cache write, $0.30 cache read per million tokens, key from `KILN_TEST_ANTHROPIC_KEY`)
/// at `url`, routed for `balanced`.
pub fn anthropic_section(url: &str) -> String {
    format!(
        r#"
[[llm.providers]]
name = "a"
api = "anthropic"
base_url = "{url}"
api_key_env = "KILN_TEST_ANTHROPIC_KEY"
timeout_secs = 10
[[llm.providers.models]]
name = "claude-test"
input_per_mtok = 3.0
output_per_mtok = 15.0
cache_write_per_mtok = 3.75
cache_read_per_mtok = 0.3

[llm.routes]
balanced = ["a/claude-test"]

[llm.generation]
poll_secs = 0.2
"#
    )
}
