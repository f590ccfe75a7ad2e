//! Kiln's durable queue on Postgres.
//!
//! Jobs move through one explicit state machine ([`JobState`]); every try is an attempt row.
//! Enqueue ([`enqueue_many`]) is one statement and can join the caller's transaction; workers
//! [`claim`](lease::claim) batches with `FOR UPDATE SKIP LOCKED` under a lease that
//! [`heartbeat`](lease::heartbeat) extends, and [`complete`](lease::complete) batches of
//! outcomes idempotently. [`maintenance`] rescues expired leases and prunes old jobs.
//! The SQL lives in `src/sql/*.sql`, next to the functions that run it.

pub mod admin;
pub mod backoff;
pub mod coalesce;
pub mod enqueue;
pub mod error;
pub mod events;
pub mod fleet;
pub mod lease;
pub mod list;
pub mod listener;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod spec;
pub mod views;
pub mod wake;

pub use backoff::RetryPolicy;
pub use enqueue::{count_committed, enqueue, enqueue_many, enqueue_many_on, Enqueued};
pub use error::{QueueError, Result};
pub use fleet::fleet_id;
pub use listener::{Listener, Signal};
pub use model::{AttemptDetails, AttemptOutcome, AttemptRecord, ClaimedJob, JobKind, JobRecord, JobState};
pub use spec::{JobSpec, NewJob, ValidationError};

/// The schema migrations in `migrations/`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Brings the database schema up to date.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// `opts` with the session settings Kiln's statements are written for: JIT compilation off.
///
/// Kiln's statements are short and run thousands of times; the planner's cost estimate of a
/// 10,000-job enqueue crosses `jit_above_cost`, and compiling it took 700 ms of a 920 ms
/// statement (230 ms with `jit = off`). Every pool Kiln opens should use this.
pub fn session_options(opts: sqlx::postgres::PgConnectOptions) -> sqlx::postgres::PgConnectOptions {
    opts.options([("jit", "off")])
}
