//! Anthropic's Messages API (`POST {base_url}/v1/messages`).

use crate::error::ProviderError;
use crate::wire::{tool_specs, ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall, Usage};
use serde::Deserialize;
use serde_json::{json, Value};

/// The `anthropic-version` header Kiln speaks.
pub const VERSION: &str = "2023-06-01";

/// The request body for `model`.
pub fn request_body(model: &str, req: &ChatRequest, tools: bool) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let mut blocks = Vec::new();
            for r in &m.tool_results {
                blocks.push(json!({"type": "tool_result", "tool_use_id": r.call_id,
                                   "content": r.content, "is_error": r.is_error}));
            }
            if !m.text.is_empty() {
                blocks.push(json!({"type": "text", "text": m.text}));
            }
            for c in &m.tool_calls {
                blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
            }
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": blocks})
        })
        .collect();
    let mut body = json!({"model": model, "max_tokens": req.max_tokens, "messages": messages});
    if let Some(system) = &req.system {
        body["system"] = json!(system);
    }
    if tools {
        body["tools"] = tool_specs()
            .into_iter()
            .map(|(name, description, schema)| json!({"name": name, "description": description, "input_schema": schema}))
            .collect();
    }
    body
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// Decodes a 2xx body leniently (unknown block types and fields are skipped).
pub fn decode(body: &[u8]) -> Result<ChatResponse, ProviderError> {
    let m: WireMessage = serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(e.to_string()))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in m.content {
        match block.get("type").and_then(|t| t.as_str()) {
            Some("text") => text.push_str(block.get("text").and_then(|t| t.as_str()).unwrap_or("")),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block.get("id").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                name: block
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                arguments: block.get("input").cloned().unwrap_or(json!({})),
            }),
            _ => {}
        }
    }
    let finish = match m.stop_reason.as_deref() {
        None | Some("") => FinishReason::Unspecified,
        Some("end_turn") | Some("stop_sequence") => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::Filtered,
        Some(other) => FinishReason::Other(other.to_string()),
    };
    let usage = m.usage.map(|u| Usage {
        input: u.input_tokens.unwrap_or(0),
        output: u.output_tokens.unwrap_or(0),
        cache_read: u.cache_read_input_tokens.unwrap_or(0),
        cache_write: u.cache_creation_input_tokens.unwrap_or(0),
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
        model: m.model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ToolResult;

    #[test]
    fn decodes_tool_use_and_cache_usage() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
          "content":[{"type":"text","text":"Writing it."},{"type":"thinking","thinking":"..."},
                     {"type":"tool_use","id":"toolu_1","name":"write_file","input":{"path":"a.py","content":"x"}}],
          "stop_reason":"tool_use","stop_sequence":null,
          "usage":{"input_tokens":50,"cache_creation_input_tokens":200,"cache_read_input_tokens":1000,"output_tokens":40,"service_tier":"standard"}}"#;
        let r = decode(body).unwrap();
        assert_eq!(r.message.text, "Writing it.");
        assert_eq!(r.message.tool_calls[0].id, "toolu_1");
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert_eq!(
            r.usage,
            Some(Usage {
                input: 50,
                output: 40,
                cache_read: 1000,
                cache_write: 200
            })
        );
        let r = decode(br#"{"content":[{"type":"text","text":"ok"}],"stop_reason":"pause_turn"}"#).unwrap();
        assert_eq!(r.finish, FinishReason::Other("pause_turn".into()));
        assert_eq!(r.usage, None);
    }

    #[test]
    fn encodes_tool_results_as_user_blocks() {
        let req = ChatRequest {
            system: Some("sys".into()),
            messages: vec![Message::tool_results(vec![ToolResult {
                call_id: "toolu_1".into(),
                content: "written".into(),
                is_error: false,
            }])],
            max_tokens: 10,
            tools: true,
        };
        let b = request_body("m", &req, true);
        assert_eq!(b["system"], "sys");
        assert_eq!(b["messages"][0]["content"][0]["type"], "tool_result");
        assert_eq!(b["messages"][0]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(b["tools"][1]["name"], "delete_file");
        assert_eq!(b["tools"][1]["input_schema"]["required"][0], "path");
    }
}
