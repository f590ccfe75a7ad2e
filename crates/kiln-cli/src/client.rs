//! A client of Kiln's HTTP API (`--api URL` / `KILN_API_URL`), used by the CLI's job and
//! queue commands. Errors carry the API's message and the field it names.

use anyhow::{bail, Context};
use futures::StreamExt;
use kiln_queue::logs::LogRecord;
use kiln_wire::jobs::{BatchResponse, EnqueuedJob, JobDetail, JobDiff, JobPage, JobStateReply};
use kiln_wire::logs::LogPage;
use kiln_wire::pipelines::{SubmittedPipeline, ValidateRequest};
use kiln_wire::queues::{QueueList, QueueSettingsView};
use kiln_wire::ErrorBody;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

/// An API endpoint and the token to present.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`) using `token`.
    pub fn new(base: &str, token: String) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!("--api {base:?}: expected an http:// URL (put TLS in front of Kiln with a proxy)");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(ApiClient { base, token, http })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        let res = req
            .send()
            .await
            .with_context(|| format!("reach the Kiln API at {}", self.base))?;
        let res = check(res).await?;
        res.json().await.context("decode the API's answer")
    }

    /// `POST /v1/jobs` with a `JobSpec` JSON body.
    pub async fn enqueue(
        &self,
        job: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<EnqueuedJob> {
        let mut req = self.request(Method::POST, "/v1/jobs").json(job);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    /// `POST /v1/jobs/batch`.
    pub async fn enqueue_batch(&self, jobs: &[serde_json::Value]) -> anyhow::Result<BatchResponse> {
        self.send(
            self.request(Method::POST, "/v1/jobs/batch")
                .json(&serde_json::json!({"jobs": jobs})),
        )
        .await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: i64) -> anyhow::Result<JobDetail> {
        self.send(self.request(Method::GET, &format!("/v1/jobs/{id}")))
            .await
    }

    /// `GET /v1/jobs?…`.
    pub async fn list(&self, query: &[(&str, String)]) -> anyhow::Result<JobPage> {
        self.send(self.request(Method::GET, "/v1/jobs").query(query))
            .await
    }

    /// `GET /v1/events?…`.
    pub async fn events(&self, query: &[(&str, String)]) -> anyhow::Result<kiln_wire::events::EventPage> {
        self.send(self.request(Method::GET, "/v1/events").query(query))
            .await
    }

    /// `GET /v1/jobs/{id}/logs`.
    pub async fn logs(&self, id: i64, after: Option<&str>) -> anyhow::Result<LogPage> {
        let mut req = self.request(Method::GET, &format!("/v1/jobs/{id}/logs"));
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        self.send(req).await
    }

    /// Follows `GET /v1/jobs/{id}/logs/stream`, calling `on_chunk` for each chunk; returns
    /// the job's final state and what went past the live-log cap.
    pub async fn follow_logs(
        &self,
        id: i64,
        mut on_chunk: impl FnMut(&LogRecord),
    ) -> anyhow::Result<(String, Vec<kiln_queue::logs::LogDrops>)> {
        let res = self
            .request(Method::GET, &format!("/v1/jobs/{id}/logs/stream"))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("reach the Kiln API at {}", self.base))?;
        let res = check(res).await?;
        let mut body = res.bytes_stream();
        let mut buf = String::new();
        let mut event = String::new();
        let mut data = String::new();
        while let Some(bytes) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&bytes.context("read the event stream")?));
            while let Some(nl) = buf.find('\n') {
                let line: String = buf.drain(..=nl).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    match event.as_str() {
                        "log" => on_chunk(&serde_json::from_str(&data).context("decode a log event")?),
                        "end" => {
                            let v: serde_json::Value = serde_json::from_str(&data)?;
                            let drops = serde_json::from_value(v["dropped"].clone()).unwrap_or_default();
                            return Ok((v["state"].as_str().unwrap_or("unknown").to_owned(), drops));
                        }
                        _ => {}
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
        bail!("the log stream ended before the job did")
    }

    /// `GET /v1/jobs/{id}/diff`.
    pub async fn diff(&self, id: i64) -> anyhow::Result<JobDiff> {
        self.send(self.request(Method::GET, &format!("/v1/jobs/{id}/diff")))
            .await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: i64) -> anyhow::Result<JobStateReply> {
        self.send(self.request(Method::POST, &format!("/v1/jobs/{id}/cancel")))
            .await
    }

    /// `POST /v1/jobs/{id}/retry`.
    pub async fn retry(&self, id: i64) -> anyhow::Result<JobStateReply> {
        self.send(self.request(Method::POST, &format!("/v1/jobs/{id}/retry")))
            .await
    }

    /// `POST /v1/pipelines/validate`.
    pub async fn submit_validation(&self, req: &ValidateRequest) -> anyhow::Result<SubmittedPipeline> {
        self.send(self.request(Method::POST, "/v1/pipelines/validate").json(req))
            .await
    }

    /// `POST /v1/pipelines` (a generation pipeline request): the 202 reply.
    pub async fn submit_pipeline(&self, req: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.send(self.request(Method::POST, "/v1/pipelines").json(req))
            .await
    }

    /// `GET /v1/pipelines/{id}/wait?timeout_secs=N`: the pipeline (with its `summary`) once
    /// finished or after `secs`, whichever is first.
    pub async fn wait_pipeline(&self, id: i64, secs: u64) -> anyhow::Result<serde_json::Value> {
        self.send(
            self.request(Method::GET, &format!("/v1/pipelines/{id}/wait"))
                .query(&[("timeout_secs", secs)])
                .timeout(std::time::Duration::from_secs(secs + 30)),
        )
        .await
    }

    /// `GET /v1/costs` with `group_by`, `since` and `until`.
    pub async fn costs(&self, query: &[(&str, String)]) -> anyhow::Result<kiln_wire::costs::CostReport> {
        self.send(self.request(Method::GET, "/v1/costs").query(query))
            .await
    }

    /// `GET /v1/pipelines/{id}/workspace`: the tar of the workspace the pipeline ends with.
    pub async fn pipeline_workspace(&self, id: i64) -> anyhow::Result<Vec<u8>> {
        let res = self
            .request(Method::GET, &format!("/v1/pipelines/{id}/workspace"))
            .send()
            .await
            .with_context(|| format!("reach the Kiln API at {}", self.base))?;
        let bytes = check(res).await?.bytes().await.context("read the workspace")?;
        Ok(bytes.to_vec())
    }

    /// `GET /v1/queues`.
    pub async fn queues(&self) -> anyhow::Result<QueueList> {
        self.send(self.request(Method::GET, "/v1/queues")).await
    }

    /// `POST /v1/queues/{name}/pause` or `/resume`.
    pub async fn set_paused(&self, name: &str, paused: bool) -> anyhow::Result<QueueSettingsView> {
        let action = if paused { "pause" } else { "resume" };
        self.send(self.request(Method::POST, &format!("/v1/queues/{name}/{action}")))
            .await
    }
}

/// Turns a non-2xx answer into an error quoting the API's message and field.
async fn check(res: Response) -> anyhow::Result<Response> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let text = res.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => match e.field {
            Some(f) => bail!("the API refused the request ({status}): {} [field: {f}]", e.error),
            None => bail!("the API refused the request ({status}): {}", e.error),
        },
        Err(_) => bail!("the API answered {status}: {text}"),
    }
}
