//! The tower layer that owns an attempt's life: timeout, cancellation, outcome report.

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use kiln_queue::lease::{Completion, HandBack};
use kiln_queue::{AttemptOutcome, ClaimedJob};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::handler::{Finished, JobContext, JobError};
use crate::shared::{reason_of, Report, Shared, StopReason};

/// Wraps the job service: enforces the job's timeout, stops it on cancel, and reports
/// how the attempt ended to the completer (or hands it back at shutdown).
#[derive(Clone)]
pub struct LeaseLayer {
    shared: Arc<Shared>,
}

impl LeaseLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for LeaseLayer {
    type Service = LeaseService<S>;
    fn layer(&self, inner: S) -> LeaseService<S> {
        LeaseService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`LeaseLayer`].
#[derive(Clone)]
pub struct LeaseService<S> {
    inner: S,
    shared: Arc<Shared>,
}

enum Ended {
    Returned(Finished<serde_json::Value, JobError>),
    TimedOut,
    Stopped(StopReason),
}

impl<S> Service<Task<ClaimedJob>> for LeaseService<S>
where
    S: Service<Task<ClaimedJob>, Response = Finished<serde_json::Value, JobError>> + Send,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<(), BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<ClaimedJob>) -> Self::Future {
        let shared = self.shared.clone();
        let ctx = task.data().get::<JobContext>().cloned();
        let reason = task.data().get::<Arc<AtomicU8>>().cloned();
        let (Some(ctx), Some(reason)) = (ctx, reason) else {
            return Box::pin(async { Err("task without Kiln context reached the lease layer".into()) });
        };
        let job_id = task.args.id;
        let attempt = task.args.attempt;
        let kind = task.args.kind;
        let started_at = Utc::now();
        let Some(handles) = shared.mark_started(job_id, started_at) else {
            // Handed back while waiting in the buffer (shutdown): do not run it.
            return Box::pin(async { Ok(()) });
        };
        handles.started(kind).inc();
        let waited = (started_at - task.args.run_at)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        kiln_queue::metrics::wait_seconds(kind).observe(waited as f64 / 1e6);
        let fut = self.inner.call(task);
        let span =
            tracing::info_span!("job", job = job_id, attempt, kind = %kind, worker = %shared.worker_id);
        Box::pin(
            async move {
                let ended = tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => Ended::Stopped(reason_of(&reason)),
                    r = tokio::time::timeout(ctx.timeout, AssertUnwindSafe(fut).catch_unwind()) => match r {
                        Ok(Ok(Ok(finished))) => Ended::Returned(finished),
                        Ok(Ok(Err(e))) => {
                            let e: BoxDynError = e.into();
                            let je = match e.downcast_ref::<JobError>() {
                                Some(je) => je.clone(),
                                None => JobError::retryable(e.to_string()),
                            };
                            Ended::Returned(Finished::new(Err(je)))
                        }
                        Ok(Err(panic)) => Ended::Returned(Finished::new(Err(JobError::retryable(panic_message(panic))))),
                        Err(_) => Ended::TimedOut,
                    },
                };
                let finished_at = Utc::now();
                let retry_in = |delay: std::time::Duration| {
                    Some(finished_at + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
                };
                let retry_at = || retry_in(shared.config.retry_policy(kind).delay(attempt));
                let done = |outcome, result, error: Option<String>, retry_at, details| {
                    Report::Done(Completion {
                        id: job_id,
                        attempt,
                        outcome,
                        result,
                        error,
                        started_at,
                        finished_at,
                        retry_at,
                        details,
                    })
                };
                let report = match ended {
                    Ended::Returned(Finished {
                        result: Err(JobError::Unavailable { message, pause }),
                        ..
                    }) => {
                        tracing::warn!(error = %message, pause_ms = pause.as_millis() as u64,
                            "worker unavailable: handing the job back and pausing claims");
                        if let Ok(mut until) = shared.claim_paused_until.lock() {
                            *until = Some(tokio::time::Instant::now() + pause);
                        }
                        Report::HandBack(HandBack {
                            id: job_id,
                            started_at: Some(started_at),
                            reason: Some(format!("worker unavailable: {message}")),
                        })
                    }
                    Ended::Returned(Finished { result: Ok(value), details }) => {
                        done(AttemptOutcome::Succeeded, Some(value), None, None, details)
                    }
                    Ended::Returned(Finished { result: Err(e), details }) => {
                        tracing::info!(error = %e, retryable = e.is_retryable(), "job attempt failed");
                        let next = match &e {
                            JobError::Retryable(_) => retry_at(),
                            JobError::RetryAfter { after, .. } => retry_in(*after),
                            JobError::Permanent(_) => None,
                            JobError::Unavailable { .. } => None,
                        };
                        done(AttemptOutcome::Failed, None, Some(e.to_string()), next, details)
                    }
                    Ended::TimedOut => {
                        ctx.cancel.cancel();
                        let msg = format!("timed out after {:.1} s", ctx.timeout.as_secs_f64());
                        tracing::info!("{msg}");
                        done(AttemptOutcome::TimedOut, None, Some(msg), retry_at(), None)
                    }
                    Ended::Stopped(StopReason::Cancelled | StopReason::None) => {
                        tracing::info!("job cancelled while running");
                        done(
                            AttemptOutcome::Cancelled,
                            None,
                            Some("cancelled by request".into()),
                            None,
                            None,
                        )
                    }
                    Ended::Stopped(StopReason::Shutdown) => Report::HandBack(HandBack {
                        id: job_id,
                        started_at: Some(started_at),
                        reason: None,
                    }),
                    Ended::Stopped(StopReason::LeaseLost) => {
                        tracing::warn!("lease lost: the job was taken back; dropping this attempt");
                        Report::Forget(job_id, attempt)
                    }
                };
                let _ = shared.reports.send(report);
                Ok(())
            }
            .instrument(span),
        )
    }
}

/// A handler's panic, as an error message (the worker keeps running).
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    format!("handler panicked: {text}")
}
