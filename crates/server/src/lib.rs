//! everett-server: the OpenAI-compatible HTTP face of the engine. Handlers hold an
//! `EngineHandle` (channels to the engine thread, which owns the model and the KV cache) and a
//! shared read-only tokenizer; they never lock anything. `router` is the whole server and
//! `everett serve` binds it: `GET /` (the playground and explorer page), `/health`,
//! `/v1/models`, `/v1/completions` and `/v1/chat/completions` (JSON and SSE), `/v1/explore`
//! (superposition, JSON or SSE per level), `/tokenize`, `/detokenize`, `/metrics`. `loading`
//! answers 503 on every route until the model is loaded. With an API key set, every route but
//! those in `OPEN_ROUTES` wants `Authorization: Bearer KEY` (the scheme in any case; 401 with
//! `WWW-Authenticate: Bearer` otherwise); bodies over `BODY_LIMIT` get 413.

#![forbid(unsafe_code)]

mod chat;
mod completions;
pub mod error;
mod explore;
pub mod listen;
mod markup;
mod metrics;
mod page;
pub mod pages;
mod reasoning;
mod reply;
mod structured;
pub mod template;
mod tokens;
pub mod tools;
mod wire;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
pub use chat::{ChatTemplate, Conversation};
use error::ApiError;
use everett_engine::engine::handle::{EngineHandle, Health};
use everett_engine::overflow::Overflow;
use everett_engine::tokenizer::Tokenizer;
use metrics::Metrics;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// The routes open without the API key: the health check (for supervisors and load
/// balancers) and the page (which asks for the key itself).
pub const OPEN_ROUTES: &[&str] = &["/health", "/"];

/// Largest request body accepted (bigger ones get 413).
pub const BODY_LIMIT: usize = 4 << 20;

/// What the handlers need besides the engine.
pub struct ServerConfig {
    /// The name clients put in `model`.
    pub model_name: String,
    pub tokenizer: Arc<Tokenizer>,
    /// The model's context length in tokens.
    pub context: usize,
    /// When set, requests must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// How chat messages become a prompt (`None`: chat completions are refused).
    pub chat_template: Option<ChatTemplate>,
    pub limits: Limits,
    /// What a request without `context_overflow` does at the end of the context, and the
    /// window of those that stream.
    pub overflow: Overflow,
}

/// What one request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sequences one request may run (prompts × `n`, or an exploration's width).
    pub max_seqs_per_request: usize,
    /// The engine's waiting queue in sequences (`--max-waiting`): a request larger than this
    /// could never be queued.
    pub max_waiting: usize,
    /// Chat messages per request.
    pub max_messages: usize,
    /// Bytes of prompt text per request (all prompts or messages together), checked before
    /// any tokenizing or template rendering.
    pub max_prompt_bytes: usize,
    /// Ignore unknown request fields (with a warning) instead of refusing them.
    pub lenient_fields: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_seqs_per_request: 256,
            max_waiting: 1024,
            max_messages: 2048,
            max_prompt_bytes: 2 << 20,
            lenient_fields: false,
        }
    }
}

impl Limits {
    /// A 400 unless a request of `seqs` sequences (`what` says how they add up) may run.
    pub(crate) fn check_seqs(&self, seqs: usize, what: &str) -> Result<(), ApiError> {
        let cap = self.max_seqs_per_request.min(self.max_waiting);
        if seqs > cap {
            let flag = if cap == self.max_waiting {
                "--max-waiting"
            } else {
                "--max-seqs-per-request"
            };
            return Err(ApiError::invalid(
                "n",
                format!("this request runs {seqs} sequences ({what}); this server takes at most {cap} per request ({flag})"),
            ));
        }
        Ok(())
    }

