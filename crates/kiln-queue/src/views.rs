//! The read views the API and the CLI both show: queues with their counts, a job with its
//! attempts, and a job listing's filters parsed from text. One function each, so the HTTP
//! handlers and the CLI's database path cannot drift apart.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use std::collections::BTreeMap;

use crate::admin;
use crate::error::Result;
use crate::list::{JobFilter, MAX_PAGE};
use crate::model::{AttemptRecord, JobKind, JobRecord, JobState};
use crate::spec::ValidationError;

/// A queue: its settings and how many jobs it holds in each state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    /// Queue name.
    pub name: String,
    /// No job is claimed while paused.
    pub paused: bool,
    /// Fleet-wide cap on running jobs.
    pub max_running: Option<i32>,
    /// Jobs by state (states with none are left out).
    pub counts: BTreeMap<String, i64>,
}

/// Every queue, sorted by name, with its job counts by state.
pub async fn queues<'e>(db: impl PgExecutor<'e>) -> Result<Vec<QueueSummary>> {
    Ok(group_counts(admin::queue_counts(db).await?))
}

/// Groups per-state rows (sorted by queue) into one summary per queue.
fn group_counts(rows: Vec<admin::QueueCount>) -> Vec<QueueSummary> {
    let mut queues: Vec<QueueSummary> = Vec::new();
    for c in rows {
        if queues.last().is_none_or(|q| q.name != c.queue) {
            queues.push(QueueSummary {
                name: c.queue.clone(),
                paused: c.paused,
                max_running: c.max_running,
                counts: BTreeMap::new(),
            });
        }
        if let (Some(s), Some(q)) = (c.state, queues.last_mut()) {
            q.counts.insert(s.to_string(), c.count);
        }
    }
    queues
}

/// A job with its attempts, oldest first, and the fields left out because of their size.
#[derive(Debug, Clone)]
pub struct JobWithAttempts {
    /// The job.
    pub job: JobRecord,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Paths of the fields left out (`attempts[1].diff`).
    pub omitted: Vec<String>,
}

/// Reads job `id` with its attempts; diffs longer than `inline_diff_bytes` (when given) are
/// left out and named in `omitted`. Fails with `NotFound` for an unknown job.
pub async fn job_with_attempts(
    db: &sqlx::PgPool,
    id: i64,
    inline_diff_bytes: Option<usize>,
) -> Result<JobWithAttempts> {
    let job = admin::get_job(db, id).await?;
    let mut attempts = admin::attempts(db, id).await?;
    let mut omitted = Vec::new();
    if let Some(cap) = inline_diff_bytes {
        for (i, a) in attempts.iter_mut().enumerate() {
            if a.diff().is_some_and(|d| d.len() > cap) {
                a.details.remove("diff");
                omitted.push(format!("attempts[{i}].diff"));
            }
        }
    }
    Ok(JobWithAttempts {
        job,
        attempts,
        omitted,
    })
}

/// A job listing's filters and paging as text, the way `GET /v1/jobs` and `kiln jobs list`
/// receive them. Field names are the API's query parameters.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only these states, comma-separated.
    pub state: Option<String>,
    /// Only jobs carrying this tag.
    pub tag: Option<String>,
    /// Created at or after this RFC 3339 time.
    pub created_after: Option<String>,
    /// Created before this RFC 3339 time.
    pub created_before: Option<String>,
    /// Only jobs of this pipeline.
    pub pipeline_id: Option<i64>,
    /// Page size (1 to [`MAX_PAGE`], default 50).
    pub limit: Option<i64>,
    /// The previous page's next cursor.
    pub cursor: Option<String>,
}

/// A listing ready to run: the filter, the cursor (`before` id) and the page size.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// Which jobs.
    pub filter: JobFilter,
    /// Only ids below this one.
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
}

impl ListParams {
    /// Checks and parses every field; a refusal names the field (`kind`, `state`, `limit`,
    /// `cursor`, `created_after`, `created_before`).
    pub fn parse(self) -> std::result::Result<ListRequest, ValidationError> {
        let kind = self
            .kind
            .map(|k| k.parse::<JobKind>().map_err(|e| ValidationError::new("kind", e)))
            .transpose()?;
        let states = match self.state {
            None => Vec::new(),
            Some(s) => s
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<JobState>()
                        .map_err(|e| ValidationError::new("state", e))
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                format!("{limit} is out of range 1..={MAX_PAGE}"),
            ));
        }
        let before = self
            .cursor
            .map(|c| {
                c.parse::<i64>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| ValidationError::new("cursor", "not a cursor from a previous page"))
            })
            .transpose()?;
        let filter = JobFilter {
            queue: self.queue,
            kind,
            states,
            tag: self.tag,
            created_after: parse_time("created_after", self.created_after)?,
            created_before: parse_time("created_before", self.created_before)?,
            pipeline_id: self.pipeline_id,
        };
        Ok(ListRequest {
            filter,
            before,
            limit,
        })
    }
}

fn parse_time(
    field: &str,
    value: Option<String>,
) -> std::result::Result<Option<DateTime<Utc>>, ValidationError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| ValidationError::new(field, format!("{v:?} is not an RFC 3339 time ({e})")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(queue: &str, state: Option<JobState>, count: i64) -> admin::QueueCount {
        admin::QueueCount {
            queue: queue.into(),
            state,
            count,
            paused: queue == "b",
            max_running: None,
        }
    }

    #[test]
    fn counts_group_by_queue_and_empty_queues_stay() {
        let out = group_counts(vec![
            count("a", Some(JobState::Available), 2),
            count("a", Some(JobState::Running), 1),
            count("b", None, 0),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].counts.get("available"), Some(&2));
        assert_eq!(out[0].counts.get("running"), Some(&1));
        assert!(out[1].paused && out[1].counts.is_empty());
    }

    #[test]
    fn list_params_name_the_refused_field() {
        let bad = |p: ListParams| p.parse().unwrap_err().field;
        assert_eq!(
            bad(ListParams {
                kind: Some("nope".into()),
                ..Default::default()
            }),
            "kind"
        );
        assert_eq!(
            bad(ListParams {
                state: Some("available,nope".into()),
                ..Default::default()
            }),
            "state"
        );
        assert_eq!(
            bad(ListParams {
                limit: Some(0),
                ..Default::default()
            }),
            "limit"
        );
        assert_eq!(
            bad(ListParams {
                cursor: Some("-3".into()),
                ..Default::default()
            }),
            "cursor"
        );
        assert_eq!(
            bad(ListParams {
                created_before: Some("yesterday".into()),
                ..Default::default()
            }),
            "created_before"
        );
        let ok = ListParams {
            state: Some("available, running".into()),
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(ok.filter.states, vec![JobState::Available, JobState::Running]);
        assert_eq!(ok.limit, 50);
    }
}
