//! The provider layer against loopback servers speaking both real protocols.

mod common;

use common::*;
use kiln_llm::{
    costs, BreakerState, BudgetScope, Budgets, CallFor, CostQuery, GroupBy, Llm, LlmError, ProviderError,
    Tier, Usage, Usd,
};
use kiln_testkit::TestDb;
use std::time::{Duration, Instant};

fn who() -> CallFor {
    CallFor {
        pipeline_id: Some(7),
        job_id: Some(70),
        api_token_id: Some(3),
    }
}

#[tokio::test]
async fn anthropic_call_sends_its_headers_and_accounts_tokens_and_cost_exactly() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    a.push(Reply::Json(anthropic_tool_use(
        "claude-test",
        "hello.py",
        "print('hi')\n",
        (1_234, 567, 10_000, 2_000),
    )));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let done = llm
        .complete(Tier::Balanced, &request(1024), who(), Budgets::default())
        .await
        .unwrap();

    let seen = &a.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-test-SECRET-1");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.body["model"], "claude-test");
    assert_eq!(seen.body["max_tokens"], 1024);
    assert_eq!(seen.body["system"], "You edit a workspace.");
    assert_eq!(seen.body["tools"][0]["name"], "write_file");
    assert_eq!(o.hits(), 0);

    assert_eq!(
        (done.provider.as_str(), done.model.as_str()),
        ("a", "claude-test")
    );
    assert_eq!(done.response.message.tool_calls[0].arguments["path"], "hello.py");
    let usage = Usage {
        input: 1_234,
        output: 567,
        cache_read: 10_000,
        cache_write: 2_000,
    };
    assert_eq!(done.usage, usage);
    // 1234×3 + 567×15 + 2000×3.75 + 10000×0.3 = 3702 + 8505 + 7500 + 3000 = 22707 µ$.
    assert_eq!(done.cost, Usd(22_707_000_000));

    type LedgerRow = (
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let row: LedgerRow = sqlx::query_as(
        "SELECT provider, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_pico,
                pipeline_id, job_id, api_token_id FROM kiln_llm_calls WHERE id = $1",
    )
    .bind(done.ledger_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "a".into(),
            "claude-test".into(),
            1_234,
            567,
            10_000,
            2_000,
            22_707_000_000,
            Some(7),
            Some(70),
            Some(3)
        )
    );
    let text = kiln_metrics::render();
    assert!(text.contains(r#"kiln_llm_tokens_total{model="claude-test",provider="a",type="cache_read"} "#));
    assert!(text.contains(r#"kiln_llm_requests_total{model="claude-test",outcome="ok",provider="a"} "#));
    assert!(text.contains("kiln_llm_cost_usd_total{"));
    assert!(text.contains("kiln_llm_request_seconds_bucket{"));
}

#[tokio::test]
async fn openai_call_sends_bearer_key_and_splits_cached_tokens() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    o.push(Reply::Json(openai_tool_call(
        "gpt-test",
        "a.py",
        "x = 1\n",
        (500, 300, 1_000, 0),
    )));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let done = llm
        .complete(Tier::Fast, &request(500), who(), Budgets::default())
        .await
        .unwrap();
    let seen = &o.seen()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], "Bearer sk-test-SECRET-2");
    assert_eq!(seen.body["tools"][1]["function"]["name"], "delete_file");
    assert_eq!(seen.body["messages"][0]["role"], "system");
    assert_eq!(
        done.usage,
        Usage {
            input: 500,
            output: 300,
            cache_read: 1_000,
            cache_write: 0
        }
    );
    // 500×2.5 + 300×10 + 1000×1.25 = 1250 + 3000 + 1250 = 5500 µ$.
    assert_eq!(done.cost, Usd(5_500_000_000));
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn lenient_answers_without_usage_cost_nothing_and_are_recorded() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    o.push(Reply::Json(serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": "done"}, "finish_reason": null}],
        "x_groq": {"id": "req_1"}
    })));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let done = llm
        .complete(Tier::Fast, &request(100), who(), Budgets::default())
        .await
        .unwrap();
    assert_eq!(done.response.message.text, "done");
    assert_eq!(done.response.finish, kiln_llm::FinishReason::Unspecified);
    assert_eq!((done.usage, done.cost), (Usage::default(), Usd(0)));
}

