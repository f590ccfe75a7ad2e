//! Wake-ups of the fetchers in one process. A `kiln_jobs` notification for a queue wakes one
//! fetcher of that queue — a waiting one first, in turn — instead of every fetcher racing to
//! claim the same job; a reconnect wakes them all (notifications may have been missed).
//!
//! A wake-up is a hint: a fetcher woken while busy keeps the wake-up and claims once more when
//! it next waits, and every fetcher also polls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// The fetchers of a process, by queue.
#[derive(Default)]
pub struct Fetchers {
    by_queue: Mutex<HashMap<String, Vec<Weak<Slot>>>>,
    turn: AtomicUsize,
}

#[derive(Default)]
struct Slot {
    notify: Notify,
    waiting: AtomicBool,
}

/// One fetcher's registration; it leaves the rota when dropped.
pub struct FetcherWake {
    slot: Arc<Slot>,
}

/// Clears the waiting mark however the wait ends (woken, or the future dropped).
struct Waiting<'a>(&'a AtomicBool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl FetcherWake {
    /// Waits until this fetcher is woken (at once when a wake-up came while it was busy).
    pub async fn notified(&self) {
        let notified = self.slot.notify.notified();
        tokio::pin!(notified);
        // Registered as a waiter before it is marked waiting: a wake-up chosen for it from
        // now on is never lost.
        notified.as_mut().enable();
        self.slot.waiting.store(true, Ordering::Release);
        let _mark = Waiting(&self.slot.waiting);
        notified.await;
    }

    /// Wakes this fetcher.
    pub fn wake(&self) {
        self.slot.notify.notify_one();
    }
}

impl Fetchers {
    /// Registers a fetcher of `queue`.
    pub fn register(&self, queue: &str) -> FetcherWake {
        let slot = Arc::new(Slot::default());
        let mut by_queue = self.by_queue.lock().expect("fetchers");
        let slots = by_queue.entry(queue.to_owned()).or_default();
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        FetcherWake { slot }
    }

    /// Wakes one fetcher of `queue`: the first waiting one from the next in turn, or, when
    /// all are busy, the next in turn. False when the queue has no fetcher here.
    pub fn wake_one(&self, queue: &str) -> bool {
        let live: Vec<Arc<Slot>> = {
            let by_queue = self.by_queue.lock().expect("fetchers");
            match by_queue.get(queue) {
                Some(slots) => slots.iter().filter_map(Weak::upgrade).collect(),
                None => return false,
            }
        };
        if live.is_empty() {
            return false;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = (0..live.len())
            .map(|i| &live[(start + i) % live.len()])
            .find(|s| s.waiting.load(Ordering::Acquire))
            .unwrap_or(&live[start % live.len()]);
        chosen.notify.notify_one();
        true
    }

    /// Wakes every fetcher of every queue.
    pub fn wake_all(&self) {
        let by_queue = self.by_queue.lock().expect("fetchers");
        for slot in by_queue.values().flatten().filter_map(Weak::upgrade) {
            slot.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How many of `wakes` hold a wake-up: each is checked without waiting.
    async fn woken(wakes: &[FetcherWake]) -> usize {
        let mut n = 0;
        for w in wakes {
            if tokio::time::timeout(Duration::from_millis(20), w.notified())
                .await
                .is_ok()
            {
                n += 1;
            }
        }
        n
    }

    #[tokio::test]
    async fn a_notification_wakes_one_fetcher_of_its_queue() {
        let f = Fetchers::default();
        let a: Vec<FetcherWake> = (0..4).map(|_| f.register("a")).collect();
        let b = [f.register("b")];
        assert!(f.wake_one("a"));
        assert_eq!(woken(&a).await, 1);
        assert_eq!(woken(&b).await, 0);
        assert!(!f.wake_one("nobody"));
        f.wake_all();
        assert_eq!(woken(&a).await + woken(&b).await, 5);
    }

    #[tokio::test]
    async fn a_waiting_fetcher_is_preferred_to_a_busy_one() {
        let f = Arc::new(Fetchers::default());
        let busy = f.register("q");
        let idle = Arc::new(f.register("q"));
        let waiter = {
            let idle = idle.clone();
            tokio::spawn(async move { idle.notified().await })
        };
        // Let the waiter park.
        while !idle.slot.waiting.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        // Whichever turn it is, the one waiting gets it.
        assert!(f.wake_one("q"));
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the waiting fetcher woke")
            .unwrap();
        assert_eq!(woken(std::slice::from_ref(&busy)).await, 0);
    }

    #[tokio::test]
    async fn a_dropped_fetcher_leaves_the_rota() {
        let f = Fetchers::default();
        let kept = f.register("q");
        drop(f.register("q"));
        for _ in 0..3 {
            assert!(f.wake_one("q"));
            assert_eq!(woken(std::slice::from_ref(&kept)).await, 1);
        }
    }
}
