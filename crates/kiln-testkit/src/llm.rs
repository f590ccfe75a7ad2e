//! A loopback model for tests and benchmarks: an HTTP server on 127.0.0.1 that speaks the
//! OpenAI chat completions protocol (`POST /v1/chat/completions`) and Anthropic's Messages
//! protocol (`POST /v1/messages`) with their real bodies, error bodies and headers. Each
//! request is answered by the next reply queued with [`FakeModel::push`], else by the script
//! function (which sees the request body; [`FakeModel::always`] replaces it).

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// A status with headers and a raw body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// 200 whose body is cut off and then the connection dropped.
    Drop,
    /// 200 with a body that is not JSON.
    Malformed,
    /// Waits, then answers.
    Delay(Duration, Box<Reply>),
    /// Holds the request until the test adds a permit to the semaphore, then answers.
    Gate(Arc<tokio::sync::Semaphore>, Box<Reply>),
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

struct State {
    queue: VecDeque<Reply>,
    script: Script,
    seen: Vec<Seen>,
}

/// The server.
#[derive(Clone)]
pub struct FakeModel {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeModel {
    /// Starts a server answering every request (after any queued replies) with `script`.
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeModel {
        let state = Arc::new(Mutex::new(State {
            queue: VecDeque::new(),
            script: Arc::new(script),
            seen: Vec::new(),
        }));
        let st = state.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
                let st = st.clone();
                async move {
                    let s = Seen {
                        path: uri.path().to_string(),
                        headers,
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    };
                    let (queued, script) = {
                        let mut state = st.lock().unwrap();
                        (state.queue.pop_front(), state.script.clone())
                    };
                    let reply = queued.unwrap_or_else(|| script(&s));
                    st.lock().unwrap().seen.push(s);
                    respond(reply).await
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeModel { addr, state }
    }

    /// Starts a server that answers only what is queued ([`FakeModel::push`]), then 500
    /// `script exhausted`.
    pub async fn replay() -> FakeModel {
        FakeModel::start(|_| Reply::Status(500, vec![], "script exhausted".into())).await
    }

    /// Queues `reply` for the next unanswered request.
    pub fn push(&self, reply: Reply) -> &Self {
        self.state.lock().unwrap().queue.push_back(reply);
        self
    }

    /// Answers every request after the queued ones with `reply`.
    pub fn always(&self, reply: Reply) {
        self.state.lock().unwrap().script = Arc::new(move |_| reply.clone());
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many requests it received.
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
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap()
            }
            Reply::Delay(d, r) => {
                tokio::time::sleep(d).await;
                respond(*r).await
            }
            Reply::Gate(gate, r) => {
                gate.acquire().await.expect("gate open").forget();
                respond(*r).await
            }
        }
    })
}

/// Token counts a reply reports: (input, output, cache read, cache write).
pub type Tokens = (u64, u64, u64, u64);

/// An Anthropic message with a text block and a `write_file` tool_use.
pub fn anthropic_tool_use(model: &str, path: &str, content: &str, t: Tokens) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "I'll write the file."},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "write_file",
                     "input": {"path": path, "content": content}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": t.0, "output_tokens": t.1, "cache_read_input_tokens": t.2,
                  "cache_creation_input_tokens": t.3, "service_tier": "standard"}
    })
}

/// An Anthropic message holding only `text`.
pub fn anthropic_text(model: &str, text: &str, t: Tokens) -> Value {
    json!({
        "id": "msg_02", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": t.0, "output_tokens": t.1, "cache_read_input_tokens": t.2,
                  "cache_creation_input_tokens": t.3}
    })
}

/// OpenAI's usage object: `prompt_tokens` counts the cached tokens too.
fn openai_usage(t: Tokens) -> Value {
    json!({"prompt_tokens": t.0 + t.2, "completion_tokens": t.1, "total_tokens": t.0 + t.2 + t.1,
           "prompt_tokens_details": {"cached_tokens": t.2, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0}})
}

/// An OpenAI chat completion calling `write_file`.
pub fn openai_tool_call(model: &str, path: &str, content: &str, t: Tokens) -> Value {
    let args = json!({"path": path, "content": content}).to_string();
    json!({
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "write_file", "arguments": args}}]}}],
        "usage": openai_usage(t)
    })
}

/// An OpenAI chat completion holding only `text`.
pub fn openai_text(model: &str, text: &str, t: Tokens) -> Value {
    json!({
        "id": "chatcmpl-2", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": openai_usage(t)
    })
}

fn model_of(seen: &Seen) -> &str {
    seen.body["model"].as_str().unwrap_or("")
}

/// A reply calling `write_file(path, content)` in the protocol of `seen`.
pub fn write_file(seen: &Seen, path: &str, content: &str, t: Tokens) -> Reply {
    Reply::Json(if seen.is_anthropic() {
        anthropic_tool_use(model_of(seen), path, content, t)
    } else {
        openai_tool_call(model_of(seen), path, content, t)
    })
}

/// A final text answer (no tool call) in the protocol of `seen`.
pub fn text(seen: &Seen, text: &str, t: Tokens) -> Reply {
    Reply::Json(if seen.is_anthropic() {
        anthropic_text(model_of(seen), text, t)
    } else {
        openai_text(model_of(seen), text, t)
    })
}

/// An Anthropic error body (`{"type": "error", "error": {type, message}}`) with its request id.
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

/// An OpenAI error body (`{"error": {message, type, param, code}}`).
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

/// Anthropic's 529 `overloaded_error`, with its request id header.
pub fn overloaded() -> Reply {
    anthropic_error(529, "overloaded_error", "Overloaded", vec![])
}

/// OpenAI's 500 `server_error`.
pub fn server_error() -> Reply {
    openai_error(
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
        vec![],
    )
}
