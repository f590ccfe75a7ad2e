//! Kiln's HTTP API on axum: enqueue and inspect jobs, tail their logs over Server-Sent Events,
//! steer queues, receive webhooks, manage API tokens, cron schedules and validation pipelines; `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json`.
//!
//! Routes are grouped one module per resource under [`routes`]; each group is a
//! `utoipa_axum` [`OpenApiRouter`] whose handlers carry `#[utoipa::path]`, so the OpenAPI
//! document is collected from the very routes that serve. Adding a group is one line in
//! [`api_router`]. Every refusal is a JSON [`ErrorBody`](error::ErrorBody) naming the field.

pub mod auth;
use kiln_queue::coalesce;
pub mod error;
pub mod extract;
pub mod first_analyze;
pub use kiln_hooks as hooks;
pub mod idempotency;
pub mod routes;
pub use kiln_auth::tokens;
pub use kiln_wire::schema;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiResult, ErrorBody};

/// Limits and tuning of one API process.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body, in bytes (413 beyond), except where a route says otherwise.
    pub body_limit: usize,
    /// Largest body of `POST /v1/jobs/batch`.
    pub batch_body_limit: usize,
    /// Most jobs in one batch.
    pub max_batch_jobs: usize,
    /// Largest webhook delivery body.
    pub hook_body_limit: usize,
    /// Largest body of `POST /v1/pipelines/validate` (a base64 workspace: 4/3 of its size).
    pub pipeline_body_limit: usize,
    /// Largest workspace a pipeline accepts, in bytes (packed and unpacked).
    pub max_workspace_bytes: u64,
    /// Concurrent statements writing coalesced single-job enqueues.
    pub coalesce_flushers: usize,
    /// Most single-job requests sharing one statement.
    pub coalesce_max_batch: usize,
    /// What a pipeline's `git.source` may reach: `https://` only, under a destination policy
    /// (loopback and private ranges refused unless `workers.toml`'s `[network]` allows them).
    pub git_access: kiln_artifacts::GitAccess,
    /// Deadline of one git checkout.
    pub git_timeout: std::time::Duration,
    /// Most bytes of job payloads in one page of `GET /v1/jobs` (the page ends early beyond).
    pub list_payload_bytes: usize,
    /// Webhook deliveries older than this are pruned.
    pub delivery_retention: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit: 1024 * 1024,
            batch_body_limit: 64 * 1024 * 1024,
            max_batch_jobs: 10_000,
            hook_body_limit: 8 * 1024 * 1024,
            pipeline_body_limit: 72 * 1024 * 1024,
            max_workspace_bytes: kiln_artifacts::DEFAULT_MAX_BYTES,
            coalesce_flushers: 4,
            coalesce_max_batch: 1_000,
            git_access: kiln_artifacts::GitAccess::remote(kiln_artifacts::DestinationPolicy::default()),
            git_timeout: std::time::Duration::from_secs(120),
            list_payload_bytes: 4 * 1024 * 1024,
            delivery_retention: std::time::Duration::from_secs(7 * 86_400),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: sqlx::PgPool,
    /// Limits.
    pub config: Arc<ApiConfig>,
    /// Tokens verified recently.
    pub tokens: Arc<auth::TokenCache>,
    /// Shared-statement enqueue for single jobs.
    pub coalescer: coalesce::Coalescer,
    /// Pool whose sessions defer the enqueue NOTIFY (for batches); wake with `notifier`.
    pub enqueue_pool: sqlx::PgPool,
    /// Sends the deferred wake-ups.
    pub notifier: coalesce::Notifier,
    /// The process's one LISTEN connection (live logs, pipeline waits, event streams).
    pub listener: kiln_queue::Listener,
    /// The local Docker engine, for `/readyz`.
    pub docker: Option<bollard::Docker>,
    /// Tripped at shutdown: ends live streams so the server can drain.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// State over `pool`; starts the enqueue coalescer and a listener of its own (a task each,
    /// ended by `shutdown`). Must run inside a Tokio runtime.
    pub fn new(pool: sqlx::PgPool, config: ApiConfig, shutdown: CancellationToken) -> Self {
        let listener = kiln_queue::Listener::start(pool.clone(), shutdown.clone());
        Self::with_listener(pool, listener, config, shutdown)
    }

    /// Like [`AppState::new`], sharing the process's `listener` (`kiln up`: API and workers
    /// on one LISTEN connection).
    pub fn with_listener(
        pool: sqlx::PgPool,
        listener: kiln_queue::Listener,
        config: ApiConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let enqueue_pool = coalesce::enqueue_pool(&pool, config.coalesce_flushers as u32 + 8);
        let notifier = coalesce::Notifier::start(pool.clone());
        let coalescer = coalesce::Coalescer::start(
            enqueue_pool.clone(),
            notifier.clone(),
            config.coalesce_flushers,
            config.coalesce_max_batch,
        );
        first_analyze::start(pool.clone(), shutdown.clone());
        start_delivery_pruning(pool.clone(), config.delivery_retention, shutdown.clone());
        let docker = bollard::Docker::connect_with_local_defaults()
            .inspect_err(|e| tracing::warn!(error = %e, "no Docker client; /readyz will report it"))
            .ok();
        AppState {
            pool,
            config: Arc::new(config),
            tokens: Arc::default(),
            coalescer,
            enqueue_pool,
            notifier,
            listener,
            docker,
            shutdown,
        }
    }
}

