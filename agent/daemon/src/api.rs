//! The local HTTP API: `/healthz`, `/metrics` (OpenMetrics text), `/v1/status`, `/v1/decisions`
//! `/v1/pools`, `/v1/weddings`, `/v1/fleet`, `/v1/cache/hints`, `/v1/plugins`,
//! `/v1/plugins/reload` and `/v1/mesh/faults` (JSON). Mutating calls need `Authorization: Bearer <api.token>`.
//! Every error is JSON: `{"error": "..."}`.

use crate::clock::{lock, read};
use crate::config::api::Scope;
use crate::engine::{CommandError, EngineCommand};
use crate::state::AgentState;
use crate::telemetry::CONTENT_TYPE;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How many series `/v1/status` lists as busiest.
const BUSIEST: usize = 10;

/// The API server's own counters.
#[derive(Debug, Clone, Default)]
pub struct ApiMetrics {
    /// Connections open now.
    pub connections: prometheus_client::metrics::gauge::Gauge,
    /// Connections closed at once because `api.max_connections` were open.
    pub refused: prometheus_client::metrics::counter::Counter,
    /// Connections closed for a slow or broken client (header-read timeout, bad request line).
    pub closed_on_error: prometheus_client::metrics::counter::Counter,
    /// Requests answered 408 for taking longer than `api.request_timeout`.
    pub timed_out: prometheus_client::metrics::counter::Counter,
}

impl ApiMetrics {
    /// The counters, registered in `registry`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> ApiMetrics {
        let m = ApiMetrics::default();
        registry.register("wedsync_api_connections", "HTTP API connections open", m.connections.clone());
        registry.register(
            "wedsync_api_refused_connections",
            "HTTP API connections closed at once because api.max_connections were open",
            m.refused.clone(),
        );
        registry.register(
            "wedsync_api_connection_errors",
            "HTTP API connections closed for a slow or broken client (headers not sent within api.header_read_timeout, a malformed request)",
            m.closed_on_error.clone(),
        );
        registry.register(
            "wedsync_api_request_timeouts",
            "HTTP API requests answered 408 for taking longer than api.request_timeout",
            m.timed_out.clone(),
        );
        m
    }
}

/// Serves `app` on `listener` until `stop`: HTTP/1.1 only, at most `limits.max_connections` at
/// once (a connection past it is closed at once and counted), each closed when a client takes
/// longer than `limits.header_read_timeout` to send a request's headers (or to start the next
/// one), each request cut off after `limits.request_timeout`. `axum::serve` sets none of these:
/// 200 connections that never finish their headers stayed open for good. At `stop` each
/// connection finishes the request in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: crate::config::api::ApiLimits,
    metrics: ApiMetrics,
    stop: tokio_util::sync::CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let request_timeout = limits.request_timeout;
    let timed_out = metrics.timed_out.clone();
    let app =
        app.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
            let timed_out = timed_out.clone();
            async move {
                match tokio::time::timeout(request_timeout, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        timed_out.inc();
                        error(
                            StatusCode::REQUEST_TIMEOUT,
                            format!("the request took longer than api.request_timeout ({request_timeout:?})"),
                        )
                    }
                }
            }
        }));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refusals = crate::logging::RateLimiter::new(1);
    let mut accept_errors = crate::logging::RateLimiter::new(1);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    if let Some(suppressed) = accept_errors.admit(std::time::Instant::now()) {
                        tracing::warn!(error = %e, suppressed, "API accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refused.inc();
            if let Some(suppressed) = refusals.admit(std::time::Instant::now()) {
                tracing::warn!(%peer, max = limits.max_connections, suppressed, "API connection refused: api.max_connections are open");
            }
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let (metrics, stop) = (metrics.clone(), stop.clone());
        connections.spawn(async move {
            metrics.connections.inc();
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                metrics.closed_on_error.inc();
                tracing::debug!(%peer, error = %e, "API connection closed");
            }
            metrics.connections.dec();
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

/// The API's routes over the agent's shared state.
pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/decisions", get(decisions))
        .route("/v1/pools", get(pools))
        .route("/v1/weddings", get(list_weddings).post(upsert_wedding))
        .route("/v1/weddings/{id}", axum::routing::delete(delete_wedding))
        .route("/v1/fleet", get(fleet))
        .route("/v1/cache/hints", get(cache_hints))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/reload", axum::routing::post(reload_plugins))
        .route("/v1/mesh/faults", axum::routing::post(mesh_faults))
        .route("/v1/alerts", get(alerts))
        .route("/v1/alerts/{fingerprint}/ack", axum::routing::post(ack_alert))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), read_guard))
        .with_state(state)
}

