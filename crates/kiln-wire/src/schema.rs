//! Documentation-only shapes for the OpenAPI document, mirroring types of `kiln-queue`
//! (which stays free of HTTP concerns). Each names the type it mirrors; keep them in step.

#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// A job to enqueue (mirrors `kiln_queue::JobSpec`). Unknown fields are refused, and so is
/// `pipeline_id` (only Kiln attaches jobs to pipelines); keys may not start with `schedule:`
/// or `hook:`.
#[derive(Serialize, ToSchema)]
#[schema(as = JobSpec)]
pub struct JobSpecDoc {
    /// Queue name (`[a-z0-9][a-z0-9_.-]{0,63}`); defaults to the kind's name.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    queue: Option<String>,
    /// What the job does.
    #[schema(value_type = JobKind)]
    kind: String,
    /// Kind-specific input, a JSON object (≤ 1 MiB); defaults to `{}`.
    payload: Option<serde_json::Map<String, serde_json::Value>>,
    /// Higher runs first.
    #[schema(minimum = -100, maximum = 100)]
    priority: Option<i64>,
    /// Not before this RFC 3339 time.
    #[schema(format = DateTime)]
    run_at: Option<String>,
    /// Tries allowed.
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<i64>,
    /// Per-attempt wall-clock limit in seconds.
    #[schema(minimum = 1, maximum = 86400)]
    timeout_secs: Option<f64>,
    /// No second live job with this key.
    #[schema(min_length = 1, max_length = 256)]
    unique_key: Option<String>,
    /// The same key returns the same job.
    #[schema(min_length = 1, max_length = 256)]
    idempotency_key: Option<String>,
    /// Free-form labels (at most 32).
    #[schema(max_items = 32)]
    tags: Option<Vec<String>>,
    /// Jobs that must succeed before this one runs.
    depends_on: Option<Vec<i64>>,
}

/// What a job does: the values of `kiln_queue::JobKind::ALL`, the one list of kinds (the
/// document is derived from it, so it cannot drift).
pub struct JobKind;

impl utoipa::PartialSchema for JobKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "What a job does; its payload is checked against the kind's type at enqueue.",
            ))
            .enum_values(Some(kiln_queue::JobKind::ALL.iter().map(|k| k.as_str())))
            .into()
    }
}

impl ToSchema for JobKind {
    fn name() -> std::borrow::Cow<'static, str> {
        "JobKind".into()
    }
}

/// Where a job is in its life.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waits for its parents.
    Pending,
    /// Waits for its run_at.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Leased by a worker.
    Running,
    /// Finished well.
    Succeeded,
    /// Runs again after a backoff.
    Retryable,
    /// Out of attempts (dead letter).
    Failed,
    /// Cancelled by request.
    Cancelled,
}

/// A stored job (mirrors `kiln_queue::JobRecord`).
#[derive(Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobDoc {
    id: i64,
    queue: String,
    #[schema(value_type = JobKind)]
    kind: String,
    state: JobState,
    payload: serde_json::Value,
    priority: i16,
    #[schema(format = DateTime)]
    run_at: String,
    attempt: i32,
    max_attempts: i32,
    timeout_ms: i32,
    unique_key: Option<String>,
    idempotency_key: Option<String>,
    tags: Vec<String>,
    pipeline_id: Option<i64>,
    depends_on: Vec<i64>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    attempted_at: Option<String>,
    #[schema(format = DateTime)]
    finalized_at: Option<String>,
    locked_by: Option<String>,
    #[schema(format = DateTime)]
    lease_expires_at: Option<String>,
    #[schema(format = DateTime)]
    cancel_requested_at: Option<String>,
    result: Option<serde_json::Value>,
    last_error: Option<String>,
}

/// One try of a job (mirrors `kiln_queue::AttemptRecord`).
#[derive(Serialize, ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptDoc {
    id: i64,
    job_id: i64,
    attempt: i32,
    worker_id: String,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    finished_at: String,
    /// succeeded, failed, timed_out, lost, cancelled or interrupted.
    outcome: String,
    error: Option<String>,
    result: Option<serde_json::Value>,
    exit_code: Option<i32>,
    container_id: Option<String>,
    image_digest: Option<String>,
    peak_memory_bytes: Option<i64>,
    cpu_time_ms: Option<i64>,
    stdout_head: Option<String>,
    stdout_tail: Option<String>,
    stderr_head: Option<String>,
    stderr_tail: Option<String>,
    diff: Option<String>,
    diff_files: Option<i32>,
    diff_insertions: Option<i32>,
    diff_deletions: Option<i32>,
    timings: Option<serde_json::Value>,
}