#[tokio::test]
async fn a_429_waits_for_retry_after_then_succeeds_on_the_same_model() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    a.push(anthropic_error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
        vec![
            ("retry-after", "1".into()),
            ("anthropic-ratelimit-requests-remaining", "0".into()),
        ],
    ));
    a.push(Reply::Json(anthropic_tool_use(
        "claude-test",
        "a.py",
        "x",
        (10, 5, 0, 0),
    )));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let started = Instant::now();
    let done = llm
        .complete(Tier::Balanced, &request(100), who(), Budgets::default())
        .await
        .unwrap();
    // The backoff base is 10 ms: only the server's retry-after explains a 1 s pause.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((a.hits(), o.hits(), done.provider.as_str()), (2, 0, "a"));
    assert!(matches!(
        done.failed[0].error,
        Some(ProviderError::RateLimited {
            retry_after: Some(d),
            ..
        }) if d == Duration::from_secs(1)
    ));
}

#[tokio::test]
async fn transient_failures_retry_three_times_then_fail_over_to_the_second_provider() {
    let db = TestDb::new().await;
    for (name, replies) in [
        ("529 overloaded", vec![overloaded(), overloaded(), overloaded()]),
        ("500", vec![server_error(), server_error(), server_error()]),
        (
            "malformed json",
            vec![Reply::Malformed, Reply::Malformed, Reply::Malformed],
        ),
        (
            "dropped mid-response",
            vec![Reply::Drop, Reply::Drop, Reply::Drop],
        ),
        (
            "timeout",
            vec![Reply::Delay(Duration::from_secs(3), Box::new(overloaded())); 3],
        ),
    ] {
        let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
        for r in replies {
            a.push(r);
        }
        o.push(Reply::Json(openai_text("gpt-test", "fallback", (10, 5, 0, 0))));
        // Each case starts with a closed breaker.
        let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
            .await
            .unwrap();
        sqlx::query("DELETE FROM kiln_llm_breakers")
            .execute(&db.pool)
            .await
            .unwrap();
        let done = llm
            .complete(Tier::Balanced, &request(100), who(), Budgets::default())
            .await
            .unwrap();
        assert_eq!((a.hits(), o.hits()), (3, 1), "{name}");
        assert_eq!(done.provider, "o", "{name}");
        assert_eq!(done.failed.len(), 3, "{name}");
        let kinds: Vec<_> = done
            .failed
            .iter()
            .map(|f| f.error.as_ref().unwrap().outcome())
            .collect();
        let want = match name {
            "529 overloaded" => "overloaded",
            "500" => "server_error",
            "malformed json" => "malformed",
            "dropped mid-response" => "connection",
            _ => "timeout",
        };
        assert_eq!(kinds, vec![want; 3], "{name}: {:?}", done.failed);
    }
}

#[tokio::test]
async fn refusals_are_not_retried_and_carry_the_providers_message() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    a.push(anthropic_error(
        401,
        "authentication_error",
        "invalid x-api-key",
        vec![],
    ));
    o.push(openai_error(
        404,
        "invalid_request_error",
        Some("model_not_found"),
        "The model `gpt-test` does not exist or you do not have access to it.",
        vec![],
    ));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let err = llm
        .complete(Tier::Balanced, &request(100), who(), Budgets::default())
        .await
        .unwrap_err();
    assert_eq!((a.hits(), o.hits()), (1, 1));
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("a/claude-test: refused (401 authentication_error): invalid x-api-key"),
        "{text}"
    );
    assert!(text.contains("model_not_found"), "{text}");
    // Keys never reach errors or Debug output.
    let debug = format!("{err:?} {llm:?}");
    assert!(!text.contains("SECRET") && !debug.contains("SECRET"), "{debug}");
}

