//! Kiln's worker runtime on apalis.
//!
//! [`Worker`] runs one apalis worker per configured queue over [`KilnBackend`], which
//! claims batches from Kiln's Postgres queue under a lease. The [`LeaseLayer`] wraps the
//! job [`Router`]: it enforces each job's timeout, stops jobs on cancel, and reports the
//! outcome to a batching completer. Heartbeats extend leases, LISTEN/NOTIFY wakes fetchers
//! (with a polling fallback), and any worker rescues jobs whose lease expired.

pub mod backend;
mod background;
mod completer;
pub mod config;
pub mod handler;
pub mod layer;
pub mod modules;
mod runtime;
mod shared;

pub use backend::KilnBackend;
pub use config::{QueueConfig, WorkerConfig};
pub use handler::{
    database_unreachable, typed, Finished, Handler, Job, JobContext, JobError, JobHandler, KindError, Router,
    DATABASE_DOWN_PAUSE,
};
pub use layer::LeaseLayer;
pub use modules::{FleetContext, KindModule, ModuleContext, ModuleError, Registration, Registry, Services};
pub use runtime::{Worker, WorkerBuilderKiln, WorkerError};