/// A chunk of an attempt's output (mirrors `kiln_queue::logs::LogRecord`).
#[derive(Serialize, ToSchema)]
#[schema(as = LogChunk)]
pub struct LogChunkDoc {
    attempt: i32,
    seq: i32,
    /// stdout or stderr.
    stream: String,
    /// The output as text (invalid UTF-8 replaced; NUL bytes kept).
    data: String,
    /// The exact bytes in base64, present only when they are not valid UTF-8.
    data_base64: Option<String>,
    #[schema(format = DateTime)]
    at: String,
}

/// Output of one attempt past its live-log cap (mirrors `kiln_queue::logs::LogDrops`).
#[derive(Serialize, ToSchema)]
#[schema(as = LogDrops)]
pub struct LogDropsDoc {
    attempt: i32,
    /// Bytes not stored.
    dropped_bytes: i64,
    /// Chunks not stored (or stored in part).
    dropped_chunks: i64,
    /// The cap in force, in bytes.
    cap_bytes: i64,
}

/// A schedule to create (mirrors `kiln_scheduler::ScheduleSpec`). Unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[schema(as = ScheduleSpec)]
pub struct ScheduleSpecDoc {
    /// Unique name (`[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    name: String,
    /// Cron expression: 5 fields (`min hour dom month dow`), 6 (with seconds first), 7 (and
    /// year), or `@hourly`, `@daily`, ….
    cron: String,
    /// IANA time zone the expression is read in; default `UTC`.
    timezone: Option<String>,
    /// The job each tick enqueues.
    job: JobSpecDoc,
    /// Default true.
    enabled: Option<bool>,
    /// Fire one catch-up run for ticks missed while no scheduler ran; default false.
    catch_up: Option<bool>,
}

/// A change to a schedule (mirrors `kiln_scheduler::SchedulePatch`); fields left out stay.
#[derive(Serialize, ToSchema)]
#[schema(as = SchedulePatch)]
pub struct SchedulePatchDoc {
    /// New cron expression.
    cron: Option<String>,
    /// New time zone.
    timezone: Option<String>,
    /// New job template.
    job: Option<JobSpecDoc>,
    /// Switch on or off.
    enabled: Option<bool>,
    /// Ask for (or stop asking for) a catch-up run.
    catch_up: Option<bool>,
}

