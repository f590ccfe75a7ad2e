//! Kiln's sandbox: runs untrusted job code in hardened Docker containers through bollard.
//!
//! A job ([`JobSpec`]) names an image, a command, an environment, a workspace (sent to `/work`
//! as a tar stream), limits, a timeout and output paths. [`Sandbox::run`] returns a
//! [`JobReport`]: the [`Outcome`], exit code, wall/CPU time, peak memory, capped stdout/stderr,
//! output files (checked before they touch the host) and the [`WorkspaceDiff`]. Every container
//! is fresh (warm ones never ran a job), labelled, and removed after its one job.

pub mod cgroup;
pub mod containers;
pub mod diff;
pub mod error;
pub mod exec;
pub mod isolation;
pub mod outputs;
pub mod paths;
pub mod policy;
pub mod pool;
pub mod quota;
pub mod readback;
pub mod reaper;
pub mod report;
pub mod sandbox;
pub mod snapshot;
pub mod spec;
pub mod workspace;

pub use diff::{DiffCaps, WorkspaceDiff};
pub use error::SandboxError;
pub use isolation::{InForce, Isolation};
pub use outputs::{OutputEntry, Outputs};
pub use report::{Captured, JobReport, LogChunk, Outcome, Stream, Timings, Usage};
pub use sandbox::{LiveWorkers, Sandbox};
pub use spec::{JobLabels, JobSpec, Limits};
pub use workspace::{Entry, Workspace};