/// How long a call waits for the decision engine to take a command, and again to answer it.
const ENGINE_PATIENCE: Duration = Duration::from_secs(2);

/// The answer when the engine could not take a command that the database already holds.
fn engine_unavailable(e: &CommandError, stored: &str) -> Response {
    tracing::warn!(error = %e, "{stored}, but the decision engine did not take it; it will at the next start");
    error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; {stored} and takes effect at the next start at the latest"))
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

/// Query of `/v1/decisions`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionQuery {
    /// Most decisions to return (default 100, at most 1000).
    limit: Option<usize>,
    /// Only this pool's.
    pool: Option<String>,
}

async fn decisions(
    State(state): State<Arc<AgentState>>,
    query: Result<Query<DecisionQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text())),
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > crate::decisions::KEPT_DECISIONS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit: {limit} is out of range (1 to {})", crate::decisions::KEPT_DECISIONS),
        );
    }
    if let Some(pool) = &query.pool
        && state.engine.view().pool_index(pool).is_none()
    {
        return error(StatusCode::NOT_FOUND, format!("no pool named {pool:?}"));
    }
    let decisions = lock(&state.decisions).newest(limit, query.pool.as_deref());
    Json(json!({ "decisions": decisions })).into_response()
}

async fn pools(State(state): State<Arc<AgentState>>) -> Response {
    let wall = crate::clock::wall_ms();
    let now = state.clock.now();
    let view = state.engine.view();
    let pools: Vec<serde_json::Value> = view
        .pools
        .iter()
        .map(|status| {
            let active = view.active_weddings(&status.spec.region, wall);
            let size_age = status.observed_at.map(|at| now.saturating_since(at).as_secs_f64());
            // `size_unknown`: the engine decides nothing for the pool until its size is observed.
            let state = if status.size_unknown { "size_unknown" } else { "deciding" };
            json!({ "status": status, "active_weddings": active, "state": state, "observed_size_age_seconds": size_age })
        })
        .collect();
    Json(json!({ "pools": pools, "engine": *view.settings })).into_response()
}

/// Checks that a call's bearer token has `scope`: `None` when allowed, else the refusal, which
/// is counted, logged (rate-limited) and audited with the token's holder when one matched.
fn refuse_unauthorized(state: &AgentState, headers: &HeaderMap, scope: Scope, what: &str) -> Option<Response> {
    let tokens = &state.settings.api_tokens;
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Every token is compared in full, so timing tells nothing about which (or how much) matched.
    let matched = given.and_then(|given| {
        tokens.iter().fold(None, |found, t| {
            let same = constant_time_eq(given.as_bytes(), t.token.as_bytes());
            if same && found.is_none() { Some(t) } else { found }
        })
    });
    let (status, reason, holder, message) = match (tokens.is_empty(), given, matched) {
        (_, _, Some(t)) if t.scopes.contains(&scope) => return None,
        (_, _, Some(t)) => (
            StatusCode::FORBIDDEN,
            "scope",
            Some(t.name.as_str()),
            format!("token {:?} lacks the {:?} scope", t.name, scope.as_str()),
        ),
        (true, _, None) => (
            StatusCode::FORBIDDEN,
            "disabled",
            None,
            "calls that need a token are disabled: set api.token (WEDSYNC__API__TOKEN) or api.tokens".into(),
        ),
        (false, None, None) => {
            (StatusCode::UNAUTHORIZED, "missing", None, "missing 'Authorization: Bearer <token>' header".into())
        }
        (false, Some(_), None) => (StatusCode::UNAUTHORIZED, "wrong", None, "wrong bearer token".into()),
    };
    state.api_auth_failures.get_or_create(&vec![("reason".to_owned(), reason.to_owned())]).inc();
    if let Some(suppressed) = lock(&state.api_auth_log).admit(std::time::Instant::now()) {
        tracing::warn!(what, scope = scope.as_str(), reason, holder, suppressed, "API call refused: {message}");
    }
    if let Some(audit) = &state.audit {
        // The call is refused whatever the trail says; a full trail counts and logs the refusal.
        let _ = audit.try_record(
            crate::clock::wall_ms(),
            "api.refused",
            json!({ "call": what, "scope": scope.as_str(), "reason": reason, "holder": holder }),
        );
    }
    Some(error(status, message))
}

