//! `--metrics-listen ADDR` for `kiln worker` and `kiln scheduler`: this process's metrics at
//! `GET /metrics` (Prometheus text format) and `GET /healthz`, so Prometheus scrapes every
//! Kiln process of a fleet, not only the API.

use std::net::SocketAddr;

use anyhow::Context;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// Binds `addr` (naming the flag when it cannot), prints where metrics are served, and serves
/// them until `stop` is cancelled.
pub async fn serve(addr: SocketAddr, stop: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} (--metrics-listen)"))?;
    let local = listener.local_addr()?;
    println!("metrics on http://{local}/metrics");
    let app = Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    kiln_metrics::render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    }))
}
