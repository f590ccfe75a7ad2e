//! The validation kinds (`test`, `lint`, `security-scan`) and their pipeline settler as one
//! kind module: `kiln worker` registers it through the registry, with its `[validation]`
//! section of `workers.toml`.

use std::time::Duration;

use futures::future::BoxFuture;
use kiln_queue::JobKind;
use kiln_sandbox::policy::Owner;
use kiln_sandbox::{LiveWorkers, Sandbox};
use kiln_validate::{Images, Validator, KINDS};
use kiln_worker::{KindModule, ModuleError, Registration};
use serde::Deserialize;

/// `[validation]` of `workers.toml`; every key optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationSection {
    /// How often the settler looks for ready pipelines besides following job events (seconds).
    pub settle_poll_secs: f64,
    /// How often the reaper removes containers of dead workers (seconds).
    pub reap_every_secs: u64,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            settle_poll_secs: 2.0,
            reap_every_secs: 60,
        }
    }
}

impl ValidationSection {
    fn parse(section: Option<&toml::Value>) -> Result<Self, String> {
        let parsed: Self = match section {
            None => Self::default(),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_owned())?,
        };
        if !(parsed.settle_poll_secs.is_finite() && (0.05..=3600.0).contains(&parsed.settle_poll_secs)) {
            return Err("settle_poll_secs: must be between 0.05 and 3600".into());
        }
        if parsed.reap_every_secs == 0 {
            return Err("reap_every_secs: must be at least 1".into());
        }
        Ok(parsed)
    }
}

/// The reaper's view of the worker registry: ids of live workers, `None` when unreadable (then
/// only this host's dead processes are judged).
fn live_workers(pool: sqlx::PgPool) -> LiveWorkers {
    std::sync::Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query_scalar::<_, String>(include_str!("sql/live_workers.sql"))
                .fetch_all(&pool)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "reaper: worker registry unreadable"))
                .ok()
        })
    })
}

/// The validation module.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationModule;

impl KindModule for ValidationModule {
    fn name(&self) -> &'static str {
        "validation"
    }

    fn kinds(&self) -> &'static [JobKind] {
        &KINDS
    }

    fn section(&self) -> Option<&'static str> {
        Some("validation")
    }

    fn check_section(&self, section: Option<&toml::Value>) -> Result<(), String> {
        ValidationSection::parse(section).map(drop)
    }

    fn register<'a>(
        &'a self,
        section: Option<&'a toml::Value>,
        reg: &'a mut Registration,
    ) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let settings = ValidationSection::parse(section).map_err(|message| ModuleError::Config {
                section: "validation",
                message,
            })?;
            let start = |message: String| ModuleError::Start {
                module: "validation",
                message,
            };
            let ctx = reg.context().clone();
            let images = Images::from_dir(&kiln_images::default_images_dir())
                .map_err(|e| start(format!("job image tags: {e}")))?;
            let fleet = kiln_queue::fleet_id(&ctx.pool)
                .await
                .map_err(|e| start(format!("read the fleet's identity: {e}")))?;
            let sandbox = Sandbox::connect_as(Owner::current(&ctx.worker_id).in_fleet(fleet))
                .await
                .map_err(|e| start(format!("connect to the Docker engine: {e}")))?;
            sandbox.start_reaper(
                Duration::from_secs(settings.reap_every_secs),
                Some(live_workers(ctx.pool.clone())),
            );
            if ctx.warm_pool > 0 {
                let tags: Vec<String> = ctx
                    .images
                    .iter()
                    .filter_map(|n| images.tag(n).ok().map(str::to_string))
                    .collect();
                tracing::info!(per_image = ctx.warm_pool, images = ?tags, "starting the warm pool");
                sandbox.start_pool(&tags, ctx.warm_pool);
            }
            let limits = kiln_validate::Settings::from_queues(&ctx.queues, ctx.live_log_cap_bytes);
            tracing::info!(quotas = ?limits.queue_quotas, live_log_cap_bytes = limits.live_log_cap_bytes,
                "validation: per-queue workspace quotas (others 1 GiB / 100,000 files) and live-log cap");
            reg.handler(
                &KINDS,
                Validator::with_settings(ctx.pool.clone(), sandbox.clone(), images, limits),
            );
            reg.service(
                "pipeline settler",
                crate::settler(
                    ctx.pool.clone(),
                    ctx.listener.clone(),
                    Duration::from_secs_f64(settings.settle_poll_secs),
                    ctx.stop.clone(),
                ),
            );
            reg.on_shutdown(async move {
                sandbox.removals_done().await;
                sandbox.shutdown().await;
            });
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_names_unknown_keys_and_bad_values() {
        let v: toml::Value = toml::from_str("settle_poll_secs = 1.0\nsettle_pol = 3").unwrap();
        let err = ValidationModule.check_section(Some(&v)).unwrap_err();
        assert!(err.contains("settle_pol"), "{err}");
        let v: toml::Value = toml::from_str("reap_every_secs = 0").unwrap();
        let err = ValidationModule.check_section(Some(&v)).unwrap_err();
        assert!(err.starts_with("reap_every_secs"), "{err}");
        assert!(ValidationModule.check_section(None).is_ok());
    }
}
