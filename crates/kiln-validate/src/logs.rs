//! Forwards the sandbox's live log chunks into `kiln_job_logs` in small batches, so the logs of
//! a running attempt can be read (and tailed) while it runs.

use std::time::Duration;

use kiln_queue::logs::{append, LogChunk};
use kiln_sandbox::{LogChunk as SandboxChunk, Stream};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most chunks written per statement.
const BATCH: usize = 64;
/// Longest a chunk waits before it is written.
const LINGER: Duration = Duration::from_millis(200);

/// A running forwarder: send chunks with [`LogForwarder::sender`], then [`LogForwarder::finish`].
pub struct LogForwarder {
    tx: mpsc::Sender<SandboxChunk>,
    task: JoinHandle<u64>,
}

impl LogForwarder {
    /// Starts forwarding chunks of job `job_id`'s attempt `attempt`, numbered from 0.
    pub fn start(pool: PgPool, job_id: i64, attempt: i32) -> Self {
        let (tx, mut rx) = mpsc::channel::<SandboxChunk>(1024);
        let task = tokio::spawn(async move {
            let mut seq = 0i32;
            let mut written = 0u64;
            let mut batch: Vec<LogChunk> = Vec::new();
            // When the oldest chunk of the batch must be written: a steady trickle of output
            // must not hold it back until the batch is full.
            let mut due = tokio::time::Instant::now();
            loop {
                let next = if batch.is_empty() {
                    let c = rx.recv().await;
                    due = tokio::time::Instant::now() + LINGER;
                    c
                } else {
                    match tokio::time::timeout_at(due, rx.recv()).await {
                        Ok(c) => c,
                        Err(_) => {
                            written += flush(&pool, job_id, attempt, &mut batch).await;
                            continue;
                        }
                    }
                };
                let Some(chunk) = next else { break };
                batch.push(LogChunk {
                    seq,
                    stream: match chunk.stream {
                        Stream::Stdout => "stdout".into(),
                        Stream::Stderr => "stderr".into(),
                    },
                    data: String::from_utf8_lossy(&chunk.data).into_owned(),
                });
                seq += 1;
                if batch.len() >= BATCH {
                    written += flush(&pool, job_id, attempt, &mut batch).await;
                }
            }
            written + flush(&pool, job_id, attempt, &mut batch).await
        });
        LogForwarder { tx, task }
    }

    /// A sender for the sandbox (and for Kiln's own progress lines).
    pub fn sender(&self) -> mpsc::Sender<SandboxChunk> {
        self.tx.clone()
    }

    /// Writes a line of Kiln's own on stderr (e.g. which tool starts).
    pub fn note(&self, line: &str) {
        let _ = self.tx.try_send(SandboxChunk {
            stream: Stream::Stderr,
            data: format!("kiln: {line}\n").into_bytes(),
        });
    }

    /// Flushes what is left and returns how many chunks were stored.
    pub async fn finish(self) -> u64 {
        drop(self.tx);
        self.task.await.unwrap_or(0)
    }
}

async fn flush(pool: &PgPool, job_id: i64, attempt: i32, batch: &mut Vec<LogChunk>) -> u64 {
    if batch.is_empty() {
        return 0;
    }
    let n = match append(pool, job_id, attempt, batch).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(job = job_id, attempt, error = %e, chunks = batch.len(), "storing live logs failed; the attempt's head/tail still keeps them");
            0
        }
    };
    batch.clear();
    n
}