/// With `api.read_requires_token`, every read but `/healthz` needs the `read` scope.
async fn read_guard(
    State(state): State<Arc<AgentState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.settings.api_read_requires_token && request.method() == Method::GET && request.uri().path() != "/healthz" {
        let what = format!("GET {}", request.uri().path());
        if let Some(denied) = refuse_unauthorized(&state, request.headers(), Scope::Read, &what) {
            return denied;
        }
    }
    next.run(request).await
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

async fn list_weddings(State(state): State<Arc<AgentState>>) -> Response {
    let wall = crate::clock::wall_ms();
    let view = state.engine.view();
    let weddings: Vec<serde_json::Value> =
        view.weddings.iter().map(|w| json!({ "wedding": w, "active": view.is_active(w, wall) })).collect();
    Json(json!({ "weddings": weddings })).into_response()
}

/// Audits a change before it is made; `Err` is the answer (503) when the trail cannot take it,
/// and the change must not be made.
async fn audit_first(state: &AgentState, kind: &'static str, payload: serde_json::Value) -> Result<(), Response> {
    let Some(audit) = &state.audit else { return Ok(()) };
    audit
        .record_async(crate::clock::wall_ms(), kind, payload)
        .await
        .map_err(|refused| error(StatusCode::SERVICE_UNAVAILABLE, refused.to_string()))
}

/// Audits that a change audited by [`audit_first`] was not made after all.
async fn audit_failure(state: &AgentState, kind: &'static str, payload: serde_json::Value) {
    if let Some(audit) = &state.audit {
        // The change failed either way; a refusal here is counted and logged by the handle.
        let _ = audit.record_async(crate::clock::wall_ms(), kind, payload).await;
    }
}

/// `GET /v1/alerts`: firing, pending and lately resolved alerts.
async fn alerts(State(state): State<Arc<AgentState>>) -> Response {
    let view = state.alerts.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Json(view).into_response()
}

/// `POST /v1/alerts/{fingerprint}/ack` (scope `alerts`): the firing alert escalates no further;
/// acknowledged for the token's holder. 404 when no such alert fires.
async fn ack_alert(
    State(state): State<Arc<AgentState>>,
    headers: HeaderMap,
    Path(fingerprint): Path<String>,
) -> Response {
    if let Some(denied) = refuse_unauthorized(&state, &headers, Scope::Alerts, "POST /v1/alerts/{fingerprint}/ack") {
        return denied;
    }
    let by = token_holder(&state, &headers).unwrap_or_else(|| "api".to_owned());
    let asked = state
        .engine
        .ask(|reply| EngineCommand::AckAlert { fingerprint: fingerprint.clone(), by, reply }, ENGINE_PATIENCE)
        .await;
    match asked {
        Ok(Some(alert)) => Json(json!({ "alert": alert })).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no firing alert with fingerprint {fingerprint:?}")),
        Err(e) => engine_unavailable(&e, "nothing was acknowledged"),
    }
}

/// The name of the token a call carries, when it is one of the configured ones.
fn token_holder(state: &AgentState, headers: &HeaderMap) -> Option<String> {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))?;
    let matched = state.settings.api_tokens.iter().fold(None, |found, t| {
        let same = constant_time_eq(given.as_bytes(), t.token.as_bytes());
        if same && found.is_none() { Some(t) } else { found }
    });
    matched.map(|t| t.name.clone())
}

