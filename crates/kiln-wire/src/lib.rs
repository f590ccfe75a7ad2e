//! The request and response types of Kiln's HTTP API, one module per route group, with their
//! OpenAPI schemas. The API serves them and the CLI's client reads them; no HTTP stack here.

pub mod costs;
pub mod error;
pub mod events;
pub mod jobs;
pub mod json;
pub mod logs;
pub mod pipelines;
pub mod queues;
pub mod schema;
pub mod tokens;

pub use error::ErrorBody;
