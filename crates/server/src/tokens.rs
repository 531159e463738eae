//! `POST /tokenize` and `POST /detokenize`, shaped as vLLM has them: text to token ids with the
//! count and the model's context length, and token ids back to text. Ids outside the vocabulary
//! are a 400 naming the position.

use crate::error::ApiError;
use crate::wire::{off_executor, parse};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct TokenizeRequest {
    prompt: String,
    #[serde(default = "yes")]
    add_special_tokens: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// Tokenizing (up to the body limit of text) runs off the async executor.
pub async fn tokenize(State(st): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    off_executor(move || {
        let r: TokenizeRequest = parse(&body, "tokenize request")?;
        let ids = st
            .cfg
            .tokenizer
            .encode(&r.prompt, r.add_special_tokens, false);
        Ok(Json(json!({
            "tokens": ids,
            "count": ids.len(),
            "max_model_len": st.cfg.context,
        })))
    })
    .await
}

pub async fn detokenize(State(st): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    off_executor(move || detokenized(&st, &body)).await
}

fn detokenized(st: &AppState, body: &[u8]) -> Result<Json<Value>, ApiError> {
    let r: DetokenizeRequest = parse(body, "detokenize request")?;
    let vocab = st.cfg.tokenizer.vocab_size();
    if let Some((i, bad)) = r
        .tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        return Err(ApiError::invalid(
            "tokens",
            format!("token {i} has id {bad}, outside the vocabulary of {vocab} tokens"),
        ));
    }
    Ok(Json(json!({"prompt": st.cfg.tokenizer.decode(&r.tokens)})))
}