/// A stored schedule with its firing record (mirrors `kiln_scheduler::Schedule`).
#[derive(Serialize, ToSchema)]
#[schema(as = Schedule)]
pub struct ScheduleDoc {
    name: String,
    cron: String,
    timezone: String,
    job: JobSpecDoc,
    enabled: bool,
    catch_up: bool,
    /// `api` or `config` (declared in `workers.toml`).
    source: String,
    #[schema(format = DateTime)]
    fired_through: String,
    #[schema(format = DateTime)]
    last_fired_at: Option<String>,
    last_job_id: Option<i64>,
    fired_count: i64,
    missed_count: i64,
    /// The next tick, while enabled.
    #[schema(format = DateTime)]
    next_tick: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// One job of a pipeline (mirrors `kiln_pipeline::JobSummary`).
#[derive(Serialize, ToSchema)]
#[schema(as = PipelineJob)]
pub struct PipelineJobDoc {
    id: i64,
    /// `test`, `lint` or `security-scan`.
    kind: String,
    state: JobState,
    attempt: i32,
    max_attempts: i32,
    result: Option<serde_json::Value>,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    finalized_at: Option<String>,
}

/// A validation pipeline with its jobs (mirrors `kiln_pipeline::PipelineView`).
#[derive(Serialize, ToSchema)]
#[schema(as = Pipeline)]
pub struct PipelineDoc {
    pipeline_id: i64,
    /// `validation` or `generation`.
    kind: String,
    /// Workspace artifact digest (a generation pipeline's start; null when it started empty).
    workspace: Option<String>,
    languages: Vec<String>,
    /// `running` or `finished`.
    state: String,
    /// `passed`, `failed` or `error` once finished; generation pipelines also `partial`.
    verdict: Option<String>,
    /// Why a `partial` generation pipeline stopped: `max_iterations` or `budget`.
    stop_reason: Option<String>,
    /// 1..=10 once finished.
    quality_score: Option<i16>,
    /// The merged results `{"test", "lint", "security"}` once finished.
    result: Option<serde_json::Value>,
    tags: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    jobs: Vec<PipelineJobDoc>,
    /// A generation pipeline's iterations, oldest first (absent for validation pipelines).
    iterations: Option<Vec<PipelineIterationDoc>>,
}

/// One iteration of a generation pipeline (mirrors `kiln_pipeline::IterationSummary`).
#[derive(Serialize, ToSchema)]
#[schema(as = PipelineIteration)]
pub struct PipelineIterationDoc {
    /// 1-based.
    iteration: i32,
    /// Its generation job.
    job_id: i64,
    /// `validating` or `validated`.
    state: String,
    /// The workspace it produced (artifact digest).
    workspace: String,
    /// The conversation with the model (artifact digest of `messages.json`).
    messages: String,
    /// A budget cut its calls short; the loop ended after it.
    budget_stop: bool,
    /// `passed`, `failed` or `error` once validated.
    verdict: Option<String>,
    /// 1..=10 once validated (−1 when more than 3 iterations were needed).
    quality_score: Option<i16>,
    /// Provider, model, calls, tokens, cost_usd, latency_ms, retries, diff counts.
    record: serde_json::Value,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    validated_at: Option<String>,
}

/// The `kiln submit validate --json` object, or for a generation pipeline the `kiln submit
/// generate --json` object (mirrors `kiln_pipeline::PipelineView::summary`).
#[derive(Serialize, ToSchema)]
#[schema(as = PipelineSummary)]
pub struct PipelineSummaryDoc {
    pipeline_id: i64,
    /// `passed`, `failed`, `error` or (generation) `partial`; null while running.
    verdict: Option<String>,
    /// Generation: `max_iterations` or `budget` when `partial`.
    stop_reason: Option<String>,
    /// Generation: iterations run.
    iterations: Option<u32>,
    /// Generation: tokens by type (`input`, `output`, `cache_read`, `cache_write`).
    tokens: Option<serde_json::Value>,
    /// Generation: exact cost in USD.
    cost_usd: Option<f64>,
    /// Generation: unified diff from the start to the resulting workspace.
    diff: Option<String>,
    quality_score: Option<i16>,
    /// Test counts, cases and coverage; null until finished.
    test: Option<serde_json::Value>,
    /// Lint findings; null until finished.
    lint: Option<serde_json::Value>,
    /// Security findings; null until finished.
    security: Option<serde_json::Value>,
    /// Per-job errors, when a job could not run.
    errors: Option<serde_json::Value>,
}

/// The diff of a job's latest attempt that recorded one (mirrors `kiln_queue::admin::JobDiff`).
#[derive(Serialize, ToSchema)]
#[schema(as = JobDiff)]
pub struct JobDiffDoc {
    /// Job id.
    job_id: i64,
    /// The attempt the diff is from; absent when no attempt recorded a diff.
    attempt: Option<i32>,
    /// Unified diff.
    diff: Option<String>,
    /// Files touched.
    files: Option<i32>,
    /// Lines added.
    insertions: Option<i32>,
    /// Lines removed.
    deletions: Option<i32>,
}

/// One job event (mirrors `kiln_queue::events::Event`).
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventDoc {
    /// Strictly increasing, in commit order.
    id: i64,
    /// `job.succeeded`, `job.failed`, `job.cancelled`, `job.retryable`, `pipeline.finished`, …
    #[serde(rename = "type")]
    event_type: String,
    /// When it was written.
    #[schema(format = DateTime)]
    at: String,
    /// The job it is about.
    job_id: Option<i64>,
    /// The pipeline it is about.
    pipeline_id: Option<i64>,
    /// The job's queue.
    queue: Option<String>,
    /// The job's kind.
    #[schema(value_type = Option<JobKind>)]
    kind: Option<String>,
    /// A small type-specific body.
    data: serde_json::Value,
}
