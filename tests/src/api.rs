//! An in-process API server for tests: the real router on 127.0.0.1:0 over a test database,
//! with one token per scope, and a reqwest client.

use kiln_api::tokens::{self, Scope};
use reqwest::{Method, RequestBuilder};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// A running API server; stops when dropped.
pub struct ApiServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Client for requests.
    pub http: reqwest::Client,
    /// Token with `admin`.
    pub admin: String,
    /// Token with `jobs:read` only.
    pub reader: String,
    /// Token with `jobs:write` only.
    pub writer: String,
    shutdown: CancellationToken,
}

impl ApiServer {
    /// Starts the API with default limits over `pool`.
    pub async fn start(pool: &PgPool) -> Self {
        Self::start_with(pool, kiln_api::ApiConfig::default()).await
    }

    /// Starts the API with `config` over `pool`.
    pub async fn start_with(pool: &PgPool, config: kiln_api::ApiConfig) -> Self {
        let mint = |scope: Scope| async move {
            tokens::create(pool, &format!("test {scope}"), &[scope])
                .await
                .expect("create token")
                .token
        };
        let admin = mint(Scope::Admin).await;
        let reader = mint(Scope::JobsRead).await;
        let writer = mint(Scope::JobsWrite).await;
        let shutdown = CancellationToken::new();
        let state = kiln_api::AppState::new(pool.clone(), config, shutdown.child_token());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(kiln_api::serve(
            listener,
            state,
            shutdown.clone().cancelled_owned(),
        ));
        ApiServer {
            base,
            http: reqwest::Client::new(),
            admin,
            reader,
            writer,
            shutdown,
        }
    }

    /// A request to `path` with `token` (if any).
    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request and returns its status and JSON body (`null` when empty or not JSON).
    pub async fn call(&self, req: RequestBuilder) -> (u16, serde_json::Value) {
        let res = req.send().await.expect("send request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("read body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// POST `body` as JSON with the admin token.
    pub async fn post_admin(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(self.req(Method::POST, path, Some(&self.admin)).json(&body))
            .await
    }

    /// GET with the admin token.
    pub async fn get_admin(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(self.req(Method::GET, path, Some(&self.admin))).await
    }

    /// The text of `GET /metrics` (no token needed).
    pub async fn metrics(&self) -> String {
        let res = self.http.get(format!("{}/metrics", self.base)).send().await;
        res.expect("GET /metrics").text().await.expect("metrics body")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
