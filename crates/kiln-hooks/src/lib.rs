//! Webhooks: the store (`kiln_hooks`, `kiln_hook_deliveries`), signature checks and the job
//! template a delivery turns into. The HTTP side is in
//! `kiln-api`'s `routes::hooks`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use kiln_queue::{JobSpec, NewJob, ValidationError};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::{PgExecutor, Row};

pub mod payload;

const INSERT_SQL: &str = include_str!("sql/hook_insert.sql");
const GET_SQL: &str = include_str!("sql/hook_get.sql");
const LIST_SQL: &str = include_str!("sql/hook_list.sql");
const UPDATE_SQL: &str = include_str!("sql/hook_update.sql");
const DELETE_SQL: &str = include_str!("sql/hook_delete.sql");
const CLAIM_SQL: &str = include_str!("sql/delivery_claim.sql");
const SEEN_SQL: &str = include_str!("sql/delivery_seen.sql");
const PRUNE_SQL: &str = include_str!("sql/delivery_prune.sql");

/// How far a signed delivery timestamp (`webhook-timestamp`) may be from the server's clock,
/// either way: older deliveries are replays (or stuck in a queue) and are refused.
pub const MAX_DELIVERY_AGE: std::time::Duration = std::time::Duration::from_secs(300);

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

/// A Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
/// the HMAC-SHA256 of `id.timestamp.body`, which signs the delivery's time too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `webhook-id`: the delivery id.
    pub id: String,
    /// `webhook-timestamp`: Unix seconds, as sent.
    pub timestamp: String,
    /// `webhook-signature`: space-separated `v1,<base64>` entries.
    pub signatures: String,
}

impl Signed {
    /// The three headers, when `webhook-signature` is present (missing companions read as
    /// empty, which then fails verification).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Signed> {
        let get = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().chars().take(1024).collect::<String>())
        };
        Some(Signed {
            signatures: get("webhook-signature")?,
            id: get("webhook-id").unwrap_or_default(),
            timestamp: get("webhook-timestamp").unwrap_or_default(),
        })
    }

    /// True when one of the `v1` signatures is the HMAC of `id.timestamp.body` under the
    /// secret (a `whsec_` secret is base64 of the key; any other is the key's bytes). The id
    /// must be 1 to 180 bytes and the timestamp all digits. Compared in constant time.
    pub fn verify(&self, secret: &str, body: &[u8]) -> bool {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        if self.id.is_empty()
            || self.id.len() > 180
            || self.timestamp.is_empty()
            || !self.timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
        let key = match secret.strip_prefix("whsec_") {
            Some(k) => match b64.decode(k) {
                Ok(k) => k,
                Err(_) => return false,
            },
            None => secret.as_bytes().to_vec(),
        };
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
            return false;
        };
        mac.update(self.id.as_bytes());
        mac.update(b".");
        mac.update(self.timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let mut ok = false;
        for entry in self.signatures.split(' ').take(16) {
            if let Some(sig) = entry.strip_prefix("v1,").and_then(|s| b64.decode(s).ok()) {
                ok |= mac.clone().verify_slice(&sig).is_ok();
            }
        }
        ok
    }

    /// `Ok` when the signed timestamp is within [`MAX_DELIVERY_AGE`] of `now`; else how many
    /// seconds away it is.
    pub fn check_age(&self, now: DateTime<Utc>) -> Result<(), i64> {
        let ts: i64 = self.timestamp.parse().unwrap_or(i64::MIN / 2);
        let away = now.timestamp().saturating_sub(ts).saturating_abs();
        if away <= MAX_DELIVERY_AGE.as_secs() as i64 {
            Ok(())
        } else {
            Err(away)
        }
    }

    /// The `webhook-signature` value for `id.timestamp.body` under `secret` (what a sender
    /// computes).
    pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = match secret.strip_prefix("whsec_") {
            Some(k) => b64.decode(k).unwrap_or_default(),
            None => secret.as_bytes().to_vec(),
        };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
    }
}

/// Deletes deliveries recorded more than `older_than` ago; returns how many. (A replay of a
/// pruned GitHub delivery still finds its job by idempotency key while the job is kept.)
pub async fn prune_deliveries<'e>(
    db: impl PgExecutor<'e>,
    older_than: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(PRUNE_SQL)
        .bind(older_than.as_secs_f64())
        .fetch_one(db)
        .await?;
    Ok(n as u64)
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
    let spec: JobSpec = kiln_wire::json::parse_object(&serde_json::to_vec(&value).expect("JSON serializes"))
        .map_err(|e| ValidationError::new(format!("job.{}", e.field()), e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_signatures_cover_id_time_and_body() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"commit":"abc"}"#;
        let secret = "0123456789abcdef-secret";
        let signed = |id: &str, ts: i64, sig: String| Signed {
            id: id.into(),
            timestamp: ts.to_string(),
            signatures: sig,
        };
        let good = signed("msg_1", ts, Signed::sign(secret, "msg_1", ts, body));
        assert!(good.verify(secret, body));
        assert!(good.check_age(now).is_ok());
        assert!(!good.verify(secret, br#"{"commit":"abd"}"#), "another body");
        assert!(!good.verify("another-secret-0123", body), "another secret");
        let moved = signed("msg_2", ts, Signed::sign(secret, "msg_1", ts, body));
        assert!(!moved.verify(secret, body), "another id");
        let several = signed(
            "msg_1",
            ts,
            format!("v1,AAAA {}", Signed::sign(secret, "msg_1", ts, body)),
        );
        assert!(several.verify(secret, body), "any listed signature may match");
        let old = signed("msg_1", ts - 301, Signed::sign(secret, "msg_1", ts - 301, body));
        assert!(old.verify(secret, body));
        assert_eq!(old.check_age(now), Err(301), "older than five minutes");
        let future = signed("msg_1", ts + 400, Signed::sign(secret, "msg_1", ts + 400, body));
        assert!(future.check_age(now).is_err(), "from the future");
        let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let s = signed("msg_3", ts, Signed::sign(whsec, "msg_3", ts, body));
        assert!(s.verify(whsec, body), "a whsec_ secret is base64 of the key");
    }
}
