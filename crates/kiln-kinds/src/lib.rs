//! What each job kind accepts: one typed [`Payload`] per kind, deserialized and checked once,
//! at enqueue, so a bad payload is a 4xx naming the field and never a failed job later.
//!
//! The list of kinds is `kiln_queue::JobKind`; [`check_payload`] matches on it exhaustively, so
//! a kind added there without a payload type here does not compile. Handlers (in the crates of
//! their kinds) declare the same payload type through [`Kind`].
//!
//! ```
//! use kiln_queue::JobKind;
//! let err = kiln_kinds::check_payload(JobKind::Test, &serde_json::json!({"workspace": 3})).unwrap_err();
//! assert_eq!(err.field, "payload.workspace");
//! ```

pub mod generation;
pub mod notification;
pub mod preview;
pub mod validation;

use kiln_queue::{JobKind, JobSpec, NewJob, ValidationError};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use generation::GenerationPayload;
pub use notification::NotificationPayload;
pub use preview::PreviewPayload;
pub use validation::{Language, ValidationPayload};

/// A refusal inside a payload: the field's path below `payload` and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{path}`: {message}")]
pub struct PayloadError {
    /// Dotted path inside the payload (`workspace`, `endpoint.url`, `languages[1]`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl PayloadError {
    /// A refusal of `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A kind's payload: its serde shape plus the checks serde cannot express.
pub trait Payload: DeserializeOwned + Serialize + Send + Sync + 'static {
    /// Checks values (ranges, formats); the error names the field.
    fn check(&self) -> Result<(), PayloadError> {
        Ok(())
    }

    /// Parses and checks a JSON payload, naming the first bad field.
    fn from_json(value: &serde_json::Value) -> Result<Self, PayloadError> {
        let payload: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            PayloadError::new(path, e.into_inner().to_string())
        })?;
        payload.check()?;
        Ok(payload)
    }
}

/// A job kind's contract, in the spirit of River's `JobArgs`: its name and its payload type.
/// The handler side adds its output and error types (see `kiln_worker::JobHandler`).
pub trait Kind: Send + Sync + 'static {
    /// The payload jobs of this kind carry.
    type Payload: Payload;
    /// The kinds served with this payload (validation's three kinds share one).
    const KINDS: &'static [JobKind];
}

/// Checks `payload` against `kind`'s payload type; the error names `payload.<path>`.
pub fn check_payload(kind: JobKind, payload: &serde_json::Value) -> Result<(), ValidationError> {
    let checked = match kind {
        JobKind::Test | JobKind::Lint | JobKind::SecurityScan => {
            ValidationPayload::from_json(payload).map(drop)
        }
        JobKind::Generation => GenerationPayload::from_json(payload).map(drop),
        JobKind::Preview => PreviewPayload::from_json(payload).map(drop),
        JobKind::Notification => NotificationPayload::from_json(payload).map(drop),
    };
    checked.map_err(|e| {
        let field = if e.path.is_empty() {
            "payload".to_owned()
        } else {
            format!("payload.{}", e.path)
        };
        ValidationError::new(field, e.message)
    })
}

/// The client entry point of every enqueue (API, CLI, schedules, webhooks): the request's
/// fields checked by `JobSpec`, then its payload by its kind.
pub fn new_job(spec: JobSpec) -> Result<NewJob, ValidationError> {
    let job = spec.into_new_job()?;
    check_payload(job.kind, &job.payload)?;
    Ok(job)
}

/// A batch's jobs through [`new_job`], all or none; a refusal names the job (`jobs[3].priority`).
pub fn new_jobs(specs: impl IntoIterator<Item = JobSpec>) -> Result<Vec<NewJob>, ValidationError> {
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| new_job(spec).map_err(|e| e.in_batch(i)))
        .collect()
}

/// A digest of a stored artifact: `sha256:` and 64 lowercase hex digits.
pub fn check_digest(path: &str, digest: &str) -> Result<(), PayloadError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(PayloadError::new(
            path,
            format!("must be an artifact digest `sha256:<64 hex>`, got {digest:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_kind_refuses_a_malformed_payload_naming_the_field() {
        for kind in JobKind::ALL {
            let err = check_payload(*kind, &json!({"no_such_field": 1})).unwrap_err();
            assert!(err.field.starts_with("payload"), "{kind}: {err}");
            assert!(
                err.message.contains("no_such_field") || err.message.contains("missing"),
                "{kind}: {err}"
            );
            let err = check_payload(*kind, &json!([])).unwrap_err();
            assert_eq!(err.field, "payload", "{kind}: {err}");
        }
    }

    #[test]
    fn well_formed_payloads_pass_for_every_kind() {
        let good = |kind: JobKind| match kind {
            JobKind::Test | JobKind::Lint | JobKind::SecurityScan => json!({"workspace": DIGEST}),
            JobKind::Generation => json!({"prompt": "write a fizzbuzz"}),
            JobKind::Preview => json!({"workspace": DIGEST, "port": 8000}),
            JobKind::Notification => {
                json!({"event_id": 7, "endpoint": {"type": "webhook", "url": "https://example.com/hook"}})
            }
        };
        for kind in JobKind::ALL {
            check_payload(*kind, &good(*kind)).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }

    #[test]
    fn nested_fields_are_named_by_path() {
        let err = check_payload(
            JobKind::Test,
            &json!({"workspace": DIGEST, "languages": ["python", "cobol"]}),
        )
        .unwrap_err();
        assert_eq!(err.field, "payload.languages[1]");
        let err = check_payload(JobKind::Test, &json!({"workspace": "main"})).unwrap_err();
        assert_eq!(err.field, "payload.workspace");
    }

    #[test]
    fn a_batch_refusal_names_the_job() {
        let spec = |v: serde_json::Value| serde_json::from_value::<JobSpec>(v).unwrap();
        let good = json!({"kind": "test", "payload": {"workspace": DIGEST}});
        let jobs = new_jobs([spec(good.clone()), spec(good.clone())]).unwrap();
        assert_eq!(jobs.len(), 2);
        let err = new_jobs([spec(good), spec(json!({"kind": "test", "payload": {}}))]).unwrap_err();
        assert_eq!(err.field, "jobs[1].payload", "{err}");
    }
}
