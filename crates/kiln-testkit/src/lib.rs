//! An isolated, migrated database per test, on a real PostgreSQL server.
//!
//! The server is `KILN_TEST_DATABASE_URL` or `DATABASE_URL` when set (any database on
//! it; tests create their own next to it), otherwise a private cluster that the first test
//! starts under `target/kiln-test-pg` and later tests reuse. Each test database is copied
//! from a template migrated once per migration set, named `kiln_test_*`, and dropped when
//! the [`TestDb`] is dropped.

pub mod engine;
pub mod llm;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

/// A database that exists for one test.
pub struct TestDb {
    /// Pool on the test database.
    pub pool: PgPool,
    /// URL of the test database (for child processes).
    pub url: String,
    name: String,
    server: PgConnectOptions,
}

/// The server URL tests run against (starting the private cluster if needed).
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = ["KILN_TEST_DATABASE_URL", "DATABASE_URL"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        {
            return url;
        }
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kiln-test-pg");
        kiln_pg::LocalCluster::start(&dir)
            .expect("start the private test cluster")
            .url()
    })
    .clone()
}

/// Installs a test log subscriber once (honours `RUST_LOG`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl TestDb {
    /// Creates a fresh database with Kiln's schema.
    pub async fn new() -> Self {
        Self::with_pool_size(20).await
    }

    /// Same as [`TestDb::new`], with a pool of `max_connections`.
    pub async fn with_pool_size(max_connections: u32) -> Self {
        init_logging();
        let server = PgConnectOptions::from_str(&server_url()).expect("parse server url");
        let template = ensure_template(&server).await;
        let name = format!("kiln_test_{:016x}", rand::random::<u64>());
        let mut admin = server.connect().await.expect("connect to the test server");
        sqlx::query(ddl(format!("CREATE DATABASE {name} TEMPLATE {template}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let opts = server.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(kiln_queue::session_options(opts.clone()))
            .await
            .expect("connect to the test database");
        let url = opts.to_url_lossy().to_string();
        TestDb {
            pool,
            url,
            name,
            server,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.server.clone();
        // Drop is synchronous and may run on the test's single-threaded runtime: clean up on a
        // thread with its own runtime. FORCE ends the test pool's sessions server-side.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut admin = server.connect().await.ok()?;
                sqlx::query(ddl(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Creates (once per migration set, across processes) a migrated template database.
async fn ensure_template(server: &PgConnectOptions) -> String {
    let fingerprint = kiln_queue::MIGRATOR.iter().fold(0xcbf29ce484222325u64, |h, m| {
        m.checksum.iter().fold(h ^ m.version as u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        })
    });
    let name = format!("kiln_template_{fingerprint:016x}");
    let mut admin = server.connect().await.expect("connect to the test server");
    sqlx::query("SELECT pg_advisory_lock(8675309)")
        .execute(&mut admin)
        .await
        .expect("lock");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .expect("look up the template");
    if !exists {
        let building = format!("{name}_building");
        sqlx::query(ddl(format!("DROP DATABASE IF EXISTS {building}")))
            .execute(&mut admin)
            .await
            .expect("drop");
        sqlx::query(ddl(format!("CREATE DATABASE {building}")))
            .execute(&mut admin)
            .await
            .expect("create template");
        let mut conn = PgConnection::connect_with(&server.clone().database(&building))
            .await
            .expect("connect");
        kiln_queue::MIGRATOR
            .run(&mut conn)
            .await
            .expect("migrate the template");
        conn.close().await.ok();
        sqlx::query(ddl(format!("ALTER DATABASE {building} RENAME TO {name}")))
            .execute(&mut admin)
            .await
            .expect("publish the template");
    }
    sqlx::query("SELECT pg_advisory_unlock(8675309)")
        .execute(&mut admin)
        .await
        .expect("unlock");
    admin.close().await.ok();
    name
}

/// Database names here are generated (`kiln_test_` + hex, `kiln_template_` + hex), never
/// taken from input, so the DDL built from them is safe to send as is.
fn ddl(statement: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(statement)
}
