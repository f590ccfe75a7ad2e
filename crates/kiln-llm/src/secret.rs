//! API keys: read from the environment, sent only in request headers (marked sensitive),
//! never printed. The type has no `Display`, `Serialize` or `Clone` into other types, and its
//! `Debug` prints nothing of the key.

use std::fmt;

/// A provider API key.
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// Reads the key from `var`; `Ok(None)` when no variable is configured.
    pub fn from_env(var: Option<&str>) -> Result<Option<ApiKey>, MissingKey> {
        let Some(var) = var else { return Ok(None) };
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(ApiKey(v))),
            _ => Err(MissingKey(var.to_string())),
        }
    }

    /// The key for a request header.
    pub(crate) fn header_value(&self, prefix: &str) -> Option<reqwest::header::HeaderValue> {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("{prefix}{}", self.0)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The configured key variable is unset or empty (names the variable, never a value).
#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} (api_key_env) is not set")]
pub struct MissingKey(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_headers_hide_the_key() {
        let k = ApiKey::new("sk-very-secret");
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
        let h = k.header_value("Bearer ").unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("very-secret"));
    }
}
