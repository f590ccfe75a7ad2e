//! One HTTP exchange with a provider: post JSON, read a bounded body, classify failures.

use crate::error::{classify, ProviderError};
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// Largest response body read from a provider.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

/// Posts `body` and returns the 2xx body bytes, or the classified error.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<Vec<u8>, ProviderError> {
    let send = async {
        let mut resp = http
            .post(url)
            .headers(headers)
            .json(body)
            .send()
            .await
            .map_err(|e| ProviderError::from_transport(e, timeout))?;
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ProviderError::from_transport(e, timeout))?
        {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(ProviderError::Malformed(format!(
                    "response body over {MAX_BODY} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(classify(status, &resp_headers, &bytes, SystemTime::now()))
        }
    };
    tokio::time::timeout(timeout, send)
        .await
        .unwrap_or(Err(ProviderError::Timeout(timeout)))
}
