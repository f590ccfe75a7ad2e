//! Forwards the sandbox's live log chunks into `kiln_job_logs` in small batches, so the logs of
//! a running attempt can be read (and tailed) while it runs. An attempt's stored log is capped
//! ([`kiln_queue::logs::DEFAULT_LIVE_LOG_CAP`] unless configured): past the cap one Kiln line
//! says so, and the rest is counted in `kiln_job_log_drops`, not stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_queue::logs::{append, record_drops, LogChunk, LogDrops};
use kiln_sandbox::{LogChunk as SandboxChunk, Stream};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most chunks written per statement.
const BATCH: usize = 64;
/// Longest a chunk waits before it is written.
const LINGER: Duration = Duration::from_millis(200);
/// Room kept under the cap for Kiln's line saying the cap was reached.
const MARKER_ROOM: u64 = 256;
/// How often the count of dropped output is written while output keeps coming.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// A running forwarder: send chunks with [`LogForwarder::sender`], then [`LogForwarder::finish`].
pub struct LogForwarder {
    tx: mpsc::Sender<SandboxChunk>,
    lost: Arc<AtomicU64>,
    task: JoinHandle<u64>,
}

/// What the forwarder task keeps between chunks.
struct State {
    pool: PgPool,
    job_id: i64,
    attempt: i32,
    cap: u64,
    seq: i32,
    stored: u64,
    dropped_bytes: u64,
    dropped_chunks: u64,
    lost: Arc<AtomicU64>,
    recorded: (u64, u64),
    batch: Vec<LogChunk>,
    written: u64,
}

impl LogForwarder {
    /// Starts forwarding chunks of job `job_id`'s attempt `attempt`, numbered from 0, with the
    /// default cap.
    pub fn start(pool: PgPool, job_id: i64, attempt: i32) -> Self {
        Self::with_cap(pool, job_id, attempt, kiln_queue::logs::DEFAULT_LIVE_LOG_CAP)
    }

    /// Like [`LogForwarder::start`], storing at most `cap` bytes of the attempt's output.
    pub fn with_cap(pool: PgPool, job_id: i64, attempt: i32, cap: u64) -> Self {
        let (tx, mut rx) = mpsc::channel::<SandboxChunk>(1024);
        let lost = Arc::new(AtomicU64::new(0));
        let mut st = State {
            pool,
            job_id,
            attempt,
            cap,
            seq: 0,
            stored: 0,
            dropped_bytes: 0,
            dropped_chunks: 0,
            lost: lost.clone(),
            recorded: (0, 0),
            batch: Vec::new(),
            written: 0,
        };
        let task = tokio::spawn(async move {
            // When the oldest chunk of the batch must be written: a steady trickle of output
            // must not hold it back until the batch is full.
            let mut due = tokio::time::Instant::now();
            let mut drops_due = tokio::time::Instant::now() + DROPS_EVERY;
            loop {
                let next = if st.batch.is_empty() {
                    let c = rx.recv().await;
                    due = tokio::time::Instant::now() + LINGER;
                    c
                } else {
                    match tokio::time::timeout_at(due, rx.recv()).await {
                        Ok(c) => c,
                        Err(_) => {
                            st.flush().await;
                            continue;
                        }
                    }
                };
                let Some(chunk) = next else { break };
                st.take(chunk);
                if st.batch.len() >= BATCH {
                    st.flush().await;
                }
                if tokio::time::Instant::now() >= drops_due {
                    st.record().await;
                    drops_due = tokio::time::Instant::now() + DROPS_EVERY;
                }
            }
            st.flush().await;
            st.record().await;
            st.written
        });
        LogForwarder { tx, lost, task }
    }

    /// A sender for the sandbox (and for Kiln's own progress lines).
    pub fn sender(&self) -> mpsc::Sender<SandboxChunk> {
        self.tx.clone()
    }

    /// Counts `bytes` of output that never reached the forwarder (the sandbox drops chunks for
    /// a receiver that lags), so the recorded count of what was not stored is whole.
    pub fn count_lost(&self, bytes: u64) {
        self.lost.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Writes a line of Kiln's own on stderr (e.g. which tool starts).
    pub fn note(&self, line: &str) {
        let _ = self.tx.try_send(SandboxChunk {
            stream: Stream::Stderr,
            data: format!("kiln: {line}\n").into_bytes(),
        });
    }

    /// Flushes what is left, records what was not stored, and returns how many chunks were
    /// stored.
    pub async fn finish(self) -> u64 {
        drop(self.tx);
        self.task.await.unwrap_or(0)
    }
}

impl State {
    /// Queues what fits under the cap of `chunk`; counts the rest.
    fn take(&mut self, chunk: SandboxChunk) {
        let stream = match chunk.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let room = self.cap.saturating_sub(MARKER_ROOM).saturating_sub(self.stored);
        let len = chunk.data.len() as u64;
        let mut data = chunk.data;
        if len > room {
            let first_drop = self.dropped_bytes == 0 && self.dropped_chunks == 0;
            data.truncate(room as usize);
            self.dropped_bytes += len - room;
            self.dropped_chunks += 1;
            if !data.is_empty() {
                self.push(stream, data);
            }
            if first_drop {
                let marker = format!(
                    "\nkiln: live log cap of {} bytes reached; further output is counted, not stored\n",
                    self.cap
                );
                self.push("stderr", marker.into_bytes());
            }
            return;
        }
        self.push(stream, data);
    }

    fn push(&mut self, stream: &str, data: Vec<u8>) {
        self.stored += data.len() as u64;
        self.batch.push(LogChunk {
            seq: self.seq,
            stream: stream.into(),
            data,
        });
        self.seq += 1;
    }

    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        match append(&self.pool, self.job_id, self.attempt, &self.batch).await {
            Ok(n) => self.written += n,
            Err(e) => {
                tracing::warn!(job = self.job_id, attempt = self.attempt, error = %e, chunks = self.batch.len(), "storing live logs failed; the attempt's head/tail still keeps them");
            }
        }
        self.batch.clear();
    }

    /// Writes the counts of what was not stored, when they changed.
    async fn record(&mut self) {
        let lost = self.lost.load(Ordering::Relaxed);
        let now = (self.dropped_bytes + lost, self.dropped_chunks);
        if now == self.recorded || now == (0, 0) {
            return;
        }
        let drops = LogDrops {
            attempt: self.attempt,
            dropped_bytes: i64::try_from(now.0).unwrap_or(i64::MAX),
            dropped_chunks: i64::try_from(now.1).unwrap_or(i64::MAX),
            cap_bytes: i64::try_from(self.cap).unwrap_or(i64::MAX),
        };
        match record_drops(&self.pool, self.job_id, drops).await {
            Ok(()) => self.recorded = now,
            Err(e) => tracing::warn!(job = self.job_id, error = %e, "recording dropped live logs failed"),
        }
    }
}