async fn upsert_wedding(
    State(state): State<Arc<AgentState>>,
    headers: HeaderMap,
    body: Result<Json<crate::calendar::WeddingInput>, JsonRejection>,
) -> Response {
    if let Some(denied) = refuse_unauthorized(&state, &headers, Scope::Calendar, "POST /v1/weddings") {
        return denied;
    }
    let Json(input) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad wedding: {}", e.body_text())),
    };
    let wedding = match input.into_wedding() {
        Ok(wedding) => wedding,
        Err(reason) => return error(StatusCode::BAD_REQUEST, format!("bad wedding: {reason}")),
    };
    // Audited first: a change the trail cannot take is not made.
    if let Err(refused) = audit_first(&state, "wedding.upsert", json!({ "wedding": wedding })).await {
        return refused;
    }
    // Durable, then in force: a wedding the API acknowledged survives a crash.
    let db = state.db.clone();
    let stored = wedding.clone();
    let failed = match tokio::task::spawn_blocking(move || db.put_wedding(&stored)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Some(error(StatusCode::INTERNAL_SERVER_ERROR, format!("store failed: {e}"))),
    };
    if let Some(failed) = failed {
        audit_failure(&state, "wedding.upsert_failed", json!({ "id": wedding.id, "error": "not stored" })).await;
        return failed;
    }
    let taken = state
        .engine
        .ask(|reply| EngineCommand::UpsertWedding { wedding: wedding.clone(), reply }, ENGINE_PATIENCE)
        .await;
    match taken {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            audit_failure(&state, "wedding.upsert_failed", json!({ "id": wedding.id, "error": reason.to_string() }))
                .await;
            return error(StatusCode::BAD_REQUEST, format!("bad wedding: {reason}"));
        }
        // Stored: the engine takes it from the database at the next start at the latest.
        Err(e) => return engine_unavailable(&e, "the wedding is stored"),
    }
    tracing::info!(id = %wedding.id, region = %wedding.region, "wedding stored");
    (StatusCode::CREATED, Json(json!({ "wedding": wedding }))).into_response()
}