    /// A 400 when `bytes` of prompt text are more than a request may send.
    pub(crate) fn check_bytes(&self, bytes: usize, param: &str) -> Result<(), ApiError> {
        if bytes > self.max_prompt_bytes {
            return Err(ApiError::invalid(
                param,
                format!(
                    "the prompt text is {bytes} bytes; this server takes at most {} per request",
                    self.max_prompt_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: EngineHandle,
    pub cfg: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    /// Numbers the HTTP requests, whose engine requests form one scheduling group each.
    pub groups: Arc<std::sync::atomic::AtomicU64>,
    /// Compiles constraints for the served tokenizer; built by the first request with one.
    pub compiler:
        Arc<std::sync::OnceLock<Result<Arc<everett_engine::constraint::Compiler>, String>>>,
}

/// The whole HTTP API over one engine.
pub fn router(engine: EngineHandle, cfg: ServerConfig) -> Router {
    let state = AppState {
        engine,
        metrics: Arc::new(Metrics::new(&cfg.model_name)),
        cfg: Arc::new(cfg),
        groups: Arc::default(),
        compiler: Arc::default(),
    };
    let guarded = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions::create))
        .route("/v1/chat/completions", post(chat::create))
        .route("/apply-template", post(chat::apply_template))
        .route("/v1/explore", post(explore::create))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    let open = Router::new()
        .route(OPEN_ROUTES[0], get(health))
        .route(OPEN_ROUTES[1], get(page::index));
    open.merge(guarded)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_refusals))
        .with_state(state)
}

/// One log line for every request answered with an error status: a warning for the client's
/// (4xx: refused), an error for the server's (5xx), with the reason the response carried.
async fn log_refusals(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let reason = resp
            .extensions()
            .get::<error::LogNote>()
            .map_or_else(|| status.to_string(), |n| n.0.clone());
        let status = status.as_u16();
        if status >= 500 {
            tracing::error!(%method, route = %path, status, reason = %reason, "request failed");
        } else {
            tracing::warn!(%method, route = %path, status, reason = %reason, "request refused");
        }
    }
    resp
}

/// Where the real router goes once the model is loaded.
pub type Slot = Arc<OnceLock<Router>>;

/// A router to bind before the model is loaded: until `slot` is filled every route answers 503
/// (`/health` with `{"status": "loading"}`, the others with the error object), then it is the
/// router in `slot`.
pub fn loading() -> (Router, Slot) {
    let slot: Slot = Arc::default();
    let inner = slot.clone();
    let app = Router::new().fallback(move |req: Request| {
        let inner = inner.clone();
        async move {
            match inner.get() {
                Some(app) => app.clone().oneshot(req).await.into_response(),
                None if req.uri().path() == "/health" => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "loading"})),
                )
                    .into_response(),
                None => ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "the model is still loading; retry once GET /health answers 200"
                        .into(),
                    kind: "unavailable",
                    param: None,
                    cause: None,
                }
                .into_response(),
            }
        }
    });
    (app, slot)
}

/// Lets a request through when no key is set or it carries the right bearer token.
async fn authorize(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = &st.cfg.api_key else {
        return next.run(req).await;
    };
    // RFC 9110: the scheme is case-insensitive (`bearer`, `BEARER`).
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if given == Some(key.as_str()) {
        return next.run(req).await;
    }
    let mut refused = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "missing or wrong API key (send `Authorization: Bearer <key>`)".into(),
        kind: "authentication_error",
        param: None,
        cause: None,
    }
    .into_response();
    refused.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    refused
}

/// 200 while the engine takes work; 503 with the reason while it is rebuilt after a fault, or
/// when it could not be.
async fn health(State(st): State<AppState>) -> Response {
    match st.engine.health() {
        Health::Ok => Json(json!({"status": "ok"})).into_response(),
        Health::Rebuilding(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "rebuilding", "reason": reason})),
        )
            .into_response(),
        Health::Failed(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": reason})),
        )
            .into_response(),
    }
}

/// The Prometheus exposition; asking the engine thread waits for its step, so off the runtime.
async fn metrics(State(st): State<AppState>) -> Result<String, ApiError> {
    let engine = st.engine.clone();
    let stats = tokio::task::spawn_blocking(move || engine.stats())
        .await
        .map_err(|e| ApiError::from(everett_engine::Error::Internal(e.to_string())))??;
    Ok(st.metrics.render(&stats))
}

async fn models(State(st): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.cfg.model_name, "object": "model", "created": 0, "owned_by": "everett"}],
    }))
}
