//! Webhooks: the store (`kiln_hooks`, `kiln_hook_deliveries`), signature checks and the job
//! template a delivery turns into. The HTTP side is in `routes::hooks`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use kiln_queue::{JobSpec, NewJob, ValidationError};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::{PgExecutor, Row};

const INSERT_SQL: &str = include_str!("sql/hook_insert.sql");
const GET_SQL: &str = include_str!("sql/hook_get.sql");
const LIST_SQL: &str = include_str!("sql/hook_list.sql");
const UPDATE_SQL: &str = include_str!("sql/hook_update.sql");
const DELETE_SQL: &str = include_str!("sql/hook_delete.sql");
const CLAIM_SQL: &str = include_str!("sql/delivery_claim.sql");
const SEEN_SQL: &str = include_str!("sql/delivery_seen.sql");

/// GitHub events a hook may react to.
pub const GITHUB_EVENTS: [&str; 2] = ["push", "pull_request"];
/// Placeholders substituted in a template's strings.
pub const PLACEHOLDERS: [&str; 6] = ["repository", "commit", "ref", "event", "delivery", "hook"];

/// A stored webhook.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Name (the `{hook}` of the delivery URLs).
    pub name: String,
    /// HMAC-SHA256 key deliveries are signed with.
    pub secret: String,
    /// The job to enqueue, a `JobSpec` with placeholders.
    pub template: serde_json::Value,
    /// GitHub events it reacts to.
    pub events: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
}

fn hook_from_row(r: &sqlx::postgres::PgRow) -> Hook {
    Hook {
        name: r.get("name"),
        secret: r.get("secret"),
        template: r.get::<sqlx::types::Json<serde_json::Value>, _>("template").0,
        events: r.get("events"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// What a delivery is about: the values substituted into the template.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trigger {
    /// `owner/name`.
    pub repository: String,
    /// Commit SHA.
    pub commit: String,
    /// Git ref (`refs/heads/main`, or a PR's head branch).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Event name (`push`, `pull_request`, or the generic hook's `X-Kiln-Event`).
    pub event: String,
    /// Delivery id.
    pub delivery: String,
}

/// True when `signature` (`sha256=<hex>`, as in `X-Hub-Signature-256`) is the HMAC-SHA256 of
/// `body` under `secret`. The comparison runs in constant time.
pub fn verify_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `sha256=<hex>` of `body` under `secret`: what senders put in `X-Hub-Signature-256`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn substitute(value: &serde_json::Value, hook: &str, t: &Trigger) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains("{{") => {
            let mut out = s.clone();
            for (name, v) in [
                ("repository", t.repository.as_str()),
                ("commit", t.commit.as_str()),
                ("ref", t.git_ref.as_str()),
                ("event", t.event.as_str()),
                ("delivery", t.delivery.as_str()),
                ("hook", hook),
            ] {
                out = out.replace(&format!("{{{{{name}}}}}"), v);
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, hook, t)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, hook, t)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The job `template` makes for trigger `t`; errors name the field as `job.<field>`. Its
/// idempotency key is `hook:<name>:<delivery>` (templates may not set one).
pub fn render(hook: &str, template: &serde_json::Value, t: &Trigger) -> Result<NewJob, ValidationError> {
    let value = substitute(template, hook, t);
    let spec: JobSpec = crate::extract::parse_json(&serde_json::to_vec(&value).expect("JSON serializes"))
        .map_err(|e| ValidationError::new(format!("job.{}", e.field.unwrap_or_default()), e.message))?;
    let mut job =
        kiln_kinds::new_job(spec).map_err(|e| ValidationError::new(format!("job.{}", e.field), e.message))?;
    if job.idempotency_key.is_some() {
        return Err(ValidationError::new(
            "job.idempotency_key",
            "is set by the hook (hook:<name>:<delivery>); leave it out",
        ));
    }
    let key = format!("hook:{hook}:{}", t.delivery);
    job.idempotency_key = Some(key.chars().take(kiln_queue::spec::MAX_KEY_LEN).collect());
    Ok(job)
}

/// Checks a template by rendering it with sample values.
pub fn check_template(hook: &str, template: &serde_json::Value) -> Result<(), ValidationError> {
    let sample = Trigger {
        repository: "owner/repo".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        git_ref: "refs/heads/main".into(),
        event: "push".into(),
        delivery: "00000000-0000-0000-0000-000000000000".into(),
    };
    render(hook, template, &sample).map(|_| ())
}

/// Stores a new hook; `Ok(None)` when the name is taken.
pub async fn create<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    secret: &str,
    template: &serde_json::Value,
    events: &[String],
) -> Result<Option<Hook>, sqlx::Error> {
    match sqlx::query(INSERT_SQL)
        .bind(name)
        .bind(secret)
        .bind(sqlx::types::Json(template))
        .bind(events)
        .fetch_one(db)
        .await
    {
        Ok(row) => Ok(Some(hook_from_row(&row))),
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505") => Ok(None),
        Err(e) => Err(e),
    }
}

/// One hook by name.
pub async fn get<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<Option<Hook>, sqlx::Error> {
    Ok(sqlx::query(GET_SQL)
        .bind(name)
        .fetch_optional(db)
        .await?
        .map(|r| hook_from_row(&r)))
}

/// Every hook, by name.
pub async fn list<'e>(db: impl PgExecutor<'e>) -> Result<Vec<Hook>, sqlx::Error> {
    Ok(sqlx::query(LIST_SQL)
        .fetch_all(db)
        .await?
        .iter()
        .map(hook_from_row)
        .collect())
}

