//! Kiln's validation jobs: `test`, `lint` and `security-scan`.
//!
//! A job's payload names a workspace artifact (and optionally its languages). The handler
//! loads the workspace, finds the language projects in it ([`language::detect`]), runs each
//! language's tools in that language's image through the sandbox ([`tools`], [`runner`]),
//! and turns the tools' machine-readable reports (JUnit XML, JSON) into one result shape for
//! every language ([`result`], parsed in [`parse`]). Tools that ran and found problems make a
//! successful job whose result lists them; a tool that could not run fails the job.

pub mod cache;
pub mod details;
pub mod error;
pub mod handler;
pub mod language;
pub mod logs;

pub mod parse;
pub mod payload;
pub mod result;
pub mod runner;
pub mod testcode;
pub mod tools;

pub use error::ValidateError;
pub use handler::{Images, Settings, ValidationOutput, Validator, KINDS};

pub use language::{detect, Language, Project};
pub use payload::ValidationPayload;
pub use result::{Finding, Findings, Severity, TestCase, TestResult, TestStatus};