#[tokio::test]
async fn spend_limit_and_insufficient_quota_are_permanent_even_as_429() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    a.push(anthropic_error(
        429,
        "rate_limit_error",
        "This request would exceed your account's monthly spend limit. Please try again later.",
        vec![("retry-after", "1".into())],
    ));
    o.push(openai_error(
        429,
        "insufficient_quota",
        Some("insufficient_quota"),
        "You exceeded your current quota, please check your plan and billing details.",
        vec![("x-ratelimit-reset-requests", "1s".into())],
    ));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let err = llm
        .complete(Tier::Balanced, &request(100), who(), Budgets::default())
        .await
        .unwrap_err();
    assert_eq!((a.hits(), o.hits()), (1, 1), "never retried");
    let LlmError::Exhausted(tries) = err else {
        panic!("{err}")
    };
    assert!(tries
        .iter()
        .all(|t| matches!(t.error, Some(ProviderError::QuotaExhausted { status: 429, .. }))));
    let db_spent: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_llm_calls")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(db_spent, 0);
}

#[tokio::test]
async fn breaker_opens_after_five_failures_half_opens_after_cooldown_and_closes_after_two_successes() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    o.always(Reply::Json(openai_text("gpt-test", "fallback", (10, 5, 0, 0))));
    for _ in 0..5 {
        a.push(server_error());
    }
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let req = request(100);
    let call = || llm.complete(Tier::Balanced, &req, who(), Budgets::default());
    call().await.unwrap(); // a: failures 1..3
    let done = call().await.unwrap(); // a: failures 4, 5 → open; the third try is not made
    assert_eq!(a.hits(), 5);
    assert!(done.failed.last().unwrap().error.is_none(), "{:?}", done.failed);
    assert_eq!(
        llm.breakers().check("a", "claude-test").await.unwrap(),
        BreakerState::Open
    );
    call().await.unwrap(); // open: a is skipped without a request
    assert_eq!(a.hits(), 5);
    assert!(kiln_metrics::render().contains(r#"kiln_llm_circuit_state{model="claude-test",provider="a"} 2"#));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.always(Reply::Json(anthropic_tool_use(
        "claude-test",
        "a.py",
        "x",
        (10, 5, 0, 0),
    )));
    let done = call().await.unwrap(); // half-open trial succeeds
    assert_eq!(done.provider, "a");
    assert_eq!(
        llm.breakers().check("a", "claude-test").await.unwrap(),
        BreakerState::HalfOpen
    );
    call().await.unwrap();
    assert_eq!(
        llm.breakers().check("a", "claude-test").await.unwrap(),
        BreakerState::Closed
    );

    // A failure while half-open reopens at once.
    let b = llm.breakers();
    for _ in 0..5 {
        b.failure("a", "claude-test").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.check("a", "claude-test").await.unwrap(), BreakerState::HalfOpen);
    assert_eq!(b.failure("a", "claude-test").await.unwrap(), BreakerState::Open);
    assert_eq!(b.check("a", "claude-test").await.unwrap(), BreakerState::Open);
}

