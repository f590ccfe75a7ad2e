//! A provider's HTTP client: one call to one model, no retries (see [`crate::Llm`]).

use crate::config::{Api, ProviderConfig};
use crate::error::ProviderError;
use crate::secret::{ApiKey, MissingKey};
use crate::wire::{ChatRequest, ChatResponse};
use crate::{anthropic, http, openai};
use reqwest::header::{HeaderMap, HeaderValue};
use std::time::Duration;

/// A configured provider ready to call.
#[derive(Debug)]
pub struct ProviderClient {
    name: String,
    api: Api,
    url: String,
    key: Option<ApiKey>,
    timeout: Duration,
    http: reqwest::Client,
}

impl ProviderClient {
    /// Builds the client, reading the key from the provider's `api_key_env`.
    pub fn new(cfg: &ProviderConfig) -> Result<Self, MissingKey> {
        let key = ApiKey::from_env(cfg.api_key_env.as_deref())?;
        Ok(Self::with_key(cfg, key))
    }

    /// Builds the client with an explicit key.
    pub fn with_key(cfg: &ProviderConfig, key: Option<ApiKey>) -> Self {
        let base = cfg.base_url.trim_end_matches('/');
        let url = match cfg.api {
            Api::Openai => format!("{base}/chat/completions"),
            Api::Anthropic => format!("{base}/v1/messages"),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(cfg.timeout()))
            .user_agent(concat!("kiln-llm/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with static settings");
        ProviderClient {
            name: cfg.name.clone(),
            api: cfg.api,
            url,
            key,
            timeout: cfg.timeout(),
            http,
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one request to `model`.
    pub async fn send(
        &self,
        model: &str,
        req: &ChatRequest,
        tools: bool,
    ) -> Result<ChatResponse, ProviderError> {
        let mut headers = HeaderMap::new();
        let body = match self.api {
            Api::Openai => {
                if let Some(v) = self.key.as_ref().and_then(|k| k.header_value("Bearer ")) {
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
                openai::request_body(model, req, tools)
            }
            Api::Anthropic => {
                if let Some(v) = self.key.as_ref().and_then(|k| k.header_value("")) {
                    headers.insert("x-api-key", v);
                }
                headers.insert("anthropic-version", HeaderValue::from_static(anthropic::VERSION));
                anthropic::request_body(model, req, tools)
            }
        };
        let bytes = http::post_json(&self.http, &self.url, headers, &body, self.timeout).await?;
        match self.api {
            Api::Openai => openai::decode(&bytes),
            Api::Anthropic => anthropic::decode(&bytes),
        }
    }
}
