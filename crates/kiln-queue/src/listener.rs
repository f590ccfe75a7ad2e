//! One `LISTEN` connection per process, shared by every consumer in it (River's single
//! listener): the worker's wake-ups and cancels, live log tails, the pipeline settler and
//! waits, and event streams subscribe to channels here instead of opening their own.
//!
//! Notifications are hints: every consumer re-reads its source of truth (the outbox by id, the
//! log table by cursor, the queue by claim), and [`Signal::Reconnected`] (or a lagging
//! receiver) tells it that hints may have been missed, so it re-reads at once.
//!
//! `kiln_jobs` wake-ups go to the process's fetchers through [`Listener::register_fetcher`]:
//! one fetcher of the queue per notification (see [`crate::wake`]), not every one of them.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::admin::JOBS_CHANNEL;
use crate::wake::{FetcherWake, Fetchers};

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A notification's payload.
    Notified(String),
    /// The connection was (re)established: notifications may have been missed, re-read.
    Reconnected,
}

/// The process's listener; cheap to clone.
#[derive(Clone)]
pub struct Listener {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Mutex<HashMap<String, broadcast::Sender<Signal>>>,
    new_channels: mpsc::UnboundedSender<String>,
    fetchers: Fetchers,
}

/// Room per subscriber before it lags (and is told to re-read).
const CAPACITY: usize = 1024;

impl Listener {
    /// Starts the listening task on its own connection from `pool`'s options; it reconnects
    /// on errors (every second) and ends with `stop`.
    pub fn start(pool: PgPool, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = Listener {
            inner: Arc::new(Inner {
                channels: Mutex::new(HashMap::new()),
                new_channels: tx,
                fetchers: Fetchers::default(),
            }),
        };
        tokio::spawn(run(pool, listener.inner.clone(), rx, stop));
        listener
    }

    /// Registers a fetcher of `queue`: each `kiln_jobs` notification for the queue wakes one
    /// fetcher of this process (a waiting one first), a reconnect wakes all of them.
    pub fn register_fetcher(&self, queue: &str) -> FetcherWake {
        // LISTEN kiln_jobs from now on; the broadcast side is for other subscribers.
        drop(self.subscribe(JOBS_CHANNEL));
        self.inner.fetchers.register(queue)
    }

    /// Subscribes to `channel` (LISTENed from now on, for the life of the process).
    pub fn subscribe(&self, channel: &str) -> broadcast::Receiver<Signal> {
        let mut channels = self.inner.channels.lock().expect("listener channels");
        if let Some(tx) = channels.get(channel) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(CAPACITY);
        channels.insert(channel.to_owned(), tx);
        let _ = self.inner.new_channels.send(channel.to_owned());
        rx
    }
}

async fn run(
    pool: PgPool,
    inner: Arc<Inner>,
    mut new_channels: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            res = session(&pool, &inner, &mut new_channels) => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "listener lost its connection; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One connection's life: LISTEN to every channel known, tell subscribers to re-read, then
/// dispatch until the connection fails.
async fn session(
    pool: &PgPool,
    inner: &Inner,
    new_channels: &mut mpsc::UnboundedReceiver<String>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Channels subscribed while disconnected are in the map already; drain their requests.
    while new_channels.try_recv().is_ok() {}
    let known: Vec<String> = inner
        .channels
        .lock()
        .expect("listener channels")
        .keys()
        .cloned()
        .collect();
    for channel in &known {
        listener.listen(channel).await?;
    }
    broadcast_all(inner, Signal::Reconnected);
    loop {
        tokio::select! {
            channel = new_channels.recv() => match channel {
                Some(channel) => listener.listen(&channel).await?,
                None => return Ok(()),
            },
            n = listener.try_recv() => match n? {
                Some(n) => {
                    if n.channel() == JOBS_CHANNEL {
                        inner.fetchers.wake_one(n.payload());
                    }
                    let channels = inner.channels.lock().expect("listener channels");
                    if let Some(tx) = channels.get(n.channel()) {
                        // No receivers is fine: nobody is interested right now.
                        let _ = tx.send(Signal::Notified(n.payload().to_owned()));
                    }
                }
                // The connection dropped; PgListener reconnects (and LISTENs again) on the
                // next call, and whatever was notified meanwhile is lost: subscribers re-read.
                None => broadcast_all(inner, Signal::Reconnected),
            },
        }
    }
}

fn broadcast_all(inner: &Inner, signal: Signal) {
    inner.fetchers.wake_all();
    for tx in inner.channels.lock().expect("listener channels").values() {
        let _ = tx.send(signal.clone());
    }
}
