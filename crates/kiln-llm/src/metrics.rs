//! The `kiln_llm_*` metric families, registered once in the process registry of
//! `kiln-metrics` (so `GET /metrics` of any Kiln process serves them).

use prometheus::{
    exponential_buckets, CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
};
use std::sync::OnceLock;

/// Handles on the LLM families.
#[derive(Clone)]
pub struct LlmMetrics {
    /// HTTP calls to providers by `provider`, `model`, `outcome` (`ok` or an error class).
    pub requests: IntCounterVec,
    /// Tokens reported by `provider`, `model`, `type` (input, output, cache_read, cache_write).
    pub tokens: IntCounterVec,
    /// USD spent by `provider`, `model`.
    pub cost_usd: CounterVec,
    /// Seconds per provider call, by `provider`, `model`.
    pub request_seconds: HistogramVec,
    /// Breaker state by `provider`, `model`: 0 closed, 1 half-open, 2 open.
    pub circuit_state: IntGaugeVec,
    /// Times a call waited for the fleet-wide rate limit, by `provider`.
    pub rate_limit_waits: IntCounterVec,
    /// Seconds spent waiting for the fleet-wide rate limit, by `provider`.
    pub rate_limit_wait_seconds: CounterVec,
}

/// This process's LLM metric handles.
pub fn llm_metrics() -> &'static LlmMetrics {
    static M: OnceLock<LlmMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let r = kiln_metrics::metrics().registry();
        let opts = |n: &str, h: &str| Opts::new(n, h).namespace("kiln");
        let requests = IntCounterVec::new(
            opts("llm_requests_total", "LLM provider calls by outcome"),
            &["provider", "model", "outcome"],
        )
        .expect("valid counter");
        let tokens = IntCounterVec::new(
            opts("llm_tokens_total", "LLM tokens reported, by type"),
            &["provider", "model", "type"],
        )
        .expect("valid counter");
        let cost_usd = CounterVec::new(
            opts("llm_cost_usd_total", "USD spent on LLM calls"),
            &["provider", "model"],
        )
        .expect("valid counter");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("llm_request_seconds", "LLM provider call latency")
                .namespace("kiln")
                .buckets(exponential_buckets(0.01, 2.0, 16).expect("buckets")),
            &["provider", "model"],
        )
        .expect("valid histogram");
        let circuit_state = IntGaugeVec::new(
            opts(
                "llm_circuit_state",
                "Circuit breaker: 0 closed, 1 half-open, 2 open",
            ),
            &["provider", "model"],
        )
        .expect("valid gauge");
        let rate_limit_waits = IntCounterVec::new(
            opts(
                "llm_rate_limit_waits_total",
                "Calls that waited for the fleet-wide rate limit",
            ),
            &["provider"],
        )
        .expect("valid counter");
        let rate_limit_wait_seconds = CounterVec::new(
            opts(
                "llm_rate_limit_wait_seconds_total",
                "Seconds waited for the fleet-wide rate limit",
            ),
            &["provider"],
        )
        .expect("valid counter");
        r.register(Box::new(requests.clone()))
            .expect("unique metric name");
        r.register(Box::new(tokens.clone())).expect("unique metric name");
        r.register(Box::new(cost_usd.clone()))
            .expect("unique metric name");
        r.register(Box::new(request_seconds.clone()))
            .expect("unique metric name");
        r.register(Box::new(circuit_state.clone()))
            .expect("unique metric name");
        r.register(Box::new(rate_limit_waits.clone()))
            .expect("unique metric name");
        r.register(Box::new(rate_limit_wait_seconds.clone()))
            .expect("unique metric name");
        LlmMetrics {
            requests,
            tokens,
            cost_usd,
            request_seconds,
            circuit_state,
            rate_limit_waits,
            rate_limit_wait_seconds,
        }
    })
}
