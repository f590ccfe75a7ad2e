//! `kiln api` (and the API half of `kiln up`): serve the HTTP API on `--listen`, announce
//! `listening on http://ADDR`, and keep an admin token in `<data-dir>/admin-token`.

use anyhow::Context;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Flags of `kiln api`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "KILN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body in bytes (413 beyond); the batch endpoint allows 64 times more.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// A `workers.toml` whose `[network]` section says which git destinations pipelines may
    /// name (default for `kiln up`: its `--config`; without one, public addresses only).
    #[arg(long, env = "KILN_FLEET_CONFIG")]
    pub fleet_config: Option<PathBuf>,
}

/// Where the admin token of an embedded installation is kept.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// Reuses `<data-dir>/admin-token` if it still names a live admin token; otherwise creates
/// one and writes it there (mode 0600).
pub async fn ensure_admin_token(pool: &PgPool, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = admin_token_path(data_dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if kiln_auth::tokens::is_live_admin(pool, existing.trim()).await? {
            return Ok(path);
        }
    }
    let token =
        kiln_auth::tokens::create(pool, "admin (kiln up)", &[kiln_auth::tokens::Scope::Admin]).await?;
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    write_private(&path, &format!("{}\n", token.token))?;
    tracing::info!(path = %path.display(), id = token.info.id, "wrote a new admin token");
    Ok(path)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Binds the API's address (before anything else starts, so a port in use fails fast).
pub async fn bind(args: &ApiArgs) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {} (--listen)", args.listen))
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn run_api(
    pool: PgPool,
    pg_listener: Option<kiln_queue::Listener>,
    listener: tokio::net::TcpListener,
    args: &ApiArgs,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let token_path = ensure_admin_token(&pool, data_dir).await?;
    let network = match &args.fleet_config {
        Some(path) => {
            crate::fleet::FleetFile::load(path)
                .context("--fleet-config")?
                .network
        }
        None => kiln_artifacts::DestinationPolicy::default(),
    };
    let config = kiln_api::ApiConfig {
        body_limit: args.body_limit,
        batch_body_limit: args.body_limit.saturating_mul(64),
        git_access: kiln_artifacts::GitAccess::remote(network),
        ..kiln_api::ApiConfig::default()
    };
    let state = match pg_listener {
        Some(l) => kiln_api::AppState::with_listener(pool, l, config, shutdown.child_token()),
        None => kiln_api::AppState::new(pool, config, shutdown.child_token()),
    };
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!("admin token in {}", token_path.display());
    kiln_api::serve(listener, state, shutdown.cancelled_owned()).await?;
    Ok(())
}
