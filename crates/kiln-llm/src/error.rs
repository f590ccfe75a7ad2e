//! Provider errors, classified by the providers' own rules, and the wait a 429 asks for.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::time::{Duration, SystemTime};

/// What went wrong with one HTTP call to a provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 429: retry after the wait it asked for (if any).
    #[error("rate limited (429): {message}")]
    RateLimited {
        /// From `retry-after` or the provider's rate-limit reset headers.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// 529 or an `overloaded_error`.
    #[error("overloaded ({status}): {message}")]
    Overloaded {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 5xx (and 408/409).
    #[error("server error ({status}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// No complete answer within the provider's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, or dropped mid-response.
    #[error("connection failed: {0}")]
    Connection(String),
    /// A 2xx whose body is not the API's JSON.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// 400/401/403/404 and other 4xx: the request itself is refused; never retried.
    #[error("refused ({status} {kind}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The provider's error type or code.
        kind: String,
        /// The provider's message.
        message: String,
    },
    /// Spend limit or quota exhausted (`enforced_spend_limit_reached`, `insufficient_quota`):
    /// permanent, never retried.
    #[error("quota exhausted ({status} {kind}): {message}")]
    QuotaExhausted {
        /// HTTP status.
        status: u16,
        /// The provider's error type or code.
        kind: String,
        /// The provider's message.
        message: String,
    },
}

impl ProviderError {
    /// Whether trying the same model again may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ProviderError::Refused { .. } | ProviderError::QuotaExhausted { .. }
        )
    }

    /// The metrics outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Overloaded { .. } => "overloaded",
            ProviderError::Server { .. } => "server_error",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Connection(_) => "connection",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::Refused { .. } => "refused",
            ProviderError::QuotaExhausted { .. } => "quota",
        }
    }

    /// From a reqwest failure (connect, timeout, body read).
    pub(crate) fn from_transport(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            ProviderError::Timeout(timeout)
        } else if e.is_decode() {
            ProviderError::Malformed(e.without_url().to_string())
        } else {
            // `without_url`: the URL is harmless, but keep errors free of anything request-derived.
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            ProviderError::Connection(msg)
        }
    }
}

/// Longest provider message kept in an error.
const MAX_MESSAGE: usize = 1000;

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_MESSAGE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `(kind, message)` from either API's error JSON (`{"error": {"type"|"code", "message"}}`),
/// or the raw body when it is not JSON.
fn error_fields(body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    match err {
        Some(serde_json::Value::Object(o)) => {
            let s = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let kind = [s("code"), s("type")]
                .into_iter()
                .find(|k| !k.is_empty())
                .unwrap_or_default();
            (bounded(&kind), bounded(&s("message")))
        }
        Some(serde_json::Value::String(m)) => (String::new(), bounded(m)),
        _ => (String::new(), bounded(&String::from_utf8_lossy(body))),
    }
}

fn is_quota(kind: &str, all_kinds: &str, message: &str) -> bool {
    const KINDS: [&str; 3] = [
        "insufficient_quota",
        "enforced_spend_limit_reached",
        "billing_error",
    ];
    let m = message.to_ascii_lowercase();
    KINDS.contains(&kind)
        || KINDS.iter().any(|k| all_kinds.contains(k))
        || m.contains("spend limit")
        || m.contains("specified api usage limits")
        || m.contains("exceeded your current quota")
}

/// Classifies a non-2xx answer.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], now: SystemTime) -> ProviderError {
    let (kind, message) = error_fields(body);
    let all_kinds = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_string();
    let code = status.as_u16();
    if is_quota(&kind, &all_kinds, &message) {
        return ProviderError::QuotaExhausted {
            status: code,
            kind,
            message,
        };
    }
    match code {
        429 => ProviderError::RateLimited {
            retry_after: retry_after(headers, now),
            message,
        },
        529 => ProviderError::Overloaded {
            status: code,
            message,
        },
        _ if kind == "overloaded_error" => ProviderError::Overloaded {
            status: code,
            message,
        },
        408 | 409 | 500..=599 => ProviderError::Server {
            status: code,
            message,
        },
        _ => ProviderError::Refused {
            status: code,
            kind,
            message,
        },
    }
}

/// The wait a 429 asks for: `retry-after-ms`, `retry-after` (seconds or an HTTP date), else
/// the latest of the exhausted `x-ratelimit-reset-*` (OpenAI durations like `6m0s`) or
/// `anthropic-ratelimit-*-reset` (RFC 3339 times) headers.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            if secs.is_finite() && secs >= 0.0 {
                return Some(Duration::from_secs_f64(secs.min(86_400.0)));
            }
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    let mut exhausted = Vec::new();
    let mut all = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        let Ok(value) = value.to_str() else { continue };
        let (wait, remaining_name) = if let Some(what) = name.strip_prefix("x-ratelimit-reset-") {
            (parse_go_duration(value), format!("x-ratelimit-remaining-{what}"))
        } else if let Some(what) = name
            .strip_prefix("anthropic-ratelimit-")
            .and_then(|r| r.strip_suffix("-reset"))
        {
            let wait = DateTime::parse_from_rfc3339(value.trim()).ok().map(|t| {
                let at: SystemTime = t.with_timezone(&Utc).into();
                at.duration_since(now).unwrap_or(Duration::ZERO)
            });
            (wait, format!("anthropic-ratelimit-{what}-remaining"))
        } else {
            continue;
        };
        let Some(wait) = wait else { continue };
        all.push(wait);
        if get(&remaining_name) == Some("0") {
            exhausted.push(wait);
        }
    }
    let pick = if exhausted.is_empty() { all } else { exhausted };
    pick.into_iter().max()
}

/// Parses OpenAI's reset durations: `20ms`, `1s`, `6m0s`, `1h2m3.5s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total < 86_400.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_seconds_date_and_reset_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(12))
        );
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(360)));
        let at = DateTime::<Utc>::from(now + Duration::from_secs(3)).to_rfc3339();
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", &at),
        ]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers(&[]), now), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn classification_follows_the_providers_rules() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &none, quota, now),
            ProviderError::QuotaExhausted { status: 429, .. }
        ));
        let spend =
            br#"{"type":"error","error":{"type":"enforced_spend_limit_reached","message":"monthly limit"}}"#;
        assert!(!classify(StatusCode::BAD_REQUEST, &none, spend, now).is_retryable());
        let overloaded = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let e = classify(StatusCode::from_u16(529).unwrap(), &none, overloaded, now);
        assert!(matches!(e, ProviderError::Overloaded { status: 529, .. }) && e.is_retryable());
        let auth =
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        let e = classify(StatusCode::UNAUTHORIZED, &none, auth, now);
        assert_eq!(
            e,
            ProviderError::Refused {
                status: 401,
                kind: "authentication_error".into(),
                message: "invalid x-api-key".into()
            }
        );
        let e = classify(StatusCode::BAD_GATEWAY, &none, b"<html>bad gateway</html>", now);
        assert!(e.is_retryable() && e.to_string().contains("bad gateway"));
    }
}