#[tokio::test]
async fn budgets_refuse_the_call_whose_worst_case_would_exceed_them() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    a.always(Reply::Json(anthropic_tool_use(
        "claude-test",
        "a.py",
        "x",
        (1_000, 1_000, 0, 0),
    )));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    // Each call costs 1000×3 + 1000×15 = 18000 µ$; the worst case of max_tokens 1000 is
    // estimate×3 + 1000×15 µ$ ≥ 15000 µ$. A 0.04 $ budget allows two calls, not a third.
    let budgets = Budgets {
        pipeline: Usd::from_dollars(0.04).unwrap(),
        ..Budgets::default()
    };
    llm.complete(Tier::Balanced, &request(1000), who(), budgets)
        .await
        .unwrap();
    llm.complete(Tier::Balanced, &request(1000), who(), budgets)
        .await
        .unwrap();
    let err = llm
        .complete(Tier::Balanced, &request(1000), who(), budgets)
        .await
        .unwrap_err();
    let LlmError::Budget(e) = err else { panic!("{err}") };
    assert_eq!(e.scope, BudgetScope::Pipeline);
    assert_eq!(e.spent, Usd(36_000_000_000));
    assert_eq!(a.hits(), 2, "the refused call is not made");

    // Another pipeline of the same token: the token's month counts, last month's spend does not.
    sqlx::query(
        "INSERT INTO kiln_llm_calls (at, provider, model, input_tokens, output_tokens, cache_read_tokens,
           cache_write_tokens, cost_pico, api_token_id)
         VALUES (date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 second',
                 'a', 'claude-test', 0, 0, 0, 0, 1000000000000000, 3)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let other = CallFor {
        pipeline_id: Some(8),
        ..who()
    };
    let monthly = Budgets {
        token_monthly: Usd::from_dollars(0.05).unwrap(),
        ..Budgets::default()
    };
    let err = llm
        .complete(Tier::Balanced, &request(1000), other, monthly)
        .await
        .unwrap_err();
    let LlmError::Budget(e) = err else { panic!("{err}") };
    assert_eq!((e.scope, e.spent), (BudgetScope::ApiToken, Usd(36_000_000_000)));
    assert_eq!(a.hits(), 2);
    let roomy = Budgets {
        token_monthly: Usd::from_dollars(0.1).unwrap(),
        ..Budgets::default()
    };
    llm.complete(Tier::Balanced, &request(1000), other, roomy)
        .await
        .unwrap();
    assert_eq!(a.hits(), 3);
}

#[tokio::test]
async fn costs_group_by_provider_model_token_and_day() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    a.always(Reply::Json(anthropic_tool_use(
        "claude-test",
        "a.py",
        "x",
        (100, 10, 0, 0),
    )));
    o.always(Reply::Json(openai_tool_call(
        "gpt-test",
        "a.py",
        "x",
        (200, 20, 0, 0),
    )));
    let llm = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    llm.complete(Tier::Balanced, &request(50), who(), Budgets::default())
        .await
        .unwrap();
    llm.complete(
        Tier::Balanced,
        &request(50),
        CallFor::default(),
        Budgets::default(),
    )
    .await
    .unwrap();
    llm.complete(Tier::Fast, &request(50), who(), Budgets::default())
        .await
        .unwrap();
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    let q = |group_by, api_token_id| CostQuery {
        group_by,
        since,
        until,
        api_token_id,
    };
    let by = |g| costs(&db.pool, q(g, None));
    let p = by(GroupBy::Provider).await.unwrap();
    assert_eq!(
        p.iter().map(|r| (r.key.as_str(), r.calls)).collect::<Vec<_>>(),
        [("a", 2), ("o", 1)]
    );
    // a: 2 × (100×3 + 10×15) = 900 µ$; o: 200×2.5 + 20×10 = 700 µ$.
    assert_eq!((p[0].cost(), p[1].cost()), (Usd(900_000_000), Usd(700_000_000)));
    assert_eq!(p[0].tokens.input, 200);
    let m = by(GroupBy::Model).await.unwrap();
    assert_eq!(m[0].key, "a/claude-test");
    let t = by(GroupBy::Token).await.unwrap();
    assert_eq!(
        t.iter().map(|r| (r.key.as_str(), r.calls)).collect::<Vec<_>>(),
        [("3", 2), ("none", 1)]
    );
    let d = by(GroupBy::Day).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].key, chrono::Utc::now().format("%Y-%m-%d").to_string());
    assert_eq!(d[0].cost(), Usd(1_600_000_000));
    assert!(by(GroupBy::Day).await.unwrap()[0].calls == 3);
    // One token's report holds only its own calls.
    let mine = costs(&db.pool, q(GroupBy::Provider, Some(3))).await.unwrap();
    assert_eq!(
        mine.iter().map(|r| (r.key.as_str(), r.calls)).collect::<Vec<_>>(),
        [("a", 1), ("o", 1)]
    );
    assert!(costs(&db.pool, q(GroupBy::Provider, Some(4)))
        .await
        .unwrap()
        .is_empty());
    assert!("week"
        .parse::<GroupBy>()
        .unwrap_err()
        .to_string()
        .contains("group_by"));
}