/// Changes the given fields of a hook; `None` when there is no such hook.
pub async fn update<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    secret: Option<&str>,
    template: Option<&serde_json::Value>,
    events: Option<&[String]>,
) -> Result<Option<Hook>, sqlx::Error> {
    Ok(sqlx::query(UPDATE_SQL)
        .bind(name)
        .bind(secret)
        .bind(template.map(sqlx::types::Json))
        .bind(events)
        .fetch_optional(db)
        .await?
        .map(|r| hook_from_row(&r)))
}

/// Deletes a hook; false when there was none.
pub async fn delete<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(DELETE_SQL)
        .bind(name)
        .fetch_optional(db)
        .await?
        .is_some())
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// A job was enqueued.
    Enqueued(i64),
    /// The delivery was seen before; the job it enqueued then.
    Duplicate(Option<i64>),
}

/// Enqueues the job of delivery `t.delivery` of `hook` unless that delivery was seen before.
///
/// The job's idempotency key is `hook:<name>:<delivery>`, so the enqueue itself is the
/// atomic dedupe: concurrent twins of a delivery get the same job, and only one of them
/// `created` it. The delivery is then recorded (for the record and as a fast path that
/// outlives the job's pruning); a crash between the two leaves a state the retry resolves
/// the same way.
pub async fn deliver(pool: &sqlx::PgPool, hook: &Hook, t: &Trigger) -> Result<Delivered, DeliveryError> {
    let seen: Option<Option<i64>> = sqlx::query_scalar(SEEN_SQL)
        .bind(&hook.name)
        .bind(&t.delivery)
        .fetch_optional(pool)
        .await
        .map_err(kiln_queue::QueueError::db("look up delivery"))?;
    if let Some(job) = seen {
        return Ok(Delivered::Duplicate(job));
    }
    let job = render(&hook.name, &hook.template, t).map_err(DeliveryError::Template)?;
    let out = kiln_queue::enqueue(pool, &job).await?;
    sqlx::query(CLAIM_SQL)
        .bind(&hook.name)
        .bind(&t.delivery)
        .bind(&t.event)
        .bind(out.id)
        .execute(pool)
        .await
        .map_err(kiln_queue::QueueError::db("record delivery"))?;
    Ok(if out.created {
        Delivered::Enqueued(out.id)
    } else {
        Delivered::Duplicate(Some(out.id))
    })
}

/// Why a delivery could not be turned into a job.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The template, filled with this delivery's values, is not a valid job.
    #[error(transparent)]
    Template(ValidationError),
    /// The queue refused or failed.
    #[error(transparent)]
    Queue(#[from] kiln_queue::QueueError),
}