async fn delete_wedding(State(state): State<Arc<AgentState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(denied) = refuse_unauthorized(&state, &headers, Scope::Calendar, "DELETE /v1/weddings") {
        return denied;
    }
    if let Err(refused) = audit_first(&state, "wedding.remove", json!({ "id": id })).await {
        return refused;
    }
    let db = state.db.clone();
    let key = id.clone();
    let removed = match tokio::task::spawn_blocking(move || db.remove_wedding(&key)).await {
        Ok(Ok(removed)) => removed,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("store failed: {e}")),
    };
    let in_engine =
        match state.engine.ask(|reply| EngineCommand::RemoveWedding { id: id.clone(), reply }, ENGINE_PATIENCE).await {
            Ok(in_engine) => in_engine,
            Err(e) => return engine_unavailable(&e, "the wedding is removed from the database"),
        };
    if removed || in_engine {
        tracing::info!(%id, "wedding removed");
        StatusCode::NO_CONTENT.into_response()
    } else {
        audit_failure(&state, "wedding.remove_failed", json!({ "id": id, "error": "no such wedding" })).await;
        error(StatusCode::NOT_FOUND, format!("no wedding with id {id:?}"))
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
        let store = state.store.lock_all();
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
            "statsd_demand_listen": state.statsd_demand_addr.map(|a| a.to_string()),
            "statsd_unix_socket": settings.statsd_unix_socket.as_ref().map(|(path, _)| path.display().to_string()),
            "statsd_allow": settings.statsd_allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "statsd_readers": settings.statsd_readers,
            "store_shards": state.store.shard_count(),
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

fn mesh_disabled() -> Response {
    error(StatusCode::NOT_FOUND, "the mesh is disabled (mesh.enabled = false)")
}

async fn fleet(State(state): State<Arc<AgentState>>) -> Response {
    match &state.fleet {
        Some(fleet) => Json(read(&fleet.snapshot).clone()).into_response(),
        None => mesh_disabled(),
    }
}

async fn plugins(State(state): State<Arc<AgentState>>) -> Response {
    match &state.plugins {
        Some(plugins) => Json(read(plugins).clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "plugins are disabled (plugins.enabled = false)"),
    }
}

/// How long `POST /v1/plugins/reload` waits for the pass to be verified, compiled and applied.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /v1/plugins/reload`: reloads the plugin directory now and answers with each file's
/// outcome once the decision thread applied the pass.
async fn reload_plugins(State(state): State<Arc<AgentState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = refuse_unauthorized(&state, &headers, Scope::Plugins, "POST /v1/plugins/reload") {
        return denied;
    }
    if state.plugins.is_none() {
        return error(StatusCode::NOT_FOUND, "plugins are disabled (plugins.enabled = false)");
    }
    let Some(reload) = &state.plugin_reload else {
        return error(StatusCode::CONFLICT, "no plugin directory to reload (set plugins.dir)");
    };
    // The loader thread verifies and compiles; the decision thread installs between rounds
    // and answers here. Only this task waits, never a reactor thread.
    let answer = match reload.request() {
        Ok(answer) => answer,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match tokio::time::timeout(RELOAD_TIMEOUT, answer).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "the decision thread stopped before applying the reload"),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the reload was not applied within {}s; it goes on in the background", RELOAD_TIMEOUT.as_secs()),
        ),
    }
}

async fn cache_hints(State(state): State<Arc<AgentState>>) -> Response {
    match &state.fleet {
        Some(fleet) => Json(read(&fleet.hints).clone()).into_response(),
        None => mesh_disabled(),
    }
}

/// `POST /v1/mesh/faults`: `{"block": ["IP:PORT", ...]}`, `{"block_all": true}` or `{"heal": true}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    #[serde(default)]
    block: Vec<std::net::SocketAddr>,
    #[serde(default)]
    unblock: Vec<std::net::SocketAddr>,
    #[serde(default)]
    block_all: bool,
    #[serde(default)]
    heal: bool,
}

async fn mesh_faults(
    State(state): State<Arc<AgentState>>,
    headers: HeaderMap,
    body: Result<Json<FaultRequest>, JsonRejection>,
) -> Response {
    if let Some(denied) = refuse_unauthorized(&state, &headers, Scope::Faults, "POST /v1/mesh/faults") {
        return denied;
    }
    let Some(fleet) = &state.fleet else { return mesh_disabled() };
    if !fleet.fault_injection {
        return error(StatusCode::FORBIDDEN, "fault injection is off (set mesh.fault_injection = true)");
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad fault request: {}", e.body_text())),
    };
    let audited = json!({
        "heal": request.heal,
        "block_all": request.block_all,
        "block": request.block.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "unblock": request.unblock.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    if let Err(refused) = audit_first(&state, "mesh.faults", audited).await {
        return refused;
    }
    let faults = fleet.transport.faults();
    if request.heal {
        faults.heal();
    }
    if request.block_all {
        faults.block_all();
    }
    for addr in &request.block {
        faults.block(*addr);
    }
    for addr in &request.unblock {
        faults.unblock(*addr);
    }
    tracing::warn!(?request, "mesh fault injection changed");
    Json(json!({ "ok": true })).into_response()
}
