//! Validation pipelines: `test`, `lint` and `security-scan` on one stored workspace, run in
//! parallel and settled into a verdict and a 1–10 quality score.
//!
//! For callers (CLI, HTTP API): [`submit`] (from packed bytes, a directory or a git source),
//! [`get`] (the [`PipelineView`], whose [`PipelineView::summary`] is the
//! `kiln submit validate --json` object), [`wait`] (until settled). [`settler`] settles
//! pipelines as their jobs finish: woken by the `kiln_pipelines` notification that a trigger
//! sends when a pipeline job reaches a final state, with a polling fallback, and [`prune`]s
//! finished pipelines and unreferenced artifacts by age.

pub mod error;
pub mod follow;
pub mod module;
pub mod prune;
pub mod score;
pub mod settle;
pub mod submit;
pub mod view;

pub use error::PipelineError;
pub use follow::{follow_once, follower, PipelineStep};
pub use module::{ValidationModule, ValidationSection};
pub use prune::{creator, prune, PipelineRetention, Pruned};
pub use score::{quality_score, verdict, Verdict};
pub use settle::{merge, settle, settle_ready, settler, Merged};
pub use submit::{enqueue_validation, prepare, submit, Source, SubmitOptions, Submitted};
pub use view::{get, read_on, wait, IterationSummary, JobSummary, PipelineView};
