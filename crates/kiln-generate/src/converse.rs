//! One iteration's conversation: ask the model, apply its tool calls, answer them, and go on
//! while it keeps calling tools (at most `max_turns` calls). A model configured with
//! `tools = false` answers once, with `File: PATH` blocks.

use std::time::Duration;

use kiln_llm::{BudgetExceeded, Budgets, CallFor, ChatRequest, Llm, LlmError, Message, Tier, Usage, Usd};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::edit::{file_blocks, EditDir};
use crate::error::GenerateError;
use crate::prompt::SYSTEM;

/// One answered call.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// Provider that answered.
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Tokens it reported.
    pub tokens: Usage,
    /// Its exact cost, USD.
    pub cost_usd: f64,
    /// Its HTTP latency, milliseconds.
    pub latency_ms: u64,
    /// Failed tries before it (retries and failovers).
    pub retries: usize,
    /// The ledger row.
    pub ledger_id: i64,
}

/// What an iteration's conversation did.
#[derive(Debug, Default)]
pub struct Conversation {
    /// The whole exchange (the first message, answers, tool results).
    pub messages: Vec<Message>,
    /// The answered calls, in order.
    pub calls: Vec<Call>,
    /// Their tokens summed.
    pub usage: Usage,
    /// Their cost summed.
    pub cost: Usd,
    /// Model time: the calls' latencies summed.
    pub model_time: Duration,
    /// Set when a budget refused a call (which was then not made).
    pub budget: Option<BudgetExceeded>,
}

/// What a conversation runs with.
pub struct Ask<'a> {
    /// The provider layer.
    pub llm: &'a Llm,
    /// The route.
    pub tier: Tier,
    /// Who pays.
    pub who: CallFor,
    /// The limits.
    pub budgets: Budgets,
    /// Calls at most.
    pub max_turns: u32,
    /// `max_tokens` of each call.
    pub max_tokens: u32,
    /// Fires when the attempt must stop.
    pub cancel: &'a CancellationToken,
}

/// Whether `provider/model` is offered tools (unknown models are).
fn uses_tools(llm: &Llm, provider: &str, model: &str) -> bool {
    llm.config()
        .providers
        .iter()
        .find(|p| p.name == provider)
        .and_then(|p| p.models.iter().find(|m| m.name == model))
        .is_none_or(|m| m.tools)
}

/// Runs the conversation that starts with `first` on `edit`.
pub async fn converse(
    ask: &Ask<'_>,
    first: String,
    edit: &mut EditDir,
) -> Result<Conversation, GenerateError> {
    let mut conv = Conversation::default();
    let mut req = ChatRequest {
        system: Some(SYSTEM.to_string()),
        messages: vec![Message::user(first)],
        max_tokens: ask.max_tokens,
        tools: true,
    };
    for turn in 0..ask.max_turns {
        if ask.cancel.is_cancelled() {
            return Err(GenerateError::Stopped);
        }
        let done = tokio::select! {
            r = ask.llm.complete(ask.tier, &req, ask.who, ask.budgets) => r,
            () = ask.cancel.cancelled() => return Err(GenerateError::Stopped),
        };
        let done = match done {
            Ok(d) => d,
            Err(LlmError::Budget(e)) => {
                tracing::info!(turn, error = %e, "a budget refused the next call");
                conv.budget = Some(e);
                break;
            }
            Err(e) => return Err(e.into()),
        };
        conv.usage.add(&done.usage);
        conv.cost = Usd(conv.cost.0 + done.cost.0);
        conv.model_time += done.latency;
        conv.calls.push(Call {
            provider: done.provider.clone(),
            model: done.model.clone(),
            tokens: done.usage,
            cost_usd: done.cost.dollars(),
            latency_ms: done.latency.as_millis() as u64,
            retries: done.failed.len(),
            ledger_id: done.ledger_id,
        });
        let answer = done.response.message;
        req.messages.push(answer.clone());
        if !answer.tool_calls.is_empty() {
            let results = answer.tool_calls.iter().map(|c| edit.apply(c)).collect();
            req.messages.push(Message::tool_results(results));
            continue;
        }
        if !uses_tools(ask.llm, &done.provider, &done.model) {
            for (path, content) in file_blocks(&answer.text) {
                if let Err(e) = edit.write(&path, &content) {
                    tracing::warn!(path, error = %e, "a File: block was refused");
                }
            }
        }
        break;
    }
    conv.messages = req.messages;
    Ok(conv)
}
