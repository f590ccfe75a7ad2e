//! The payload of `notification` jobs: one event delivered to one endpoint.

use kiln_queue::JobKind;
use serde::{Deserialize, Serialize};

use crate::{Kind, Payload, PayloadError};

/// Longest URL or address accepted.
const MAX_TARGET_BYTES: usize = 2048;

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Endpoint {
    /// A Standard Webhooks receiver (signed `webhook-*` headers).
    Webhook {
        /// `https://…` (`http://` only where configuration allows it).
        url: String,
    },
    /// A Slack incoming webhook.
    Slack {
        /// The incoming-webhook URL.
        url: String,
    },
    /// Email through the configured SMTP relay.
    Email {
        /// Recipient addresses.
        to: Vec<String>,
    },
}

/// What a notification job delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationPayload {
    /// The event delivered (an id of the job-event outbox).
    pub event_id: i64,
    /// Where it goes.
    pub endpoint: Endpoint,
}

impl Payload for NotificationPayload {
    fn check(&self) -> Result<(), PayloadError> {
        if self.event_id <= 0 {
            return Err(PayloadError::new("event_id", "event ids are positive"));
        }
        match &self.endpoint {
            Endpoint::Webhook { url } | Endpoint::Slack { url } => check_url("endpoint.url", url),
            Endpoint::Email { to } => {
                if to.is_empty() || to.len() > 50 {
                    return Err(PayloadError::new("endpoint.to", "between 1 and 50 addresses"));
                }
                for (i, addr) in to.iter().enumerate() {
                    let ok = addr.len() <= 254
                        && addr
                            .split_once('@')
                            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
                        && !addr
                            .chars()
                            .any(|c| c.is_whitespace() || c.is_control() || c == ',');
                    if !ok {
                        return Err(PayloadError::new(
                            format!("endpoint.to[{i}]"),
                            "not an email address",
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

fn check_url(path: &str, url: &str) -> Result<(), PayloadError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.len() > MAX_TARGET_BYTES || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(PayloadError::new(
            path,
            format!("must be an http(s) URL of at most {MAX_TARGET_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The `notification` kind.
#[derive(Debug, Clone, Copy)]
pub struct Notification;

impl Kind for Notification {
    type Payload = NotificationPayload;
    const KINDS: &'static [JobKind] = &[JobKind::Notification];
}