/// Prunes webhook deliveries older than `retention`, hourly (the first pass a minute after
/// start), until `shutdown`.
fn start_delivery_pruning(pool: sqlx::PgPool, retention: std::time::Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = std::time::Duration::from_secs(3600);
            match hooks::prune_deliveries(&pool, retention).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned old webhook deliveries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning webhook deliveries failed"),
            }
        }
    });
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`kiln tokens create`), scopes jobs:read, jobs:write, admin",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln API", description = "Enqueue and inspect jobs, tail logs, steer queues, receive webhooks."),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, schema::JobSpecDoc, schema::JobDoc, schema::AttemptDoc, schema::LogChunkDoc, schema::LogDropsDoc))
)]
struct ApiDoc;

/// Every route with its OpenAPI description. Add a route group here (and nowhere else).
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::jobs::router())
        .merge(routes::logs::router())
        .merge(routes::artifacts::router())
        .merge(routes::queues::router())
        .merge(routes::hooks::router())
        .merge(routes::tokens::router())
        .merge(routes::schedules::router())
        .merge(routes::pipelines::router())
        .merge(routes::generate::router())
        .merge(routes::events::router())
        .merge(routes::costs::router())
        .merge(routes::health::router())
}

/// The OpenAPI document describing every route.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| api_router().split_for_parts().1)
}

/// The service: routes, JSON fallbacks for unknown paths and methods, request metrics.
pub fn router(state: AppState) -> axum::Router {
    let (router, _) = api_router().split_for_parts();
    router
        .fallback(routes::health::not_found)
        .method_not_allowed_fallback(routes::health::method_not_allowed)
        .layer(axum::middleware::from_fn(track))
        .with_state(state)
}

/// Counts every request by route pattern, method and status, and times it.
async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let res = next.run(req).await;
    let m = kiln_metrics::metrics();
    m.http_requests
        .with_label_values(&[route.as_str(), method, res.status().as_str()])
        .inc();
    m.http_seconds
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
    res
}

/// The `method` label: one of the nine standard methods, else `other` (a client can send any
/// token as a method; each would otherwise be a new series).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains: live streams end and
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    // Queue depth and workers alive, from whichever Kiln process holds the exporter lock: an
    // API-only process competes for it too, so the gauges exist whenever any process runs.
    let exporter = kiln_metrics::DepthExporter::spawn_for_process(
        &state.pool,
        kiln_metrics::ExporterConfig::default(),
        token.clone(),
    );
    let app = router(state);
    tracing::info!(addr = %listener.local_addr()?, "API serving");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown({
            let token = token.clone();
            async move {
                shutdown.await;
                tracing::info!("API shutting down");
                token.cancel();
            }
        })
        .await;
    token.cancel();
    if let Some(exporter) = exporter {
        let _ = exporter.await;
    }
    served
}
