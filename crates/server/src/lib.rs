//! everett-server: the OpenAI-compatible HTTP face of the engine. Handlers hold an
//! `EngineHandle` (channels to the engine thread, which owns the model and the KV cache) and a
//! shared read-only tokenizer; they never lock anything. `router` is the whole server;
//! `everett serve` binds it. So far: `/health`, `/v1/models`, `/v1/completions` (JSON and SSE).

mod completions;
pub mod error;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use everett_engine::engine::handle::EngineHandle;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest request body accepted (bigger ones get 413).
pub const BODY_LIMIT: usize = 4 << 20;

/// What the handlers need besides the engine.
pub struct ServerConfig {
    /// The name clients put in `model`.
    pub model_name: String,
    pub tokenizer: Arc<Tokenizer>,
    /// The model's context length in tokens.
    pub context: usize,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: EngineHandle,
    pub cfg: Arc<ServerConfig>,
}

/// The whole HTTP API over one engine.
pub fn router(engine: EngineHandle, cfg: ServerConfig) -> Router {
    let state = AppState {
        engine,
        cfg: Arc::new(cfg),
    };
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions::create))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn models(State(st): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.cfg.model_name, "object": "model", "created": 0, "owned_by": "everett"}],
    }))
}
