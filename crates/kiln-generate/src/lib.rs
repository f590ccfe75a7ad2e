//! The `generation` kind and the self-validating loop.
//!
//! A generation pipeline runs generate → validate → regenerate: iteration *i* is a
//! `generation` job ([`Generator`]) that asks the model (through `kiln-llm`) to edit the
//! workspace with two tools, `write_file` and `delete_file` ([`edit`]), stores the result
//! as an artifact, records the iteration and enqueues its `test`, `lint` and `security-scan`
//! jobs in one transaction. When they are final, [`advance`] settles the iteration's verdict
//! and score and ends the pipeline (`passed`, `partial` with a `stop_reason`, `failed`) or
//! enqueues iteration *i + 1* with the feedback ([`prompt::feedback`]). No worker slot waits
//! on validation, and every step is idempotent per (pipeline, iteration).
//!
//! [`submit_generation`] starts one; [`GenerationModule`] registers the kind, its `[llm]`
//! section and the loop's [`advancer`] with a worker.

#![deny(missing_docs)]

pub mod advance;
pub mod config;
pub mod converse;
pub mod edit;
pub mod error;
pub mod handler;
pub mod module;
pub mod prompt;
pub mod store;
pub mod submit;

pub use advance::{advance, advance_ready, advancer, iteration_score};
pub use config::{GenerationConfig, LoopSettings};
pub use error::GenerateError;
pub use handler::Generator;
pub use module::GenerationModule;
pub use submit::{submit_generation, GenerateRequest, Start, SubmittedGeneration};
