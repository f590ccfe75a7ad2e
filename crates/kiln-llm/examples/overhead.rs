//! Measures what the provider layer adds to a call: `Llm::complete` (breaker check, budget
//! check, rate-limit grant, ledger row) against a bare `ProviderClient::send`, both to an
//! OpenAI-compatible loopback server that answers at once. Run by `scripts/bench-llm`.
//!
//! `cargo run -p kiln-llm --example overhead -- [-n CALLS] [--redis URL] [--json]`

use axum::routing::post;
use kiln_llm::{Budgets, CallFor, ChatRequest, Llm, LlmConfig, Message, Options, ProviderClient, Tier};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = flag("-n").map(|v| v.parse()).transpose()?.unwrap_or(300);
    let redis_url = flag("--redis");
    let json = args.iter().any(|a| a == "--json");

    let body = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    })
    .to_string();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cfg = LlmConfig::from_workers_toml(&format!(
        "[[llm.providers]]\nname = \"bench\"\napi = \"openai\"\nbase_url = \"{url}\"\n\
         requests_per_minute = 1000000\ntokens_per_minute = 1000000000\n\
         [[llm.providers.models]]\nname = \"m\"\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n\
         [llm.routes]\nbalanced = [\"bench/m\"]\n"
    ))?;
    let db = kiln_testkit::TestDb::new().await;
    let raw = ProviderClient::with_key(&cfg.providers[0], None);
    let llm = Llm::new(
        cfg,
        db.pool.clone(),
        Options {
            redis_url: redis_url.clone(),
            ..Options::default()
        },
    )
    .await?;
    let req = ChatRequest {
        messages: vec![Message::user("hello")],
        max_tokens: 100,
        tools: true,
        ..Default::default()
    };
    let who = CallFor {
        pipeline_id: Some(1),
        job_id: Some(1),
        api_token_id: Some(1),
    };
    let budgets = Budgets::default();
    for _ in 0..20 {
        raw.send("m", &req, true).await?;
        llm.complete(Tier::Balanced, &req, who, budgets).await?;
    }
    let (mut bare, mut full) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        raw.send("m", &req, true).await?;
        bare.push(t.elapsed());
        let t = Instant::now();
        llm.complete(Tier::Balanced, &req, who, budgets).await?;
        full.push(t.elapsed());
    }
    // The stages one by one (same statements Llm::complete runs).
    let (mut s_breaker, mut s_budget, mut s_rate, mut s_ledger) = (vec![], vec![], vec![], vec![]);
    let limiter = match &redis_url {
        Some(u) => kiln_llm::RateLimiter::with_redis(db.pool.clone(), u).await?,
        None => kiln_llm::RateLimiter::postgres(db.pool.clone()),
    };
    let limits = kiln_llm::Limits {
        requests_per_minute: Some(1_000_000),
        tokens_per_minute: Some(1_000_000_000),
    };
    for _ in 0..n.min(100) {
        let t = Instant::now();
        llm.breakers().check_clean("bench", "m").await?;
        s_breaker.push(t.elapsed());
        let t = Instant::now();
        kiln_llm::check_budget(&db.pool, who, budgets, kiln_llm::Usd(1)).await?;
        s_budget.push(t.elapsed());
        let t = Instant::now();
        limiter.acquire("bench", limits, 200).await?;
        s_rate.push(t.elapsed());
        let t = Instant::now();
        let rec = kiln_llm::ledger::CallRecord {
            provider: "bench",
            model: "m",
            usage: kiln_llm::Usage::default(),
            cost: kiln_llm::Usd(0),
            who,
        };
        kiln_llm::record_call(&db.pool, &rec).await?;
        s_ledger.push(t.elapsed());
    }
    for v in [&mut s_breaker, &mut s_budget, &mut s_rate, &mut s_ledger] {
        v.sort();
    }
    let stages = serde_json::json!({
        "breaker_p50_ms": percentile(&s_breaker, 0.5), "budget_p50_ms": percentile(&s_budget, 0.5),
        "rate_limit_p50_ms": percentile(&s_rate, 0.5), "ledger_p50_ms": percentile(&s_ledger, 0.5)});
    bare.sort();
    full.sort();
    let (b50, f50) = (percentile(&bare, 0.5), percentile(&full, 0.5));
    let (b99, f99) = (percentile(&bare, 0.99), percentile(&full, 0.99));
    let limiter = if redis_url.is_some() { "redis" } else { "postgres" };
    if json {
        println!(
            "{}",
            serde_json::json!({"calls": n, "limiter": limiter, "bare_p50_ms": b50, "bare_p99_ms": b99,
                               "complete_p50_ms": f50, "complete_p99_ms": f99, "overhead_p50_ms": f50 - b50,
                               "stages": stages})
        );
    } else {
        println!("{n} calls, rate limits in {limiter}");
        println!("bare HTTP call      p50 {b50:.2} ms  p99 {b99:.2} ms");
        println!("Llm::complete       p50 {f50:.2} ms  p99 {f99:.2} ms");
        println!("provider layer adds p50 {:.2} ms per call", f50 - b50);
        println!("stages (p50 ms): {stages}");
    }
    Ok(())
}
