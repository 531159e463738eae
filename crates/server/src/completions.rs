//! `POST /v1/completions`: each prompt (text, token ids, or a list of either) becomes one
//! engine request with `n` samples; `reply` answers them together.

use crate::error::ApiError;
use crate::reply::{self, Shape};
use crate::wire::{count, parse, prompt_ids, Common, MAX_LOGPROBS};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use everett_engine::generate::Request;
use serde::Deserialize;

/// Most prompts in one request.
const MAX_PROMPTS: usize = 256;

/// Prompts as OpenAI accepts them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Prompt,
    logprobs: Option<i64>,
    #[serde(flatten)]
    common: Common,
}

impl CompletionRequest {
    /// The engine requests, one per prompt, checked for what the engine cannot know (the
    /// wire's own ranges).
    fn to_requests(&self, st: &AppState) -> Result<Vec<Request>, ApiError> {
        self.common.check_model(st)?;
        let encode = |t: &String| prompt_ids(st, t);
        let prompts: Vec<Vec<u32>> = match &self.prompt {
            Prompt::Text(t) => vec![encode(t)],
            Prompt::Ids(ids) => vec![ids.clone()],
            Prompt::Texts(t) => t.iter().map(encode).collect(),
            Prompt::IdLists(l) => l.clone(),
        };
        if prompts.is_empty() || prompts.len() > MAX_PROMPTS {
            return Err(ApiError::invalid(
                "prompt",
                format!("send 1..={MAX_PROMPTS} prompts, not {}", prompts.len()),
            ));
        }
        let top = self.logprobs.is_some().then_some(count(
            "logprobs",
            self.logprobs,
            0,
            0,
            MAX_LOGPROBS,
        )?);
        prompts
            .into_iter()
            .map(|ids| self.common.request(st, ids, top, None))
            .collect()
    }
}

pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&body, "completion request")?;
    let engine_reqs = req.to_requests(&st)?;
    let stream = req.common.stream_mode();
    reply::submit(
        &st,
        Shape::Completion,
        engine_reqs,
        req.logprobs.is_some(),
        stream,
    )
    .await
}
