//! The `generation` kind as a kind module: it owns the `[llm]` section of `workers.toml`
//! (a file holding only `[llm]` is a complete fleet file), builds the provider layer from
//! it, runs `generation` jobs and the loop's advancer, and registers the LLM metrics.

use std::sync::Arc;

use futures::future::BoxFuture;
use kiln_llm::{Llm, Options};
use kiln_queue::JobKind;
use kiln_worker::{KindModule, ModuleError, Registration};

use crate::config::GenerationConfig;
use crate::handler::Generator;

/// The generation module.
#[derive(Debug, Clone, Default)]
pub struct GenerationModule {
    /// Provider-layer options (retry policy, breaker thresholds); `REDIS_URL` is read from the
    /// environment at registration.
    pub options: Options,
}

const KINDS: [JobKind; 1] = [JobKind::Generation];

impl KindModule for GenerationModule {
    fn name(&self) -> &'static str {
        "generation"
    }

    fn kinds(&self) -> &'static [JobKind] {
        &KINDS
    }

    fn section(&self) -> Option<&'static str> {
        Some("llm")
    }

    fn check_section(&self, section: Option<&toml::Value>) -> Result<(), String> {
        GenerationConfig::parse(section).map(drop)
    }

    fn register_metrics(&self) {
        kiln_llm::metrics::llm_metrics();
    }

    fn register<'a>(
        &'a self,
        section: Option<&'a toml::Value>,
        reg: &'a mut Registration,
    ) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let cfg = GenerationConfig::parse(section).map_err(|message| ModuleError::Config {
                section: "llm",
                message,
            })?;
            let ctx = reg.context().clone();
            if cfg.llm.providers.is_empty() {
                tracing::warn!("no [[llm.providers]] configured: generation jobs will fail with no route");
            }
            let llm = Llm::from_env(cfg.llm, ctx.pool.clone(), self.options.clone())
                .await
                .map_err(|e| ModuleError::Start {
                    module: "generation",
                    message: e.to_string(),
                })?;
            let poll = cfg.loop_settings.poll();
            reg.handler(
                &KINDS,
                Generator::new(ctx.pool.clone(), Arc::new(llm), cfg.loop_settings),
            );
            reg.service(
                "generation loop",
                crate::advance::advancer(ctx.pool.clone(), ctx.listener.clone(), poll, ctx.stop.clone()),
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_owns_llm_and_names_bad_keys() {
        let m = GenerationModule::default();
        assert_eq!(m.section(), Some("llm"));
        assert!(m.check_section(None).is_ok());
        let v: toml::Value = toml::from_str("[generation]\nmax_turns = 99").unwrap();
        let err = m.check_section(Some(&v)).unwrap_err();
        assert!(err.starts_with("llm.generation.max_turns"), "{err}");
    }
}
