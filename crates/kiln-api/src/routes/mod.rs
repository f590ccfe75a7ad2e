//! Route groups, one module per resource. Each exposes `router() -> OpenApiRouter<AppState>`
//! built with `utoipa_axum::routes!` over handlers annotated with `#[utoipa::path]`.

pub mod artifacts;
pub mod costs;
pub mod events;
pub mod generate;
pub mod health;
pub mod hooks;
pub mod jobs;
pub mod logs;
pub mod pipelines;
pub mod queues;
pub mod schedules;
mod sources;
pub mod tokens;

/// Tag names grouping operations in the OpenAPI document.
pub mod tags {
    /// Jobs.
    pub const JOBS: &str = "jobs";
    /// Queues.
    pub const QUEUES: &str = "queues";
    /// Webhooks.
    pub const HOOKS: &str = "webhooks";
    /// API tokens.
    pub const TOKENS: &str = "tokens";
    /// Cron schedules.
    pub const SCHEDULES: &str = "schedules";
    /// Validation and generation pipelines.
    pub const PIPELINES: &str = "pipelines";
    /// What LLM calls cost.
    pub const COSTS: &str = "costs";
    /// The job-event outbox.
    pub const EVENTS: &str = "events";
    /// Health, metrics, the document itself.
    pub const OPS: &str = "operations";
}
