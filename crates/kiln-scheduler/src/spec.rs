//! What a caller asks for (`ScheduleSpec`, `SchedulePatch`), and its validation: every
//! refusal names the field (`cron`, `timezone`, `job.kind`, …).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kiln_queue::{JobSpec, NewJob, ValidationError};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// A schedule as declared in `workers.toml` (`[[schedules]]`) or sent to the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique name (`[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`).
    pub name: String,
    /// Cron expression: `sec min hour day-of-month month day-of-week [year]`, or the usual
    /// five fields (`min hour dom month dow`, seconds = 0), or `@hourly`, `@daily`, ….
    pub cron: String,
    /// IANA time zone the expression is read in (`Europe/Paris`); default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The job each tick enqueues (its `run_at` and `idempotency_key` are set per tick).
    pub job: JobSpec,
    /// Off switch; default on.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// After ticks were missed while no scheduler ran, fire one run for the latest of them
    /// (default: missed ticks are not replayed).
    #[serde(default)]
    pub catch_up: bool,
}

fn utc() -> String {
    "UTC".into()
}
fn yes() -> bool {
    true
}

/// A change to an existing schedule; fields left out stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    /// New cron expression.
    pub cron: Option<String>,
    /// New time zone.
    pub timezone: Option<String>,
    /// New job template.
    pub job: Option<JobSpec>,
    /// Turn on or off.
    pub enabled: Option<bool>,
    /// Ask for (or stop asking for) a catch-up run.
    pub catch_up: Option<bool>,
}

impl SchedulePatch {
    /// `spec` with this patch applied.
    pub fn apply(&self, spec: &ScheduleSpec) -> ScheduleSpec {
        ScheduleSpec {
            name: spec.name.clone(),
            cron: self.cron.clone().unwrap_or_else(|| spec.cron.clone()),
            timezone: self.timezone.clone().unwrap_or_else(|| spec.timezone.clone()),
            job: self.job.clone().unwrap_or_else(|| spec.job.clone()),
            enabled: self.enabled.unwrap_or(spec.enabled),
            catch_up: self.catch_up.unwrap_or(spec.catch_up),
        }
    }
}

/// A parsed cron expression in its time zone: the ticks of a schedule.
#[derive(Debug, Clone)]
pub struct Ticks {
    schedule: cron::Schedule,
    tz: Tz,
}

impl Ticks {
    /// Parses `expr` in `timezone`; errors name `cron` or `timezone`.
    pub fn parse(expr: &str, timezone: &str) -> Result<Ticks, ValidationError> {
        let tz = Tz::from_str(timezone).map_err(|_| {
            ValidationError::new(
                "timezone",
                format!("{timezone:?} is not an IANA time zone name (e.g. UTC, Europe/Paris)"),
            )
        })?;
        let trimmed = expr.trim();
        let fields = trimmed.split_whitespace().count();
        let full = match fields {
            _ if trimmed.starts_with('@') => trimmed.to_owned(),
            5 => format!("0 {trimmed}"),
            6 | 7 => trimmed.to_owned(),
            n => {
                return Err(ValidationError::new(
                    "cron",
                    format!(
                        "{expr:?} has {n} fields; expected 5 (min hour dom month dow), \
                         6 (sec min hour dom month dow) or 7 (… year)"
                    ),
                ))
            }
        };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|e| ValidationError::new("cron", format!("{expr:?} is not a cron expression: {e}")))?;
        let ticks = Ticks { schedule, tz };
        if ticks.next_after(Utc::now()).is_none() {
            return Err(ValidationError::new(
                "cron",
                format!("{expr:?} never fires again"),
            ));
        }
        Ok(ticks)
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Ticks in `(after, until]`, oldest first, at most `limit` of them.
    pub fn between(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        self.schedule
            .after(&after.with_timezone(&self.tz))
            .map(|d| d.with_timezone(&Utc))
            .take_while(|d| *d <= until)
            .take(limit)
            .collect()
    }
}

/// A schedule that passed validation, ready to store and fire.
#[derive(Debug, Clone)]
pub struct ValidSchedule {
    /// The request, as stored.
    pub spec: ScheduleSpec,
    /// Its ticks.
    pub ticks: Ticks,
}

