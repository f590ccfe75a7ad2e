//! The OpenAI-compatible chat completions protocol (`POST {base_url}/chat/completions`).

use crate::error::ProviderError;
use crate::wire::{tool_specs, ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall, Usage};
use serde::Deserialize;
use serde_json::{json, Value};

/// The request body for `model`.
pub fn request_body(model: &str, req: &ChatRequest, tools: bool) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in &req.messages {
        match m.role {
            Role::Assistant => {
                let mut msg = json!({"role": "assistant", "content": if m.text.is_empty() { Value::Null } else { json!(m.text) }});
                if !m.tool_calls.is_empty() {
                    msg["tool_calls"] = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                        })
                        .collect();
                }
                messages.push(msg);
            }
            Role::User => {
                for r in &m.tool_results {
                    let content = if r.is_error {
                        format!("error: {}", r.content)
                    } else {
                        r.content.clone()
                    };
                    messages.push(json!({"role": "tool", "tool_call_id": r.call_id, "content": content}));
                }
                if !m.text.is_empty() || m.tool_results.is_empty() {
                    messages.push(json!({"role": "user", "content": m.text}));
                }
            }
        }
    }
    let mut body = json!({"model": model, "messages": messages, "max_tokens": req.max_tokens});
    if tools {
        body["tools"] = tool_specs()
            .into_iter()
            .map(|(name, description, parameters)| {
                json!({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
            })
            .collect();
    }
    body
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Decodes a 2xx body leniently: unknown fields, a null/empty/unknown `finish_reason` and a
/// missing `usage` are accepted; no choices at all is malformed.
pub fn decode(body: &[u8]) -> Result<ChatResponse, ProviderError> {
    let c: Completion = serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(e.to_string()))?;
    let choice = c
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed("no choices in the completion".into()))?;
    let wire = choice.message.unwrap_or_default();
    let text = match wire.content {
        Some(Value::String(s)) => s,
        // Content parts: concatenate their text.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect(),
        _ => String::new(),
    };
    let tool_calls = wire
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            let f = call.function.unwrap_or(WireFunction {
                name: None,
                arguments: None,
            });
            let arguments = match f.arguments {
                Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                Some(v) => v,
                None => json!({}),
            };
            ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: f.name.unwrap_or_default(),
                arguments,
            }
        })
        .collect::<Vec<_>>();
    let finish = match choice.finish_reason.as_deref() {
        None | Some("") => FinishReason::Unspecified,
        Some("stop") => FinishReason::Stop,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::Filtered,
        Some(other) => FinishReason::Other(other.to_string()),
    };
    let usage = c.usage.map(|u| {
        let prompt = u.prompt_tokens.unwrap_or(0);
        let cached = u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(prompt);
        Usage {
            input: prompt - cached,
            output: u.completion_tokens.unwrap_or(0),
            cache_read: cached,
            cache_write: 0,
        }
    });
    Ok(ChatResponse {
        message: Message {
            role: Role::Assistant,
            text,
            tool_calls,
            tool_results: vec![],
        },
        finish,
        usage,
        model: c.model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ToolResult;

    #[test]
    fn decodes_tool_calls_and_cached_usage() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x","system_fingerprint":"fp",
          "choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,
            "tool_calls":[{"id":"call_a","type":"function","function":{"name":"write_file","arguments":"{\"path\":\"a.py\",\"content\":\"x=1\\n\"}"}}]},
            "logprobs":null,"finish_reason":"tool_calls"}],
          "usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100}}}"#;
        let r = decode(body).unwrap();
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert_eq!(r.message.tool_calls[0].arguments["path"], "a.py");
        assert_eq!(
            r.usage,
            Some(Usage {
                input: 20,
                output: 30,
                cache_read: 100,
                cache_write: 0
            })
        );
    }

    #[test]
    fn lenient_about_finish_reason_and_usage() {
        for (fr, want) in [
            ("null", FinishReason::Unspecified),
            ("\"\"", FinishReason::Unspecified),
            ("\"eos\"", FinishReason::Other("eos".into())),
        ] {
            let body = format!(
                r#"{{"choices":[{{"message":{{"content":"hi"}},"finish_reason":{fr}}}],"extra":{{"x":1}}}}"#
            );
            let r = decode(body.as_bytes()).unwrap();
            assert_eq!(r.finish, want);
            assert_eq!(r.usage, None);
            assert_eq!(r.message.text, "hi");
        }
        assert!(matches!(
            decode(b"{\"choices\":[]}"),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(decode(b"{not json"), Err(ProviderError::Malformed(_))));
    }

    #[test]
    fn encodes_tools_and_tool_results() {
        let mut req = ChatRequest {
            system: Some("be brief".into()),
            messages: vec![Message::user("write a.py")],
            max_tokens: 100,
            tools: true,
        };
        req.messages.push(Message {
            role: Role::Assistant,
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_a".into(),
                name: "delete_file".into(),
                arguments: json!({"path": "b.py"}),
            }],
            tool_results: vec![],
        });
        req.messages.push(Message::tool_results(vec![ToolResult {
            call_id: "call_a".into(),
            content: "no such file".into(),
            is_error: true,
        }]));
        let b = request_body("m", &req, true);
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\"b.py\"}"
        );
        assert_eq!(b["messages"][3]["role"], "tool");
        assert_eq!(b["messages"][3]["content"], "error: no such file");
        assert_eq!(b["tools"][0]["function"]["name"], "write_file");
        assert!(request_body("m", &req, false).get("tools").is_none());
    }
}
