//! The embedded Postgres (kiln-pg): password authentication, and no permission changed above
//! its data directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sqlx::Connection;

/// Mode, owner and group of `path` and of every directory above it.
fn permissions_up_from(path: &Path) -> Vec<(PathBuf, u32, u32, u32)> {
    path.ancestors()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (p.to_path_buf(), m.mode(), m.uid(), m.gid())
        })
        .collect()
}

async fn connects(url: &str) -> Result<(), String> {
    match sqlx::PgConnection::connect(url).await {
        Ok(c) => {
            c.close().await.ok();
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn no_trust_rule(data_dir: &Path) {
    let hba = std::fs::read_to_string(data_dir.join("pg_hba.conf")).unwrap();
    let rules: Vec<&str> = hba
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!rules.is_empty(), "pg_hba.conf has rules");
    for rule in rules {
        assert!(rule.ends_with("scram-sha-256"), "only SCRAM rules: {rule}");
    }
}

#[tokio::test]
async fn the_embedded_cluster_asks_for_its_generated_password() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    assert!(cluster.started());
    let password_file = dir.path().join("password");
    let password = std::fs::read_to_string(&password_file).unwrap();
    let password = password.trim();
    assert_eq!(password.len(), 32, "a generated password");
    let mode = std::fs::metadata(&password_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the password file is its owner's only");
    assert!(cluster.url().contains(password), "the URL carries the password");
    no_trust_rule(cluster.data_dir());

    connects(&cluster.url()).await.expect("the URL connects");
    let port = cluster.port();
    let refused = connects(&format!("postgres://postgres@127.0.0.1:{port}/kiln")).await;
    assert!(refused.is_err(), "no password, no connection");
    let wrong = connects(&format!("postgres://postgres:wrong@127.0.0.1:{port}/kiln")).await;
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "a wrong password is refused: {wrong:?}"
    );

    // Attaching to the running server finds the same password; it did not start it.
    let again = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    assert!(!again.started());
    assert_eq!(again.url(), cluster.url());

    let data_dir = cluster.data_dir().to_path_buf();
    cluster.remove().unwrap();
    assert!(!data_dir.exists(), "remove deletes the data directory");
    assert!(!password_file.exists());
}

#[test]
fn starting_changes_no_permission_above_the_data_directory() {
    let top = tempfile::tempdir().unwrap();
    // An owner-only directory, as `mktemp -d` makes: the postgres user cannot enter it.
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = top.path().join("kiln");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let before = permissions_up_from(&dir);
    let cluster = kiln_pg::LocalCluster::start(&dir).unwrap();
    assert!(cluster.is_running());
    assert_eq!(
        permissions_up_from(&dir),
        before,
        "no mode or owner changed from Kiln's directory up"
    );
    cluster.remove().unwrap();
}

#[tokio::test]
async fn a_cluster_that_trusted_local_connections_is_moved_to_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    cluster.stop().unwrap();
    // What an earlier Kiln left: a cluster trusting local connections, and no password file.
    std::fs::write(
        cluster.data_dir().join("pg_hba.conf"),
        "host all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("password")).unwrap();

    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    let password = std::fs::read_to_string(dir.path().join("password")).unwrap();
    assert_eq!(password.trim().len(), 32, "a new generated password");
    no_trust_rule(cluster.data_dir());
    connects(&cluster.url()).await.expect("the URL connects");
    let port = cluster.port();
    let refused = connects(&format!("postgres://postgres@127.0.0.1:{port}/kiln")).await;
    assert!(refused.is_err(), "trust is gone: no password, no connection");
    cluster.remove().unwrap();
}