impl ScheduleSpec {
    /// Checks every field; the error names the first bad one (`job.…` for the template).
    pub fn validate(self) -> Result<ValidSchedule, ValidationError> {
        if !valid_name(&self.name) {
            return Err(ValidationError::new(
                "name",
                "must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
            ));
        }
        let ticks = Ticks::parse(&self.cron, &self.timezone)?;
        template_job(&self.job)?;
        Ok(ValidSchedule { spec: self, ticks })
    }
}

/// Builds the job a tick enqueues from `template`; refuses fields the scheduler sets.
pub fn template_job(template: &JobSpec) -> Result<NewJob, ValidationError> {
    if template.run_at.is_some() {
        return Err(ValidationError::new(
            "job.run_at",
            "is set by the scheduler to each tick's time; leave it out",
        ));
    }
    if template.idempotency_key.is_some() {
        return Err(ValidationError::new(
            "job.idempotency_key",
            "is set by the scheduler per tick (schedule:NAME:TICK); leave it out",
        ));
    }
    if template.tags.len() >= kiln_queue::spec::MAX_TAGS {
        return Err(ValidationError::new(
            "job.tags",
            format!(
                "at most {} tags (the scheduler adds schedule:NAME)",
                kiln_queue::spec::MAX_TAGS - 1
            ),
        ));
    }
    kiln_kinds::new_job(template.clone()).map_err(|mut e| {
        e.field = format!("job.{}", e.field);
        e
    })
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: serde_json::Value) -> Result<ValidSchedule, ValidationError> {
        serde_json::from_value::<ScheduleSpec>(v).unwrap().validate()
    }

    #[test]
    fn refusals_name_their_field() {
        let job = json!({"kind": "test"});
        let cases = [
            (json!({"name": "a b", "cron": "* * * * * *", "job": job}), "name"),
            (json!({"name": "", "cron": "* * * * * *", "job": job}), "name"),
            (json!({"name": "n", "cron": "every minute", "job": job}), "cron"),
            (json!({"name": "n", "cron": "61 * * * * *", "job": job}), "cron"),
            (json!({"name": "n", "cron": "* * *", "job": job}), "cron"),
            (
                json!({"name": "n", "cron": "0 0 0 1 1 * 2001", "job": job}),
                "cron",
            ),
            (
                json!({"name": "n", "cron": "* * * * * *", "timezone": "Mars/Olympus", "job": job}),
                "timezone",
            ),
            (
                json!({"name": "n", "cron": "* * * * * *", "job": {"kind": "compile"}}),
                "job.kind",
            ),
            (
                json!({"name": "n", "cron": "* * * * * *", "job": {"kind": "test", "priority": 500}}),
                "job.priority",
            ),
            (
                json!({"name": "n", "cron": "* * * * * *", "job": {"kind": "test", "run_at": "2030-01-01T00:00:00Z"}}),
                "job.run_at",
            ),
            (
                json!({"name": "n", "cron": "* * * * * *", "job": {"kind": "test", "idempotency_key": "k"}}),
                "job.idempotency_key",
            ),
        ];
        for (input, field) in cases {
            let err = check(input.clone()).expect_err(&input.to_string());
            assert_eq!(err.field, field, "{input}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<ScheduleSpec>(
            json!({"name": "n", "cron": "* * * * * *", "job": {"kind": "test"}, "tz": "UTC"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tz"), "{err}");
        let err = serde_json::from_value::<SchedulePatch>(json!({"enable": true})).unwrap_err();
        assert!(err.to_string().contains("enable"), "{err}");
    }

    #[test]
    fn five_and_six_field_expressions_and_time_zones() {
        let t0: DateTime<Utc> = "2026-03-01T10:00:30Z".parse().unwrap();
        let every_minute = Ticks::parse("* * * * *", "UTC").unwrap();
        assert_eq!(
            every_minute.next_after(t0).unwrap().to_rfc3339(),
            "2026-03-01T10:01:00+00:00"
        );
        let every_second = Ticks::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second
                .between(t0, t0 + chrono::Duration::seconds(3), 10)
                .len(),
            3
        );
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = Ticks::parse("0 0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            paris.next_after(t0).unwrap().to_rfc3339(),
            "2026-03-02T08:00:00+00:00"
        );
        assert!(Ticks::parse("@hourly", "UTC").is_ok());
    }
}
