//! What a caller asks to enqueue, and its validation: every refusal names the field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::JobKind;

/// Largest accepted payload, serialized: 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Priority range; higher runs first.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i16> = -100..=100;
/// Range of `max_attempts`.
pub const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<i32> = 1..=100;
/// Range of the per-attempt timeout, in milliseconds (1 s to 24 h).
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<i32> = 1_000..=86_400_000;
/// Longest key or tag.
pub const MAX_KEY_LEN: usize = 256;
/// Most tags on one job.
pub const MAX_TAGS: usize = 32;
/// Key prefixes Kiln keeps for its own jobs (`schedule:NAME:TICK`, `hook:NAME:DELIVERY`):
/// a request may not use them for its unique or idempotency key.
pub const RESERVED_KEY_PREFIXES: [&str; 2] = ["schedule:", "hook:"];

/// Refuses a key a client sends (`unique_key`, `idempotency_key`, the `Idempotency-Key`
/// header) when it starts with one of [`RESERVED_KEY_PREFIXES`].
pub fn check_client_key(field: &str, key: &str) -> Result<(), ValidationError> {
    match RESERVED_KEY_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        Some(prefix) => Err(ValidationError::new(
            field,
            format!("keys starting with {prefix:?} are reserved for Kiln's own jobs"),
        )),
        None => Ok(()),
    }
}

/// A refused request: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("invalid `{field}`: {message}")]
pub struct ValidationError {
    /// The offending field, as named in the request (`payload`, `run_at`, `jobs[3].kind`…).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same refusal for the `index`-th element of a batch.
    pub fn in_batch(mut self, index: usize) -> Self {
        self.field = format!("jobs[{index}].{}", self.field);
        self
    }
}

/// A validated job, ready to insert. Build it with [`NewJob::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Queue name (`[a-z0-9][a-z0-9_.-]{0,63}`).
    pub queue: String,
    /// What the job does.
    pub kind: JobKind,
    /// Kind-specific input (a JSON object, ≤ 1 MiB).
    pub payload: serde_json::Value,
    /// Higher runs first (−100..=100).
    pub priority: i16,
    /// Not before; `None` is now.
    pub run_at: Option<DateTime<Utc>>,
    /// Tries allowed (1..=100).
    pub max_attempts: i32,
    /// Per-attempt wall-clock limit in milliseconds.
    pub timeout_ms: i32,
    /// No second live job with this key.
    pub unique_key: Option<String>,
    /// The same key returns the same job.
    pub idempotency_key: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Pipeline this job belongs to.
    pub pipeline_id: Option<i64>,
    /// Jobs that must succeed before this one runs.
    pub depends_on: Vec<i64>,
}

impl NewJob {
    /// A job of `kind` on `queue` with `payload` and default settings.
    pub fn new(queue: impl Into<String>, kind: JobKind, payload: serde_json::Value) -> Self {
        Self {
            queue: queue.into(),
            kind,
            payload,
            priority: 0,
            run_at: None,
            max_attempts: 3,
            timeout_ms: 120_000,
            unique_key: None,
            idempotency_key: None,
            tags: Vec::new(),
            pipeline_id: None,
            depends_on: Vec::new(),
        }
    }

