//! One `LISTEN kiln_logs` connection per API process, fanned out to every live log stream as
//! job ids on a broadcast channel. Streams also poll, so a lost notification (or a listener
//! reconnecting) only delays a chunk, never loses it.

use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Fan-out of `kiln_logs` notifications (payload: job id).
#[derive(Clone)]
pub struct LogHub {
    tx: broadcast::Sender<i64>,
}

impl LogHub {
    /// Starts the listener task; it reconnects on errors and ends with `shutdown`.
    pub fn start(pool: sqlx::PgPool, shutdown: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let hub = LogHub { tx: tx.clone() };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    res = listen(&pool, &tx) => {
                        if let Err(e) = res {
                            tracing::warn!(error = %e, "log listener lost its connection; reconnecting");
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        hub
    }

    /// A receiver of job ids whose logs grew.
    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.tx.subscribe()
    }
}

async fn listen(pool: &sqlx::PgPool, tx: &broadcast::Sender<i64>) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(kiln_queue::logs::LOGS_CHANNEL).await?;
    tracing::debug!("listening on {}", kiln_queue::logs::LOGS_CHANNEL);
    loop {
        let n = listener.recv().await?;
        if let Ok(id) = n.payload().parse::<i64>() {
            // No subscribers is fine: nobody is tailing.
            let _ = tx.send(id);
        }
    }
}
