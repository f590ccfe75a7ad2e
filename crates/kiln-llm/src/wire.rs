//! The provider-neutral request and response model both clients translate to and from.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The caller (prompts, feedback, tool results).
    User,
    /// The model.
    Assistant,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id, echoed by the result.
    pub id: String,
    /// `write_file` or `delete_file` (or whatever the model invented; the caller refuses it).
    pub name: String,
    /// The decoded arguments (`{"path", "content"}` for `write_file`).
    pub arguments: Value,
}

/// The answer to one tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The id of the call answered.
    pub call_id: String,
    /// What to tell the model.
    pub content: String,
    /// Whether the call was refused or failed.
    pub is_error: bool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// Text, possibly empty when the message is only tool calls or results.
    pub text: String,
    /// Tool calls (assistant messages).
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Tool results (user messages).
    #[serde(default)]
    pub tool_results: Vec<ToolResult>,
}

impl Message {
    /// A user message holding text.
    pub fn user(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            text: text.into(),
            tool_calls: vec![],
            tool_results: vec![],
        }
    }

    /// A user message answering tool calls.
    pub fn tool_results(results: Vec<ToolResult>) -> Self {
        Message {
            role: Role::User,
            text: String::new(),
            tool_calls: vec![],
            tool_results: results,
        }
    }
}

/// A request to a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// System prompt.
    pub system: Option<String>,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// The output cap sent to the provider (also the worst case for budgets).
    pub max_tokens: u32,
    /// Offer the file tools (ignored for models configured with `tools = false`).
    pub tools: bool,
}

impl ChatRequest {
    /// A rough upper estimate of the input tokens (3 bytes a token, rounded up, plus framing),
    /// used for budgets and token rate limits before the provider reports the real count.
    pub fn estimated_input_tokens(&self) -> u64 {
        let bytes: usize = self.system.as_ref().map_or(0, |s| s.len())
            + self
                .messages
                .iter()
                .map(|m| {
                    m.text.len()
                        + m.tool_calls
                            .iter()
                            .map(|c| c.name.len() + c.arguments.to_string().len())
                            .sum::<usize>()
                        + m.tool_results.iter().map(|r| r.content.len()).sum::<usize>()
                        + 8
                })
                .sum::<usize>()
            + if self.tools { 200 } else { 0 };
        bytes.div_ceil(3) as u64
    }
}

/// Why the model stopped; unknown or missing reasons are kept, not refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// It finished its turn.
    Stop,
    /// It wants tool results.
    ToolCalls,
    /// It hit `max_tokens`.
    Length,
    /// Content filter or refusal.
    Filtered,
    /// Null, empty or absent.
    Unspecified,
    /// Something this version does not know.
    Other(String),
}

/// Tokens a response reports, by type (missing fields count as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the input price (cache reads and writes excluded).
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
}

impl Usage {
    /// Adds another call's usage.
    pub fn add(&mut self, other: &Usage) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The assistant's message (text and tool calls).
    pub message: Message,
    /// Why it stopped.
    pub finish: FinishReason,
    /// What the provider reported; `None` when it reported nothing.
    pub usage: Option<Usage>,
    /// The model name the provider says answered.
    pub model: Option<String>,
}

/// The two tools Kiln offers, as (name, description, JSON schema).
pub fn tool_specs() -> [(&'static str, &'static str, Value); 2] {
    [
        (
            "write_file",
            "Create or replace a file in the workspace with the whole new content.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace root"},
                    "content": {"type": "string", "description": "The complete file content"}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
        ),
        (
            "delete_file",
            "Delete a file from the workspace.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace root"}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        ),
    ]
}