#[tokio::test]
async fn a_provider_that_is_down_fails_over_to_the_next_after_its_tries() {
    let db = TestDb::new().await;
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }; // closed again: connections are refused
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    o.push(Reply::Json(openai_text("gpt-test", "up", (10, 5, 0, 0))));
    let llm = Llm::new(config(&down, &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let done = llm
        .complete(Tier::Balanced, &request(100), who(), Budgets::default())
        .await
        .unwrap();
    assert_eq!(
        (done.provider.as_str(), done.response.message.text.as_str()),
        ("o", "up")
    );
    let outcomes: Vec<_> = done
        .failed
        .iter()
        .map(|f| f.error.as_ref().unwrap().outcome())
        .collect();
    assert_eq!(outcomes, ["connection"; 3]);
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn the_breaker_is_shared_by_every_worker_on_the_database() {
    let db = TestDb::new().await;
    let (a, o) = (FakeModel::replay().await, FakeModel::replay().await);
    a.always(overloaded());
    o.always(Reply::Json(openai_text("gpt-test", "fallback", (10, 5, 0, 0))));
    let worker1 = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let worker2 = Llm::new(config(&a.url(), &o.url(), ""), db.pool.clone(), options())
        .await
        .unwrap();
    let req = request(100);
    worker1
        .complete(Tier::Balanced, &req, who(), Budgets::default())
        .await
        .unwrap(); // 3 failures
    worker2
        .complete(Tier::Balanced, &req, who(), Budgets::default())
        .await
        .unwrap(); // 2 more: open
    assert_eq!(a.hits(), 5);
    // Worker 1 now skips the model worker 2's failures opened.
    let done = worker1
        .complete(Tier::Balanced, &req, who(), Budgets::default())
        .await
        .unwrap();
    assert_eq!(a.hits(), 5);
    assert_eq!(done.failed.len(), 1);
    assert!(done.failed[0].error.is_none());
}

#[tokio::test]
async fn a_model_configured_without_tools_is_not_offered_them_and_keys_stay_out_of_the_database() {
    let db = TestDb::new().await;
    let o = FakeModel::replay().await;
    o.always(Reply::Json(openai_text(
        "gpt-test",
        "File: a.py\n```python\nx = 1\n```\n",
        (10, 5, 0, 0),
    )));
    std::env::set_var("KILN_LLM_TEST_PLAIN_KEY", "sk-plain-SECRET-3");
    let cfg = kiln_llm::LlmConfig::from_workers_toml(&format!(
        "[[llm.providers]]\nname = \"plain\"\napi = \"openai\"\nbase_url = \"{}/v1\"\n\
         api_key_env = \"KILN_LLM_TEST_PLAIN_KEY\"\n\
         [[llm.providers.models]]\nname = \"small\"\ntools = false\n\
         [llm.routes]\nfast = [\"plain/small\"]\n",
        o.url()
    ))
    .unwrap();
    let llm = Llm::new(cfg, db.pool.clone(), options()).await.unwrap();
    let done = llm
        .complete(Tier::Fast, &request(100), who(), Budgets::default())
        .await
        .unwrap();
    assert!(done.response.message.text.starts_with("File: a.py"));
    assert!(o.seen()[0].body.get("tools").is_none());
    let dump: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(t::text, ' '), '') FROM (
           SELECT row_to_json(c)::text AS t FROM kiln_llm_calls c
           UNION ALL SELECT row_to_json(b)::text FROM kiln_llm_breakers b
           UNION ALL SELECT row_to_json(r)::text FROM kiln_llm_rate_buckets r) x",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(dump.contains("plain") && !dump.contains("SECRET"), "{dump}");
}

#[tokio::test]
async fn a_missing_key_variable_is_named_without_a_value() {
    let db = TestDb::new().await;
    let cfg = kiln_llm::LlmConfig::from_workers_toml(
        "[[llm.providers]]\nname = \"p\"\napi = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\n\
         api_key_env = \"KILN_LLM_TEST_UNSET_KEY\"\n",
    )
    .unwrap();
    let err = Llm::new(cfg, db.pool.clone(), options()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable KILN_LLM_TEST_UNSET_KEY (api_key_env) is not set"
    );
}
