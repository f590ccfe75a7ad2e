//! Workspace artifacts: stored once, capped, loaded back; git checkouts of a local repository.

use std::path::Path;
use std::process::Command;

use kiln_artifacts::{ArtifactError, TreeEntry, DEFAULT_MAX_BYTES};
use kiln_testkit::TestDb;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kiln",
            "-c",
            "user.email=kiln@localhost",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_workspace_is_stored_once_and_loads_back_whole() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.py"), "print('a')\n").unwrap();
    std::fs::write(dir.path().join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("src/a.py", dir.path().join("link.py")).unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/config"), "not packed").unwrap();

    let packed = kiln_artifacts::pack_dir(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert!(kiln_artifacts::store(&db.pool, &packed).await.unwrap());
    let again = kiln_artifacts::pack_dir(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(again.digest, packed.digest, "same files, same digest");
    assert!(
        !kiln_artifacts::store(&db.pool, &again).await.unwrap(),
        "stored once"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_artifacts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    let tree = kiln_artifacts::load(&db.pool, &packed.digest, DEFAULT_MAX_BYTES)
        .await
        .unwrap();
    let paths: Vec<&str> = tree.entries.keys().map(String::as_str).collect();
    assert_eq!(paths, ["link.py", "run.sh", "src/a.py"]);
    assert_eq!(
        tree.entries["run.sh"],
        TreeEntry::File {
            data: b"#!/bin/sh\necho hi\n".to_vec(),
            executable: true
        }
    );
    assert_eq!(
        tree.entries["link.py"],
        TreeEntry::Symlink {
            target: "src/a.py".into()
        }
    );
    let info = kiln_artifacts::info(&db.pool, &packed.digest).await.unwrap();
    assert_eq!(info.files, 3);
    assert!(info.stored_bytes > 0 && info.stored_bytes < info.size_bytes);

    // Over the cap: refused before anything is stored, naming the cap.
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 64 * 1024]).unwrap();
    let err = kiln_artifacts::pack_dir(dir.path(), 32 * 1024).unwrap_err();
    assert!(matches!(err, ArtifactError::TooLarge { cap: 32768, .. }), "{err}");
    let missing =
        kiln_artifacts::load(&db.pool, &format!("sha256:{}", "0".repeat(64)), DEFAULT_MAX_BYTES).await;
    assert!(matches!(missing, Err(ArtifactError::NotFound(_))));
}

#[tokio::test]
async fn a_git_checkout_packs_the_tracked_files_at_the_ref() {
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q", "-b", "main", "."]);
    std::fs::write(r.join("app.py"), "print(1)\n").unwrap();
    std::fs::write(r.join(".gitignore"), "build/\n").unwrap();
    git(r, &["add", "."]);
    git(r, &["commit", "-q", "-m", "one"]);
    git(r, &["tag", "v1"]);
    let first = git(r, &["rev-parse", "HEAD"]);
    std::fs::write(r.join("app.py"), "print(2)\n").unwrap();
    git(r, &["commit", "-q", "-am", "two"]);
    // Ignored build output in the work tree never reaches an artifact.
    std::fs::create_dir(r.join("build")).unwrap();
    std::fs::write(r.join("build/out.bin"), "junk").unwrap();

    let at_tag = kiln_artifacts::git::checkout(r.to_str().unwrap(), Some("v1"), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(at_tag.source["commit"], first);
    let at_sha = kiln_artifacts::git::checkout(r.to_str().unwrap(), Some(&first), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(at_sha.digest, at_tag.digest);
    let tree = kiln_artifacts::Tree::from_tar_gz(&at_tag.data, DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(
        tree.entries["app.py"],
        TreeEntry::File {
            data: b"print(1)\n".to_vec(),
            executable: false
        }
    );

    let head =
        kiln_artifacts::git::checkout(&format!("file://{}", r.display()), None, DEFAULT_MAX_BYTES).unwrap();
    assert_ne!(head.digest, at_tag.digest);
    // The work tree packed directly: same tracked files as HEAD, the ignored build/ left out.
    let dir = kiln_artifacts::pack_dir(r, DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(dir.digest, head.digest);

    let err = kiln_artifacts::git::checkout(r.to_str().unwrap(), Some("no-such-ref"), DEFAULT_MAX_BYTES)
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::Git(_)) && err.to_string().contains("no-such-ref"),
        "{err}"
    );
    let err =
        kiln_artifacts::git::checkout("--upload-pack=touch /tmp/x", None, DEFAULT_MAX_BYTES).unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
}

#[tokio::test]
async fn an_uploaded_tar_becomes_the_same_artifact_and_a_pipeline_of_three_jobs() {
    let db = TestDb::new().await;
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python");
    let packed = kiln_artifacts::pack_dir(&fixture, DEFAULT_MAX_BYTES).unwrap();
    // An upload as a client would make it: any gzip-compressed tar of the files.
    let tree = kiln_artifacts::Tree::from_tar_gz(&packed.data, DEFAULT_MAX_BYTES).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tree.to_tar().unwrap()).unwrap();
    let upload = gz.finish().unwrap();
    assert_ne!(upload, packed.data);

    let opts = kiln_pipeline::SubmitOptions {
        tags: vec!["ci".into()],
        ..Default::default()
    };
    let sub = kiln_pipeline::submit(&db.pool, kiln_pipeline::Source::TarGz(upload), &opts)
        .await
        .unwrap();
    assert_eq!(
        sub.workspace, packed.digest,
        "re-packed canonically: same digest as the directory"
    );
    assert_eq!(sub.jobs.len(), 3);
    let view = kiln_pipeline::get(&db.pool, sub.pipeline_id).await.unwrap();
    assert_eq!((view.state.as_str(), view.verdict.as_deref()), ("running", None));
    assert_eq!(view.languages, ["python"]);
    let kinds: Vec<&str> = view.jobs.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds, ["test", "lint", "security-scan"]);
    for j in &view.jobs {
        let job = kiln_queue::admin::get_job(&db.pool, j.id).await.unwrap();
        assert_eq!(job.pipeline_id, Some(sub.pipeline_id));
        assert_eq!(job.queue, j.kind);
        assert_eq!(
            job.payload,
            serde_json::json!({"workspace": packed.digest, "languages": ["python"]})
        );
        assert!(
            job.tags.contains(&"ci".to_string())
                && job.tags.contains(&format!("pipeline:{}", sub.pipeline_id))
        );
    }
    let s = view.summary();
    assert_eq!(s["verdict"], serde_json::Value::Null);

    // Cancelling a job settles the pipeline as `error` once the others are final too.
    for j in &view.jobs {
        kiln_queue::admin::cancel(&db.pool, j.id).await.unwrap();
    }
    let done = kiln_pipeline::wait(
        &db.pool,
        None,
        sub.pipeline_id,
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        (done.state.as_str(), done.verdict.as_deref(), done.quality_score),
        ("finished", Some("error"), None)
    );
    assert!(done.summary()["errors"]["test"]
        .as_str()
        .unwrap()
        .contains("cancelled"));

    // A job retried by hand reopens its finished pipeline; it settles again when that job is
    // final again.
    let test_job = view.jobs[0].id;
    kiln_queue::admin::retry(&db.pool, test_job).await.unwrap();
    let reopened = kiln_pipeline::get(&db.pool, sub.pipeline_id).await.unwrap();
    assert_eq!(
        (
            reopened.state.as_str(),
            reopened.verdict.as_deref(),
            reopened.result.is_none()
        ),
        ("running", None, true)
    );
    assert_eq!(kiln_pipeline::settle_ready(&db.pool, 10).await.unwrap(), 0);
    kiln_queue::admin::cancel(&db.pool, test_job).await.unwrap();
    let again = kiln_pipeline::wait(
        &db.pool,
        None,
        sub.pipeline_id,
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        (again.state.as_str(), again.verdict.as_deref()),
        ("finished", Some("error"))
    );

    // A retry racing a settle, in both orders: a pipeline with a live job ends `running`.
    // (1) The retry's transaction is open when a settle starts: the settle waits for it.
    kiln_queue::admin::retry(&db.pool, test_job).await.unwrap();
    kiln_queue::admin::cancel(&db.pool, test_job).await.unwrap();
    let mut retry_tx = db.pool.begin().await.unwrap();
    let retried = sqlx::query(
        "UPDATE kiln_jobs SET state = 'available', finalized_at = NULL, run_at = now() WHERE id = $1",
    )
    .bind(test_job)
    .execute(&mut *retry_tx)
    .await
    .unwrap();
    assert_eq!(retried.rows_affected(), 1);
    let pool = db.pool.clone();
    let settling = tokio::spawn(async move { kiln_pipeline::settle(&pool, sub.pipeline_id).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!settling.is_finished(), "the settle waits for the retry's lock");
    retry_tx.commit().await.unwrap();
    let v = settling.await.unwrap().unwrap();
    assert_eq!((v.state.as_str(), v.verdict.as_deref()), ("running", None));
    // (2) A settling transaction holds the pipeline when a retry comes: the retry waits, then
    // reopens what the settle finished.
    kiln_queue::admin::cancel(&db.pool, test_job).await.unwrap();
    let mut settle_tx = db.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM kiln_pipelines WHERE id = $1 FOR UPDATE")
        .bind(sub.pipeline_id)
        .execute(&mut *settle_tx)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let retrying = tokio::spawn(async move { kiln_queue::admin::retry(&pool, test_job).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!retrying.is_finished(), "the retry waits for the settle's lock");
    sqlx::query(
        "UPDATE kiln_pipelines SET state = 'finished', verdict = 'error', finished_at = now() WHERE id = $1",
    )
    .bind(sub.pipeline_id)
    .execute(&mut *settle_tx)
    .await
    .unwrap();
    settle_tx.commit().await.unwrap();
    retrying.await.unwrap().unwrap();
    let v = kiln_pipeline::get(&db.pool, sub.pipeline_id).await.unwrap();
    assert_eq!((v.state.as_str(), v.verdict.as_deref()), ("running", None));
    let err = kiln_pipeline::get(&db.pool, 999_999).await.unwrap_err();
    assert!(matches!(err, kiln_pipeline::PipelineError::NotFound(999_999)));
}
