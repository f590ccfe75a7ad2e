//! A loopback model for tests and benchmarks: an HTTP server on 127.0.0.1 that speaks the
//! OpenAI chat completions protocol (`POST /v1/chat/completions`) and Anthropic's Messages
//! protocol (`POST /v1/messages`) with their real bodies, error bodies and headers. What it
//! answers is decided per request by a script function, which sees the request body.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// A status with headers and a raw body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Waits, then answers.
    Delay(Duration, Box<Reply>),
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its JSON body (null when not JSON).
    pub body: Value,
}

impl Seen {
    /// True for the Anthropic protocol.
    pub fn is_anthropic(&self) -> bool {
        self.path.ends_with("/messages")
    }

    /// The text of the first user message (the prompt and the workspace).
    pub fn first_text(&self) -> String {
        let msgs = self.body["messages"].as_array().cloned().unwrap_or_default();
        let Some(first) = msgs.iter().find(|m| m["role"] == "user") else {
            return String::new();
        };
        match &first["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    }

    /// True when the last message answers tool calls (a later turn of the same iteration).
    pub fn answers_tools(&self) -> bool {
        let msgs = self.body["messages"].as_array().cloned().unwrap_or_default();
        let Some(last) = msgs.last() else { return false };
        last["role"] == "tool"
            || last["content"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["type"] == "tool_result"))
    }
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// The server.
#[derive(Clone)]
pub struct FakeModel {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeModel {
    /// Starts a server answering every request with `script`.
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeModel {
        let script: Script = Arc::new(script);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
                let (script, log) = (script.clone(), log.clone());
                async move {
                    let s = Seen {
                        path: uri.path().to_string(),
                        headers,
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    };
                    let reply = script(&s);
                    log.lock().unwrap().push(s);
                    respond(reply).await
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeModel { addr, seen }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests it received.
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
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
            Reply::Delay(d, r) => {
                tokio::time::sleep(d).await;
                respond(*r).await
            }
        }
    })
}

/// Token counts a reply reports: (input, output, cache read, cache write).
pub type Tokens = (u64, u64, u64, u64);

/// A reply calling `write_file(path, content)` in the protocol of `seen`.
pub fn write_file(seen: &Seen, path: &str, content: &str, t: Tokens) -> Reply {
    if seen.is_anthropic() {
        Reply::Json(json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": seen.body["model"],
            "content": [{"type": "text", "text": "I'll write the file."},
                        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "write_file",
                         "input": {"path": path, "content": content}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": t.0, "output_tokens": t.1, "cache_read_input_tokens": t.2,
                      "cache_creation_input_tokens": t.3, "service_tier": "standard"}
        }))
    } else {
        let args = json!({"path": path, "content": content}).to_string();
        Reply::Json(json!({
            "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1_700_000_000, "model": seen.body["model"],
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "write_file", "arguments": args}}]}}],
            "usage": {"prompt_tokens": t.0 + t.2, "completion_tokens": t.1, "total_tokens": t.0 + t.2 + t.1,
                      "prompt_tokens_details": {"cached_tokens": t.2, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}
        }))
    }
}

/// A final text answer (no tool call) in the protocol of `seen`.
pub fn text(seen: &Seen, text: &str, t: Tokens) -> Reply {
    if seen.is_anthropic() {
        Reply::Json(json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": seen.body["model"],
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": t.0, "output_tokens": t.1, "cache_read_input_tokens": t.2,
                      "cache_creation_input_tokens": t.3}
        }))
    } else {
        Reply::Json(json!({
            "id": "chatcmpl-2", "object": "chat.completion", "model": seen.body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": t.0 + t.2, "completion_tokens": t.1, "total_tokens": t.0 + t.2 + t.1,
                      "prompt_tokens_details": {"cached_tokens": t.2}}
        }))
    }
}

/// Anthropic's 529 `overloaded_error`, with its request id header.
pub fn overloaded() -> Reply {
    Reply::Status(
        529,
        vec![("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy".into())],
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
               "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
        .to_string(),
    )
}

/// OpenAI's 500 `server_error`.
pub fn server_error() -> Reply {
    Reply::Status(
        500,
        vec![],
        json!({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                         "type": "server_error", "param": null, "code": null}})
        .to_string(),
    )
}