    /// Sets the priority (higher runs first).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }
    /// Delays the job until `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    /// Sets the number of tries allowed.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        self
    }
    /// Deduplicates against live jobs with the same key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
    /// Makes the request idempotent under `key`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Attaches the job to a pipeline.
    pub fn pipeline(mut self, id: i64) -> Self {
        self.pipeline_id = Some(id);
        self
    }
    /// Runs the job only after `parent` succeeded.
    pub fn after(mut self, parent: i64) -> Self {
        self.depends_on.push(parent);
        self
    }

    /// Checks every field against the limits; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !valid_queue_name(&self.queue) {
            return Err(ValidationError::new(
                "queue",
                "must match [a-z0-9][a-z0-9_.-]{0,63}",
            ));
        }
        if !self.payload.is_object() {
            return Err(ValidationError::new("payload", "must be a JSON object"));
        }
        let size = serde_json::to_vec(&self.payload)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_PAYLOAD_BYTES {
            return Err(ValidationError::new(
                "payload",
                format!("is {size} bytes, over the cap of {MAX_PAYLOAD_BYTES}"),
            ));
        }
        check_range("priority", self.priority, &PRIORITY_RANGE)?;
        check_range("max_attempts", self.max_attempts, &MAX_ATTEMPTS_RANGE)?;
        check_range("timeout_ms", self.timeout_ms, &TIMEOUT_MS_RANGE)?;
        for (field, key) in [
            ("unique_key", &self.unique_key),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if let Some(key) = key {
                check_text(field, key)?;
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(ValidationError::new("tags", format!("at most {MAX_TAGS} tags")));
        }
        for tag in &self.tags {
            check_text("tags", tag)?;
        }
        if self.depends_on.iter().any(|id| *id <= 0) {
            return Err(ValidationError::new("depends_on", "job ids are positive"));
        }
        Ok(())
    }
}

/// True when `name` is a queue name: `[a-z0-9][a-z0-9_.-]{0,63}`.
pub fn valid_queue_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), ValidationError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value} is out of range {}..={}", range.start(), range.end()),
        ))
    }
}

fn check_text(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.is_empty() || text.len() > MAX_KEY_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {MAX_KEY_LEN} bytes"),
        ));
    }
    Ok(())
}

/// A job request as it arrives from outside (HTTP body, CLI flags, `workers.toml`):
/// loosely typed so that every mistake can be reported by field name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Queue name; defaults to the kind's name.
    pub queue: Option<String>,
    /// One of the six kinds.
    pub kind: String,
    /// Kind-specific input; defaults to `{}`.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// Higher runs first.
    pub priority: Option<i64>,
    /// RFC 3339 time.
    pub run_at: Option<String>,
    /// Tries allowed.
    pub max_attempts: Option<i64>,
    /// Per-attempt limit in seconds.
    pub timeout_secs: Option<f64>,
    /// Deduplication key.
    pub unique_key: Option<String>,
    /// Same-request key.
    pub idempotency_key: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Refused when set: only Kiln attaches jobs to a pipeline (when it submits one).
    pub pipeline_id: Option<i64>,
    /// Parents.
    #[serde(default)]
    pub depends_on: Vec<i64>,
}

impl JobSpec {
    /// Turns the request into a validated [`NewJob`], or names the first bad field.
    /// A request cannot attach its job to a pipeline (`pipeline_id`) nor use a key prefix
    /// Kiln reserves for itself ([`RESERVED_KEY_PREFIXES`]).
    pub fn into_new_job(self) -> Result<NewJob, ValidationError> {
        if self.pipeline_id.is_some() {
            return Err(ValidationError::new(
                "pipeline_id",
                "is set by Kiln when it submits a pipeline; a job cannot join one",
            ));
        }
        for (field, key) in [
            ("unique_key", &self.unique_key),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if let Some(key) = key {
                check_client_key(field, key)?;
            }
        }
        let kind: JobKind = self
            .kind
            .parse()
            .map_err(|e: String| ValidationError::new("kind", e))?;
        let queue = self.queue.unwrap_or_else(|| kind.as_str().to_owned());
        let mut job = NewJob::new(queue, kind, self.payload.unwrap_or_else(|| serde_json::json!({})));
        if let Some(p) = self.priority {
            job.priority = narrow("priority", p, &PRIORITY_RANGE)?;
        }
        if let Some(at) = self.run_at {
            let at = DateTime::parse_from_rfc3339(&at).map_err(|e| {
                ValidationError::new("run_at", format!("{at:?} is not an RFC 3339 time ({e})"))
            })?;
            job.run_at = Some(at.with_timezone(&Utc));
        }
        if let Some(n) = self.max_attempts {
            job.max_attempts = narrow("max_attempts", n, &MAX_ATTEMPTS_RANGE)?;
        }
        if let Some(secs) = self.timeout_secs {
            let ms = secs * 1000.0;
            if !ms.is_finite()
                || ms < f64::from(*TIMEOUT_MS_RANGE.start())
                || ms > f64::from(*TIMEOUT_MS_RANGE.end())
            {
                return Err(ValidationError::new(
                    "timeout_secs",
                    format!("{secs} is out of range 1..=86400"),
                ));
            }
            job.timeout_ms = ms as i32;
        }
        job.unique_key = self.unique_key;
        job.idempotency_key = self.idempotency_key;
        job.tags = self.tags;
        job.depends_on = self.depends_on;
        job.validate()?;
        Ok(job)
    }
}

