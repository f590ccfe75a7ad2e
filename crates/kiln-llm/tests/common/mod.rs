//! Loopback servers that speak the OpenAI chat completions and Anthropic Messages protocols,
//! with their real success bodies, error bodies and headers, replaying a script of replies.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted reply.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// A status with headers and a raw body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// 200 whose body is cut off and then the connection dropped.
    Drop,
    /// 200 with a body that is not JSON.
    Malformed,
    /// Waits, then replies.
    Delay(Duration, Box<Reply>),
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
    seen: Vec<Seen>,
}

/// A fake provider on 127.0.0.1.
#[derive(Clone)]
pub struct Fake {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
                let st = st.clone();
                async move {
                    let reply = {
                        let mut s = st.lock().unwrap();
                        s.seen.push(Seen {
                            path: uri.path().to_string(),
                            headers,
                            body: serde_json::from_str(&body).unwrap_or(Value::Null),
                        });
                        s.script
                            .pop_front()
                            .or_else(|| s.fallback.clone())
                            .unwrap_or(Reply::Status(500, vec![], "script exhausted".into()))
                    };
                    respond(reply).await
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { addr, state }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, r: Reply) -> &Self {
        self.state.lock().unwrap().script.push_back(r);
        self
    }

    pub fn always(&self, r: Reply) {
        self.state.lock().unwrap().fallback = Some(r);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

fn respond(reply: Reply) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Json(v) => Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("x-request-id", "req_fake")
                .body(Body::from(v.to_string()))
                .unwrap(),
            Reply::Status(code, headers, body) => {
                let mut b = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json");
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                b.body(Body::from(body)).unwrap()
            }
            Reply::Malformed => Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(
                    "{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"message\":",
                ))
                .unwrap(),
            Reply::Drop => {
                let chunks: Vec<Result<&'static str, std::io::Error>> = vec![
                    Ok("{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"par"),
                    Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped")),
                ];
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(futures_stream(chunks)))
                    .unwrap()
            }
            Reply::Delay(d, r) => {
                tokio::time::sleep(d).await;
                respond(*r).await
            }
        }
    })
}

fn futures_stream(
    items: Vec<Result<&'static str, std::io::Error>>,
) -> impl futures::Stream<Item = Result<&'static str, std::io::Error>> {
    futures::stream::iter(items)
}

// ---- Real wire bodies --------------------------------------------------------------------

/// An OpenAI chat completion that writes `path` with `content`.
pub fn openai_write(path: &str, content: &str, usage: (u64, u64, u64)) -> Value {
    let args = json!({"path": path, "content": content}).to_string();
    json!({
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-test",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "write_file", "arguments": args}}]}}],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1,
                  "prompt_tokens_details": {"cached_tokens": usage.2, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}}
    })
}

/// An OpenAI text answer.
pub fn openai_text(text: &str) -> Value {
    json!({"id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-test",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
}

/// An Anthropic message with text and a tool_use, and cache usage.
pub fn anthropic_write(
    path: &str,
    content: &str,
    input: u64,
    output: u64,
    cache_write: u64,
    cache_read: u64,
) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": "I'll write the file."},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "write_file",
                     "input": {"path": path, "content": content}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "service_tier": "standard"}
    })
}

pub fn anthropic_error(
    status: u16,
    kind: &str,
    message: &str,
    headers: Vec<(&'static str, String)>,
) -> Reply {
    let mut h = headers;
    h.push(("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy".into()));
    Reply::Status(
        status,
        h,
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
            .to_string(),
    )
}

pub fn openai_error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
    headers: Vec<(&'static str, String)>,
) -> Reply {
    Reply::Status(
        status,
        headers,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string(),
    )
}

pub fn overloaded() -> Reply {
    anthropic_error(529, "overloaded_error", "Overloaded", vec![])
}

pub fn server_error() -> Reply {
    openai_error(
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
        vec![],
    )
}

/// A config with an Anthropic provider `a` (model `claude-test`) and an OpenAI provider `o`
/// (model `gpt-test`), `balanced` routed a → o; `extra` is appended to each provider.
pub fn config(anthropic_url: &str, openai_url: &str, extra: &str) -> kiln_llm::LlmConfig {
    let text = format!(
        r#"
[[llm.providers]]
name = "a"
api = "anthropic"
base_url = "{anthropic_url}"
api_key_env = "KILN_LLM_TEST_ANTHROPIC_KEY"
timeout_secs = 2
{extra}
[[llm.providers.models]]
name = "claude-test"
input_per_mtok = 3.0
output_per_mtok = 15.0
cache_write_per_mtok = 3.75
cache_read_per_mtok = 0.3

[[llm.providers]]
name = "o"
api = "openai"
base_url = "{openai_url}/v1"
api_key_env = "KILN_LLM_TEST_OPENAI_KEY"
timeout_secs = 2
{extra}
[[llm.providers.models]]
name = "gpt-test"
input_per_mtok = 2.5
output_per_mtok = 10.0
cache_read_per_mtok = 1.25

[llm.routes]
balanced = ["a/claude-test", "o/gpt-test"]
fast = ["o/gpt-test"]
"#
    );
    std::env::set_var("KILN_LLM_TEST_ANTHROPIC_KEY", "sk-ant-test-SECRET-1");
    std::env::set_var("KILN_LLM_TEST_OPENAI_KEY", "sk-test-SECRET-2");
    kiln_llm::LlmConfig::from_workers_toml(&text).unwrap()
}

/// Fast retries for tests.
pub fn options() -> kiln_llm::Options {
    kiln_llm::Options {
        retry: kiln_llm::RetryPolicy {
            tries: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_secs(30),
        },
        breaker: kiln_llm::BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(1),
            successes: 2,
        },
        redis_url: None,
    }
}

pub fn request(max_tokens: u32) -> kiln_llm::ChatRequest {
    kiln_llm::ChatRequest {
        system: Some("You edit a workspace.".into()),
        messages: vec![kiln_llm::Message::user("Write hello.py")],
        max_tokens,
        tools: true,
    }
}
