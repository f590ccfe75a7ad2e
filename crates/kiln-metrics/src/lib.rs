//! Kiln's Prometheus metrics. Every process (worker, API, scheduler) has one registry holding
//! the families below, all prefixed `kiln_`; [`render`] writes them in the text format that
//! `GET /metrics` serves. Handles are cheap to clone; resolve label values once per kind or
//! queue on hot paths (`with_label_values` hashes its labels on every call).
//!
//! `kiln_queue_depth` and `kiln_workers_alive` describe the whole fleet, so they are exported
//! by one process only: the holder of the [`exporter`]'s advisory lock. Elsewhere those two
//! families render no series at all (see [`DepthGauges`]). The `queue` label of every family
//! comes from a bounded set ([`queues`]): unknown queues count as `other`.

pub mod exporter;
pub mod queues;

pub use exporter::{DepthExporter, DepthGauges, ExporterConfig};

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// The metric families of a Kiln process.
#[derive(Clone)]
pub struct Metrics {
    /// Jobs accepted into a queue, by `queue`, `kind`.
    pub jobs_enqueued: IntCounterVec,
    /// Attempts begun by this process, by `queue`, `kind`.
    pub jobs_started: IntCounterVec,
    /// Attempts ended by this process, by `queue`, `kind`, `outcome` (an attempt outcome).
    pub jobs_finished: IntCounterVec,
    /// Jobs in the database by `queue` and `state`; exported by one process of the fleet only.
    pub queue_depth: IntGaugeVec,
    /// Seconds from `run_at` to the start of an attempt, by `kind`.
    pub wait_seconds: HistogramVec,
    /// Seconds an attempt ran, by `kind`.
    pub run_seconds: HistogramVec,
    /// Attempts by `outcome`, including `lost` (rescued) and `interrupted` (handed back).
    pub attempts: IntCounterVec,
    /// Expired leases this process's rescuer returned to their queues.
    pub leases_rescued: IntCounter,
    /// Workers with a live registration (exported with the queue depth).
    pub workers_alive: IntGauge,
    /// Seconds from asking for a container to its command running, by `image` and `warm`.
    pub container_start_seconds: HistogramVec,
    /// Webhook deliveries by `source` (`github`, `generic`) and `result`.
    pub webhook_deliveries: IntCounterVec,
    /// Cron schedule ticks that enqueued a job, by `schedule`.
    pub schedule_ticks: IntCounterVec,
    /// HTTP requests served by the API, by `route` (the matched path pattern), `method`, `status`.
    pub http_requests: IntCounterVec,
    /// HTTP request latency in seconds, by `route` and `method`.
    pub http_seconds: HistogramVec,
    /// Set while this process holds the exporter lock: gates `queue_depth`, `workers_alive`.
    pub(crate) depth_gate: Arc<AtomicBool>,
    registry: Registry,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace("kiln"), labels).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).namespace("kiln").buckets(buckets),
        labels,
    )
    .expect("valid histogram");
    r.register(Box::new(h.clone())).expect("unique metric name");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        // 1 ms .. ~9 min for waits and runs; 5 ms .. ~20 s for container starts and HTTP.
        let long = exponential_buckets(0.001, 2.0, 20).expect("buckets");
        let short = exponential_buckets(0.0005, 2.0, 16).expect("buckets");
        let queue_depth = IntGaugeVec::new(
            Opts::new("queue_depth", "Jobs in the database by queue and state").namespace("kiln"),
            &["queue", "state"],
        )
        .expect("valid gauge");
        let workers_alive = IntGauge::with_opts(
            Opts::new("workers_alive", "Workers with a live registration").namespace("kiln"),
        )
        .expect("valid gauge");
        let depth_gate = Arc::new(AtomicBool::new(false));
        r.register(Box::new(exporter::Gated::new(
            depth_gate.clone(),
            queue_depth.clone(),
            workers_alive.clone(),
        )))
        .expect("unique metric name");
        let leases_rescued = IntCounter::with_opts(
            Opts::new("leases_rescued_total", "Expired leases returned to their queues").namespace("kiln"),
        )
        .expect("valid counter");
        r.register(Box::new(leases_rescued.clone()))
            .expect("unique metric name");
        Metrics {
            jobs_enqueued: counter(
                &r,
                "jobs_enqueued_total",
                "Jobs accepted into a queue",
                &["queue", "kind"],
            ),
            jobs_started: counter(&r, "jobs_started_total", "Attempts begun", &["queue", "kind"]),
            jobs_finished: counter(
                &r,
                "jobs_finished_total",
                "Attempts ended, by outcome",
                &["queue", "kind", "outcome"],
            ),
            queue_depth,
            wait_seconds: histogram(
                &r,
                "job_wait_seconds",
                "From run_at to attempt start",
                &["kind"],
                long.clone(),
            ),
            run_seconds: histogram(&r, "job_run_seconds", "Attempt run time", &["kind"], long),
            attempts: counter(&r, "attempts_total", "Attempts by outcome", &["outcome"]),
            leases_rescued,
            workers_alive,
            container_start_seconds: histogram(
                &r,
                "container_start_seconds",
                "From container request to command running",
                &["image", "warm"],
                short.clone(),
            ),
            webhook_deliveries: counter(
                &r,
                "webhook_deliveries_total",
                "Webhook deliveries by source and result",
                &["source", "result"],
            ),
            schedule_ticks: counter(
                &r,
                "schedule_ticks_total",
                "Cron ticks that enqueued a job",
                &["schedule"],
            ),
            http_requests: counter(
                &r,
                "http_requests_total",
                "API requests by route, method and status",
                &["route", "method", "status"],
            ),
            http_seconds: histogram(
                &r,
                "http_request_seconds",
                "API request latency",
                &["route", "method"],
                short,
            ),
            depth_gate,
            registry: r,
        }
    }

    /// The registry holding these families (to register more, e.g. process metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Everything in this process's registry, in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&metrics().registry.gather(), &mut out)
        .expect("text encoding of gathered metrics");
    String::from_utf8(out).expect("the text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        let m = metrics();
        m.jobs_finished
            .with_label_values(&["q", "test", "succeeded"])
            .inc();
        m.run_seconds.with_label_values(&["test"]).observe(0.25);
        m.queue_depth.with_label_values(&["q", "available"]).set(7);
        m.workers_alive.set(2);
        let text = render();
        assert!(
            !text.contains("kiln_queue_depth") && !text.contains("kiln_workers_alive"),
            "the fleet gauges render only in the exporting process:\n{text}"
        );
        DepthGauges::global().set_exporting(true);
        let text = render();
        DepthGauges::global().set_exporting(false);
        assert!(text.contains(r#"kiln_jobs_finished_total{kind="test",outcome="succeeded",queue="q"} 1"#));
        assert!(text.contains(r#"kiln_job_run_seconds_count{kind="test"} 1"#));
        assert!(text.contains(r#"kiln_queue_depth{queue="q",state="available"} 7"#));
        assert!(text.contains("kiln_workers_alive 2"));
        assert!(text.contains("# TYPE kiln_leases_rescued_total counter"));
    }
}
