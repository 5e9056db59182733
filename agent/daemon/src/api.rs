//! The local HTTP API: `/healthz`, `/metrics` (OpenMetrics text), `/v1/status` (JSON).
//! Every error is JSON: `{"error": "..."}`.

use crate::agent::AgentState;
use crate::telemetry::{CONTENT_TYPE, lock, read};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How many series `/v1/status` lists as busiest.
const BUSIEST: usize = 10;

/// The API's routes over the agent's shared state.
pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A JSON error response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn metrics(State(state): State<Arc<AgentState>>) -> Response {
    // Rendering walks the whole store; keep it off the async reactor.
    let rendered = tokio::task::spawn_blocking(move || state.telemetry.render()).await;
    match rendered {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Ok(Err(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics rendering failed: {e}")),
    }
}

/// One entry of `busiest_series`.
#[derive(Debug, Serialize)]
struct BusySeries {
    name: String,
    kind: &'static str,
    tags: Vec<String>,
    class: Option<&'static str>,
    rate_per_second_10s: f64,
    rate_per_second_1s: Option<f64>,
    ewma_per_second: Option<f64>,
    p99_60s: Option<f64>,
}

async fn status(State(state): State<Arc<AgentState>>) -> Response {
    let now = state.clock.now();
    let (series, app_series, stats, busiest) = {
        let store = lock(&state.store);
        let busiest: Vec<BusySeries> = store
            .busiest(now, BUSIEST)
            .into_iter()
            .map(|(view, rate)| {
                let info = view.info();
                BusySeries {
                    name: info.name.to_string(),
                    kind: info.kind.name(),
                    tags: info.tags.iter().map(|t| t.to_string()).collect(),
                    class: info.class.map(|c| c.as_str()),
                    rate_per_second_10s: rate,
                    rate_per_second_1s: view.rate(Duration::from_secs(1)),
                    ewma_per_second: view.ewma(),
                    p99_60s: view.quantiles(Duration::from_secs(60), &[0.99]).and_then(|q| q.first().copied()),
                }
            })
            .collect();
        (store.len(), store.app_series(), store.stats(), busiest)
    };
    let host = read(&state.host);
    let ingest = &state.telemetry.ingest;
    let rejected: u64 = ingest.rejected_by_parser.iter().map(|c| c.get()).sum();
    let settings = &state.settings;
    let body = json!({
        "node": settings.node_id,
        "region": settings.region,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.clock.uptime().as_secs_f64(),
        "config": {
            "api_listen": state.api_addr.to_string(),
            "statsd_listen": state.statsd_addr.map(|a| a.to_string()),
            "host_interval_ms": settings.host_interval.as_millis(),
            "process_interval_ms": settings.process_interval.as_millis(),
            "max_series": settings.store_limits.max_series,
            "max_histogram_series": settings.store_limits.max_histogram_series,
            "series_ttl_seconds": settings.series_ttl.as_secs(),
            "log_format": settings.log_format,
        },
        "statsd": {
            "datagrams": ingest.datagrams.get(),
            "lines": ingest.lines.get(),
            "rejected_lines": rejected,
            "receive_errors": ingest.receive_errors.get(),
        },
        "store": {
            "series": series,
            "client_series": app_series,
            "refused_series": stats.refused_series,
            "refused_histogram_series": stats.refused_histogram_series,
            "expired_series": stats.expired_series,
        },
        "host": host.host,
        "host_sample_age_ms": host.host_at.map(|at| now.saturating_since(at).as_millis()),
        "process": host.process,
        "busiest_series": busiest,
    });
    Json(body).into_response()
}
