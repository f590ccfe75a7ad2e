//! The runner's record, against the real Docker engine: logs, exit codes, diff, outputs, the
//! warm pool and the typed errors.

mod common;

use std::time::Duration;

use bollard::Docker;
use common::{finish, job, python_image, sandbox};
use kiln_sandbox::{Outcome, Sandbox, SandboxError, Stream, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stream_separately_and_the_record_is_complete() {
    let sb = sandbox("logs").await;
    let mut spec = job(&sb, "echo out; echo err >&2; echo \"$GREETING\"; id -u; exit 3");
    spec.env = vec![("GREETING".into(), "hello".into())];
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let r = sb.run(&spec, Some(tx)).await.unwrap();
    let mut streamed = (String::new(), String::new());
    while let Some(chunk) = rx.recv().await {
        let text = String::from_utf8_lossy(&chunk.data).into_owned();
        match chunk.stream {
            Stream::Stdout => streamed.0.push_str(&text),
            Stream::Stderr => streamed.1.push_str(&text),
        }
    }
    assert_eq!(r.outcome, Outcome::NonZeroExit);
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.stdout.text(), "out\nhello\n10001\n");
    assert_eq!(r.stderr.text(), "err\n");
    assert_eq!(streamed, (r.stdout.text(), r.stderr.text()));
    assert!(r.usage.wall > Duration::ZERO);
    assert!(r.usage.peak_memory_bytes > 0);
    assert!(r.image_id.starts_with("sha256:"));
    assert!(!r.warm);
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_of_edits_additions_and_deletions_is_exact() {
    let sb = sandbox("diff").await;
    let mut ws = Workspace::new();
    ws.add_file(
        "src/app.py",
        "def add(a, b):\n    return a - b\n\nprint(add(1, 2))\n",
    )
    .unwrap();
    ws.add_file("README.md", "# app\n").unwrap();
    ws.add_file("old.txt", "remove me\nplease\n").unwrap();
    ws.add_file("data.bin", vec![0u8, 159, 146, 150]).unwrap();
    let script = "sed -i 's/a - b/a + b/' src/app.py \
                  && rm old.txt \
                  && printf 'def test_add():\\n    assert True\\n' > src/test_app.py \
                  && printf '\\001\\002' > data.bin \
                  && mkdir -p out && python3 src/app.py > out/result.txt";
    let mut spec = job(&sb, script);
    spec.workspace = ws;
    spec.outputs = vec!["out/result.txt".into()];
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::Success, "stderr: {}", r.stderr.text());
    let d = &r.diff;
    assert_eq!(d.added, vec!["out/result.txt", "src/test_app.py"]);
    assert_eq!(d.removed, vec!["old.txt"]);
    assert_eq!(d.modified, vec!["data.bin", "src/app.py"]);
    assert_eq!(d.binary, vec!["data.bin"]);
    assert_eq!(d.files_changed, 5);
    assert_eq!((d.insertions, d.deletions), (4, 3));
    let expected = "\
diff --git a/old.txt b/old.txt
--- a/old.txt
+++ /dev/null
@@ -1,2 +0,0 @@
-remove me
-please
diff --git a/out/result.txt b/out/result.txt
--- /dev/null
+++ b/out/result.txt
@@ -0,0 +1 @@
+3
diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -1,4 +1,4 @@
 def add(a, b):
-    return a - b
+    return a + b
 
 print(add(1, 2))
diff --git a/src/test_app.py b/src/test_app.py
--- /dev/null
+++ b/src/test_app.py
@@ -0,0 +1,2 @@
+def test_add():
+    assert True
";
    assert_eq!(d.unified, expected);
    assert_eq!(r.outputs.file("out/result.txt"), Some(&b"3\n"[..]));
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_serves_a_job_with_an_exec_and_refills() {
    let sb = sandbox("warm").await;
    let image = python_image();
    let pool = sb.start_pool(std::slice::from_ref(&image), 2);
    assert!(pool.wait_full(Duration::from_secs(60)).await);
    let r = sb.run(&job(&sb, "echo warm"), None).await.unwrap();
    assert!(r.warm);
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.stdout.text(), "warm\n");
    // The used container is never handed out again; the pool refills to its size.
    assert!(pool.wait_full(Duration::from_secs(60)).await);
    assert_eq!(pool.ready_counts()[&image], 2);
    let again = sb.run(&job(&sb, "echo again"), None).await.unwrap();
    assert!(again.warm);
    assert_ne!(again.container_id, r.container_id);
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_not_retryable() {
    let sb = sandbox("missing").await;
    let mut spec = job(&sb, "true");
    spec.image = "kiln-python:does-not-exist".into();
    let err = sb.run(&spec, None).await.unwrap_err();
    assert!(matches!(err, SandboxError::ImageMissing(_)), "{err}");
    assert!(!err.is_retryable());
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_daemon_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file whose listener is gone: what a stopped daemon leaves behind.
    let socket = dir.path().join("no-docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let docker =
        Docker::connect_with_unix(socket.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION).unwrap();
    let err = match Sandbox::with_docker(docker, "test-unreachable").await {
        Ok(_) => panic!("connected to a socket that does not exist"),
        Err(e) => e,
    };
    assert!(matches!(err, SandboxError::DaemonUnavailable(_)), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_job_leaves_nothing_behind() {
    let sb = sandbox("abandoned").await;
    let spec = job(&sb, "echo started; sleep 100000");
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut run = Box::pin(sb.run(&spec, Some(tx)));
    // Drop the job's future once it is running, as a cancelled worker task would.
    tokio::select! {
        _ = &mut run => panic!("the job cannot finish on its own"),
        chunk = rx.recv() => assert_eq!(chunk.unwrap().data, b"started\n"),
    }
    drop(run);
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_abandoned_while_its_container_starts_leaves_nothing() {
    // A caller that gives up (a fenced or cancelled attempt) while the container is being
    // created or started: the container must not be left behind, running its idle command.
    let sb = common::sandbox("abandon-start").await;
    for ms in [5u64, 20, 40, 60, 80, 100, 130, 160, 200, 250, 300, 400] {
        let spec = common::job(&sb, "sleep 30");
        let _ = tokio::time::timeout(Duration::from_millis(ms), sb.run(&spec, None)).await;
    }
    sb.removals_done().await;
    let worker = sb.owner().worker_id.clone();
    let running = kiln_sandbox::reaper::containers_of(sb.docker(), &worker)
        .await
        .unwrap();
    assert!(
        running.is_empty(),
        "containers left after abandoned starts: {running:?}"
    );
    common::finish(sb).await;
}
