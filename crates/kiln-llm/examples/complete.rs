//! Sends one prompt along a route of `workers.toml`'s `[llm]` section and prints the answer,
//! its tokens and its exact cost (recorded in the ledger of `DATABASE_URL`).
//!
//! `cargo run -p kiln-llm --example complete -- workers.toml balanced "Write hello.py"`

use kiln_llm::{
    Budgets, CallFor, ChatRequest, Complexity, Llm, LlmConfig, Message, Options, Preference, RouteOf,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(file), Some(pref), Some(prompt)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: complete WORKERS_TOML fast|balanced|quality|auto PROMPT");
        std::process::exit(2);
    };
    let cfg = LlmConfig::from_workers_toml(&std::fs::read_to_string(&file)?)?;
    let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
    kiln_queue::migrate(&pool).await?;
    let llm = Llm::from_env(cfg, pool, Options::default()).await?;
    let tier = pref
        .parse::<Preference>()?
        .tier(&Complexity::default().with_prompt(&prompt));
    let req = ChatRequest {
        system: Some("You write code. Use write_file for every file.".into()),
        messages: vec![Message::user(prompt)],
        max_tokens: 2048,
        tools: true,
    };
    let done = llm
        .complete(tier, &req, CallFor::default(), Budgets::default())
        .await?;
    println!(
        "{}/{} ({:?}): {}",
        done.provider, done.model, done.response.finish, done.response.message.text
    );
    for call in &done.response.message.tool_calls {
        println!("tool {} {}", call.name, call.arguments);
    }
    println!("tokens {:?}, cost {}", done.usage, done.cost);
    Ok(())
}