fn narrow<T>(field: &str, value: i64, range: &std::ops::RangeInclusive<T>) -> Result<T, ValidationError>
where
    T: TryFrom<i64> + Copy + std::fmt::Display + PartialOrd,
{
    T::try_from(value)
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            ValidationError::new(
                field,
                format!("{value} is out of range {}..={}", range.start(), range.end()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Result<NewJob, ValidationError> {
        serde_json::from_value::<JobSpec>(v).unwrap().into_new_job()
    }

    #[test]
    fn refusals_name_their_field() {
        let cases = [
            (json!({"kind": "compile"}), "kind"),
            (json!({"kind": "test", "priority": 101}), "priority"),
            (json!({"kind": "test", "priority": -70000}), "priority"),
            (json!({"kind": "test", "max_attempts": 0}), "max_attempts"),
            (json!({"kind": "test", "max_attempts": 101}), "max_attempts"),
            (json!({"kind": "test", "run_at": "tomorrow"}), "run_at"),
            (
                json!({"kind": "test", "run_at": "2026-13-01T00:00:00Z"}),
                "run_at",
            ),
            (json!({"kind": "test", "queue": "Has Spaces"}), "queue"),
            (json!({"kind": "test", "payload": [1, 2]}), "payload"),
            (json!({"kind": "test", "timeout_secs": 0.5}), "timeout_secs"),
            (json!({"kind": "test", "unique_key": ""}), "unique_key"),
        ];
        for (input, field) in cases {
            let err = spec(input.clone()).expect_err(&input.to_string());
            assert_eq!(err.field, field, "{input}: {err}");
        }
    }

    #[test]
    fn a_request_cannot_attach_a_pipeline_nor_use_reserved_key_prefixes() {
        let cases = [
            (json!({"kind": "test", "pipeline_id": 1}), "pipeline_id"),
            (json!({"kind": "test", "unique_key": "hook:h:1"}), "unique_key"),
            (
                json!({"kind": "test", "unique_key": "schedule:s:t"}),
                "unique_key",
            ),
            (
                json!({"kind": "test", "idempotency_key": "hook:gh:d1"}),
                "idempotency_key",
            ),
            (
                json!({"kind": "test", "idempotency_key": "schedule:n:t"}),
                "idempotency_key",
            ),
        ];
        for (input, field) in cases {
            let err = spec(input.clone()).expect_err(&input.to_string());
            assert_eq!(err.field, field, "{input}: {err}");
        }
        let ok =
            spec(json!({"kind": "test", "unique_key": "hooks-are-fine", "idempotency_key": "my:hook:1"}));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn oversized_payload_is_refused() {
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        let err = spec(json!({"kind": "lint", "payload": {"blob": big}})).unwrap_err();
        assert_eq!(err.field, "payload");
        assert!(err.message.contains("over the cap"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<JobSpec>(json!({"kind": "test", "prio": 1})).unwrap_err();
        assert!(err.to_string().contains("prio"), "{err}");
    }

    #[test]
    fn a_good_spec_fills_defaults() {
        let job =
            spec(json!({"kind": "security-scan", "run_at": "2030-01-02T03:04:05+02:00", "tags": ["a"]}))
                .unwrap();
        assert_eq!(job.queue, "security-scan");
        assert_eq!(job.kind, JobKind::SecurityScan);
        assert_eq!(job.run_at.unwrap().to_rfc3339(), "2030-01-02T01:04:05+00:00");
        assert_eq!(job.max_attempts, 3);
        assert_eq!(job.payload, json!({}));
    }
}
