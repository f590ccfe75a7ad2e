//! `kiln tokens create|list|revoke`: API tokens, straight in the database (this is how the
//! first token is made).

use anyhow::Context;
use kiln_auth::tokens::{self, Scope};
use sqlx::PgPool;

/// Token subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// A scope: jobs:read, jobs:write or admin (repeat for several).
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// A label for humans.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: i64 },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

/// Runs one token subcommand.
pub async fn run(pool: &PgPool, cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create { scopes, name } => {
            let t = tokens::create(pool, &name, &scopes)
                .await
                .context("create token")?;
            eprintln!(
                "token {} ({}) created; it is shown only once:",
                t.info.id,
                t.info
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            println!("{}", t.token);
        }
        TokensCommand::List => {
            for t in tokens::list(pool).await? {
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                let revoked = t.revoked_at.map(|r| format!(" revoked {r}")).unwrap_or_default();
                println!(
                    "{:>6} {:<24} {:<28} {}{revoked}",
                    t.id,
                    t.name,
                    scopes.join(","),
                    t.created_at
                );
            }
        }
        TokensCommand::Revoke { id } => match tokens::revoke(pool, id).await? {
            Some(_) => println!("token {id} revoked"),
            None => anyhow::bail!("no token {id}"),
        },
    }
    Ok(())
}
