//! `POST /v1/completions`: a prompt (text, one-element list, or token ids) becomes one engine
//! request with `n` samples; `reply` answers it. Lists of several prompts are not supported yet.

use crate::error::ApiError;
use crate::reply::{self, Shape};
use crate::wire::{count, parse, Common, MAX_LOGPROBS};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use everett_engine::generate::Request;
use serde::Deserialize;

/// A prompt as OpenAI accepts it (one prompt per request here).
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Prompt,
    logprobs: Option<i64>,
    #[serde(flatten)]
    common: Common,
}

impl CompletionRequest {
    /// The engine request, checked for what the engine cannot know (the wire's own ranges).
    fn to_request(&self, st: &AppState) -> Result<Request, ApiError> {
        self.common.check_model(st)?;
        let prompt_ids = match &self.prompt {
            Prompt::Text(t) => st.cfg.tokenizer.encode(t, true, false),
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Texts(t) if t.len() == 1 => st.cfg.tokenizer.encode(&t[0], true, false),
            Prompt::Texts(_) => {
                return Err(ApiError::invalid("prompt", "send one prompt per request"));
            }
        };
        let top = count("logprobs", self.logprobs, 0, 0, MAX_LOGPROBS)?;
        self.common.request(st, prompt_ids, top, None)
    }
}

pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&body, "completion request")?;
    let engine_req = req.to_request(&st)?;
    let stream = req.common.stream_mode();
    reply::submit(
        &st,
        Shape::Completion,
        engine_req,
        req.logprobs.is_some(),
        stream,
    )
    .await
}
